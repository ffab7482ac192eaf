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
from sam_viz.jupyter.display import colorize, draw_marker, fit_nearest, mosaic, png_bytes, strip
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


def token_strips(tokens: Sequence[anatomy.SparseToken], *, cell: int = 2) -> list[Panel]:
    """For each sparse token: its positional part, learned part and sum as heat strips."""
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
        panels.append(
            (f"{token.kind}{where}: positional (top) + learned (middle) = token (bottom)", picture)
        )
    return panels


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
    red above 0 is inside the mask) with its IoU score and candidate name."""
    panels = []
    for k, logits in enumerate(trace.low_res_logits):
        name = trace.candidate_names[k]
        caption = f"mask token {k} ({name}): IoU {trace.iou_scores[k]:.3f}"
        panels.append((caption, fit_nearest(colorize(logits), side)))
    return panels
