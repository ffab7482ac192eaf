"""The widget's layered canvas: what it shows, and mouse gestures turned into prompts.

An ipycanvas ``MultiCanvas`` with five layers, bottom to top: the image, the committed
objects, the objects found by "segment everything" (outlined), the shown candidate mask, the
prompts (points, box, and the rubber band while dragging). Pictures go to the page as RGBA,
which ipycanvas encodes as PNG: lossless.

Each layer keeps what it shows here in Python and redraws itself when its front-end model
announces a (re)connected page (ipycanvas' ``client_ready`` event), so a reloaded page or a
reopened notebook gets the picture back rather than a blank canvas.

A press and release closer than :data:`CLICK_TOLERANCE` canvas pixels is a click, anything
longer a box; both are reported in image pixels. Mouse moves only redraw the rubber band.

The page sends mouse events only while the pointer is over the canvas. A drag that leaves it
is therefore kept open, its corner clamped to the edge it crossed: it goes on when the pointer
comes back, and ends at the next release over the canvas (a click there, if the button was
released outside). Escape drops it.

The canvas is drawn at :attr:`DisplayFrame.display_hw` pixels and scaled by the page (CSS) to
the output's width and a height that leaves room in the window; ipycanvas reports mouse
positions in canvas pixels whatever the scale, so the mapping to image pixels stays exact.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
from ipycanvas import MultiCanvas, hold_canvas
from ipywidgets import Layout

from sam_viz.jupyter.display import (
    DisplayFrame,
    labels_overlay_rgba,
    overlay_rgba,
    with_alpha,
)
from sam_viz.prompts import NEGATIVE, POSITIVE, PromptSet
from sam_viz.render import labels_to_rgba

IMAGE, OBJECTS, EVERYTHING, CANDIDATE, PROMPTS = range(5)
LAYERS = 5
CLICK_TOLERANCE = 4.0
# Height of the window left to the canvas: the notebook's own bars and a little margin.
WINDOW_MARGIN_PX = 220
_POINT_COLORS = {POSITIVE: "#19d219", NEGATIVE: "#e8231e"}


class PromptCanvas:
    """Five canvas layers showing an image, objects, everything's objects, a candidate and
    prompts.

    Attributes:
        widget: The ``MultiCanvas`` to put in a layout (it carries the CSS class
            ``sam-viz-canvas``).
        frame: Mapping between image pixels and canvas pixels.
    """

    def __init__(
        self,
        frame: DisplayFrame,
        display_rgb: np.ndarray,
        *,
        on_click: Callable[[float, float], None],
        on_box: Callable[[float, float, float, float], None],
        alpha: float = 0.45,
        on_drag_left: Callable[[], None] | None = None,
    ) -> None:
        """Args:
        frame: Image-to-canvas geometry.
        display_rgb: (h, w, 3) uint8 image at canvas size.
        on_click: Called with (x, y) image pixels for a click.
        on_box: Called with (x0, y0, x1, y1) image pixels for a drag.
        alpha: Opacity of mask fills.
        on_drag_left: Called when a drag leaves the canvas (it stays open).
        """
        dh, dw = frame.display_hw
        if display_rgb.shape[:2] != (dh, dw):
            raise ValueError(f"display_rgb has shape {display_rgb.shape}; the canvas is {dh}x{dw}.")
        self.frame = frame
        self.alpha = alpha
        self._on_click, self._on_box = on_click, on_box
        self._on_drag_left = on_drag_left
        self.image_rgba = with_alpha(display_rgb)
        self.objects_rgba: np.ndarray | None = None
        self.everything_rgba: np.ndarray | None = None
        self.candidate_rgba: np.ndarray | None = None
        self._prompts = PromptSet()
        self._drag_start: tuple[float, float] | None = None
        self._drag_end: tuple[float, float] | None = None

        self.widget = MultiCanvas(LAYERS, width=dw, height=dh)
        self.widget.add_class("sam-viz-canvas")
        self.widget.layout = fitted_layout(frame)
        self.widget.on_mouse_down(self._on_mouse_down)
        self.widget.on_mouse_move(self._on_mouse_move)
        self.widget.on_mouse_up(self._on_mouse_up)
        self.widget.on_mouse_out(self._on_mouse_out)
        self.widget.on_key_down(self._on_key_down)
        self._draw = {
            IMAGE: self._draw_image,
            OBJECTS: self._draw_objects,
            EVERYTHING: self._draw_everything,
            CANDIDATE: self._draw_candidate,
            PROMPTS: self._draw_prompts,
        }
        for layer, draw in self._draw.items():
            self.widget[layer].on_client_ready(self._redraw_on_ready(layer, draw))
        self.redraw()

    # ---------------------------------------------------------------------- content
    def show_objects(self, labels: np.ndarray) -> None:
        """Show a label image (H, W) of committed objects (0 is background)."""
        if labels.any():
            shown = self.frame.resample_nearest(labels)
            self.objects_rgba = labels_to_rgba(shown, alpha=self.alpha * 0.8)
        else:
            self.objects_rgba = None
        self._draw_objects()

    def show_everything(
        self,
        labels: np.ndarray | None,
        *,
        committed: np.ndarray | None = None,
        picked: Collection[int] = (),
    ) -> None:
        """Show the label image (H, W) "segment everything" found (None: nothing).

        Args:
            labels: The objects found, or None to show none.
            committed: (H, W) label image of committed objects: their pixels are left
                uncovered, so a committed object keeps its own colour.
            picked: Labels of picked objects, drawn more opaque with a white outline.
        """
        if labels is not None and committed is not None:
            labels = np.where(committed > 0, 0, labels)
        if labels is None or not labels.any():
            self.everything_rgba = None
        else:
            shown = self.frame.resample_nearest(labels)
            highlight = np.isin(shown, list(picked)) if picked else None
            self.everything_rgba = labels_overlay_rgba(
                shown, alpha=self.alpha * 0.6, highlight=highlight
            )
        self._draw_everything()

    def show_candidate(self, mask: np.ndarray | None, color: tuple[int, int, int]) -> None:
        """Show a candidate mask (H, W) bool in ``color``, or nothing for None."""
        self.candidate_rgba = (
            None
            if mask is None
            else overlay_rgba(self.frame.resample_nearest(mask), color, self.alpha)
        )
        self._draw_candidate()

    def show_prompts(self, prompts: PromptSet) -> None:
        """Show the points and box of a prompt set (and drop any rubber band and open drag:
        an action such as Clear or Commit ends a drag left open outside the canvas)."""
        self._prompts = prompts
        self._drag_start = self._drag_end = None
        self._draw_prompts()

    def redraw(self) -> None:
        """Send every layer to the page again."""
        with hold_canvas():
            for draw in self._draw.values():
                draw()

    def close(self) -> None:
        """Close the canvas widget and its layers."""
        for index in range(LAYERS):
            self.widget[index].close()
        self.widget.close()

    def _redraw_on_ready(self, layer: int, draw: Callable[[], None]) -> Callable[..., None]:
        def on_ready(*_: object) -> None:
            forget_current_canvas(self.widget[layer])
            with hold_canvas():
                draw()

        return on_ready

    # ---------------------------------------------------------------------- drawing
    def _put(self, layer: int, rgba: np.ndarray | None) -> None:
        canvas = self.widget[layer]
        canvas.clear()
        if rgba is not None:
            canvas.put_image_data(rgba, 0, 0)

    def _draw_image(self) -> None:
        self._put(IMAGE, self.image_rgba)

    def _draw_objects(self) -> None:
        self._put(OBJECTS, self.objects_rgba)

    def _draw_everything(self) -> None:
        self._put(EVERYTHING, self.everything_rgba)

    def _draw_candidate(self) -> None:
        self._put(CANDIDATE, self.candidate_rgba)

    def _draw_prompts(self, rubber_band: tuple[float, float, float, float] | None = None) -> None:
        layer = self.widget[PROMPTS]
        layer.clear()
        prompts = self._prompts
        if prompts.box is not None:
            (x0, y0), (x1, y1) = self.frame.to_display(np.reshape(prompts.box, (2, 2)))
            for width, color in ((3.0, "#000000"), (1.5, "#ffffff")):
                layer.line_width = width
                layer.stroke_style = color
                layer.stroke_rect(x0, y0, x1 - x0, y1 - y0)
        for x, y, label in prompts.points:
            dx, dy = self.frame.to_display(np.array([x, y]))
            layer.fill_style = _POINT_COLORS[label]
            layer.fill_circle(dx, dy, 5)
            layer.line_width = 1.5
            layer.stroke_style = "#ffffff"
            layer.stroke_circle(dx, dy, 5)
        if rubber_band is not None:
            x0, y0, x1, y1 = rubber_band
            layer.line_width = 1.5
            layer.stroke_style = "#ffd400"
            layer.set_line_dash([6, 4])
            layer.stroke_rect(x0, y0, x1 - x0, y1 - y0)
            layer.set_line_dash([])

    # ------------------------------------------------------------------------ mouse
    @property
    def dragging(self) -> bool:
        """Whether a drag is open (pressed on the canvas, not yet released over it)."""
        return self._drag_start is not None

    def cancel_drag(self) -> None:
        """Drop an open drag and its rubber band."""
        if self._drag_start is not None:
            self._drag_start = self._drag_end = None
            with hold_canvas():
                self._draw_prompts()

    def _clamp(self, x: float, y: float) -> tuple[float, float]:
        """A canvas position moved onto the canvas (its nearest point on the edge)."""
        dh, dw = self.frame.display_hw
        return min(max(float(x), 0.0), float(dw)), min(max(float(y), 0.0), float(dh))

    def _on_mouse_down(self, x: float, y: float) -> None:
        # A press while a drag is open means the button was released outside the canvas:
        # the drag goes on and ends at this press's release.
        if self._drag_start is None:
            self._drag_start = self._clamp(x, y)
        self._drag_end = self._clamp(x, y)

    def _on_mouse_move(self, x: float, y: float) -> None:
        """While dragging, redraw the prompts layer with the rubber band; nothing else."""
        if self._drag_start is None:
            return
        self._drag_end = self._clamp(x, y)
        self._draw_band()

    def _on_mouse_up(self, x: float, y: float) -> None:
        start, self._drag_start, self._drag_end = self._drag_start, None, None
        if start is not None:
            self._gesture(start, self._clamp(x, y))

    def _on_mouse_out(self, x: float, y: float) -> None:
        """A drag leaving the canvas stays open, its corner clamped to the edge it crossed
        (the page sends no events from outside the canvas, not even the release)."""
        if self._drag_start is None:
            return
        self._drag_end = self._clamp(x, y)
        self._draw_band()
        if self._on_drag_left is not None:
            self._on_drag_left()

    def _on_key_down(self, key: str, *_: object) -> None:
        if key == "Escape":
            self.cancel_drag()

    def _draw_band(self) -> None:
        assert self._drag_start is not None and self._drag_end is not None
        with hold_canvas():
            self._draw_prompts(rubber_band=(*self._drag_start, *self._drag_end))

    def _gesture(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        x0, y0 = self.frame.to_image(*start)
        x1, y1 = self.frame.to_image(*end)
        if np.hypot(end[0] - start[0], end[1] - start[1]) < CLICK_TOLERANCE:
            self._on_click(x1, y1)
        else:
            self._on_box(x0, y0, x1, y1)


def fitted_layout(frame: DisplayFrame) -> Layout:
    """CSS size of the canvas: the output's width, or less so that its height leaves
    :data:`WINDOW_MARGIN_PX` of the window free; the aspect ratio is the image's."""
    dh, dw = frame.display_hw
    aspect = dw / dh
    fit_window = f"max(160px, calc((100vh - {WINDOW_MARGIN_PX}px) * {aspect:.6f}))"
    return Layout(
        width=f"min(100%, {fit_window})",
        height="auto",
        min_width="0",
        max_width="100%",
        flex="0 0 auto",
    )


def forget_current_canvas(canvas: object) -> None:
    """Make ipycanvas name the target canvas again in the next drawing batch.

    ipycanvas sends all drawing through one shared manager and names the target canvas only
    when it changes. A page that has just (re)connected has no current canvas and drops a
    batch that does not name one (with ipycanvas 0.14 this includes the drawing done before
    the widget was first shown). Call this before redrawing from a ``client_ready``
    callback.
    """
    manager = getattr(canvas, "_canvas_manager", None)
    if manager is not None and hasattr(manager, "_current_canvas"):
        manager._current_canvas = None
