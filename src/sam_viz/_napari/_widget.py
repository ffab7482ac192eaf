"""The Segment Anything dock widget: prompts in, three candidates out, commit to objects;
segment everything on a plane, propagate an object through a stack.

The widget wires Qt to a :class:`~sam_viz._napari._session.PredictionSession`, which holds
what is requested and shown. Threads: the UI thread reads layers and swaps layer data;
loading a model (:class:`ModelChooser`), preparing planes and embedding their windows
(:class:`WindowEmbedder`), predicting, and the long tasks (:class:`LongTasks`: segment
everything, propagate) run in workers. Edits go through a :class:`Debouncer`, so a drag
produces few predictions; the session's scheduler keeps a stale mask from replacing a newer
one, and drops results started under an older context (image, model, device or scale).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels, Layer, Points, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from sam_viz._napari import _layers
from sam_viz._napari._candidates import CandidateLayers
from sam_viz._napari._controls import Controls
from sam_viz._napari._embedder import WindowEmbedder
from sam_viz._napari._layers import image_problem
from sam_viz._napari._models import (
    CUSTOM_CHECKPOINT,
    ModelChooser,
    PredictorFactory,
    default_predictor_factory,
)
from sam_viz._napari._prompts import collect_prompts, to_image_coords
from sam_viz._napari._scheduling import Debouncer, Ticket
from sam_viz._napari._session import PredictionSession, Request
from sam_viz._napari._slicing import (
    Plane,
    all_planes,
    current_plane,
    display_problem,
    plane_geometry,
)
from sam_viz._napari._tasks import LongTasks, Target
from sam_viz._napari._workers import Failed, SerialWorker
from sam_viz.automatic.everything import EverythingSettings
from sam_viz.predictor import Cancelled, Candidates, Predictor
from sam_viz.prompts import CANDIDATE_NAMES, PromptSet
from sam_viz.windows.diameter import diameter_from_boxes
from sam_viz.windows.scaled import ScaledImage

if TYPE_CHECKING:
    import napari

__all__ = ["CUSTOM_CHECKPOINT", "SamWidget", "image_problem"]

CHOOSE_KEYS = ("1", "2", "3")
COMMIT_KEY = "c"
NEGATIVE_KEY = "n"
PROPAGATE_KEY = "Shift-P"  # plain P is napari's paint / add / polygon mode in these layers
PLUGIN_KEYS = (*CHOOSE_KEYS, COMMIT_KEY, NEGATIVE_KEY, PROPAGATE_KEY)
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
        self._embedder: WindowEmbedder | None = None
        self._debouncer = Debouncer(delay_s=debounce_s, max_wait_s=max(4 * debounce_s, 0.2))
        self._image: Image | None = None
        self._points: Points | None = None
        self._shapes: Shapes | None = None
        self._objects: Labels | None = None
        self._last_notice = ""
        self._predictions = SerialWorker("sam_viz prediction", parent=self)
        self._after_load: list[Callable[[], object]] = []  # actions waiting for the model

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_debounced)
        self.controls = Controls(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.controls)
        self._tasks = LongTasks(
            self.viewer,
            self.controls.task_progress,
            self.controls.task_cancel_button,
            self._say,
            lambda: self.session.context,
            everything_settings,
            self,
        )
        self._model = ModelChooser(
            self.controls.model_combo,
            self.controls.device_combo,
            predictor,
            predictor_factory or default_predictor_factory,
            self,
        )
        # (layer, keys) bound, and the points layer's click callback: released on close.
        self._bindings: list[tuple[Layer, tuple[str, ...]]] = []
        self._points_press: Callable[..., object] | None = None
        self._candidate_layers = CandidateLayers(self.viewer, self._bind_keys)
        self._connect()
        self._on_layers_changed()
        self._update_guide()
        if self._image is None:
            self._say(self._no_image_message(), "warning")

    def _connect(self) -> None:
        c = self.controls
        c.image_combo.currentIndexChanged.connect(self._on_image_choice)
        c.box_button.clicked.connect(self.start_box)
        c.points_button.clicked.connect(self.start_points)
        c.negative_check.toggled.connect(self._apply_point_mode)
        c.cancel_button.clicked.connect(self.cancel_embedding)
        c.embed_all_button.clicked.connect(self.embed_all_planes)
        c.diameter_spin.valueChanged.connect(self._on_diameter_changed)
        c.diameter_from_box_button.clicked.connect(self.diameter_from_boxes)
        c.everything_button.clicked.connect(self.segment_everything)
        c.propagate_button.clicked.connect(self.propagate)
        c.candidate_group.idClicked.connect(self.choose)
        c.commit_button.clicked.connect(self.commit)
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
        spec = self._model.spec
        if spec is None:
            text = "Draw a box around an object, or click on it; Shift+click marks background."
        elif not spec.trained_with_points:
            text = (
                f"<b>{spec.title}</b> was trained with boxes only: draw a box around the object "
                "(R in the boxes layer). Points then refine the box; a click alone gives no mask."
            )
        else:
            text = (
                f"<b>{spec.title}</b>: click on the object or draw a box around it; "
                "Shift+click marks background."
            )
        self.controls.guide_label.setText(text)

    def _set_progress(self, value: int, text: str, busy: bool = False) -> None:
        bar = self.controls.progress
        bar.setRange(0, 0 if busy else 1000)
        bar.setValue(value)
        bar.setFormat(text)

    # ------------------------------------------------------------------ image layer
    def _image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _on_layers_changed(self, event: object = None) -> None:
        present = set(map(id, self.viewer.layers))
        for name in ("_points", "_shapes", "_objects"):
            layer = getattr(self, name)
            if layer is not None and id(layer) not in present:
                setattr(self, name, None)  # the user deleted it; made again when needed
        for layer in self._candidate_layers.layers:
            if id(layer) not in present:
                self._candidate_layers.forget(layer)
        combo = self.controls.image_combo
        images = self._image_layers()
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
        self._adopt_objects_layer()

    def _no_image_message(self) -> str:
        ours = {id(x) for x in (self._points, self._shapes, self._objects, *self.candidate_layers)}
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
        """Make ``layer`` the image to segment (None: there is none)."""
        if layer is self._image:
            return
        if self._image is not None:
            self._image.events.data.disconnect(self._on_image_data)
            self._image.events.name.disconnect(self._on_layers_changed)
        self._image = layer
        self._new_context()
        self._candidate_layers.remove()
        self._objects = None
        if layer is None:
            self._say(self._no_image_message(), notify=False)
            return
        layer.events.data.connect(self._on_image_data)
        layer.events.name.connect(self._on_layers_changed)
        problem = image_problem(layer)
        if problem:
            self._say(problem, "warning")
            return
        for prompt_layer in (self._points, self._shapes):
            if prompt_layer is not None and prompt_layer.ndim != layer.ndim:
                self.viewer.layers.remove(prompt_layer)  # _on_layers_changed forgets it
        self._ensure_prompt_layers()
        self._say(f"Segmenting {layer.name!r}.", notify=False)
        self._on_prompts_changed()

    def _on_image_data(self, event: object = None) -> None:
        self._new_context()
        self._on_prompts_changed()

    def _new_context(self) -> None:
        """Forget embeddings and pending work: the image, model, device or scale changed."""
        self.session.new_context()
        if self._embedder is not None:
            self._embedder.discard()
            self._embedder = None
        self._tasks.discard()
        self._set_progress(0, "embedding: not computed")
        self.controls.cancel_button.setEnabled(False)

    def _current_plane(self) -> Plane | None:
        image = self._image
        if image is None or image_problem(image):
            return None
        leading, _ = plane_geometry(image.data.shape, image.rgb)
        return current_plane(image, self.viewer.dims.point, leading)

    # ------------------------------------------------------------------ prompt layers
    @contextmanager
    def _selection_kept(self) -> Iterator[None]:
        """Adding a layer makes it active; keep the layer the user was working in."""
        active = self.viewer.layers.selection.active
        try:
            yield
        finally:
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active

    def _bind_keys(self, layer: Layer, keys: tuple[str, ...] = PLUGIN_KEYS) -> None:
        _layers.bind_keys(layer, {key: partial(_on_key, self, key) for key in keys})
        self._bindings.append((layer, keys))

    def _ensure_prompt_layers(self) -> None:
        image = self._image
        if image is None:
            return
        if self._points is None:
            self._points = _layers.make_points_layer(image)
            self.viewer.add_layer(self._points)
            self._points.events.data.connect(self._on_prompts_changed)
            self._points.events.features.connect(self._on_prompts_changed)
            self._points_press = partial(_on_points_press, self)
            self._points.mouse_drag_callbacks.insert(0, self._points_press)
            self._bind_keys(self._points)
            self._apply_point_mode()
        if self._shapes is None:
            self._shapes = _layers.make_shapes_layer(image)
            self.viewer.add_layer(self._shapes)
            self._shapes.events.data.connect(self._on_prompts_changed)
            self._shapes.events.set_data.connect(self._on_prompts_changed)  # live while drawing
            self._bind_keys(self._shapes)
            self._shapes.mode = "add_rectangle"

    def start_box(self) -> None:
        """Select the boxes layer in rectangle mode (creating it if needed)."""
        self._ensure_prompt_layers()
        if self._shapes is not None:
            self.viewer.layers.selection.active = self._shapes
            self._shapes.mode = "add_rectangle"

    def start_points(self) -> None:
        """Select the points layer in add mode (creating it if needed)."""
        self._ensure_prompt_layers()
        if self._points is not None:
            self.viewer.layers.selection.active = self._points
            self._points.mode = "add"

    def toggle_negative(self) -> None:
        """Switch new points between positive and negative."""
        check = self.controls.negative_check
        check.setChecked(not check.isChecked())

    def _apply_point_mode(self, *_: object) -> None:
        if self._points is not None:
            negative = self.controls.negative_check.isChecked()
            self._points.feature_defaults["label"] = "negative" if negative else "positive"

    @property
    def points_layer(self) -> Points | None:
        """The Points prompt layer, if created."""
        return self._points

    @property
    def shapes_layer(self) -> Shapes | None:
        """The Shapes prompt layer (boxes, polygons, ellipses), if created."""
        return self._shapes

    @property
    def objects_layer(self) -> Labels | None:
        """The objects Labels layer: the one committed to, or an existing "SAM objects"
        layer of the image's shape."""
        return self._objects

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
        self._set_progress(0, "embedding: not computed")
        self._update_guide()
        self._say(f"Model {predictor.spec.title} ready.", notify=False)
        waiting, self._after_load = self._after_load, []
        for action in waiting:
            action()
        self._update()

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
        embedder = self._embedder
        diameter = self.diameter or (embedder.diameter if embedder is not None else None)
        scaled = embedder.image(plane) if embedder is not None else None
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
        self._adopt_objects_layer()
        return target is not None and self._tasks.propagate(target, self.objects_layer)

    def cancel_task(self) -> None:
        """Stop a running "segment everything" or propagation; nothing of it is written."""
        self._tasks.cancel()

    # ------------------------------------------------------------------ embeddings
    def _embedder_for(self, predictor: Predictor) -> WindowEmbedder:
        if self._embedder is None:
            assert self._image is not None
            embedder = WindowEmbedder(
                predictor, self._image.data, self._image.rgb, self.diameter, self
            )
            embedder.ready.connect(self._on_embedded)
            embedder.failed.connect(self._on_embedding_failed)
            embedder.progress.connect(self._set_progress)
            embedder.progress.connect(lambda *_: self.controls.cancel_button.setEnabled(True))
            embedder.idle.connect(lambda: self.controls.cancel_button.setEnabled(False))
            embedder.idle.connect(self._show_diameter)
            self._embedder = embedder
        return self._embedder

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
        if self._embedder is not None:
            self._embedder.cancel()

    @property
    def embedded_planes(self) -> set[Plane]:
        """The planes with at least one window embedded."""
        return self._embedder.embedded_planes if self._embedder is not None else set()

    # ------------------------------------------------------------------ object scale
    @property
    def diameter(self) -> float | None:
        """The object diameter the user set (image pixels), or None for the estimate."""
        value = self.controls.diameter_spin.value()
        return float(value) if value > 0 else None

    @property
    def scale(self) -> ScaledImage | None:
        """The scaled image of the plane on screen, once prepared."""
        plane = self._current_plane()
        if self._embedder is None or plane is None:
            return None
        return self._embedder.image(plane)

    def set_diameter(self, diameter: float | None) -> None:
        """Use objects of ``diameter`` image pixels (None: estimate it from the image)."""
        self.controls.diameter_spin.setValue(0 if diameter is None else float(diameter))

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
        diameter = round(diameter_from_boxes(boxes), 1)
        self.set_diameter(diameter)
        self._say(f"Object diameter set to {diameter:g} px from {len(boxes)} box(es).")
        return diameter

    def _on_diameter_changed(self, *_: object) -> None:
        self._new_context()
        self._show_diameter()
        self._on_prompts_changed()

    def _show_diameter(self) -> None:
        spin = self.controls.diameter_spin
        estimate = None if self._embedder is None else self._embedder.diameter
        auto = "auto" if estimate is None or self.diameter else f"auto ({estimate:.0f} px)"
        if spin.specialValueText() != auto:
            spin.setSpecialValueText(auto)
        scale = self.scale
        spin.setToolTip(
            "Typical object diameter in image pixels; windows are magnified so such objects "
            "fill a good part of the model's input. 'auto' estimates it from the image."
            + (f"\nNow: {scale.scale} ({scale.diameter_source})." if scale is not None else "")
        )

    # ------------------------------------------------------------------ prediction
    def _on_prompts_changed(self, event: object = None) -> None:
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
        _, image_hw = plane_geometry(image.data.shape, image.rgb)
        points = None
        if self._points is not None and len(self._points.data):
            coords = to_image_coords(self._points.data, self._points, image)
            points = (coords, list(self._points.features["label"]))
        shapes = []
        if self._shapes is not None and self._shapes.nshapes:
            for vertices, kind in zip(self._shapes.data, self._shapes.shape_type, strict=True):
                shapes.append((to_image_coords(vertices, self._shapes, image), str(kind)))
        return collect_prompts(image_hw, plane, points, shapes)

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
            self._candidate_layers.clear()
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
        embedding = self._embedder is not None and self._embedder.running
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
            self._candidate_layers.ensure(self._image, below=[self._points, self._shapes])
        chosen = self.session.show(candidates, request.plane)
        self._candidate_layers.show(candidates, chosen)
        self._show_choice(chosen)
        objects = "" if candidates.n_objects == 1 else f" for {candidates.n_objects} objects"
        notes = " ".join(dict.fromkeys((*request.prompts.notes, *candidates.notes)))
        self._say(
            f"{candidates.names[chosen]} shown{objects} (IoU {candidates.iou_scores[chosen]:.2f}); "
            f"1/2/3 to switch, C to commit. {notes}".strip(),
            notify=bool(notes),
        )

    def _show_choice(self, index: int) -> None:
        candidates = self.session.candidates
        for i, button in enumerate(self.controls.candidate_buttons):
            score = "" if candidates is None else f"  IoU {candidates.iou_scores[i]:.2f}"
            button.setText(f"{i + 1}  {CANDIDATE_NAMES[i]}{score}")
        self.controls.candidate_buttons[index].setChecked(True)

    def choose(self, index: int) -> None:
        """Show candidate ``index`` (0 subpart, 1 part, 2 whole) and make it the one committed."""
        if not 0 <= index < len(CANDIDATE_NAMES):
            raise ValueError(f"Candidate index must be 0, 1 or 2, got {index}.")
        self.session.choose(index)
        self._candidate_layers.choose(index)
        self._show_choice(index)

    @property
    def chosen(self) -> int | None:
        """Index of the candidate on show (the user's choice, else the best-ranked one)."""
        return self.session.chosen

    def _clear_candidates(self) -> None:
        self.session.clear()
        self._candidate_layers.clear()

    # ------------------------------------------------------------------ commit
    def _ensure_objects_layer(self) -> Labels:
        assert self._image is not None
        with self._selection_kept():
            objects = _layers.objects_layer_for(self.viewer, self._image, self._objects)
        assert objects is not None
        self._adopt_objects_layer(objects)
        return objects

    def _adopt_objects_layer(self, objects: Labels | None = None) -> None:
        """Make ``objects`` (by default an existing objects layer that fits the image, if
        any) the objects layer, and bind the propagate key in it."""
        if objects is None and self._image is not None and not image_problem(self._image):
            objects = _layers.objects_layer_for(
                self.viewer, self._image, self._objects, create=False
            )
        if objects is not None and objects is not self._objects:
            self._bind_keys(objects, (PROPAGATE_KEY,))
            self._objects = objects

    def commit(self) -> list[int]:
        """Write the chosen candidate into the objects layer and clear the prompts.

        Returns:
            The object ids written (empty if nothing was committed; the reason is shown).
        """
        candidates, index = self.session.candidates, self.chosen
        if candidates is None or index is None or self._image is None:
            self._say("Nothing to commit: draw a box (or click) on an object first.", "warning")
            return []
        mask = candidates.labels[index]
        if not mask.any():
            self._say(
                "The chosen candidate is empty; choose another or change the prompts.", "warning"
            )
            return []
        objects = self._ensure_objects_layer()
        try:
            written = _layers.commit_objects(
                objects,
                self.session.shown_plane,
                mask,
                label=self.controls.label_spin.value() or None,
                overwrite=self.controls.overwrite_check.isChecked(),
            )
        except ValueError as err:
            self._say(str(err), "warning")
            return []
        if not written:
            self._say(
                "Nothing committed: the mask lies on other objects. Tick 'Overwrite other "
                "objects' to replace them.",
                "warning",
            )
            return []
        self.clear_prompts()
        objects.selected_label = written[-1]  # what Shift+P propagates
        ids = ", ".join(map(str, written))
        self._say(
            f"Committed object {ids} to {objects.name!r} (Undo, or Ctrl+Z in that layer).",
            notify=False,
        )
        return written

    def undo(self) -> None:
        """Undo the last change to the objects layer (a commit, or a paint stroke there)."""
        if self._objects is None:
            self._say("Nothing to undo.", notify=False)
            return
        self._objects.undo()
        self._say(f"Undid the last change to {self._objects.name!r}.", notify=False)

    def clear_prompts(self) -> None:
        """Remove every prompt and the candidates."""
        self._clear_candidates()
        self.session.forget_choice()
        if self._points is not None and len(self._points.data):
            self._points.data = np.zeros((0, self._points.ndim))
        if self._shapes is not None and self._shapes.nshapes:
            self._shapes.selected_data = set(range(self._shapes.nshapes))
            self._shapes.remove_selected()
        self._timer.stop()
        self._debouncer.fired()

    def release(self) -> None:
        """Stop all work and let go of the viewer: unbind the plugin's keys and click
        callback from its layers and stop listening to layer and dims events. The layers
        stay, and work as plain napari layers."""
        self.cancel_embedding()
        self.cancel_task()
        self._timer.stop()
        self._predictions.close()
        for layer, keys in self._bindings:
            _layers.unbind_keys(layer, keys)
        self._bindings.clear()
        if self._points is not None and self._points_press in self._points.mouse_drag_callbacks:
            self._points.mouse_drag_callbacks.remove(self._points_press)
        layers, dims = self.viewer.layers.events, self.viewer.dims.events
        for emitter in (layers.inserted, layers.removed, layers.moved):
            emitter.disconnect(self._on_layers_changed)
        for emitter in (dims.current_step, dims.ndisplay, dims.order):
            emitter.disconnect(self._on_prompts_changed)
        for layer in (self._points, self._shapes):
            if layer is not None:
                layer.events.disconnect(self._on_prompts_changed)
        if self._image is not None:
            self._image.events.data.disconnect(self._on_image_data)
            self._image.events.name.disconnect(self._on_layers_changed)

    def closeEvent(self, event: object) -> None:
        self.release()
        super().closeEvent(event)  # type: ignore[arg-type]


def _alive(widget: QWidget) -> bool:
    """Whether the Qt side of ``widget`` still exists (it is gone once the dock is deleted)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def _on_key(widget: SamWidget, key: str, layer: Layer) -> None:
    """A plugin key pressed in one of its layers; once the widget is gone, the keys are
    released from that layer."""
    if not _alive(widget):
        _layers.unbind_keys(layer, PLUGIN_KEYS)
        return
    if key in CHOOSE_KEYS:
        widget.choose(CHOOSE_KEYS.index(key))
    elif key == COMMIT_KEY:
        widget.commit()
    elif key == NEGATIVE_KEY:
        widget.toggle_negative()
    elif key == PROPAGATE_KEY:
        widget.propagate()


def _on_points_press(widget: SamWidget, layer: Points, event: object) -> Iterator[None]:
    """Runs before napari's add-point callback: Shift+click adds a negative point."""
    if not _alive(widget):
        return  # the widget is gone: napari's own click handling goes on as usual
    if layer.mode == "add":
        shift = "Shift" in event.modifiers  # type: ignore[attr-defined]
        negative = shift or widget.controls.negative_check.isChecked()
        layer.feature_defaults["label"] = "negative" if negative else "positive"
    yield
