"""The Segment Anything dock widget: prompts in, three candidates out, commit to objects.

Threads: the UI thread only reads layers and swaps layer data. Loading a model, embedding
planes and predicting run in napari workers; their results carry the ``context`` number
they were started under and are dropped when the image, model or device changed since.
Predictions go through a :class:`Debouncer` and a :class:`LatestWins` scheduler, so a drag
produces few predictions and a stale mask never replaces a newer one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QFileDialog, QVBoxLayout, QWidget
from superqt.utils import create_worker as create_light_worker

from sam_viz._napari import _layers
from sam_viz._napari._controls import Controls
from sam_viz._napari._predict import Candidates, needs_box, predict_candidates
from sam_viz._napari._prompts import PromptSet, collect_prompts, to_image_coords
from sam_viz._napari._scheduling import Debouncer, LatestWins, PlaneQueue, Ticket
from sam_viz._napari._slicing import (
    Plane,
    all_planes,
    current_plane,
    display_problem,
    plane_data,
    plane_geometry,
)
from sam_viz.cache import EmbeddingCache, ImageEmbedding
from sam_viz.device import available_devices
from sam_viz.predictor import Cancelled, Predictor
from sam_viz.prompts import CANDIDATE_NAMES
from sam_viz.registry import DEFAULT_MODEL, MODELS, ModelSpec

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

PredictorFactory = Callable[[str, str], Predictor]
"""Builds a predictor from (registry name or checkpoint path, device name)."""

CUSTOM_CHECKPOINT = "custom checkpoint..."
GIVEN = "given"
EMBEDDINGS_IN_MEMORY = 64
CHOOSE_KEYS = ("1", "2", "3")
COMMIT_KEY = "c"
NEGATIVE_KEY = "n"
NO_IMAGE = (
    "No image layer: open an image (File > Open) or a sample "
    "(File > Open Sample > SAM viz), then draw a box on it."
)


def default_predictor_factory(source: str, device: str) -> Predictor:
    """Load ``source`` (a registry name or checkpoint path) on ``device``."""
    return Predictor.from_pretrained(
        source, device=device, cache=EmbeddingCache(max_items=EMBEDDINGS_IN_MEMORY), progress=False
    )


def image_problem(layer: object) -> str | None:
    """Why ``layer`` cannot be segmented, or None if it can."""
    if not isinstance(layer, Image):
        return f"Layer {getattr(layer, 'name', layer)!r} is not an image layer; choose an image."
    if layer.multiscale:
        return (
            f"Image {layer.name!r} is multiscale, which is not supported; open one resolution "
            "level as its own layer."
        )
    dtype = np.dtype(getattr(layer.data, "dtype", np.float64))
    if dtype.kind not in "biuf":
        return f"Image {layer.name!r} has dtype {dtype}; SAM needs a bool, integer or float image."
    try:
        _, image_hw = plane_geometry(layer.data.shape, layer.rgb)
    except ValueError as err:
        return str(err)
    if min(image_hw) < 2:
        return f"Image {layer.name!r} is too small to segment ({image_hw[0]} x {image_hw[1]})."
    return None


@dataclass(frozen=True)
class _Request:
    """One prediction to run: the prompts of a plane and that plane's embedding."""

    context: int
    plane: Plane
    prompts: PromptSet
    embedding: ImageEmbedding


@dataclass(frozen=True)
class _Failed:
    """What a worker hands back instead of raising (a raised or returned exception would
    reach the user as a traceback)."""

    error: Exception


def _call_safely(func: Callable[..., object], *args: object) -> object:
    """Run ``func`` in a worker; returns its result, or :class:`_Failed` with the error."""
    try:
        return func(*args)
    except Exception as err:
        if not isinstance(err, (ValueError, TypeError, Cancelled)):
            logger.exception("sam_viz worker failed")
        return _Failed(err)


def _embed_planes(
    predictor: Predictor,
    data: object,
    queue: PlaneQueue,
    cancel: threading.Event,
    report: Callable[[Plane, int, int, int, int], None],
):
    """Worker generator: embed the queued planes one by one, yielding (plane, embedding)
    or, on failure or cancel, (plane, :class:`_Failed`) as its last value."""
    while (plane := queue.pop()) is not None:
        done, total = queue.done, max(queue.total, 1)
        try:
            embedding = predictor.set_image(
                plane_data(data, plane),
                progress=partial(report, plane, done, total),
                cancel=cancel,
            )
        except Exception as err:
            queue.worker_stopped()
            if not isinstance(err, (ValueError, TypeError, Cancelled)):
                logger.exception("sam_viz embedding failed")
            yield plane, _Failed(err)
            return
        queue.mark_done()
        yield plane, embedding


class _Signals(QObject):
    """Signals emitted from worker threads; Qt queues them to the UI thread."""

    embed_progress = Signal(object, int, int, int, int)


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
    """

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        predictor: Predictor | None = None,
        predictor_factory: PredictorFactory | None = None,
        *,
        debounce_s: float = 0.06,
    ) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._factory = predictor_factory or default_predictor_factory
        self._given = predictor
        self._predictor: Predictor | None = predictor
        self._load_failed: tuple[str, str] | None = None
        self._loading = False
        self._context = 0
        self._embeddings: dict[Plane, ImageEmbedding] = {}
        self._queue = PlaneQueue()
        self._cancel = threading.Event()
        self._embedding_plane: Plane | None = None
        self._debouncer = Debouncer(delay_s=debounce_s, max_wait_s=max(4 * debounce_s, 0.2))
        self._scheduler: LatestWins[_Request] = LatestWins()
        self._requested: tuple[int, Plane, str] | None = None
        self._candidates: Candidates | None = None
        self._candidates_plane: Plane = ()
        self._chosen: int | None = None
        self._candidate_layers: dict[str, Labels] = {}
        self._unfilled: set[int] = set()
        self._image: Image | None = None
        self._points: Points | None = None
        self._shapes: Shapes | None = None
        self._objects: Labels | None = None
        self._custom_path: str | None = None
        self._last_notice = ""
        self._workers: set[object] = set()
        self._embed_all_pending = False
        self._embed_failed = False

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._on_debounced)
        self._signals = _Signals(self)
        self._signals.embed_progress.connect(self._on_embed_progress)

        self.controls = Controls(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.controls)
        self._fill_model_choices()
        self._connect_controls()

        layers = self.viewer.layers
        layers.events.inserted.connect(self._on_layers_changed)
        layers.events.removed.connect(self._on_layers_changed)
        layers.events.moved.connect(self._on_layers_changed)
        self.viewer.dims.events.current_step.connect(self._on_prompts_changed)
        self.viewer.dims.events.ndisplay.connect(self._on_prompts_changed)
        self.viewer.dims.events.order.connect(self._on_prompts_changed)
        self._on_layers_changed()
        self._update_guide()
        if self._image is None:
            self._say(NO_IMAGE, "warning")

    # ------------------------------------------------------------------ setup
    def _fill_model_choices(self) -> None:
        combo = self.controls.model_combo
        if self._given is not None:
            combo.addItem(f"{self._given.spec.title} (given)", GIVEN)
        for name, spec in MODELS.items():
            combo.addItem(f"{spec.title} [{name}]", name)
        combo.addItem(CUSTOM_CHECKPOINT, CUSTOM_CHECKPOINT)
        default = GIVEN if self._given is not None else DEFAULT_MODEL
        combo.setCurrentIndex(combo.findData(default))
        self._model_index = combo.currentIndex()
        devices = self.controls.device_combo
        if self._given is not None:
            devices.addItem(str(self._given.device))
            devices.setEnabled(False)
        else:
            devices.addItems(available_devices())

    def _connect_controls(self) -> None:
        c = self.controls
        c.image_combo.currentIndexChanged.connect(self._on_image_choice)
        c.model_combo.currentIndexChanged.connect(self._on_model_choice)
        c.device_combo.currentIndexChanged.connect(self._on_device_choice)
        c.box_button.clicked.connect(self.start_box)
        c.points_button.clicked.connect(self.start_points)
        c.negative_check.toggled.connect(self._apply_point_mode)
        c.cancel_button.clicked.connect(self.cancel_embedding)
        c.embed_all_button.clicked.connect(self.embed_all_planes)
        c.candidate_group.idClicked.connect(self.choose)
        c.commit_button.clicked.connect(self.commit)
        c.undo_button.clicked.connect(self.undo)
        c.clear_button.clicked.connect(self.clear_prompts)

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

    def _spec(self) -> ModelSpec | None:
        """The spec of the chosen model, known before it is loaded where possible."""
        if self._predictor is not None:
            return self._predictor.spec
        return MODELS.get(self.controls.model_combo.currentData())

    def _update_guide(self) -> None:
        spec = self._spec()
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

    # ------------------------------------------------------------------ image layer
    def _image_layers(self) -> list[Image]:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _on_layers_changed(self, event: object = None) -> None:
        ours = [self._points, self._shapes, self._objects, *self._candidate_layers.values()]
        present = set(map(id, self.viewer.layers))
        for layer in ours:
            if layer is not None and id(layer) not in present:
                self._forget_layer(layer)
        combo = self.controls.image_combo
        images = self._image_layers()
        combo.blockSignals(True)
        combo.clear()
        for layer in images:
            combo.addItem(layer.name)
        combo.blockSignals(False)
        if self._image is not None and self._image in images:
            combo.setCurrentIndex(images.index(self._image))
        elif images:
            combo.setCurrentIndex(0)
            self._set_image(images[0])
        else:
            self._set_image(None)

    def _forget_layer(self, layer: object) -> None:
        if layer is self._points:
            self._points = None
        elif layer is self._shapes:
            self._shapes = None
        elif layer is self._objects:
            self._objects = None
        for name, candidate in list(self._candidate_layers.items()):
            if candidate is layer:
                del self._candidate_layers[name]

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
        self._remove_layers(self._candidate_layers.values())
        self._candidate_layers.clear()
        self._objects = None
        if layer is None:
            self._say(NO_IMAGE, notify=False)
            return
        layer.events.data.connect(self._on_image_data)
        layer.events.name.connect(self._on_layers_changed)
        problem = image_problem(layer)
        if problem:
            self._say(problem, "warning")
            return
        leading, _ = plane_geometry(layer.data.shape, layer.rgb)
        self.controls.embed_all_button.setEnabled(bool(leading))
        for prompt_layer in (self._points, self._shapes):
            if prompt_layer is not None and prompt_layer.ndim != layer.ndim:
                self._remove_layers([prompt_layer])
        self._ensure_prompt_layers()
        self._say(f"Segmenting {layer.name!r}.", notify=False)
        self._on_prompts_changed()

    def _remove_layers(self, layers: object) -> None:
        for layer in list(layers):  # type: ignore[call-overload]
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    def _on_image_data(self, event: object = None) -> None:
        self._new_context()
        self._on_prompts_changed()

    def _new_context(self) -> None:
        """Forget embeddings and pending work: the image, model or device changed."""
        self._context += 1
        self._cancel.set()
        self._queue.clear()
        self._queue = PlaneQueue()
        self._cancel = threading.Event()
        self._embeddings.clear()
        self._embedding_plane = None
        self._scheduler.invalidate()
        self._requested = None
        self._set_progress(0, "embedding: not computed")
        self.controls.cancel_button.setEnabled(False)

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

    def _ensure_prompt_layers(self) -> None:
        image = self._image
        if image is None:
            return
        if self._points is None:
            self._points = _layers.make_points_layer(image)
            self.viewer.add_layer(self._points)
            self._points.events.data.connect(self._on_prompts_changed)
            self._points.events.features.connect(self._on_prompts_changed)
            self._points.mouse_drag_callbacks.insert(0, self._on_points_press)
            _layers.bind_keys(self._points, self._key_bindings())
            self._apply_point_mode()
        if self._shapes is None:
            self._shapes = _layers.make_shapes_layer(image)
            self.viewer.add_layer(self._shapes)
            self._shapes.events.data.connect(self._on_prompts_changed)
            self._shapes.events.set_data.connect(self._on_prompts_changed)
            _layers.bind_keys(self._shapes, self._key_bindings())
            self._shapes.mode = "add_rectangle"

    def _key_bindings(self) -> dict[str, Callable[..., object]]:
        bindings: dict[str, Callable[..., object]] = {
            key: partial(_key_choose, self, index) for index, key in enumerate(CHOOSE_KEYS)
        }
        bindings[COMMIT_KEY] = partial(_key_call, self.commit)
        bindings[NEGATIVE_KEY] = partial(_key_call, self.toggle_negative)
        return bindings

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
        """The objects Labels layer, once something was committed."""
        return self._objects

    @property
    def candidate_layers(self) -> list[Labels]:
        """The candidate Labels layers, subpart/part/whole (empty before a prediction)."""
        return [self._candidate_layers[n] for n in CANDIDATE_NAMES if n in self._candidate_layers]

    def toggle_negative(self) -> None:
        """Switch new points between positive and negative."""
        check = self.controls.negative_check
        check.setChecked(not check.isChecked())

    def _apply_point_mode(self, *_: object) -> None:
        if self._points is not None:
            negative = self.controls.negative_check.isChecked()
            self._points.feature_defaults["label"] = "negative" if negative else "positive"

    def _on_points_press(self, layer: Points, event: object):
        """Runs before napari's add-point callback: Shift+click adds a negative point."""
        if layer.mode == "add":
            negative = "Shift" in event.modifiers or self.controls.negative_check.isChecked()
            layer.feature_defaults["label"] = "negative" if negative else "positive"
        yield

    # ------------------------------------------------------------------ model
    def _on_model_choice(self, index: int) -> None:
        combo = self.controls.model_combo
        choice = combo.itemData(index)
        if choice == CUSTOM_CHECKPOINT:
            path = self._ask_checkpoint_path()
            if not path:
                combo.blockSignals(True)
                combo.setCurrentIndex(self._model_index)
                combo.blockSignals(False)
                return
            self._custom_path = path
            combo.blockSignals(True)
            combo.setItemText(index, f"checkpoint: {Path(path).name}")
            combo.blockSignals(False)
        self._model_index = index
        self._change_model()

    def _ask_checkpoint_path(self) -> str:
        path, _ = QFileDialog.getOpenFileName(
            self, "SAM checkpoint", "", "PyTorch checkpoints (*.pth *.pt *.ckpt);;All files (*)"
        )
        return path

    def _on_device_choice(self, index: int) -> None:
        self._change_model()

    def _model_source(self) -> tuple[str, str] | None:
        """(source, device) of the chosen model, or None for the given predictor."""
        choice = self.controls.model_combo.currentData()
        if choice == GIVEN:
            return None
        source = self._custom_path if choice == CUSTOM_CHECKPOINT else choice
        return str(source), self.controls.device_combo.currentText()

    def _change_model(self) -> None:
        source = self._model_source()
        self._predictor = self._given if source is None else None
        self._load_failed = None
        devices = self.controls.device_combo
        if self._given is not None:
            devices.setEnabled(source is not None)
            if (
                source is not None
                and devices.count() == 1
                and devices.itemText(0) == str(self._given.device)
            ):
                devices.blockSignals(True)
                devices.clear()
                devices.addItems(available_devices())
                devices.blockSignals(False)
        self._new_context()
        self._update_guide()
        self._on_prompts_changed()

    def _load_predictor(self) -> None:
        source = self._model_source()
        if source is None or self._loading or self._load_failed == source:
            return
        self._loading = True
        self._say(f"Loading model {Path(source[0]).name} on {source[1]}...", notify=False)
        self._set_progress(0, "loading model...", busy=True)
        worker = create_worker(_call_safely, self._factory, *source, _start_thread=False)
        worker.returned.connect(partial(self._on_predictor_loaded, source))
        self._start(worker)

    def _on_predictor_loaded(self, source: tuple[str, str], result: object) -> None:
        self._loading = False
        self._set_progress(0, "embedding: not computed")
        if source != self._model_source():
            self._on_prompts_changed()  # the choice changed while loading
            return
        if isinstance(result, _Failed):
            self._load_failed = source
            self._say(
                f"Could not load the model: {result.error}\nChoose the model again to retry.",
                "error",
            )
            return
        self._predictor = result  # type: ignore[assignment]
        self._update_guide()
        self._say(f"Model {self._predictor.spec.title} ready.", notify=False)
        if self._embed_all_pending:
            self._embed_all_pending = False
            self.embed_all_planes()
        self._update()

    # ------------------------------------------------------------------ embeddings
    def _set_progress(self, value: int, text: str, busy: bool = False) -> None:
        bar = self.controls.progress
        bar.setRange(0, 0 if busy else 1000)
        bar.setValue(value)
        bar.setFormat(text)

    def _want_embedding(self, plane: Plane) -> None:
        """Embed ``plane`` next (starting the embedding worker if none runs)."""
        if plane in self._embeddings or self._image is None or self._predictor is None:
            return
        if self._queue.want(plane):
            self._start_embedding_worker()

    def embed_all_planes(self) -> None:
        """Precompute the embedding of every plane of the stack, the current one first."""
        image = self._image
        if image is None or image_problem(image):
            self._say(NO_IMAGE if image is None else image_problem(image), "warning")  # type: ignore[arg-type]
            return
        if self._predictor is None:
            self._say("The model is loading; embedding starts once it is ready.", notify=False)
            self._embed_all_pending = True
            self._load_predictor()
            return
        leading, _ = plane_geometry(image.data.shape, image.rgb)
        missing = [p for p in all_planes(leading) if p not in self._embeddings]
        if not missing:
            self._say("Every plane is already embedded.", notify=False)
            return
        start = self._queue.extend(missing)
        here = self._current_plane()
        if here is not None and here in missing:
            start = self._queue.want(here) or start
        if start:
            self._start_embedding_worker()

    def _start_embedding_worker(self) -> None:
        assert self._image is not None and self._predictor is not None
        self._cancel = threading.Event()
        worker = create_worker(
            _embed_planes,
            self._predictor,
            self._image.data,
            self._queue,
            self._cancel,
            self._signals.embed_progress.emit,
            _start_thread=False,
        )
        worker.yielded.connect(partial(self._on_embedded, self._context))
        worker.finished.connect(partial(self._on_embedding_finished, self._context))
        self._embed_failed = False
        self.controls.cancel_button.setEnabled(True)
        self._set_progress(0, "embedding...")
        self._start(worker)

    def _on_embed_progress(
        self, plane: Plane, done: int, total: int, step: int, steps: int
    ) -> None:
        fraction = (done + step / max(steps, 1)) / max(total, 1)
        where = f" plane {plane}" if plane else ""
        count = f" ({done + 1}/{total})" if total > 1 else ""
        self._embedding_plane = plane
        self._set_progress(int(1000 * fraction), f"embedding{where}{count}: %p%")

    def _on_embedded(self, context: int, item: tuple[Plane, object]) -> None:
        plane, result = item
        if context != self._context:
            return
        if isinstance(result, _Failed):
            self._embed_failed = True
            self._scheduler.invalidate()
            self._requested = None
            if isinstance(result.error, Cancelled):
                self._say("Embedding cancelled; it starts again with the next prompt.", "warning")
            else:
                self._say(f"Could not embed the image: {result.error}", "error")
            return
        self._embeddings[plane] = result  # type: ignore[assignment]
        if plane == self._current_plane():
            self._update()

    def _on_embedding_finished(self, context: int) -> None:
        if context != self._context or self._queue.worker_running:
            return
        self.controls.cancel_button.setEnabled(False)
        if self._embed_failed:
            self._set_progress(0, "embedding: not computed")
        else:
            count = len(self._embeddings)
            self._set_progress(1000, f"embedding: ready ({count} plane{'s' * (count != 1)})")

    def cancel_embedding(self) -> None:
        """Stop the running embedding (and a precomputation of all planes)."""
        self._queue.clear()
        self._cancel.set()

    @property
    def embedded_planes(self) -> set[Plane]:
        """The planes whose embedding is ready."""
        return set(self._embeddings)

    # ------------------------------------------------------------------ prediction
    def _on_prompts_changed(self, event: object = None) -> None:
        action = str(getattr(event, "action", "") or "")
        if action in ("adding", "changing", "removing"):
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

    def _current_plane(self) -> Plane | None:
        image = self._image
        if image is None or image_problem(image):
            return None
        leading, _ = plane_geometry(image.data.shape, image.rgb)
        return current_plane(image, self.viewer.dims.point, leading)

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
        problem = image_problem(image) or display_problem(
            self.viewer.dims.ndisplay, self.viewer.dims.displayed, self.viewer.dims.ndim
        )
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
        if prompts.empty:
            changed = self._candidates is not None or self._requested is not None
            self._clear_candidates()
            return changed
        if self._predictor is None:
            self._load_predictor()
            return True
        if needs_box(prompts, self._predictor.spec.trained_with_points):
            self._clear_candidates()
            self._say(
                f"{self._predictor.spec.title} was trained with boxes only: draw a box around "
                "the object; your points will then refine it.",
                "info",
            )
            return True
        embedding = self._embeddings.get(plane)
        if embedding is None:
            self._want_embedding(plane)
            return True
        key = (self._context, plane, prompts.signature())
        if key == self._requested:
            return False
        self._requested = key
        ticket = self._scheduler.submit(_Request(self._context, plane, prompts, embedding))
        if ticket is not None:
            self._start_prediction(ticket)
        return True

    def _start_prediction(self, ticket: Ticket[_Request]) -> None:
        request = ticket.request
        # A plain superqt worker: predictions are short and frequent, so they stay out of
        # napari's activity list (loading and embedding, the long tasks, are listed there).
        worker = create_light_worker(
            _call_safely,
            predict_candidates,
            self._predictor,
            request.embedding,
            request.prompts,
            _start_thread=False,
        )
        worker.returned.connect(partial(self._on_predicted, ticket))
        self._start(worker)

    def _on_predicted(self, ticket: Ticket[_Request], result: object) -> None:
        current, following = self._scheduler.finish(ticket)
        if following is not None:
            self._start_prediction(following)
        if not current or ticket.request.context != self._context:
            return
        if isinstance(result, _Failed):
            self._clear_candidates()
            self._say(str(result.error), "warning")
            return
        self._show_candidates(result, ticket.request)  # type: ignore[arg-type]

    def _start(self, worker: object) -> None:
        """Start a worker, keeping a reference until it finishes."""
        self._workers.add(worker)
        worker.finished.connect(partial(self._workers.discard, worker))  # type: ignore[attr-defined]
        worker.start()  # type: ignore[attr-defined]

    @property
    def busy(self) -> bool:
        """Whether a model load, embedding or prediction is running or waiting to run."""
        return bool(self._workers or self._unfilled) or self._timer.isActive() or self._loading

    # ------------------------------------------------------------------ candidates
    def _ensure_candidate_layers(self) -> list[Labels]:
        image = self._image
        assert image is not None
        missing = [n for n in CANDIDATE_NAMES if n not in self._candidate_layers]
        if missing:
            with self._selection_kept():
                below = [self.viewer.layers.index(x) for x in (self._points, self._shapes) if x]
                index = min(below) if below else len(self.viewer.layers)
                for name in missing:
                    layer = _layers.make_candidate_layer(image, name)
                    layer.editable = False
                    self.viewer.layers.insert(index, layer)
                    index += 1
                    _layers.bind_keys(layer, self._key_bindings())
                    self._candidate_layers[name] = layer
        return self.candidate_layers

    def _show_candidates(self, candidates: Candidates, request: _Request) -> None:
        self._ensure_candidate_layers()
        self._candidates = candidates
        self._candidates_plane = request.plane
        chosen = self._chosen if self._chosen is not None else candidates.best
        # The candidate on show first: it is the one the user waits for. The hidden two
        # are filled once napari had a chance to draw it.
        self._unfilled = set(range(len(CANDIDATE_NAMES))) - {chosen}
        self._fill(chosen)
        self._show_choice(chosen)
        QTimer.singleShot(0, self._fill_hidden)
        objects = "" if candidates.n_objects == 1 else f" for {candidates.n_objects} objects"
        notes = " ".join((*request.prompts.notes, *candidates.notes))
        self._say(
            f"{candidates.names[chosen]} shown{objects} (IoU {candidates.iou_scores[chosen]:.2f}); "
            f"1/2/3 to switch, C to commit. {notes}".strip(),
            notify=bool(notes),
        )

    def _fill(self, index: int) -> None:
        """Put candidate ``index`` of the current prediction into its layer."""
        candidates = self._candidates
        layer = self._candidate_layers.get(CANDIDATE_NAMES[index])
        self._unfilled.discard(index)
        if candidates is None or layer is None:
            return
        layer.data = candidates.labels[index]
        name = f"SAM {candidates.names[index]} (IoU {candidates.iou_scores[index]:.2f})"
        if layer.name != name:
            layer.name = name

    def _fill_hidden(self) -> None:
        for index in sorted(self._unfilled):
            self._fill(index)

    def _show_choice(self, index: int) -> None:
        for i, layer in enumerate(self.candidate_layers):
            if layer.visible != (i == index):
                layer.visible = i == index
        buttons = self.controls.candidate_buttons
        for i, button in enumerate(buttons):
            score = ""
            if self._candidates is not None:
                score = f"  IoU {self._candidates.iou_scores[i]:.2f}"
            button.setText(f"{i + 1}  {CANDIDATE_NAMES[i]}{score}")
        buttons[index].setChecked(True)

    def choose(self, index: int) -> None:
        """Show candidate ``index`` (0 subpart, 1 part, 2 whole) and make it the one committed."""
        if not 0 <= index < len(CANDIDATE_NAMES):
            raise ValueError(f"Candidate index must be 0, 1 or 2, got {index}.")
        self._chosen = index
        if index in self._unfilled:
            self._fill(index)
        if self._candidate_layers:
            self._show_choice(index)

    @property
    def chosen(self) -> int | None:
        """Index of the candidate on show, or None before a prediction."""
        if self._candidates is None:
            return self._chosen
        return self._chosen if self._chosen is not None else self._candidates.best

    def _clear_candidates(self) -> None:
        self._scheduler.invalidate()
        self._requested = None
        self._candidates = None
        self._unfilled.clear()
        for layer in self.candidate_layers:
            if layer.data.any():
                layer.data = np.zeros_like(layer.data)
            name = layer.name.split(" (")[0]
            if layer.name != name:
                layer.name = name

    # ------------------------------------------------------------------ commit
    def _ensure_objects_layer(self) -> Labels:
        image = self._image
        assert image is not None
        if self._objects is not None and _layers.fits_image(self._objects, image):
            return self._objects
        for layer in self.viewer.layers:
            if (
                isinstance(layer, Labels)
                and layer.name.startswith(_layers.OBJECTS_NAME)
                and _layers.fits_image(layer, image)
            ):
                self._objects = layer
                return layer
        with self._selection_kept():
            layer = _layers.make_objects_layer(image)
            self.viewer.layers.insert(self.viewer.layers.index(image) + 1, layer)
        self._objects = layer
        return layer

    def commit(self) -> list[int]:
        """Write the chosen candidate into the objects layer and clear the prompts.

        Returns:
            The object ids written (empty if nothing was committed; the reason is shown).
        """
        candidates, index = self._candidates, self.chosen
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
        wanted = self.controls.label_spin.value() or None
        try:
            written = _layers.commit_objects(
                objects,
                self._candidates_plane,
                mask,
                label=wanted,
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
        ids = ", ".join(map(str, written))
        self._say(
            f"Committed object {ids} to {objects.name!r} (Undo or Ctrl+Z there to undo).",
            notify=False,
        )
        return written

    def undo(self) -> None:
        """Undo the last change to the objects layer (a commit, or a paint stroke)."""
        if self._objects is None or not self._objects._undo_history:
            self._say("Nothing to undo.", notify=False)
            return
        self._objects.undo()
        self._say("Undid the last change to the objects.", notify=False)

    def clear_prompts(self) -> None:
        """Remove every prompt and the candidates."""
        self._clear_candidates()
        self._chosen = None
        if self._points is not None and len(self._points.data):
            self._points.data = np.zeros((0, self._points.ndim))
        if self._shapes is not None and self._shapes.nshapes:
            self._shapes.selected_data = set(range(self._shapes.nshapes))
            self._shapes.remove_selected()
        self._timer.stop()
        self._debouncer.fired()

    # ------------------------------------------------------------------ teardown
    def closeEvent(self, event: object) -> None:
        self.cancel_embedding()
        self._timer.stop()
        super().closeEvent(event)  # type: ignore[arg-type]


def _key_choose(widget: SamWidget, index: int, layer: object = None) -> None:
    widget.choose(index)


def _key_call(func: Callable[[], object], layer: object = None) -> None:
    func()
