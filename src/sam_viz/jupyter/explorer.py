"""An interactive view that teaches how SAM reads a prompt, drawn from a real model.

:class:`PromptEncoderExplorer`: move a point (sliders or a click on the image) and watch its
positional encoding, the learned embedding added to it, the dense mask-prompt path and the
decoder's output tokens change. The panels are :mod:`sam_viz.jupyter.figures`'.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

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
    Panel,
    decoder_figure,
    frequency_figure,
    legend_html,
    mark_model_point,
    mask_path_figure,
    offset_similarity_figure,
    token_scale_note,
    token_strips,
)
from sam_viz.models.registry import MODELS, ModelSpec
from sam_viz.predictor import Predictor
from sam_viz.prompts import POSITIVE
from sam_viz.render import candidate_color, composite, to_display_rgb

BUSY = "<span style='color:#a15c00'>\u23f3 computing\u2026</span>"
IDLE = "<span style='color:#888'>up to date</span>"
# The dense row shows the mask, the two convs, their GELUs and the 1x1 conv.
MASK_PATH_PANELS = 6
# A point plus the padding token, or a point plus the box's two corners.
MAX_SPARSE_TOKENS = 3


def click_trained_variant(spec: ModelSpec) -> str | None:
    """The registered variant of ``spec``'s image encoder that was trained with clicks (e.g.
    ``lite_medsam_clicks`` for ``lite_medsam``), or None if ``spec`` answers clicks itself or
    has no such variant."""
    if spec.trained_with_points:
        return None
    for other in MODELS.values():
        if other.encoder_name == spec.encoder_name and other.trained_with_points:
            return other.name
    return None


class PromptEncoderExplorer(widgets.VBox):
    """Move a point and watch what SAM's prompt encoder and decoder do with it.

    Shows, updated together on every move: the image with the prompts; a few Fourier
    channels of the positional encoding with the point marked; the similarity between the
    point's encoding and the image's (a bump at the point); the point's 256 numbers, the
    learned embedding added to them and their sum (and the box corners'); the dense
    mask-prompt path when the best mask is fed back; and the decoder's four mask tokens with
    their IoU scores and which of them are offered. A model trained with boxes only is
    offered with its click-trained variant, for moving a point without the box.
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
        click_predictor: Predictor | None = None,
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
        click_predictor: The click-trained model offered when ``predictor``'s was trained
            with boxes only; by default its registered click-trained variant
            (:func:`click_trained_variant`), loaded when first chosen.
        """
        self.predictor = predictor or Predictor.from_pretrained(None, progress=False)
        self.model = self.predictor.model
        self._image = image
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
        # The models the view can switch between (None: not loaded yet).
        self._predictors: dict[str, Predictor | None] = {self.predictor.spec.name: self.predictor}
        if click_predictor is not None:
            self._predictors[click_predictor.spec.name] = click_predictor
        elif (variant := click_trained_variant(self.predictor.spec)) is not None:
            self._predictors[variant] = None

        self._build_controls(point, positive, box is not None, feed_mask, (height, width))
        self._build_views((height, width))
        for control in (self.x, self.y, self.positive, self.use_box, self.feed_mask):
            control.observe(lambda _change: self.update(), names="value")
        self.model_choice.observe(lambda change: self.use_model(change["new"]), names="value")
        self.trace: anatomy.DecoderTrace | None = None
        self._kernel_for: object = None
        self._kernel: list[_Encoded] = []
        self._holding = False
        self.stages: list[anatomy.MaskStage] = []
        super().__init__(self._sections())
        self.add_class("sam-viz-explorer")
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
        """The point's sliders, the prompt switches and the model choice."""
        height, width = image_hw
        slider = {
            "continuous_update": False,
            "readout_format": ".0f",
            "layout": widgets.Layout(width="400px"),
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
        # Labels as wide as their text: a fixed-width checkbox cuts a long one off.
        full = {"indent": False, "layout": widgets.Layout(width="auto")}
        self.use_box = widgets.Checkbox(
            value=has_box, disabled=not has_box, description="with the box", **full
        )
        self.feed_mask = widgets.Checkbox(
            value=feed_mask, description="feed the best mask back (mask prompt)", **full
        )
        names = list(self._predictors)
        self.model_choice = widgets.ToggleButtons(
            options=names,
            value=self.predictor.spec.name,
            description="Model",
            tooltips=[MODELS[n].title if n in MODELS else n for n in names],
            style={"button_width": "auto"},
            layout=widgets.Layout(display=None if len(names) > 1 else "none"),
        )
        self.busy = widgets.HTML(IDLE, layout=widgets.Layout(height="24px"))

    def _build_views(self, image_hw: tuple[int, int]) -> None:
        """The image canvas, the notes and the panels ``update`` fills."""
        self.frame = DisplayFrame.fit(image_hw, 2 * self.side)
        dh, dw = self.frame.display_hw
        self.image_canvas = Canvas(
            width=dw, height=dh, layout=widgets.Layout(width=f"{dw}px", height=f"{dh}px")
        )
        self.image_canvas.add_class("sam-viz-explorer-canvas")
        self.image_canvas.on_mouse_down(self._on_click)
        self.image_canvas.on_client_ready(self._on_client_ready)
        self.note = widgets.HTML()
        self.legend = widgets.HTML()
        self.pe_maps = [_ImagePanel() for _ in range(4)]
        self.similarity = _ImagePanel()
        self.offset_kernel = _ImagePanel()
        self._token_panels = [_ImagePanel() for _ in range(MAX_SPARSE_TOKENS)]
        self.tokens = _row([], "sam-viz-token-row")
        self.token_note = widgets.HTML()
        self._mask_panels = [_ImagePanel() for _ in range(MASK_PATH_PANELS)]
        self._no_mask_panel = _ImagePanel()
        self.mask_path = _row([], "sam-viz-dense-row")
        self.decoder = [_ImagePanel() for _ in range(4)]
        self.decoder_note = widgets.HTML()

    def _sections(self) -> list[widgets.Widget]:
        """The image and controls, then one titled section per stage of the prompt's path."""
        controls = widgets.VBox(
            [
                self.x,
                self.y,
                self.positive,
                self.use_box,
                self.feed_mask,
                self.model_choice,
                self.busy,
                self.note,
            ],
            layout=widgets.Layout(width="460px", flex="0 1 auto", overflow="visible"),
        )
        return [
            _row([self.image_canvas, controls], "sam-viz-top-row"),
            self.legend,
            _section(
                "1. Positional encoding: random Fourier features of (x, y). "
                "Four of the 128 frequencies over the whole model input, the point in green"
            ),
            _row([p.box for p in self.pe_maps], "sam-viz-pe-row"),
            _section(
                "2. How alike the point's encoding is to the image's at every cell "
                "(cosine similarity): a bump at the point, whose shape depends on the "
                "direction of the offset, not only the distance"
            ),
            _row([self.similarity.box, self.offset_kernel.box], "sam-viz-similarity-row"),
            _section(
                "3. Sparse tokens: positional encoding + learned embedding (256 numbers each)"
            ),
            self.tokens,
            self.token_note,
            _section("4. Dense prompt: the mask path (mask_downscaling) or no_mask_embed"),
            self.mask_path,
            _section("5. Decoder: the four mask tokens' masks (low-res logits) and IoU scores"),
            _row([p.box for p in self.decoder], "sam-viz-decoder-row"),
            self.decoder_note,
        ]

    # ------------------------------------------------------------------ computations
    @property
    def point_xy(self) -> tuple[float, float]:
        """The point, (x, y) in image pixels."""
        return float(self.x.value), float(self.y.value)

    def update(self) -> None:
        """Recompute everything for the current point, then redraw every panel at once."""
        if self._holding:
            return
        self.busy.value = BUSY
        try:
            view = self._compute()
            self._show(view)
        finally:
            self.busy.value = IDLE

    def use_model(self, name: str) -> None:
        """Switch to one of the offered models (loading it the first time) and update.

        Raises:
            ValueError: If ``name`` is not one of ``model_choice``'s options.
        """
        if name not in self._predictors:
            raise ValueError(f"Unknown model {name!r}; this view offers {list(self._predictors)}.")
        if name == self.predictor.spec.name:
            return
        self.busy.value = (
            f"<span style='color:#a15c00'>\u23f3 loading {html.escape(name)}\u2026</span>"
        )
        try:
            predictor = self._predictors[name]
            if predictor is None:
                # Same image encoder and cache: the image's embedding is reused.
                predictor = Predictor.from_pretrained(
                    name, device=self.predictor.device, cache=self.predictor.cache, progress=False
                )
                self._predictors[name] = predictor
            embedding = predictor.set_image(self._image)
        except Exception as error:
            self.busy.value = IDLE
            self.note.value = (
                f"<b>Could not load {html.escape(name)}:</b> {html.escape(str(error))}"
            )
            self.model_choice.value = self.predictor.spec.name
            raise
        self.predictor, self.model, self.embedding = predictor, predictor.model, embedding
        self.model_choice.value = name  # when called from code
        self.update()

    def _compute(self) -> _View:
        """Every number and picture the panels show, for the current prompts."""
        model, frame = self.model, self.embedding.frame
        point = np.array([self.point_xy])
        label = np.array([POSITIVE if self.positive.value else 0])
        box = self._box if self.use_box.value else None
        xy_model = tuple(frame.points_to_model(point)[0])
        mask_logits = None
        if self.feed_mask.value:
            first = anatomy.decoder_trace(self.predictor, self.embedding, point, label, box)
            mask_logits = first.low_res_logits[first.best_offered]
        trace = anatomy.decoder_trace(
            self.predictor, self.embedding, point, label, box, mask_logits=mask_logits
        )
        stages = [] if mask_logits is None else anatomy.mask_prompt_path(model, mask_logits)
        similarity = anatomy.similarity_map(model, np.array(xy_model))
        if stages:
            dense = mask_path_figure(stages, side=self.side)
        else:
            vector = anatomy.learned_embeddings(model)["no mask"]
            dense = [
                (
                    "no mask: this learned vector (no_mask_embed) is added at every cell",
                    strip(vector),
                )
            ]
        best = trace.best_offered
        mask_color = candidate_color(trace.candidate_names[best])
        return _View(
            trace=trace,
            stages=stages,
            frequencies=_encoded(
                frequency_figure(model, count=4, side=self.side, marker_xy_model=xy_model)
            ),
            offset_kernel=self._offset_kernel(),
            similarity=_encoded(
                [
                    (
                        f"max {similarity.max():.2f} at the point, min {similarity.min():.2f}",
                        mark_model_point(
                            fit_nearest(colorize(similarity, limit=1.0), self.side),
                            xy_model,
                            model,
                        ),
                    )
                ]
            ),
            tokens=_encoded(token_strips(trace.sparse)),
            token_note=token_scale_note(trace.sparse, model),
            dense=_encoded(dense),
            decoder=_encoded(decoder_figure(trace)),
            decoder_note=anatomy.mask_token_note(trace, self.predictor.spec),
            note=self._note(trace),
            legend=legend_html(mask_color),
            image=with_alpha(self._picture(trace, mask_color)),
        )

    def _offset_kernel(self) -> list[_Encoded]:
        """The similarity against the offset: the same for every point, so made once per model."""
        if self._kernel_for is not self.model:
            self._kernel = _encoded([offset_similarity_figure(self.model, side=self.side)])
            self._kernel_for = self.model
        return self._kernel

    def _note(self, trace: anatomy.DecoderTrace) -> str:
        spec = self.predictor.spec
        best = trace.best_offered
        text = (
            f"Highest predicted IoU among the offered masks: mask token {best} "
            f"({trace.candidate_names[best]}), {trace.iou_scores[best]:.3f}."
        )
        if not spec.trained_with_points and not self.use_box.value:
            clicks = [n for n in self._predictors if n != spec.name]
            text += (
                f"<br><b>{html.escape(spec.title)} was trained with boxes only.</b> It never "
                "saw a point without a box, so without the box its masks (step 5) are "
                "meaningless wherever the point goes; steps 1-3 are still exactly what its "
                "prompt encoder computes. Tick 'with the box'"
            )
            text += (
                f", or choose <b>{html.escape(clicks[0])}</b> under Model: the same image "
                "encoder with a decoder taught clicks."
                if clicks
                else "."
            )
        return text

    # ------------------------------------------------------------------------ drawing
    def _show(self, view: _View) -> None:
        """Put a computed view on every panel, one assignment after the other."""
        self.trace, self.stages = view.trace, view.stages
        for panel, shown in zip(self.pe_maps, view.frequencies, strict=True):
            panel.show(*shown)
        self.similarity.show(*view.similarity[0])
        self.offset_kernel.show(*view.offset_kernel[0])
        for panel, shown in zip(self._token_panels, view.tokens, strict=False):
            panel.show(*shown)
        _set_children(self.tokens, [p.box for p in self._token_panels[: len(view.tokens)]])
        self.token_note.value = _small(view.token_note)
        dense_panels = self._mask_panels if view.stages else [self._no_mask_panel]
        for panel, shown in zip(dense_panels, view.dense, strict=True):
            panel.show(*shown)
        _set_children(self.mask_path, [p.box for p in dense_panels])
        for panel, shown in zip(self.decoder, view.decoder, strict=True):
            panel.show(*shown)
        self.decoder_note.value = _small(view.decoder_note)
        self.legend.value = view.legend
        self.note.value = f"<div style='line-height:1.4'>{view.note}</div>"
        self._put_image(view.image)

    def _shown_mask(self, trace: anatomy.DecoderTrace) -> np.ndarray:
        import torch

        logits = trace.low_res_logits[trace.best_offered]
        with torch.inference_mode():
            up = self.embedding.frame.upscale_logits(torch.from_numpy(logits)[None, None])
        return up[0, 0].numpy() > 0

    def _picture(self, trace: anatomy.DecoderTrace, mask_color: tuple[int, int, int]) -> np.ndarray:
        """The image with the best offered mask, the point and the box, canvas-sized."""
        rgb = self.frame.resample_rgb(self._rgb)
        mask = self.frame.resample_nearest(self._shown_mask(trace))
        rgb = composite(rgb, overlay_rgba(mask, mask_color, 0.4))
        x, y = self.frame.to_display(np.array(self.point_xy))
        rgb = draw_marker(rgb, (x, y), (40, 220, 40) if self.positive.value else (230, 30, 30), 4)
        if self._box is not None and self.use_box.value:
            corners = self.frame.to_display(np.reshape(self._box, (2, 2))).reshape(-1)
            rgb = draw_rectangle(rgb, tuple(corners), (255, 255, 255))
        return rgb

    def _put_image(self, rgba: np.ndarray) -> None:
        self._image_rgba = rgba
        with hold_canvas():
            self.image_canvas.clear()
            self.image_canvas.put_image_data(rgba, 0, 0)

    def _on_client_ready(self, *_: object) -> None:
        forget_current_canvas(self.image_canvas)
        if getattr(self, "_image_rgba", None) is not None:
            self._put_image(self._image_rgba)

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


# A caption, a picture as PNG bytes and its width in pixels.
_Encoded = tuple[str, bytes, int]


@dataclass(frozen=True)
class _View:
    """Everything one update shows, computed before any panel changes."""

    trace: anatomy.DecoderTrace
    stages: list[anatomy.MaskStage]
    frequencies: list[_Encoded]
    offset_kernel: list[_Encoded]
    similarity: list[_Encoded]
    tokens: list[_Encoded]
    token_note: str
    dense: list[_Encoded]
    decoder: list[_Encoded]
    decoder_note: str
    note: str
    legend: str
    image: np.ndarray


def _encoded(panels: Sequence[Panel]) -> list[_Encoded]:
    return [(caption, png_bytes(picture), int(picture.shape[1])) for caption, picture in panels]


class _ImagePanel:
    """A caption over a PNG image widget, as wide as the image: it neither shrinks nor
    scrolls in a row, and its caption wraps under the image's width."""

    def __init__(self) -> None:
        self.caption = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.box = widgets.VBox(
            [self.caption, self.image],
            layout=widgets.Layout(margin="0 12px 8px 0", flex="0 0 auto", overflow="visible"),
        )
        self.box.add_class("sam-viz-panel")

    def show(self, caption: str, png: bytes, width: int) -> None:
        self.caption.value = _small(caption)
        self.image.value = png
        self.image.layout.width = f"{width}px"
        self.caption.layout.width = f"{max(width, 160)}px"


def _row(children: list[widgets.Widget], css_class: str) -> widgets.Box:
    """A row of fixed-size panels that wraps onto the next line instead of squeezing them."""
    row = widgets.Box(
        children,
        layout=widgets.Layout(
            display="flex",
            flex_flow="row wrap",
            align_items="flex-start",
            width="100%",
            overflow="visible",
        ),
    )
    row.add_class(css_class)
    return row


def _set_children(box: widgets.Box, children: list[widgets.Widget]) -> None:
    if list(box.children) != children:
        box.children = children


def _small(text: str) -> str:
    """Caption text as HTML: small, wrapping, with normal line spacing."""
    return f"<div style='font-size:12px;line-height:1.35'>{html.escape(text)}</div>"


def _section(text: str) -> widgets.HTML:
    return widgets.HTML(
        f"<div style='line-height:1.4;margin-top:6px'><b>{html.escape(text)}</b></div>",
        layout=widgets.Layout(width="100%"),
    )
