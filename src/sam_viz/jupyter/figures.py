"""Static pictures of how SAM reads a prompt, drawn from a real model's weights.

:func:`figure` shows captioned pictures side by side in a notebook (HTML with PNG images, so
no plotting library is needed); the ``*_figure`` helpers and :func:`token_strips` make the
panels for each step: the positional encoding's frequencies, the sparse tokens, the dense
mask-prompt path and the decoder's output masks. The numbers come from
:mod:`sam_viz.jupyter.anatomy`; :mod:`sam_viz.jupyter.explorer` shows the same panels live.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from sam_viz.jupyter import anatomy
from sam_viz.jupyter.display import (
    colorize,
    draw_marker,
    fit_nearest,
    mosaic,
    outline,
    png_bytes,
    strip,
)
from sam_viz.modeling.sam import Sam

Panel = tuple[str, np.ndarray]


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


def frequency_figure(
    model: Sam,
    *,
    count: int = 4,
    side: int = 160,
    marker_xy_model: tuple[float, float] | None = None,
) -> list[Panel]:
    """Panels of ``count`` Fourier channels of the image positional encoding, long to short
    wavelength, with an optional point marked (model-input pixels)."""
    dense = anatomy.image_positional_encoding(model)
    lengths = anatomy.wavelengths(model)
    panels = []
    for channel in anatomy.frequency_channels(model, count):
        picture = fit_nearest(colorize(dense[channel], limit=1.0), side)
        if marker_xy_model is not None:
            picture = mark_model_point(picture, marker_xy_model, model)
        panels.append((f"sin channel {channel}: wavelength {lengths[channel]:.0f} px", picture))
    return panels


def mark_model_point(
    picture: np.ndarray,
    xy_model: tuple[float, float],
    model: Sam,
    color: tuple[int, int, int] = (40, 220, 40),
) -> np.ndarray:
    """Mark a model-input point on a picture that shows the whole (square) model input."""
    height, width = anatomy.input_size(model)
    px = (xy_model[0] + 0.5) / width * picture.shape[1]
    py = (xy_model[1] + 0.5) / height * picture.shape[0]
    return draw_marker(picture, (px, py), color, radius=3)


def encoding_strip(model: Sam, xy_model: Sequence[float], *, height: int = 10) -> np.ndarray:
    """A point's positional encoding as a heat strip with its channels sorted by frequency:
    the sin channels from the longest wavelength to the shortest, then the cos channels
    (:func:`sam_viz.jupyter.anatomy.frequency_order`), so the slow waves sit on the left."""
    encoding = anatomy.point_positional_encoding(model, np.reshape(xy_model, (1, 2)))[0]
    return strip(encoding[anatomy.frequency_order(model)], height=height, limit=1.0)


def offset_similarity_figure(model: Sam, *, reach: int = 48, side: int = 192) -> Panel:
    """The similarity of two points' encodings against their offset (dx, dy), within
    ``reach`` model-input pixels: black where it is one half, a green circle of the mean
    half-way radius for comparison, and the radii by direction in the caption."""
    steps = np.arange(-reach, reach + 1, dtype=np.float64)
    dx, dy = np.meshgrid(steps, steps, indexing="xy")
    kernel = anatomy.offset_similarity(model, np.stack([dx, dy], axis=-1))
    radii = [anatomy.half_similarity_radius(model, angle) for angle in range(0, 180, 15)]
    picture = colorize(kernel, limit=1.0)
    picture[np.abs(np.hypot(dx, dy) - np.mean(radii)) < 0.5] = (40, 170, 40)
    picture[outline(kernel >= 0.5)] = (0, 0, 0)
    caption = (
        f"similarity against the offset (dx, dy), ±{reach} model px: the same bump for "
        f"every point. It falls to 1/2 (black) after {min(radii):.1f}-{max(radii):.1f} px "
        "depending on the direction (green: a circle)"
    )
    return caption, fit_nearest(picture, side)


def token_strips(tokens: Sequence[anatomy.SparseToken], *, cell: int = 2) -> list[Panel]:
    """For each sparse token: its positional part, learned part and sum as heat strips, on
    one colour scale (so the small learned part looks pale: see :func:`token_scale_note`),
    with the length of each part in the caption."""
    limit = max(float(np.abs(t.total).max()) for t in tokens) if tokens else 1.0
    panels = []
    for token in tokens:
        where = (
            ""
            if token.xy_model is None
            else f" at ({token.xy_model[0]:.1f}, {token.xy_model[1]:.1f}) model px"
        )
        picture = np.concatenate(
            [
                strip(token.positional, cell=cell, limit=limit),
                _gap(token, cell),
                strip(token.learned, cell=cell, limit=limit),
                _gap(token, cell),
                strip(token.total, cell=cell, limit=limit),
            ]
        )
        lengths = (
            f"positional (top, length {np.linalg.norm(token.positional):.1f}) + "
            f"learned (middle, length {np.linalg.norm(token.learned):.1f}) = "
            f"token (bottom, length {np.linalg.norm(token.total):.1f})"
        )
        panels.append((f"{token.kind}{where}: {lengths}", picture))
    return panels


def token_scale_note(tokens: Sequence[anatomy.SparseToken], model: Sam) -> str:
    """In words, with this model's numbers: how long the positional part of a token is next
    to the learned embeddings that say what kind of prompt it is (plain text)."""
    placed = [t for t in tokens if t.xy_model is not None]
    positional = float(np.linalg.norm(placed[0].positional)) if placed else float("nan")
    learned = anatomy.learned_embeddings(model)
    kinds = [float(np.linalg.norm(learned[name])) for name in anatomy.POINT_EMBEDDING_NAMES]
    return (
        f"The positional part of a token has length {positional:.1f}; the learned embeddings "
        f"that say what kind of prompt it is (positive or negative point, box corner) have "
        f"lengths {min(kinds):.1f}-{max(kinds):.1f}, about {positional / max(kinds):.0f}x "
        "smaller. On one colour scale the learned strips look pale and the token is almost "
        "its positional part: the kind of prompt is a small signal on top of a large one. "
        "The decoder still reads it: a negative point changes the masks."
    )


def _gap(token: anatomy.SparseToken, cell: int) -> np.ndarray:
    return np.full((4, len(token.total) * cell, 3), 255, np.uint8)


def mask_path_figure(
    stages: Sequence[anatomy.MaskStage], *, side: int = 160, max_channels: int = 16
) -> list[Panel]:
    """The input and the output of each conv/GELU step of the mask path, as mosaics (each
    channel relative to its median, scaled to its own largest deviation)."""
    panels = []
    for stage in stages:
        if stage.name in ("LayerNorm2d",):
            continue
        maps = stage.maps[:max_channels]
        shown = (
            f"{min(len(stage.maps), max_channels)} of {len(stage.maps)}"
            if len(stage.maps) > max_channels
            else f"{len(stage.maps)}"
        )
        size = f"{stage.maps.shape[1]}x{stage.maps.shape[2]}"
        if len(stage.maps) == 1:  # the mask logits: the sign matters (red inside)
            panels.append((f"{stage.name}: {size}", fit_nearest(mosaic(maps), side)))
        else:
            panels.append(
                (
                    f"{stage.name}: {shown} channel(s) of {size}, each relative to its median",
                    fit_nearest(mosaic(maps, centered=True), side),
                )
            )
    return panels


def decoder_figure(trace: anatomy.DecoderTrace, *, side: int = 128) -> list[Panel]:
    """Each mask token's low-res mask logits (each scaled to its own largest magnitude:
    red above 0 is inside the mask) with what the token is (single-mask or ambiguity-aware
    output), whether it is offered and under which name, and its IoU score
    (:func:`sam_viz.jupyter.anatomy.mask_token_note` says why)."""
    panels = []
    for k, logits in enumerate(trace.low_res_logits):
        offered = (
            f"offered as {trace.candidate_names[k]}" if k in trace.offered_tokens else "not offered"
        )
        caption = (
            f"mask token {k}, {anatomy.token_role(k)}: {offered}; IoU {trace.iou_scores[k]:.3f}"
        )
        panels.append((caption, fit_nearest(colorize(logits), side)))
    return panels


def legend_html(mask_color: tuple[int, int, int] | None = None) -> str:
    """A colour key for the teaching pictures (HTML): the blue-white-red scale, the point
    markers, the box and, if given, the overlay colour of the shown mask."""
    scale = colorize(np.linspace(-1, 1, 5)[None, :])[0]
    stops = ", ".join(f"rgb({r},{g},{b})" for r, g, b in scale)

    def swatch(style: str) -> str:
        return (
            f"<span style='display:inline-block;width:12px;height:12px;{style};"
            "vertical-align:middle;margin:0 3px 0 8px'></span>"
        )

    items = [
        "<span style='display:inline-block;width:90px;height:12px;vertical-align:middle;"
        f"border:1px solid #999;background:linear-gradient(to right, {stops})'></span>"
        " blue &lt; 0, white 0, red &gt; 0 (maps: inside a mask is red)",
        swatch("border-radius:6px;background:rgb(40,220,40);border:1px solid #000")
        + "positive point",
        swatch("border-radius:6px;background:rgb(230,30,30);border:1px solid #000")
        + "negative point",
        swatch("border:2px solid #fff;outline:1px solid #999") + "box",
    ]
    if mask_color is not None:
        r, g, b = mask_color
        items.append(swatch(f"background:rgba({r},{g},{b},0.6)") + "best offered mask")
    return (
        "<div class='sam-viz-legend' style='font-size:12px;line-height:1.6'>"
        + "".join(f"<span style='white-space:nowrap'>{item}</span> " for item in items)
        + "</div>"
    )
