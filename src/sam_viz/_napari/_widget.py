"""The Segment Anything dock widget: prompts in, three candidates out, commit to objects;
segment everything on a plane, propagate an object through a stack.

The widget wires Qt to a :class:`~sam_viz._napari._session.PredictionSession`, which holds
what is requested and shown. Threads: the UI thread reads layers and swaps layer data;
loading a model (:class:`ModelChooser`), preparing planes and embedding their windows
(:class:`WindowEmbedder`), predicting, and the long tasks (:class:`LongTasks`: segment
everything, propagate) run in workers. Edits go through a :class:`Debouncer`, so a drag
produces few predictions; the session's scheduler keeps a stale mask from replacing a newer
one, and drops results started under an older context (image, model, device or scale).

The widget's life ends when it is closed, when napari's X takes it out of its dock, or when
the viewer closes (:class:`EndWatch`): it then stops and joins its workers and lets go of the
viewer, so a closed widget never acts again and quitting napari never aborts.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

from napari.layers import Image, Labels, Points, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from sam_viz._napari._candidates import CandidateLayers
from sam_viz._napari._controls import Controls, ScrollingControls
from sam_viz._napari._embedder import WindowEmbedder
from sam_viz._napari._embedding import EmbeddingPanel
from sam_viz._napari._keys import (
    PLUGIN_KEYS,
    PROPAGATE_KEY,
    KeyBindings,
    on_key,
    on_points_press,
)
from sam_viz._napari._layers import image_problem
from sam_viz._napari._lifetime import EndWatch
from sam_viz._napari._models import (
    CUSTOM_CHECKPOINT,
    ModelChooser,
    PredictorFactory,
    default_predictor_factory,
)
from sam_viz._napari._objects import NOTHING_TO_COMMIT, ObjectsLayer
from sam_viz._napari._prompt_layers import PromptLayers
from sam_viz._napari._scheduling import Debouncer, Ticket
from sam_viz._napari._session import PredictionSession, Request
from sam_viz._napari._slicing import (
    Plane,
    all_planes,
    current_plane,
    display_problem,
    full_resolution,
    plane_geometry,
)
from sam_viz._napari._tasks import LongTasks, Target
from sam_viz._napari._workers import Failed, SerialWorker, WorkerPool
from sam_viz.files import shared_store
from sam_viz.progress import Cancelled
from sam_viz.prompts import CANDIDATE_NAMES, PromptSet, prompt_guide

if TYPE_CHECKING:
    import napari

    from sam_viz.automatic.everything import EverythingSettings
    from sam_viz.predictor import Candidates, Predictor
    from sam_viz.windows.scaled import ScaledImage

__all__ = ["CUSTOM_CHECKPOINT", "SamWidget", "image_problem"]

# How long closing waits for workers: embedding and tasks stop at their next cancel check
# (one encoder block), a prediction within a second; a model load is not waited for (its
# result is dropped).
JOIN_S = 10.0
PREDICTION_JOIN_S = 2.0

NOTHING_SHOWN = "No candidates: draw a box around an object (or click on it)."
NO_IMAGE = (
    "No image layer: open an image (File > Open) or a sample "
    "(File > Open Sample > SAM viz), then draw a box on it."
)


class SamWidget(QWidget):
    """Interactive Segment Anything for napari: draw prompts, choose among SAM's three
    candidates, commit objects.

    Args:
        napari_viewer: The viewer to work in.
        predictor: A ready predictor to use (e.g. one already loaded, or a test model);
            by default the model chosen in the widget is loaded on the first prompt.
        predictor_factory: Builds predictors from (registry name or checkpoint path,
            device); :func:`default_predictor_factory` by default.
        debounce_s: Quiet time that ends a burst of prompt edits.
        everything_settings: Settings of "Segment everything" (the generator's defaults
            when None).
    """

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        predictor: Predictor | None = None,
        predictor_factory: PredictorFactory | None = None,
        *,
        debounce_s: float = 0.06,
        everything_settings: EverythingSettings | None = None,
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = PredictionSession()
        self._debouncer = Debouncer(delay_s=debounce_s, max_wait_s=max(4 * debounce_s, 0.2))
        self._image: Image | None = None
        self._last_notice = ""
        self._describing = False  # the status line describes the candidates on show
        self._released = False
        self._quiet = 0  # > 0 while the widget itself edits the prompt layers
        self._predictions = SerialWorker("sam_viz prediction", parent=self)
        self._pool = WorkerPool(self)
        self._after_load: list[Callable[[], object]] = []  # actions waiting for the model

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_debounced)
        self.controls = Controls()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(ScrollingControls(self.controls, self))
        self._tasks = LongTasks(
            self.viewer,
            self.controls.task_progress,
            self.controls.task_cancel_button,
            self._say,
            lambda: self.session.context,
            everything_settings,
            self,
            self._pool,
        )
        self._model = ModelChooser(
            self.controls.model_combo,
            self.controls.device_combo,
            predictor,
            predictor_factory or default_predictor_factory,
            self,
        )
        # Everything bound on the viewer's layers is released when the widget closes.
        self._keys = KeyBindings(lambda key: partial(on_key, self, key))
        self._prompts = PromptLayers(
            self.viewer,
            self._on_prompts_changed,
            partial(on_points_press, self),
            self._keys,
            PLUGIN_KEYS,
        )
        c = self.controls
        self._embedding = EmbeddingPanel(
            c.progress, c.cancel_button, c.diameter_spin, self._pool, self
        )
        self._objects = ObjectsLayer(
            self.viewer,
            lambda layer: self._keys.bind(layer, (PROPAGATE_KEY,)),
            self._selection_kept,
        )
        self._candidate_layers = CandidateLayers(
            self.viewer, lambda layer: self._keys.bind(layer, PLUGIN_KEYS)
        )
        self._connect()
        self._on_layers_changed()
        self._update_guide()
        if self._image is None:
            self._say(self._no_image_message(), "warning")
        self._end_watch = EndWatch(self, self.release)

    def _connect(self) -> None:
        c = self.controls
        c.image_combo.currentIndexChanged.connect(self._on_image_choice)
        c.box_button.clicked.connect(self.start_box)
        c.points_button.clicked.connect(self.start_points)
        c.negative_check.toggled.connect(self._apply_point_mode)
        c.embed_all_button.clicked.connect(self.embed_all_planes)
        c.disk_cache_check.toggled.connect(self._apply_disk_cache)
        self._embedding.ready.connect(self._on_embedded)
        self._embedding.failed.connect(self._on_embedding_failed)
        self._embedding.diameter_changed.connect(self._on_diameter_changed)
        c.diameter_from_box_button.clicked.connect(_slot(self.diameter_from_boxes))
        c.everything_button.clicked.connect(_slot(self.segment_everything))
        c.propagate_button.clicked.connect(_slot(self.propagate))
        c.candidate_group.idClicked.connect(self.choose)
        c.commit_button.clicked.connect(_slot(self.commit))
        c.undo_button.clicked.connect(self.undo)
        c.clear_button.clicked.connect(self.clear_prompts)
        self._model.changed.connect(self._on_model_changed)
        self._model.loaded.connect(self._on_model_loaded)
        self._model.failed.connect(self._on_model_failed)
        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        dims = self.viewer.dims.events
        for event in (dims.current_step, dims.ndisplay, dims.order):
            event.connect(self._on_prompts_changed)

    # ------------------------------------------------------------------ messages
    def _say(self, text: str, level: str = "info", *, notify: bool = True) -> None:
        """Show ``text`` in the widget and, once per distinct text, as a napari notification."""
        self._describing = False
        self.controls.status_label.setText(text)
        if not notify or text == self._last_notice:
            return
        self._last_notice = text
        {"info": show_info, "warning": show_warning, "error": show_error}[level](text)

    @property
    def status(self) -> str:
        """The widget's current status line."""
        return self.controls.status_label.text()

    def _update_guide(self) -> None:
        guide = html.escape(prompt_guide(self._model.spec))
        keys = "Boxes: R in the boxes layer; Shift+click marks background."
        self.controls.guide_label.setText(f"{guide} {keys}")

    def _set_progress(self, value: int, text: str, busy: bool = False) -> None:
        self._embedding.set_progress(value, text, busy)

    # ------------------------------------------------------------------ image layer
    def _image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _on_layers_changed(self, event: object = None) -> None:
        present = set(map(id, self.viewer.layers))
        for layer in self._prompts.layers:
            if id(layer) not in present:
                self._prompts.forget(layer)  # the user deleted it; made again when needed
        if self._objects.layer is not None and id(self._objects.layer) not in present:
            self._objects.layer = None
        for layer in self._candidate_layers.layers:
            if id(layer) not in present:
                self._candidate_layers.forget(layer)
        combo = self.controls.image_combo
        images = self._image_layers()
        self._prompts.forget_image({id(layer) for layer in images})
        combo.blockSignals(True)
        combo.clear()
        combo.addItems([layer.name for layer in images])
        combo.blockSignals(False)
        if self._image is not None and self._image in images:
            combo.setCurrentIndex(images.index(self._image))
        elif images or self._image is not None:
            self._set_image(images[0] if images else None)
        else:
            self._say(self._no_image_message(), notify=False)
        self._objects.adopt(self._image)

    def _no_image_message(self) -> str:
        mine = (*self._prompts.layers, self._objects.layer, *self.candidate_layers)
        ours = {id(x) for x in mine}
        others = [layer for layer in self.viewer.layers if id(layer) not in ours]
        if not others:
            return NO_IMAGE
        kind = type(others[0]).__name__
        return f"{others[0].name!r} is a {kind} layer, which SAM cannot segment. {NO_IMAGE}"

    def _on_image_choice(self, index: int) -> None:
        images = self._image_layers()
        if 0 <= index < len(images):
            self._set_image(images[index])

    def _set_image(self, layer: Image | None) -> None:
        """Make ``layer`` the image to segment (None: there is none).

        The prompts drawn over the previous image are put aside for it (dropped if it was
        removed), and those of ``layer`` shown, in one change: one update follows.
        """
        if layer is self._image:
            return
        old = self._image
        if old is not None:
            old.events.data.disconnect(self._on_image_data)
            old.events.name.disconnect(self._on_layers_changed)
        self._image = layer
        self._new_context()
        self._clear_candidates()
        self._objects.layer = None
        with self._quiet_edits():
            self._prompts.put_aside(old)
        if layer is None:
            self._say(self._no_image_message(), notify=False)
            return
        layer.events.data.connect(self._on_image_data)
        layer.events.name.connect(self._on_layers_changed)
        problem = image_problem(layer)
        if problem:
            self._say(problem, "warning")
            return
        with self._quiet_edits():
            self._prompts.show_image(layer, negative=self.controls.negative_check.isChecked())
        self._candidate_layers.prepare(layer, lambda: self._prompts.layers)
        self._say(f"Segmenting {layer.name!r}.", notify=False)
        self._prompts_replaced()

    def _on_image_data(self, event: object = None) -> None:
        self._new_context()
        self._on_prompts_changed()

    def _new_context(self) -> None:
        """Forget embeddings and pending work: the image, model, device or scale changed."""
        self.session.new_context()
        self._embedding.discard()
        self._tasks.discard()

    def _current_plane(self) -> Plane | None:
        image = self._image
        if image is None or image_problem(image):
            return None
        leading, _ = plane_geometry(image.data.shape, image.rgb)
        return current_plane(image, self.viewer.dims.point, leading)

    # ------------------------------------------------------------------ prompt layers
    @contextmanager
    def _quiet_edits(self) -> Iterator[None]:
        """The widget edits the prompt layers itself: their events start no prediction
        (the caller updates once, when the layers are consistent)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def _prompts_replaced(self) -> None:
        """The prompts changed in one go: drop pending edits and update once, now."""
        self._timer.stop()
        self._debouncer.reset()
        self._update()

    @contextmanager
    def _selection_kept(self) -> Iterator[None]:
        """Adding a layer makes it active; keep the layer the user was working in."""
        active = self.viewer.layers.selection.active
        try:
            yield
        finally:
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active

    def _ensure_prompt_layers(self) -> None:
        if self._image is not None:
            self._prompts.ensure(self._image, negative=self.controls.negative_check.isChecked())

    def start_box(self) -> None:
        """Select the boxes layer in rectangle mode (creating it if needed)."""
        self._ensure_prompt_layers()
        if self._prompts.shapes is not None:
            self.viewer.layers.selection.active = self._prompts.shapes
            self._prompts.shapes.mode = "add_rectangle"

    def start_points(self) -> None:
        """Select the points layer in add mode (creating it if needed)."""
        self._ensure_prompt_layers()
        if self._prompts.points is not None:
            self.viewer.layers.selection.active = self._prompts.points
            self._prompts.points.mode = "add"

    def toggle_negative(self) -> None:
        """Switch new points between positive and negative."""
        check = self.controls.negative_check
        check.setChecked(not check.isChecked())

    def _apply_point_mode(self, *_: object) -> None:
        self._prompts.set_negative(self.controls.negative_check.isChecked())

    @property
    def points_layer(self) -> Points | None:
        """The Points prompt layer, if created."""
        return self._prompts.points

    @property
    def shapes_layer(self) -> Shapes | None:
        """The Shapes prompt layer (boxes, polygons, ellipses), if created."""
        return self._prompts.shapes

    @property
    def objects_layer(self) -> Labels | None:
        """The objects Labels layer: the one committed to, or an existing "SAM objects"
        layer of the image's shape."""
        return self._objects.layer

    @property
    def everything_layer(self) -> Labels | None:
        """The "SAM everything" Labels layer, once "Segment everything" found something."""
        layer = self._tasks.everything_layer
        return layer if layer is not None and layer in self.viewer.layers else None

    @property
    def candidate_layers(self) -> list[Labels]:
        """The candidate Labels layers, subpart/part/whole (empty before a prediction)."""
        return self._candidate_layers.layers

    # ------------------------------------------------------------------ model
    def _on_model_changed(self) -> None:
        self._new_context()
        self._update_guide()
        self._on_prompts_changed()

    def _on_model_loaded(self, predictor: Predictor) -> None:
        self._apply_disk_cache()
        self._set_progress(0, "embedding: not computed")
        self._update_guide()
        self._say(f"Model {predictor.spec.title} ready.", notify=False)
        waiting, self._after_load = self._after_load, []
        for action in waiting:
            action()
        self._update()

    def _apply_disk_cache(self, *_: object) -> None:
        """Keep embeddings in the shared store on disk, or in memory only, as ticked."""
        predictor = self._model.predictor
        if predictor is not None:
            keep = self.controls.disk_cache_check.isChecked()
            predictor.cache.use_directory(shared_store() if keep else None)

    def _on_model_failed(self, error: Exception) -> None:
        self._after_load.clear()
        self._set_progress(0, "model not loaded")
        self._say(f"Could not load the model: {error}\nChoose the model again to retry.", "error")

    def _predictor_or_load(self) -> Predictor | None:
        """The chosen predictor, or None after starting to load it."""
        if self._model.predictor is None and self._model.load():
            self._set_progress(0, "loading model...", busy=True)
            self._say("Loading the model...", notify=False)
        return self._model.predictor

    def _run_after_load(self, action: Callable[[], object]) -> None:
        """Run ``action`` once the model loading now running is done (if one is)."""
        if self._model.loading and action not in self._after_load:
            self._after_load.append(action)

    # ------------------------------------------------------------------ long tasks
    def _task_target(self, action: Callable[[], object]) -> Target | None:
        """The image, plane and predictor for a long task, or None (the reason is shown;
        ``action`` runs again once a model now loading is ready)."""
        image = self._image
        dims = self.viewer.dims
        problem = self._no_image_message() if image is None else image_problem(image)
        problem = problem or display_problem(dims.ndisplay, dims.displayed, dims.ndim)
        plane = self._current_plane()
        if problem or image is None or plane is None:
            self._say(problem or NO_IMAGE, "warning")
            return None
        predictor = self._predictor_or_load()
        if predictor is None and not self._model.loading:
            self._say("The model is not loaded: choose it again to retry.", "warning")
        if predictor is None:
            self._run_after_load(action)
            return None
        scaled = self._embedding.image(plane)
        diameter = self._embedding.known_diameter
        return Target(image, plane, predictor, self.session.context, diameter, scaled)

    def segment_everything(self) -> bool:
        """Find every object on the plane on screen, off the UI thread, into the
        "SAM everything" layer (the objects layer is left alone).

        Returns:
            Whether it started (if not, the reason is shown, or it starts once the model
            being loaded is ready).
        """
        target = self._task_target(self.segment_everything)
        return target is not None and self._tasks.segment_everything(target)

    def propagate(self) -> bool:
        """Propagate the object selected in the objects layer (its selected label) from the
        slice on screen to the neighbouring slices of the stack, off the UI thread; the
        result is one undo step of the objects layer, and other objects are never
        overwritten.

        Returns:
            Whether it started (if not, the reason is shown, or it starts once the model
            being loaded is ready).
        """
        target = self._task_target(self.propagate)
        self._objects.adopt(self._image)
        return target is not None and self._tasks.propagate(target, self.objects_layer)

    def cancel_task(self) -> None:
        """Stop a running "segment everything" or propagation; nothing of it is written."""
        self._tasks.cancel()

    # ------------------------------------------------------------------ embeddings
    def _embedder_for(self, predictor: Predictor) -> WindowEmbedder:
        assert self._image is not None
        pixels = full_resolution(self._image)
        return self._embedding.embedder(predictor, pixels, self._image.rgb)

    def embed_all_planes(self) -> None:
        """Precompute the embedding of every window of every plane, the current plane first."""
        image = self._image
        problem = self._no_image_message() if image is None else image_problem(image)
        if problem or image is None:
            self._say(problem or NO_IMAGE, "warning")
            return
        predictor = self._predictor_or_load()
        if predictor is None:
            self._run_after_load(self.embed_all_planes)
            return
        leading, _ = plane_geometry(image.data.shape, image.rgb)
        embedder = self._embedder_for(predictor)
        planes = [plane for plane in all_planes(leading) if not embedder.complete(plane)]
        if not planes:
            self._say("Every window of every plane is already embedded.", notify=False)
            return
        embedder.want_all(planes, self._current_plane())

    def _on_embedded(self, plane: Plane) -> None:
        self._show_diameter()
        if plane == self._current_plane():
            self._update()

    def _on_embedding_failed(self, error: Exception) -> None:
        self.session.embedding_stopped()
        if isinstance(error, Cancelled):
            self._say("Embedding cancelled; it starts again with the next prompt.", "warning")
        else:
            self._say(f"Could not embed the image: {error}", "error")

    def cancel_embedding(self) -> None:
        """Stop the running embedding (and a precomputation of all planes)."""
        self._embedding.cancel()

    @property
    def embedded_planes(self) -> set[Plane]:
        """The planes with at least one window embedded."""
        return self._embedding.embedded_planes

    # ------------------------------------------------------------------ object scale
    @property
    def diameter(self) -> float | None:
        """The object diameter the user set (image pixels), or None for the estimate."""
        return self._embedding.diameter

    @property
    def scale(self) -> ScaledImage | None:
        """The scaled image of the plane on screen, once prepared."""
        return self._embedding.image(self._current_plane())

    def set_diameter(self, diameter: float | None) -> None:
        """Use objects of ``diameter`` image pixels (None: estimate it from the image)."""
        self._embedding.set_diameter(diameter)

    def diameter_from_boxes(self) -> float | None:
        """Set the object diameter from the boxes drawn on the plane on screen.

        Returns:
            The diameter set, or None when no box is drawn (the reason is shown).
        """
        image, plane = self._image, self._current_plane()
        if image is None or plane is None:
            self._say(NO_IMAGE, "warning")
            return None
        try:
            boxes = self._collect(image, plane).boxes_xyxy
        except ValueError as err:
            self._say(str(err), "warning")
            return None
        if not len(boxes):
            self._say("Draw a box around a typical object first, then pick its size.", "warning")
            return None
        from sam_viz.windows.diameter import diameter_from_boxes  # skimage: on first use

        diameter = round(diameter_from_boxes(boxes), 1)
        self.set_diameter(diameter)
        self._say(f"Object diameter set to {diameter:g} px from {len(boxes)} box(es).")
        return diameter

    def _on_diameter_changed(self) -> None:
        self._new_context()
        self._show_diameter()
        self._on_prompts_changed()

    def _show_diameter(self) -> None:
        self._embedding.show_diameter(self.scale)

    # ------------------------------------------------------------------ prediction
    def _on_prompts_changed(self, event: object = None) -> None:
        if self._quiet or self._released:
            return
        if str(getattr(event, "action", "") or "") in ("adding", "changing", "removing"):
            return
        delay = self._debouncer.poke(time.monotonic())
        if delay == 0 and not self._timer.isActive():
            # First edit after a quiet spell: predict now. If the event changed no prompt
            # (e.g. a redraw), the next one still counts as the first edit.
            self._debouncer.fired()
            if not self._update():
                self._debouncer.reset()
        else:
            self._timer.start(round(delay * 1000))

    def _on_debounced(self) -> None:
        self._debouncer.fired()
        self._update()

    def _collect(self, image: Image, plane: Plane) -> PromptSet:
        return self._prompts.collect(image, plane)

    def _update(self) -> bool:
        """Bring the candidates up to date with the prompts on the current plane.

        Returns:
            False if the prompts are those last predicted from (nothing to do), else True.
        """
        image = self._image
        if image is None:
            self._clear_candidates()
            return True
        dims = self.viewer.dims
        problem = image_problem(image) or display_problem(dims.ndisplay, dims.displayed, dims.ndim)
        if problem:
            self._clear_candidates()
            self._say(problem, "warning")
            return True
        plane = self._current_plane()
        assert plane is not None
        if self.session.candidates is not None and self.session.shown_plane != plane:
            self._clear_candidates()  # another slice: its own prompts, or none
        try:
            prompts = self._collect(image, plane)
        except ValueError as err:
            self._clear_candidates()
            self._say(str(err), "warning")
            return True
        predictor = None if prompts.empty else self._predictor_or_load()
        if predictor is None and not prompts.empty:
            return True
        spec = predictor.spec if predictor is not None else None
        embedder = self._embedder_for(predictor) if predictor is not None else None
        scaled = embedder.image(plane) if embedder is not None else None
        decision = self.session.decide(plane, prompts, spec, scaled)  # type: ignore[arg-type]
        if decision.step in ("clear", "refuse"):
            self._clear_candidates()
            if decision.message:
                self._say(decision.message, "info")
        elif decision.step in ("prepare", "embed"):
            assert embedder is not None
            embedder.want(plane, decision.regions)
        elif decision.step == "predict" and decision.ticket is not None:
            self._start_prediction(decision.ticket)
        return decision.changed

    def _start_prediction(self, ticket: Ticket[Request]) -> None:
        request = ticket.request
        # One long-lived thread: predictions are short and frequent, so they neither pay for
        # a thread each nor show in napari's activity list (loading and embedding, the long
        # tasks, are listed there).
        self._predictions.submit(
            request.image.answer, request.prompts, on_done=partial(self._on_predicted, ticket)
        )

    def _on_predicted(self, ticket: Ticket[Request], result: object) -> None:
        show, following = self.session.finish(ticket)
        if following is not None:
            self._start_prediction(following)
        if not show:
            return
        if isinstance(result, Failed):
            self._clear_candidates()
            self._say(str(result.error), "warning")
            return
        self._show_candidates(result, ticket.request)  # type: ignore[arg-type]

    @property
    def busy(self) -> bool:
        """Whether a model load, embedding or prediction is running or waiting to run."""
        embedding = self._embedding.running
        return bool(
            self._predictions.pending
            or embedding
            or self._model.loading
            or self._timer.isActive()
            or self._candidate_layers.pending
            or self._tasks.running
        )

    # ------------------------------------------------------------------ candidates
    def _show_candidates(self, candidates: Candidates, request: Request) -> None:
        assert self._image is not None
        with self._selection_kept():
            self._candidate_layers.ensure(self._image, below=self._prompts.layers)
        chosen = self.session.show(candidates, request.plane)
        self._candidate_layers.show(candidates, chosen)
        self._show_choice()
        notes = tuple(dict.fromkeys((*request.prompts.notes, *candidates.notes)))
        self._say(self._candidate_status(notes), notify=bool(notes))
        self._describing = True

    def _candidate_status(self, notes: tuple[str, ...] = ()) -> str:
        """The status line for the candidate on show: what it is, the keys that apply, why
        fewer than three candidates are offered, and ``notes``."""
        candidates, index = self.session.candidates, self.session.chosen
        assert candidates is not None and index is not None
        text = candidates.describe(index)
        hints = []
        if len(candidates.offered) > 1:
            hints.append(f"{'/'.join(str(i + 1) for i in candidates.offered)} to switch")
        if candidates.areas[index]:
            hints.append("C to commit")
        if hints:
            text = f"{text.rstrip('.')}; {', '.join(hints)}."
        elif not text.endswith("."):
            text += "."
        return " ".join([text, *filter(None, (candidates.offer_note, *notes))])

    def _show_choice(self) -> None:
        """The candidate buttons: scores of the candidates on show (none without), enabled
        for the offered ones, the one on show checked."""
        candidates = self.session.candidates
        if candidates is None:
            texts = [f"{i + 1}  {name}" for i, name in enumerate(CANDIDATE_NAMES)]
            self.controls.show_candidates(texts, set(), None)
            return
        texts = [
            f"{i + 1}  {name}  IoU {candidates.iou_scores[i]:.2f}"
            for i, name in enumerate(candidates.names)
        ]
        self.controls.show_candidates(texts, set(candidates.offered), self.session.chosen)

    def choose(self, index: int) -> bool:
        """Show candidate ``index`` (0 subpart, 1 part, 2 whole) and make it the one committed.

        Returns:
            Whether it is shown: only the candidates offered are (if not, the status says
            why).
        """
        if not 0 <= index < len(CANDIDATE_NAMES):
            raise ValueError(f"Candidate index must be 0, 1 or 2, got {index}.")
        problem = self.session.choose(index)
        if problem is not None:
            self._show_choice()
            self._say(problem, notify=False)
            return False
        self._candidate_layers.choose(index)
        self._show_choice()
        self._say(self._candidate_status(), notify=False)
        self._describing = True
        return True

    @property
    def chosen(self) -> int | None:
        """Index of the candidate on show (the user's choice, else the best-ranked one)."""
        return self.session.chosen

    def _clear_candidates(self) -> None:
        self.session.clear()
        self._candidate_layers.clear()
        self._show_choice()
        if self._describing:  # the status line spoke of them
            self._say(NOTHING_SHOWN, notify=False)

    # ------------------------------------------------------------------ commit
    def _ensure_objects_layer(self) -> Labels:
        assert self._image is not None
        return self._objects.ensure(self._image)

    def commit(self) -> list[int]:
        """Write the chosen candidate into the objects layer and clear the prompts.

        Returns:
            The object ids written (empty if nothing was committed; the reason is shown).
        """
        candidates, index, image = self.session.candidates, self.chosen, self._image
        if candidates is None or index is None or image is None:
            self._say(NOTHING_TO_COMMIT, "warning")
            return []
        written = self._objects.commit(
            image,
            self.session.shown_plane,
            candidates.labels[index],
            self._say,
            label=self.controls.label_spin.value() or None,
            overwrite=self.controls.overwrite_check.isChecked(),
        )
        if written:
            self.clear_prompts()
        return written

    def undo(self) -> bool:
        """Undo the last change to the objects layer (a commit, or a paint stroke there).

        Returns:
            Whether there was a change to undo.
        """
        return self._objects.undo(self._say)

    def clear_prompts(self) -> None:
        """Remove every prompt and the candidates, in one change."""
        self.session.forget_choice()
        with self._quiet_edits():
            self._prompts.clear()
        self._clear_candidates()
        self._prompts_replaced()

    def release(self) -> None:
        """Stop all work and let go of the viewer: cancel and join the workers (a model
        load is not waited for: its result is dropped), unbind the plugin's keys and click
        callback from its layers and stop listening to layer and dims events. The layers
        stay, and work as plain napari layers. Called once the widget's life ends (see
        :class:`EndWatch`); calling it again does nothing."""
        if self._released:
            return
        self._released = True
        self._after_load.clear()
        self._timer.stop()
        self._embedding.discard()
        self._tasks.discard()
        self._model.close()
        self._predictions.shutdown(PREDICTION_JOIN_S)
        self._pool.join(JOIN_S)
        self._candidate_layers.stop()
        self._keys.release()
        self._prompts.release()
        layers, dims = self.viewer.layers.events, self.viewer.dims.events
        for emitter in (layers.inserted, layers.removed, layers.moved):
            emitter.disconnect(self._on_layers_changed)
        for emitter in (dims.current_step, dims.ndisplay, dims.order):
            emitter.disconnect(self._on_prompts_changed)
        if self._image is not None:
            self._image.events.data.disconnect(self._on_image_data)
            self._image.events.name.disconnect(self._on_layers_changed)

    def closeEvent(self, event: object) -> None:
        self.release()
        super().closeEvent(event)  # type: ignore[arg-type]


def _slot(action: Callable[[], object]) -> Callable[[], None]:
    """A Qt slot running ``action`` and dropping its result (the status line reports it)."""

    def run() -> None:
        action()

    return run
