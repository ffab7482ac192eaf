"""An interactive view that teaches how SAM reads a prompt, drawn from a real model.

:class:`PromptEncoderExplorer`: move a point (sliders or a click on the image) and watch its
positional encoding, the learned embedding added to it, the dense mask-prompt path and the
decoder's output tokens change. The panels are :mod:`sam_viz.jupyter.figures`'.
"""

from __future__ import annotations

import html

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
    overlay_rgba,
    png_bytes,
    strip,
    with_alpha,
)
from sam_viz.jupyter.figures import (
    decoder_figure,
    frequency_figure,
    mark_model_point,
    mask_path_figure,
    token_strips,
)
from sam_viz.predictor import Predictor
from sam_viz.prompts import POSITIVE
from sam_viz.render import candidate_color, composite, to_display_rgb


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
        if point is None:  # the box's centre, else the image's
            point = (
                ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
                if box is not None
                else (width / 2, height / 2)
            )
        self._box = box
        self._dense_pe = anatomy.image_positional_encoding(self.model)
        self._channels = anatomy.frequency_channels(self.model, 4)
        self._lengths = anatomy.wavelengths(self.model)

        self._build_controls(point, positive, box is not None, feed_mask, (height, width))
        self._build_views((height, width))
        for control in (self.x, self.y, self.positive, self.use_box, self.feed_mask):
            control.observe(lambda _change: self.update(), names="value")
        self.trace: anatomy.DecoderTrace | None = None
        self._holding = False
        self.stages: list[anatomy.MaskStage] = []
        super().__init__(self._sections())
        self.update()

    # ------------------------------------------------------------------ construction
    def _build_controls(
        self,
        point: tuple[float, float],
        positive: bool,
        has_box: bool,
        feed_mask: bool,
        image_hw: tuple[int, int],
    ) -> None:
        """The point's sliders and the prompt switches."""
        height, width = image_hw
        slider = {
            "continuous_update": False,
            "readout_format": ".0f",
            "layout": widgets.Layout(width="420px"),
        }
        self.x = widgets.FloatSlider(
            value=point[0], min=0, max=width - 1, step=1, description="x (px)", **slider
        )
        self.y = widgets.FloatSlider(
            value=point[1], min=0, max=height - 1, step=1, description="y (px)", **slider
        )
        self.positive = widgets.ToggleButtons(
            options=[("positive", True), ("negative", False)], value=positive, description="Point"
        )
        self.use_box = widgets.Checkbox(
            value=has_box, disabled=not has_box, description="with the box"
        )
        self.feed_mask = widgets.Checkbox(
            value=feed_mask, description="feed the best mask back (mask prompt)"
        )

    def _build_views(self, image_hw: tuple[int, int]) -> None:
        """The image canvas, the note and the (empty) panels ``update`` fills."""
        self.frame = DisplayFrame.fit(image_hw, 2 * self.side)
        dh, dw = self.frame.display_hw
        self.image_canvas = Canvas(
            width=dw, height=dh, layout=widgets.Layout(width=f"{dw}px", height=f"{dh}px")
        )
        self.image_canvas.on_mouse_down(self._on_click)
        self.image_canvas.on_client_ready(self._on_client_ready)
        self.note = widgets.HTML()
        self.pe_maps = [_ImagePanel() for _ in self._channels]
        self.similarity = _ImagePanel()
        self.tokens = widgets.VBox()
        self.mask_path = widgets.HBox()
        self.decoder = [_ImagePanel() for _ in range(4)]

    def _sections(self) -> list[widgets.Widget]:
        """The image and controls, then one titled section per stage of the prompt's path."""
        controls = widgets.VBox(
            [self.x, self.y, self.positive, self.use_box, self.feed_mask, self.note]
        )
        return [
            widgets.HBox([self.image_canvas, controls]),
            _section(
                "1. Positional encoding: random Fourier features of (x, y). "
                "Four of the 128 frequencies over the whole model input, the point in green"
            ),
            widgets.HBox([p.box for p in self.pe_maps]),
            _section(
                "2. How alike the point's encoding is to the image's at every cell "
                "(cosine similarity): a bump where the point is"
            ),
            self.similarity.box,
            _section(
                "3. Sparse tokens: positional encoding + learned embedding (256 numbers each)"
            ),
            self.tokens,
            _section("4. Dense prompt: the mask path (mask_downscaling) or no_mask_embed"),
            self.mask_path,
            _section("5. Decoder: the four mask tokens' masks (low-res logits) and IoU scores"),
            widgets.HBox([p.box for p in self.decoder]),
        ]

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
        self.trace = anatomy.decoder_trace(
            self.predictor, self.embedding, point, label, box, mask_logits=mask_logits
        )
        self.stages = [] if mask_logits is None else anatomy.mask_prompt_path(model, mask_logits)

        for panel, (caption, picture) in zip(
            self.pe_maps,
            frequency_figure(
                model, count=len(self._channels), side=self.side, marker_xy_model=xy_model
            ),
            strict=True,
        ):
            panel.show(caption, picture)
        similarity = anatomy.similarity_map(model, np.array(xy_model))
        self.similarity.show(
            f"max {similarity.max():.2f} at the point, min {similarity.min():.2f}",
            mark_model_point(
                fit_nearest(colorize(similarity, limit=1.0), self.side), xy_model, model
            ),
        )
        token_panels = token_strips(self.trace.sparse)
        self.tokens.children = [
            _ImagePanel(caption, picture).box for caption, picture in token_panels
        ]
        if self.stages:
            self.mask_path.children = [
                _ImagePanel(caption, picture).box
                for caption, picture in mask_path_figure(self.stages, side=self.side)
            ]
        else:
            vector = anatomy.learned_embeddings(model)["no mask"]
            self.mask_path.children = [
                _ImagePanel(
                    "no mask: this learned vector (no_mask_embed) is added at every cell",
                    strip(vector),
                ).box
            ]
        for panel, (caption, picture) in zip(self.decoder, decoder_figure(self.trace), strict=True):
            panel.show(caption, picture)
        self._draw_image()
        self.note.value = self._note()

    def _note(self) -> str:
        assert self.trace is not None
        spec = self.predictor.spec
        best = int(np.argmax(self.trace.iou_scores))
        text = (
            f"Highest predicted IoU: mask token {best} "
            f"({self.trace.candidate_names[best]}), {self.trace.iou_scores[best]:.3f}."
        )
        if not spec.trained_with_points and not self.use_box.value:
            text += (
                " <i>This model was trained with boxes only: a point alone gives an empty "
                "or poor mask; tick 'with the box'.</i>"
            )
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
        self.box = widgets.VBox(
            [self.caption, self.image], layout=widgets.Layout(margin="0 10px 6px 0")
        )
        if picture is not None:
            self.show(caption, picture)

    def show(self, caption: str, picture: np.ndarray) -> None:
        self.caption.value = f"<small>{html.escape(caption)}</small>"
        self.image.value = png_bytes(picture)
        self.image.layout.width = f"{picture.shape[1]}px"


def _section(text: str) -> widgets.HTML:
    return widgets.HTML(f"<b>{html.escape(text)}</b>")
