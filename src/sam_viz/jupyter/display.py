"""Display geometry and pictures for the Jupyter side, as plain NumPy (no widgets).

The widget shows the image on a canvas that may be smaller (large images) or larger (tiny
images) than the image. :class:`DisplayFrame` is the one place that maps between canvas
pixels and image pixels; everything else here turns arrays into RGBA pictures or PNG bytes.

Conventions: points are ``(x, y)``, x along columns and y down rows; a pixel's centre is at
``+ 0.5``. Canvas coordinates are what ipycanvas reports (CSS scaling already undone).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from sam_viz.render import labels_to_rgba

# Below this longest side an image is magnified (by a whole factor) so it can be clicked.
MIN_DISPLAY_SIDE = 256


@dataclass(frozen=True)
class DisplayFrame:
    """Maps between image pixels and canvas pixels.

    Attributes:
        image_hw: (height, width) of the image.
        display_hw: (height, width) of the canvas.
    """

    image_hw: tuple[int, int]
    display_hw: tuple[int, int]

    @classmethod
    def fit(cls, image_hw: tuple[int, int], max_side: int = 640) -> DisplayFrame:
        """Shrink a large image so its longest side is ``max_side``; magnify a tiny one.

        This is the canvas' own resolution; the page scales it further to fit (CSS).

        Args:
            image_hw: (height, width) of the image.
            max_side: Longest canvas side allowed.

        Raises:
            ValueError: If ``max_side`` is smaller than 16.
        """
        if max_side < 16:
            raise ValueError(f"max_side must be at least 16 pixels, got {max_side}.")
        height, width = (int(v) for v in image_hw)
        longest = max(height, width)
        if longest > max_side:
            scale = max_side / longest
        elif longest < MIN_DISPLAY_SIDE:
            scale = float(min(MIN_DISPLAY_SIDE, max_side) // longest or 1)
        else:
            scale = 1.0
        display = (max(1, round(height * scale)), max(1, round(width * scale)))
        return cls((height, width), display)

    @property
    def scale_xy(self) -> np.ndarray:
        """(sx, sy): canvas pixels per image pixel along x and y."""
        (height, width), (dh, dw) = self.image_hw, self.display_hw
        return np.array([dw / width, dh / height])

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """Canvas (x, y) to image (x, y) pixels."""
        sx, sy = self.scale_xy
        return float(x) / sx, float(y) / sy

    def to_display(self, points_xy: np.ndarray) -> np.ndarray:
        """Image (x, y) points, shape (..., 2), to canvas pixels."""
        return np.asarray(points_xy, dtype=np.float64) * self.scale_xy

    def sample_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of the image pixel under each canvas pixel centre (nearest)."""
        (height, width), (dh, dw) = self.image_hw, self.display_hw
        rows = np.minimum(((np.arange(dh) + 0.5) * height / dh).astype(np.intp), height - 1)
        cols = np.minimum(((np.arange(dw) + 0.5) * width / dw).astype(np.intp), width - 1)
        return rows, cols

    def resample_nearest(self, array: np.ndarray) -> np.ndarray:
        """A mask or label image (H, W, ...) resampled to the canvas, nearest neighbour."""
        if tuple(array.shape[:2]) == self.display_hw:
            return array
        rows, cols = self.sample_indices()
        return array[rows[:, None], cols[None, :]]

    def resample_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """An (H, W, 3) uint8 image to the canvas: area-averaged when shrinking, else nearest."""
        if tuple(rgb.shape[:2]) == self.display_hw:
            return rgb
        if self.display_hw[0] >= self.image_hw[0]:
            return self.resample_nearest(rgb)
        import torch
        import torch.nn.functional as F

        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
        small = F.interpolate(
            tensor, size=self.display_hw, mode="bilinear", antialias=True, align_corners=False
        )
        return small[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a bool mask (H, W) that touch a pixel outside it (4-neighbourhood)."""
    mask = np.asarray(mask, dtype=bool)
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def overlay_rgba(mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.45) -> np.ndarray:
    """A bool mask (H, W) to RGBA uint8: ``color`` at ``alpha`` inside, opaque outline."""
    mask = np.asarray(mask, dtype=bool)
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask, :3] = color
    rgba[mask, 3] = round(255 * alpha)
    rgba[outline(mask), 3] = 255
    return rgba


def labels_overlay_rgba(
    labels: np.ndarray, alpha: float = 0.45, highlight: np.ndarray | None = None
) -> np.ndarray:
    """A label image (H, W) to RGBA uint8: each object in its palette colour at ``alpha``,
    with an opaque outline where it touches another object or the background.

    Args:
        labels: (H, W) integer labels; 0 is background.
        alpha: Opacity of the fill.
        highlight: (H, W) bool pixels to stand out (e.g. picked objects): filled at twice
            ``alpha`` (at most 0.85), outlined in white.
    """
    labels = np.asarray(labels)
    rgba = labels_to_rgba(labels, alpha=alpha)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    rgba[edge & (labels > 0), 3] = 255
    if highlight is not None:
        highlight = np.asarray(highlight, dtype=bool) & (labels > 0)
        rgba[highlight & ~edge, 3] = round(255 * min(0.85, 2 * alpha))
        rgba[highlight & edge, :] = 255
    return rgba


def with_alpha(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 to opaque (H, W, 4) RGBA.

    ipycanvas encodes 3-channel arrays as JPEG and 4-channel ones as PNG, so pictures sent
    to a canvas go as RGBA to stay lossless.
    """
    rgb = np.asarray(rgb, dtype=np.uint8)
    alpha = np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)
    return np.concatenate([rgb, alpha], axis=-1)


def png_bytes(picture: np.ndarray) -> bytes:
    """Encode an (H, W), (H, W, 3) or (H, W, 4) uint8 array as PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_to_array(data: bytes) -> np.ndarray:
    """Decode PNG bytes to a uint8 array (for tests and round trips)."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


# Colour maps as a few anchor colours, interpolated linearly (RGB 0..255).
_DIVERGING = np.array(
    [(33, 102, 172), (146, 197, 222), (247, 247, 247), (244, 165, 130), (178, 24, 43)],
    dtype=np.float64,
)
_SEQUENTIAL = np.array(
    [(20, 12, 60), (60, 50, 140), (35, 130, 150), (80, 190, 110), (250, 230, 60)], dtype=np.float64
)


def colorize(
    values: np.ndarray,
    *,
    diverging: bool = True,
    limit: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Map a 2-D array of numbers to an (H, W, 3) uint8 picture.

    Args:
        values: (H, W) numbers; NaN is drawn grey.
        diverging: Blue (negative) to white (0) to red (positive), symmetric around 0;
            otherwise a dark-to-bright sequential map over ``value_range``.
        limit: For the diverging map, the magnitude drawn fully saturated (default: the
            largest absolute finite value).
        value_range: For the sequential map, (low, high) (default: finite min and max).
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if diverging:
        if limit is None:
            limit = float(np.abs(values[finite]).max()) if finite.any() else 1.0
        limit = limit or 1.0
        t = (np.clip(values / limit, -1, 1) + 1) / 2
        anchors = _DIVERGING
    else:
        if value_range is not None:
            low, high = value_range
        elif finite.any():
            low, high = float(values[finite].min()), float(values[finite].max())
        else:
            low, high = 0.0, 1.0
        span = (high - low) or 1.0
        t = np.clip((values - low) / span, 0, 1)
        anchors = _SEQUENTIAL
    t = np.where(finite, t, 0.0)
    position = t * (len(anchors) - 1)
    index = np.minimum(position.astype(np.intp), len(anchors) - 2)
    frac = (position - index)[..., None]
    rgb = anchors[index] * (1 - frac) + anchors[index + 1] * frac
    rgb[~finite] = (128, 128, 128)
    return (rgb + 0.5).astype(np.uint8)


def magnify(picture: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge a picture by a whole ``factor`` with square pixels (no smoothing)."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}.")
    return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


def draw_marker(
    picture: np.ndarray, xy: tuple[float, float], color: tuple[int, int, int], radius: int = 3
) -> np.ndarray:
    """Draw a filled disc with a dark rim at (x, y) on a copy of an RGB(A) uint8 picture."""
    out = picture.copy()
    height, width = out.shape[:2]
    x, y = xy
    rows, cols = np.ogrid[:height, :width]
    dist2 = (cols + 0.5 - x) ** 2 + (rows + 0.5 - y) ** 2
    rim = dist2 <= (radius + 1.5) ** 2
    out[rim, :3] = 0
    out[dist2 <= radius**2, :3] = color
    return out


def draw_rectangle(
    picture: np.ndarray,
    box_xyxy: tuple[float, float, float, float],
    color: tuple[int, int, int],
    width: int = 2,
) -> np.ndarray:
    """Draw a box outline (x0, y0, x1, y1 in picture pixels) on a copy of a picture."""
    out = picture.copy()
    height, wide = out.shape[:2]
    x0, y0, x1, y1 = (round(v) for v in box_xyxy)
    x0, x1 = sorted((max(0, min(wide - 1, x0)), max(0, min(wide - 1, x1))))
    y0, y1 = sorted((max(0, min(height - 1, y0)), max(0, min(height - 1, y1))))
    out[y0 : y0 + width, x0 : x1 + 1, :3] = color
    out[max(y0, y1 - width + 1) : y1 + 1, x0 : x1 + 1, :3] = color
    out[y0 : y1 + 1, x0 : x0 + width, :3] = color
    out[y0 : y1 + 1, max(x0, x1 - width + 1) : x1 + 1, :3] = color
    return out


def fit_nearest(picture: np.ndarray, side: int) -> np.ndarray:
    """Resample a picture (nearest) so its longest side is ``side`` pixels."""
    height, width = picture.shape[:2]
    scale = side / max(height, width)
    shown = (max(1, round(height * scale)), max(1, round(width * scale)))
    frame = DisplayFrame((height, width), shown)
    return frame.resample_nearest(picture)


def strip(
    vector: np.ndarray, *, height: int = 14, cell: int = 2, limit: float | None = None
) -> np.ndarray:
    """A vector (D,) as a one-row heat strip (height, D * cell, 3), diverging colours."""
    values = np.asarray(vector, dtype=np.float64).reshape(1, -1)
    picture = colorize(values, limit=limit)
    return np.repeat(np.repeat(picture, height, axis=0), cell, axis=1)


def mosaic(
    maps: np.ndarray,
    *,
    columns: int | None = None,
    gap: int = 1,
    limit: float | None = None,
    shared: bool = False,
    centered: bool = False,
) -> np.ndarray:
    """Feature maps (C, h, w) as one picture: a grid of colourised tiles with white gaps.

    Args:
        maps: (C, h, w) numbers.
        columns: Tiles per row (default: a square-ish grid).
        gap: White pixels between tiles.
        limit: Magnitude drawn fully saturated, for every tile.
        shared: Without ``limit``, scale all tiles by the largest magnitude of any (so tiles
            compare) instead of each tile by its own (so each tile's pattern shows).
        centered: Draw each tile relative to its median (white), so a map that is mostly
            a constant shows its pattern rather than one flat colour.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if centered:
        maps = maps - np.nanmedian(maps.reshape(len(maps), -1), axis=1)[:, None, None]
    count, height, width = maps.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    if shared and limit is None:
        finite = maps[np.isfinite(maps)]
        limit = float(np.abs(finite).max()) if finite.size else 1.0
    out = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for index in range(count):
        r, c = divmod(index, columns)
        tile = colorize(maps[index], limit=limit)
        out[
            r * (height + gap) : r * (height + gap) + height,
            c * (width + gap) : c * (width + gap) + width,
        ] = tile
    return out
