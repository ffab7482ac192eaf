"""Views that teach how SAM reads a prompt, drawn from a real model's weights.

:class:`PromptEncoderExplorer` is one interactive view: move a point (sliders or a click on
the image) and watch its positional encoding, the learned embedding added to it, the dense
mask-prompt path and the decoder's output tokens change. :func:`figure` and the ``*_figure``
helpers make static pictures of the same steps for a notebook (HTML with PNG images, so no
plotting library is needed). The numbers come from :mod:`sam_viz.jupyter.anatomy`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas, hold_canvas

from sam_viz.image import to_rgb01
from sam_viz.jupyter import anatomy
from sam_viz.jupyter.canvas import forget_current_canvas
from sam_viz.jupyter.display import (
    DisplayFrame,
    colorize,
    draw_marker,
    draw_rectangle,
    fit_nearest,
    mosaic,
    overlay_rgba,
    png_bytes,
    strip,
    with_alpha,
)
from sam_viz.jupyter.widget import candidate_color
from sam_viz.predictor import Predictor
from sam_viz.prompts import POSITIVE
from sam_viz.render import composite, to_display_rgb

Panel = tuple[str, np.ndarray]


# --------------------------------------------------------------------------- static figures
def figure(panels: Sequence[Panel], *, title: str | None = None) -> Any:
    """Pictures with captions side by side, as an ``IPython.display.HTML`` object.

    Args:
        panels: (caption, (H, W, 3) uint8 picture) pairs.
        title: An optional heading.
    """
    from IPython.display import HTML

    return HTML(figure_html(panels, title=title))


def figure_html(panels: Sequence[Panel], *, title: str | None = None) -> str:
    """The HTML of :func:`figure`: PNG images inlined as data URIs, captions below them."""
    cells = []
    for caption, picture in panels:
        data = base64.b64encode(png_bytes(picture)).decode("ascii")
        cells.append(
            "<figure style='display:inline-block;margin:0 12px 8px 0;vertical-align:top'>"
            f"<img src='data:image/png;base64,{data}' style='image-rendering:pixelated'/>"
            f"<figcaption style='font-size:85%;max-width:{max(picture.shape[1], 120)}px'>"
            f"{html.escape(caption)}</figcaption></figure>"
        )
    heading = f"<h4>{html.escape(title)}</h4>" if title else ""
    return f"<div class='sam-viz-figure'>{heading}{''.join(cells)}</div>"


def frequency_figure(model: Any, *, count: int = 4, side: int = 160,
                     marker_xy_model: tuple[float, float] | None = None) -> list[Panel]:
    """Panels of ``count`` Fourier channels of the image positional encoding, long to short
    wavelength, with an optional point marked (model-input pixels)."""
    dense = anatomy.image_positional_encoding(model)
    lengths = anatomy.wavelengths(model)
    panels = []
    for channel in anatomy.frequency_channels(model, count):
        picture = fit_nearest(colorize(dense[channel], limit=1.0), side)
        if marker_xy_model is not None:
            picture = _mark(picture, marker_xy_model, model)
        panels.append((f"sin channel {channel}: wavelength {lengths[channel]:.0f} px",
                       picture))
    return panels


def _mark(picture: np.ndarray, xy_model: tuple[float, float], model: Any,
          color: tuple[int, int, int] = (40, 220, 40)) -> np.ndarray:
    """Mark a model-input point on a picture that shows the whole (square) model input."""
    height, width = anatomy.input_size(model)
    px = (xy_model[0] + 0.5) / width * picture.shape[1]
    py = (xy_model[1] + 0.5) / height * picture.shape[0]
    return draw_marker(picture, (px, py), color, radius=3)


def token_strips(tokens: Sequence[anatomy.SparseToken], *, cell: int = 2) -> list[Panel]:
    """For each sparse token: its positional part, learned part and sum as heat strips."""
    limit = max(float(np.abs(t.total).max()) for t in tokens) if tokens else 1.0
    panels = []
    for token in tokens:
        where = "" if token.xy_model is None else \
            f" at ({token.xy_model[0]:.1f}, {token.xy_model[1]:.1f}) model px"
        picture = np.concatenate([
            strip(token.positional, cell=cell, limit=limit), _gap(token, cell),
            strip(token.learned, cell=cell, limit=limit), _gap(token, cell),
            strip(token.total, cell=cell, limit=limit),
        ])
        panels.append((f"{token.kind}{where}: positional (top) + learned (middle) = "
                       "token (bottom)", picture))
    return panels


def _gap(token: anatomy.SparseToken, cell: int) -> np.ndarray:
    return np.full((4, len(token.total) * cell, 3), 255, np.uint8)


def mask_path_figure(stages: Sequence[anatomy.MaskStage], *, side: int = 160,
                     max_channels: int = 16) -> list[Panel]:
    """The input and the output of each conv/GELU step of the mask path, as mosaics (each
    channel relative to its median, scaled to its own largest deviation)."""
    panels = []
    for stage in stages:
        if stage.name in ("LayerNorm2d",):
            continue
        maps = stage.maps[:max_channels]
        shown = f"{min(len(stage.maps), max_channels)} of {len(stage.maps)}" \
            if len(stage.maps) > max_channels else f"{len(stage.maps)}"
        size = f"{stage.maps.shape[1]}x{stage.maps.shape[2]}"
        if len(stage.maps) == 1:  # the mask logits: the sign matters (red inside)
            panels.append((f"{stage.name}: {size}", fit_nearest(mosaic(maps), side)))
        else:
            panels.append((f"{stage.name}: {shown} channel(s) of {size}, each relative to "
                           "its median", fit_nearest(mosaic(maps, centered=True), side)))
    return panels


def decoder_figure(trace: anatomy.DecoderTrace, *, side: int = 128) -> list[Panel]:
    """Each mask token's low-res mask logits (each scaled to its own largest magnitude:
    red above 0 is inside the mask) with its IoU score and candidate name."""
    panels = []
    for k, logits in enumerate(trace.low_res_logits):
        name = trace.candidate_names[k]
        caption = f"mask token {k} ({name}): IoU {trace.iou_scores[k]:.3f}"
        panels.append((caption, fit_nearest(colorize(logits), side)))
    return panels


# ----------------------------------------------------------------------- interactive view
class PromptEncoderExplorer(widgets.VBox):
    """Move a point and watch what SAM's prompt encoder and decoder do with it.

    Shows, updated on every move: the image with the prompts; a few Fourier channels of the
    positional encoding with the point marked; the similarity between the point's encoding
    and the image's (a bump at the point); the point's 256 numbers, the learned embedding
    added to them and their sum (and the box corners'); the dense mask-prompt path when the
    best mask is fed back; and the decoder's four mask tokens with their IoU scores.
    """

    def __init__(
        self,
        image: object,
        predictor: Predictor | None = None,
        *,
        point: tuple[float, float] | None = None,
        positive: bool = True,
        box: tuple[float, float, float, float] | None = None,
        feed_mask: bool = False,
        side: int = 192,
    ) -> None:
        """Args:
        image: Any image the core accepts.
        predictor: The predictor to use; the embedded default when None.
        point: Starting point (x, y) in image pixels; the box or image centre by default.
        positive: Whether the point is positive.
        box: An optional box (x0, y0, x1, y1) in image pixels used with the point.
        feed_mask: Feed the best mask of a first pass back as a mask prompt (SAM's iterative
            refinement), to show the dense path.
        side: Size in screen pixels of each map.
        """
        self.predictor = predictor or Predictor.from_pretrained(None, progress=False)
        self.model = self.predictor.model
        self.embedding = self.predictor.set_image(image)
        self.side = side
        height, width = self.embedding.frame.original_size
        self._rgb = to_display_rgb(to_rgb01(image))
        if point is None:
            point = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) if box is not None \
                else (width / 2, height / 2)
        self._box = box
        self._dense_pe = anatomy.image_positional_encoding(self.model)
        self._channels = anatomy.frequency_channels(self.model, 4)
        self._lengths = anatomy.wavelengths(self.model)

        slider = {"continuous_update": False, "readout_format": ".0f",
                  "layout": widgets.Layout(width="420px")}
        self.x = widgets.FloatSlider(value=point[0], min=0, max=width - 1, step=1,
                                     description="x (px)", **slider)
        self.y = widgets.FloatSlider(value=point[1], min=0, max=height - 1, step=1,
                                     description="y (px)", **slider)
        self.positive = widgets.ToggleButtons(options=[("positive", True), ("negative", False)],
                                              value=positive, description="Point")
        self.use_box = widgets.Checkbox(value=box is not None, disabled=box is None,
                                        description="with the box")
        self.feed_mask = widgets.Checkbox(value=feed_mask,
                                          description="feed the best mask back (mask prompt)")
        self.frame = DisplayFrame.fit((height, width), 2 * side)
        dh, dw = self.frame.display_hw
        self.image_canvas = Canvas(width=dw, height=dh,
                                   layout=widgets.Layout(width=f"{dw}px", height=f"{dh}px"))
        self.image_canvas.on_mouse_down(self._on_click)
        self.image_canvas.on_client_ready(self._on_client_ready)
        self.note = widgets.HTML()
        self.pe_maps = [_ImagePanel() for _ in self._channels]
        self.similarity = _ImagePanel()
        self.tokens = widgets.VBox()
        self.mask_path = widgets.HBox()
        self.decoder = [_ImagePanel() for _ in range(4)]
        for control in (self.x, self.y, self.positive, self.use_box, self.feed_mask):
            control.observe(lambda _change: self.update(), names="value")
        self.trace: anatomy.DecoderTrace | None = None
        self._holding = False
        self.stages: list[anatomy.MaskStage] = []

        controls = widgets.VBox([self.x, self.y, self.positive, self.use_box, self.feed_mask,
                                 self.note])
        super().__init__([
            widgets.HBox([self.image_canvas, controls]),
            _section("1. Positional encoding: random Fourier features of (x, y). "
                     "Four of the 128 frequencies over the whole model input, the point in green"),
            widgets.HBox([p.box for p in self.pe_maps]),
            _section("2. How alike the point's encoding is to the image's at every cell "
                     "(cosine similarity): a bump where the point is"),
            self.similarity.box,
            _section("3. Sparse tokens: positional encoding + learned embedding "
                     "(256 numbers each)"),
            self.tokens,
            _section("4. Dense prompt: the mask path (mask_downscaling) or no_mask_embed"),
            self.mask_path,
            _section("5. Decoder: the four mask tokens' masks (low-res logits) and IoU scores"),
            widgets.HBox([p.box for p in self.decoder]),
        ])
        self.update()

    # ------------------------------------------------------------------ computations
    @property
    def point_xy(self) -> tuple[float, float]:
        """The point, (x, y) in image pixels."""
        return float(self.x.value), float(self.y.value)

    def update(self) -> None:
        """Recompute everything for the current point and redraw."""
        if self._holding:
            return
        model, frame = self.model, self.embedding.frame
        point = np.array([self.point_xy])
        label = np.array([POSITIVE if self.positive.value else 0])
        box = self._box if self.use_box.value else None
        xy_model = tuple(frame.points_to_model(point)[0])
        mask_logits = None
        if self.feed_mask.value:
            first = anatomy.decoder_trace(self.predictor, self.embedding, point, label, box)
            best = int(np.argmax(first.iou_scores))
            mask_logits = first.low_res_logits[best]
        self.trace = anatomy.decoder_trace(self.predictor, self.embedding, point, label, box,
                                           mask_logits=mask_logits)
        self.stages = [] if mask_logits is None else anatomy.mask_prompt_path(model, mask_logits)

        for panel, (caption, picture) in zip(
            self.pe_maps,
            frequency_figure(model, count=len(self._channels), side=self.side,
                             marker_xy_model=xy_model), strict=True):
            panel.show(caption, picture)
        similarity = anatomy.similarity_map(model, np.array(xy_model))
        self.similarity.show(
            f"max {similarity.max():.2f} at the point, min {similarity.min():.2f}",
            _mark(fit_nearest(colorize(similarity, limit=1.0), self.side), xy_model, model),
        )
        token_panels = token_strips(self.trace.sparse)
        self.tokens.children = [_ImagePanel(caption, picture).box
                                for caption, picture in token_panels]
        if self.stages:
            self.mask_path.children = [_ImagePanel(caption, picture).box for caption, picture
                                       in mask_path_figure(self.stages, side=self.side)]
        else:
            vector = anatomy.learned_embeddings(model)["no mask"]
            self.mask_path.children = [_ImagePanel(
                "no mask: this learned vector (no_mask_embed) is added at every cell",
                strip(vector)).box]
        for panel, (caption, picture) in zip(self.decoder, decoder_figure(self.trace),
                                             strict=True):
            panel.show(caption, picture)
        self._draw_image()
        self.note.value = self._note()

    def _note(self) -> str:
        assert self.trace is not None
        spec = self.predictor.spec
        best = int(np.argmax(self.trace.iou_scores))
        text = (f"Highest predicted IoU: mask token {best} "
                f"({self.trace.candidate_names[best]}), {self.trace.iou_scores[best]:.3f}.")
        if not spec.trained_with_points and not self.use_box.value:
            text += (" <i>This model was trained with boxes only: a point alone gives an empty "
                     "or poor mask; tick 'with the box'.</i>")
        return text

    # ------------------------------------------------------------------------ drawing
    def _shown_mask(self) -> np.ndarray | None:
        if self.trace is None:
            return None
        best = int(np.argmax(self.trace.iou_scores))
        logits = self.trace.low_res_logits[best]
        import torch

        with torch.inference_mode():
            up = self.embedding.frame.upscale_logits(torch.from_numpy(logits)[None, None])
        return up[0, 0].numpy() > 0

    def _draw_image(self) -> None:
        rgb = self.frame.resample_rgb(self._rgb)
        mask = self._shown_mask()
        if mask is not None and self.trace is not None:
            best = int(np.argmax(self.trace.iou_scores))
            name = self.trace.candidate_names[best]
            color = candidate_color(name.split()[0] if name != "single mask" else "mask")
            rgb = composite(rgb, overlay_rgba(self.frame.resample_nearest(mask), color, 0.4))
        x, y = self.frame.to_display(np.array(self.point_xy))
        rgb = draw_marker(rgb, (x, y), (40, 220, 40) if self.positive.value else (230, 30, 30), 4)
        if self._box is not None and self.use_box.value:
            corners = self.frame.to_display(np.reshape(self._box, (2, 2))).reshape(-1)
            rgb = draw_rectangle(rgb, tuple(corners), (255, 255, 255))
        with hold_canvas():
            self.image_canvas.clear()
            self.image_canvas.put_image_data(with_alpha(rgb), 0, 0)

    def _on_client_ready(self, *_: object) -> None:
        forget_current_canvas(self.image_canvas)
        self._draw_image()

    def _on_click(self, x: float, y: float) -> None:
        """A click on the image moves the point there (one update for both sliders)."""
        image_x, image_y = self.frame.to_image(x, y)
        self._holding = True
        try:
            self.x.value = min(max(image_x, self.x.min), self.x.max)
            self.y.value = min(max(image_y, self.y.min), self.y.max)
        finally:
            self._holding = False
        self.update()


class _ImagePanel:
    """A caption over a PNG image widget."""

    def __init__(self, caption: str = "", picture: np.ndarray | None = None) -> None:
        self.caption = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.box = widgets.VBox([self.caption, self.image],
                                layout=widgets.Layout(margin="0 10px 6px 0"))
        if picture is not None:
            self.show(caption, picture)

    def show(self, caption: str, picture: np.ndarray) -> None:
        self.caption.value = f"<small>{html.escape(caption)}</small>"
        self.image.value = png_bytes(picture)
        self.image.layout.width = f"{picture.shape[1]}px"


def _section(text: str) -> widgets.HTML:
    return widgets.HTML(f"<b>{html.escape(text)}</b>")
