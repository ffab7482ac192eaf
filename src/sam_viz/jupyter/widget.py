"""The interactive SAM widget: click or drag on an image, see SAM's three candidates, commit.

Layers (an ipycanvas ``MultiCanvas``, bottom to top): the image, the committed objects,
the shown candidate mask, the prompts (points, box, the rubber band while dragging).

Everything the canvas shows is drawn from state held here in Python, and each layer
redraws itself when its front-end model announces it is ready (ipycanvas' ``client_ready``
event). A page reload, a reopened notebook or a new front end therefore gets the current
picture, not a blank canvas; a second view on the same page mirrors the same front-end
model and is not blank either.

Coordinates in the Python API are ``(x, y)`` pixels of the original image; the mouse
handlers receive canvas pixels and convert them once, through :class:`DisplayFrame`.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
from ipycanvas import MultiCanvas, hold_canvas

from sam_viz.image import Contrast, to_rgb01, validate_image
from sam_viz.jupyter.display import DisplayFrame, overlay_rgba, with_alpha
from sam_viz.jupyter.session import PromptSet, Session
from sam_viz.objects import ObjectLabels
from sam_viz.predictor import Cancelled, Prediction, Predictor
from sam_viz.prompts import NEGATIVE, POSITIVE
from sam_viz.render import CANDIDATE_COLORS, labels_to_rgba, to_display_rgb

# A press and release closer than this (canvas pixels) is a click, farther apart a box.
CLICK_TOLERANCE = 4.0
IMAGE, OBJECTS, CANDIDATE, PROMPTS = range(4)
_POINT_COLORS = {POSITIVE: "#19d219", NEGATIVE: "#e8231e"}


class SamWidget(widgets.VBox):
    """Segment Anything on one image, in a notebook.

    Drag a box around an object, click to add points (the toggle picks positive or
    negative), switch between the three candidates (subpart / part / whole), and commit
    the chosen one into :attr:`labels`. Every action is also a method, so a notebook can
    drive the widget without a mouse.

    The image embedding is computed in a background thread when ``background`` is True
    (the default), so the widget shows up at once with a progress bar; methods that need
    it wait for it (see :meth:`wait`).

    Example::

        widget = SamWidget(skimage.data.coins())   # the embedded default model
        widget                                     # show it
        widget.add_box(20, 10, 80, 70)             # what a drag does
        widget.select("whole")
        widget.commit()                            # -> object id 1 in widget.labels
    """

    def __init__(
        self,
        image: object,
        predictor: Predictor | None = None,
        *,
        contrast: Contrast = "auto",
        labels: np.ndarray | None = None,
        max_display_size: int = 640,
        alpha: float = 0.45,
        background: bool = True,
    ) -> None:
        """Args:
        image: 2-D grayscale, RGB or RGBA array of any numeric dtype
            (see :mod:`sam_viz.image`).
        predictor: The predictor to use (it may be shared with napari or another
            widget); the embedded default model is loaded when None.
        contrast: Contrast rule for display and for the model (:func:`sam_viz.image.to_rgb01`).
        labels: An (H, W) integer label image to add objects to; a new one when None.
        max_display_size: Longest side of the canvas in screen pixels; larger images are
            shown downscaled (prompts are still in full-resolution pixels).
        alpha: Opacity of the mask overlays.
        background: Compute the image embedding in a background thread.

        Raises:
            ValueError / TypeError: For an image or labels of an unsupported shape or dtype.
        """
        self._image = validate_image(image)
        self._contrast = contrast
        height, width = self._image.shape[:2]
        if labels is not None and np.shape(labels) != (height, width):
            raise ValueError(
                f"labels have shape {np.shape(labels)}; they must match the image's "
                f"(height, width) = {(height, width)}."
            )
        self._objects = ObjectLabels(labels if labels is not None else (height, width))
        self._frame = DisplayFrame.fit((height, width), max_display_size)
        self._alpha = float(alpha)
        self._display_rgb = self._frame.resample_rgb(
            to_display_rgb(to_rgb01(self._image, contrast=contrast))
        )

        self._predictor = predictor
        self._embedding: Any = None
        self._failure: str | None = None
        self._ready = threading.Event()
        self._cancel = threading.Event()
        self._session = Session(self._predict, self._objects)
        self._drag_start: tuple[float, float] | None = None
        self._updating_controls = False

        self._build_views()
        self._draw_all()
        super().__init__(children=self._children())
        self.add_class("sam-viz-widget")

        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._prepare, name="sam-viz-embed", daemon=True)
            self._thread.start()
        else:
            self._prepare()

    # ------------------------------------------------------------------------ views
    def _build_views(self) -> None:
        dh, dw = self._frame.display_hw
        self.canvas = MultiCanvas(4, width=dw, height=dh)
        self.canvas.add_class("sam-viz-canvas")
        self.canvas.layout = widgets.Layout(width=f"{dw}px", height=f"{dh}px")
        self.canvas.on_mouse_down(self._on_mouse_down)
        self.canvas.on_mouse_move(self._on_mouse_move)
        self.canvas.on_mouse_up(self._on_mouse_up)
        self.canvas.on_mouse_out(self._on_mouse_out)
        for layer, draw in ((IMAGE, self._draw_image), (OBJECTS, self._draw_objects),
                            (CANDIDATE, self._draw_candidate), (PROMPTS, self._draw_prompts)):
            self.canvas[layer].on_client_ready(self._redraw_on_ready(draw))

        self.point_mode = widgets.ToggleButtons(
            options=[("+ point", POSITIVE), ("\u2212 point", NEGATIVE)],
            value=POSITIVE,
            description="Click adds",
            tooltips=["A click marks the object", "A click marks background to exclude"],
            style={"button_width": "70px"},
        )
        self.candidate_buttons = widgets.ToggleButtons(
            options=[("no candidates yet", -1)], value=-1, disabled=True,
            description="Candidate", style={"button_width": "110px"},
        )
        self.candidate_buttons.observe(self._on_candidate_toggle, names="value")
        self.legend = widgets.HTML()
        self.undo_button = widgets.Button(description="Undo", icon="undo",
                                          tooltip="Undo the last prompt, clear or commit")
        self.clear_button = widgets.Button(description="Clear", icon="eraser",
                                           tooltip="Remove all prompts of this object")
        self.commit_button = widgets.Button(description="Commit", icon="check",
                                            button_style="success",
                                            tooltip="Add the shown candidate to the labels")
        self.undo_button.on_click(lambda _: self._from_ui(self.undo))
        self.clear_button.on_click(lambda _: self._from_ui(self.clear))
        self.commit_button.on_click(lambda _: self._from_ui(self.commit))
        self.progress = widgets.FloatProgress(value=0, min=0, max=1, description="Embedding",
                                              layout=widgets.Layout(width="320px"))
        self.status = widgets.HTML()
        self.objects_info = widgets.HTML()
        self._update_controls()

    def _children(self) -> list[widgets.Widget]:
        buttons = widgets.HBox([self.undo_button, self.clear_button, self.commit_button,
                                self.objects_info])
        return [self.status, self.progress, self.point_mode, self.canvas,
                self.candidate_buttons, self.legend, buttons]

    # ------------------------------------------------------------------ background work
    def _prepare(self) -> None:
        """Load the default model if needed and embed the image; report in the status."""
        try:
            if self._predictor is None:
                self._set_status("Loading the default model (LiteMedSAM)\u2026")
                self._predictor = Predictor.from_pretrained(None, progress=False)
            self._set_status("Computing the image embedding\u2026")
            self._embedding = self._predictor.set_image(
                self._image, contrast=self._contrast, progress=self._on_progress,
                cancel=self._cancel,
            )
        except Cancelled:
            self._failure = "The image embedding was cancelled."
        except Exception as err:  # shown in the widget, not as a traceback
            self._failure = _describe(err)
            self._set_status(f"Cannot segment: {self._failure}", kind="error")
        else:
            self.progress.value = 1.0
            self.progress.layout.display = "none"
            self._set_status(self._ready_message())
        finally:
            self._ready.set()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.value = done / max(total, 1)

    def _ready_message(self) -> str:
        assert self._predictor is not None
        spec = self._predictor.spec
        if spec.trained_with_points:
            return ("Ready. Drag a box around an object or click on it; "
                    "clicks refine (+ object, \u2212 background).")
        return (f"Ready. <b>{html.escape(spec.title)}</b> was trained with boxes only: "
                "<b>drag a box</b> around an object. A click alone gives an empty mask with "
                "this model; after a box, clicks refine it (+ object, \u2212 background).")

    def wait(self, timeout: float | None = None) -> None:
        """Block until the image embedding is ready.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Raises:
            TimeoutError: If it is not ready after ``timeout`` seconds.
            RuntimeError: If the model could not be loaded or the embedding failed
                (the message says why).
        """
        if not self._ready.wait(timeout):
            raise TimeoutError(f"The image embedding was not ready after {timeout} s.")
        if self._failure is not None:
            raise RuntimeError(self._failure)

    @property
    def ready(self) -> bool:
        """True once the image embedding is computed (and did not fail)."""
        return self._ready.is_set() and self._failure is None

    @property
    def predictor(self) -> Predictor | None:
        """The predictor in use (None until the default one has loaded)."""
        return self._predictor

    def close(self) -> None:
        """Stop a running embedding and close the widget and its children."""
        self._cancel.set()
        for child in (self.canvas, self.point_mode, self.candidate_buttons, self.legend,
                      self.undo_button, self.clear_button, self.commit_button, self.progress,
                      self.status, self.objects_info):
            child.close()
        super().close()

    # ---------------------------------------------------------------------- public API
    @property
    def image(self) -> np.ndarray:
        """The image being segmented, as given."""
        return self._image

    @property
    def display_frame(self) -> DisplayFrame:
        """Mapping between image pixels and canvas pixels."""
        return self._frame

    @property
    def prompts(self) -> PromptSet:
        """The current object's prompts (points and box, image pixels)."""
        return self._session.prompts

    @property
    def candidates(self) -> Prediction | None:
        """The current prediction: ``masks`` (3, H, W) bool, ``names``
        ("subpart", "part", "whole"), ``iou_scores``; None when there are no prompts."""
        return self._session.prediction

    @property
    def selected(self) -> str | None:
        """Name of the candidate shown and committed by :meth:`commit`, or None."""
        return self._session.selected

    @property
    def mask(self) -> np.ndarray | None:
        """The shown candidate mask (H, W) bool, or None."""
        return self._session.mask

    @property
    def labels(self) -> np.ndarray:
        """The (H, W) label image of committed objects (0 is background); the live array."""
        return self._objects.labels

    @property
    def objects(self) -> ObjectLabels:
        """The committed objects."""
        return self._objects

    def add_point(self, x: float, y: float, positive: bool = True) -> Prediction:
        """Add a point prompt at image pixel (x, y) and predict.

        Args:
            x: Column coordinate in original-image pixels.
            y: Row coordinate in original-image pixels.
            positive: True marks the object, False marks background to exclude.

        Returns:
            The new candidates.

        Raises:
            ValueError: If the point lies outside the image (also shown in the status line).
            RuntimeError: If the model or embedding is not available.
        """
        prediction = self._act(self._session.add_point, x, y, positive)
        spec = self._predictor.spec if self._predictor is not None else None
        if spec is not None and not spec.trained_with_points and self.prompts.box is None:
            self._set_status(
                "This model was trained with boxes only, so a point alone gives an empty or "
                "poor mask. <b>Drag a box</b> around the object; points then refine it.",
                kind="warning",
            )
        return prediction

    def add_box(self, x0: float, y0: float, x1: float, y1: float) -> Prediction:
        """Set the box prompt (x0, y0, x1, y1) in image pixels and predict.

        A new box replaces the previous one (SAM takes one box per object); :meth:`undo`
        brings the previous one back. Corners may come in any order; a box reaching past
        the image is clipped to it.

        Raises:
            ValueError: If the box has no area or lies outside the image.
            RuntimeError: If the model or embedding is not available.
        """
        return self._act(self._session.add_box, x0, y0, x1, y1)

    def select(self, name_or_index: str | int) -> None:
        """Show candidate ``"subpart"``, ``"part"``, ``"whole"`` or its index 0..2.

        Raises:
            ValueError: If there are no candidates or no such candidate.
        """
        self._act(self._session.select, name_or_index, status=None, layers=(CANDIDATE,))

    def commit(self) -> int:
        """Add the shown candidate to :attr:`labels` as a new object and start a new one.

        Pixels of objects committed earlier are kept (the new object fills the rest).

        Returns:
            The new object's label id.

        Raises:
            ValueError: If there is no candidate, or it would add no pixel.
        """
        label = self._act(self._session.commit, status="")
        self._set_status(f"Committed object {label}. Drag a box around the next object.")
        return label

    def undo(self) -> bool:
        """Undo the last action: a prompt, a clear or a commit (exactly).

        Returns:
            False if there was nothing to undo.
        """
        was_commit = self._session.last_step_committed()
        done = self._act(self._session.undo, status="")
        message = "Nothing to undo." if not done else "Commit undone." if was_commit else "Undone."
        self._set_status(message)
        return done

    def clear(self) -> None:
        """Remove all prompts of the current object (undoable); committed objects stay."""
        if self._act(self._session.clear, status=""):
            self._set_status("Prompts cleared.")

    def redraw(self) -> None:
        """Send every layer to the front end again (done automatically on reconnect)."""
        self._draw_all()

    # ------------------------------------------------------------------- prediction
    def _predict(self, prompts: PromptSet) -> Prediction:
        self.wait()
        assert self._predictor is not None
        return self._predictor.predict(
            points_xy=prompts.points_xy if prompts.points else None,
            point_labels=prompts.point_labels if prompts.points else None,
            box_xyxy=prompts.box,
            multimask_output=True,
            embedding=self._embedding,
        )

    def _act(self, action: Callable[..., Any], *args: Any, status: str | None = "ready",
             layers: tuple[int, ...] = (CANDIDATE, PROMPTS)) -> Any:
        """Run a session action, then redraw ``layers`` (and the objects if they changed).

        An error is shown in the status line, the prompts layer is redrawn (no rubber band
        left) and the error re-raised.
        """
        objects_version = self._session.objects_version
        try:
            result = action(*args)
        except Exception as err:
            self._set_status(_describe(err), kind="error")
            with hold_canvas():
                self._draw_prompts()
            raise
        with hold_canvas():
            if self._session.objects_version != objects_version:
                self._draw_objects()
            if CANDIDATE in layers:
                self._draw_candidate()
            if PROMPTS in layers:
                self._draw_prompts()
        self._update_controls()
        if status == "ready" and self._predictor is not None:
            self._set_status(self._ready_message())
        return result

    # ------------------------------------------------------------------------ drawing
    def _draw_all(self) -> None:
        with hold_canvas():
            self._draw_image()
            self._draw_objects()
            self._draw_candidate()
            self._draw_prompts()

    def _redraw_on_ready(self, draw: Callable[[], None]) -> Callable[[], None]:
        def on_ready(*_: object) -> None:
            forget_current_canvas(self.canvas)
            with hold_canvas():
                draw()

        return on_ready

    def _draw_image(self) -> None:
        layer = self.canvas[IMAGE]
        layer.clear()
        layer.put_image_data(with_alpha(self._display_rgb), 0, 0)

    def _draw_objects(self) -> None:
        layer = self.canvas[OBJECTS]
        layer.clear()
        if self._objects.labels.any():
            shown = self._frame.resample_nearest(self._objects.labels)
            layer.put_image_data(labels_to_rgba(shown, alpha=self._alpha * 0.8), 0, 0)
        self._update_objects_info()

    def candidate_rgba(self) -> np.ndarray | None:
        """The RGBA picture (canvas size) of the shown candidate, as sent to the canvas."""
        mask = self.mask
        if mask is None:
            return None
        color = candidate_color(self.selected or "")
        return overlay_rgba(self._frame.resample_nearest(mask), color, self._alpha)

    def _draw_candidate(self) -> None:
        layer = self.canvas[CANDIDATE]
        layer.clear()
        rgba = self.candidate_rgba()
        if rgba is not None:
            layer.put_image_data(rgba, 0, 0)

    def _draw_prompts(self, rubber_band: tuple[float, float, float, float] | None = None) -> None:
        layer = self.canvas[PROMPTS]
        layer.clear()
        if self.prompts.box is not None:
            (x0, y0), (x1, y1) = self._frame.to_display(np.reshape(self.prompts.box, (2, 2)))
            layer.line_width = 3
            layer.stroke_style = "#000000"
            layer.stroke_rect(x0, y0, x1 - x0, y1 - y0)
            layer.line_width = 1.5
            layer.stroke_style = "#ffffff"
            layer.stroke_rect(x0, y0, x1 - x0, y1 - y0)
        radius = 5
        for x, y, label in self.prompts.points:
            dx, dy = self._frame.to_display(np.array([x, y]))
            layer.fill_style = _POINT_COLORS[label]
            layer.fill_circle(dx, dy, radius)
            layer.line_width = 1.5
            layer.stroke_style = "#ffffff"
            layer.stroke_circle(dx, dy, radius)
        if rubber_band is not None:
            x0, y0, x1, y1 = rubber_band
            layer.line_width = 1.5
            layer.stroke_style = "#ffd400"
            layer.set_line_dash([6, 4])
            layer.stroke_rect(x0, y0, x1 - x0, y1 - y0)
            layer.set_line_dash([])

    # ------------------------------------------------------------------------ controls
    def _update_controls(self) -> None:
        prediction = self.candidates
        self._updating_controls = True
        try:
            if prediction is None:
                self.candidate_buttons.options = [("no candidates yet", -1)]
                self.candidate_buttons.value = -1
                self.candidate_buttons.disabled = True
                self.legend.value = ""
            else:
                options = [(f"{name} {score:.2f}", i) for i, (name, score)
                           in enumerate(zip(prediction.names, prediction.iou_scores, strict=True))]
                if list(self.candidate_buttons.options) != options:
                    self.candidate_buttons.options = options
                self.candidate_buttons.value = self._session.selected_index
                self.candidate_buttons.disabled = False
                self.legend.value = self._legend_html(prediction)
        finally:
            self._updating_controls = False
        self.undo_button.disabled = not self._session.can_undo
        self.clear_button.disabled = self.prompts.empty
        self.commit_button.disabled = prediction is None

    def _legend_html(self, prediction: Prediction) -> str:
        items = []
        scores = zip(prediction.names, prediction.iou_scores, strict=True)
        for i, (name, score) in enumerate(scores):
            r, g, b = candidate_color(name)
            area = int(prediction.masks[i].sum())
            text = f"{html.escape(name)}: IoU {score:.3f}, {area} px"
            if i == self._session.selected_index:
                text = f"<b>{text} (shown)</b>"
            swatch = (f"<span style='display:inline-block;width:0.9em;height:0.9em;"
                      f"background:rgb({r},{g},{b});margin-right:0.3em'></span>")
            items.append(f"<span style='margin-right:1.2em'>{swatch}{text}</span>")
        return "<div class='sam-viz-legend'>" + "".join(items) + "</div>"

    def _update_objects_info(self) -> None:
        count = self._objects.object_count
        self.objects_info.value = (
            f"<span style='margin-left:1em'>{count} object{'s' if count != 1 else ''} "
            "committed</span>"
        )

    def _on_candidate_toggle(self, change: dict[str, Any]) -> None:
        if self._updating_controls or change["new"] is None or change["new"] < 0:
            return
        self._from_ui(self.select, int(change["new"]))

    def _set_status(self, message: str, kind: str = "info") -> None:
        """Show ``message`` (HTML) in the status line; kind is info, warning or error."""
        color = {"info": "inherit", "warning": "#9a6700", "error": "#c62828"}[kind]
        prefix = {"info": "", "warning": "\u26a0 ", "error": "\u2716 "}[kind]
        self.status.value = (f"<div class='sam-viz-status sam-viz-{kind}' "
                             f"style='color:{color}'>{prefix}{message}</div>")

    def _from_ui(self, action: Callable[..., Any], *args: Any) -> None:
        """Run an action started from the page: errors go to the status line, not a traceback."""
        try:
            action(*args)
        except Exception as err:
            self._set_status(_describe(err), kind="error")

    # ------------------------------------------------------------------------ mouse
    def _on_mouse_down(self, x: float, y: float) -> None:
        self._drag_start = (x, y)

    def _on_mouse_move(self, x: float, y: float) -> None:
        """While dragging, draw the rubber band on the prompts layer only; never predict."""
        if self._drag_start is None:
            return
        x0, y0 = self._drag_start
        with hold_canvas():
            self._draw_prompts(rubber_band=(x0, y0, x, y))

    def _on_mouse_up(self, x: float, y: float) -> None:
        start, self._drag_start = self._drag_start, None
        if start is None:
            return
        self._finish_gesture(start, (x, y))

    def _on_mouse_out(self, x: float, y: float) -> None:
        """A drag leaving the canvas ends there (the box is clipped to the image)."""
        start, self._drag_start = self._drag_start, None
        if start is None:
            return
        if np.hypot(x - start[0], y - start[1]) < CLICK_TOLERANCE:
            self._draw_prompts()
            return
        self._finish_gesture(start, (x, y))

    def _finish_gesture(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        if not self._ready.is_set():
            self._draw_prompts()
            self._set_status(
                f"Still computing the image embedding ({self.progress.value:.0%}); "
                "try again in a moment.", kind="warning")
            return
        dh, dw = self._frame.display_hw
        start = (min(max(start[0], 0.0), dw), min(max(start[1], 0.0), dh))
        end = (min(max(end[0], 0.0), dw), min(max(end[1], 0.0), dh))
        if np.hypot(end[0] - start[0], end[1] - start[1]) < CLICK_TOLERANCE:
            x, y = self._frame.to_image(*end)
            self._from_ui(self.add_point, x, y, self.point_mode.value == POSITIVE)
        else:
            x0, y0 = self._frame.to_image(*start)
            x1, y1 = self._frame.to_image(*end)
            self._from_ui(self.add_box, x0, y0, x1, y1)


def candidate_color(name: str) -> tuple[int, int, int]:
    """Overlay colour (RGB) of a candidate by name (SAM's single mask: ``"mask"``)."""
    return CANDIDATE_COLORS.get(name, CANDIDATE_COLORS["mask"])


def _describe(err: BaseException) -> str:
    """A one-line, HTML-safe description of an error for the status line."""
    message = str(err) or type(err).__name__
    if not isinstance(err, (ValueError, TypeError, RuntimeError, KeyError)):
        message = f"{type(err).__name__}: {message}"
    return html.escape(message)


def forget_current_canvas(canvas: object) -> None:
    """Make ipycanvas name the target canvas again in the next drawing batch.

    ipycanvas sends all drawing through one shared manager and names the target canvas only
    when it changes. A front end that has just (re)connected has no current canvas, so the
    first batch after a ``client_ready`` event must name it, or the page drops it and every
    later batch. Call this before redrawing from a ``client_ready`` callback.
    """
    manager = getattr(canvas, "_canvas_manager", None)
    if manager is not None and hasattr(manager, "_current_canvas"):
        manager._current_canvas = None
