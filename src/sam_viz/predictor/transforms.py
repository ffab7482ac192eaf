"""Geometry between the original image and the model's square input.

Conventions: points are ``(x, y)`` in pixels of the original image, x to the right along
columns and y down along rows; boxes are ``XYXY`` (x0, y0, x1, y1) in the same frame. The
model sees the image resized so its longest side is ``image_size`` and padded at the bottom
and right to a square; its low-resolution mask logits cover that square at ``low_res_size``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageFrame:
    """Maps coordinates between an original image and the model input.

    Attributes:
        original_size: (height, width) of the original image (or of a window of one).
        image_size: Side of the square model input.
        zoom: Model-input pixels per original pixel. None fits the longest side to the
            input (SAM's rule); a window of a large image is given the zoom of its scale,
            so that windows cut short by the image's edge keep it.
    """

    original_size: tuple[int, int]
    image_size: int
    zoom: float | None = None

    def __post_init__(self) -> None:
        height, width = self.original_size
        if self.zoom is not None and max(height, width) * self.zoom > self.image_size + 1e-6:
            raise ValueError(
                f"A {height}x{width} image at zoom {self.zoom:g} does not fit the model's "
                f"{self.image_size}-pixel input; use a smaller window or zoom."
            )

    @property
    def scale(self) -> float:
        """Model-input pixels per original pixel."""
        return self.zoom if self.zoom is not None else self.image_size / max(self.original_size)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the resized image inside the padded model input."""
        height, width = self.original_size
        scale = self.scale
        return (
            min(self.image_size, int(height * scale + 0.5)),
            min(self.image_size, int(width * scale + 0.5)),
        )

    @property
    def scale_xy(self) -> np.ndarray:
        """Per-axis factors (sx, sy) from original pixels to model-input pixels."""
        (height, width), (in_h, in_w) = self.original_size, self.input_size
        return np.array([in_w / width, in_h / height], dtype=np.float64)

    def points_to_model(self, points_xy: np.ndarray) -> np.ndarray:
        """Original (x, y) pixels, shape (..., 2), to model-input pixels."""
        return np.asarray(points_xy, dtype=np.float64) * self.scale_xy

    def points_to_image(self, points_xy: np.ndarray) -> np.ndarray:
        """Model-input (x, y) pixels, shape (..., 2), back to original pixels."""
        return np.asarray(points_xy, dtype=np.float64) / self.scale_xy

    def boxes_to_model(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Original XYXY boxes, shape (..., 4), to model-input pixels."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64)
        return self.points_to_model(boxes.reshape(*boxes.shape[:-1], 2, 2)).reshape(boxes.shape)

    def boxes_to_image(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Model-input XYXY boxes, shape (..., 4), back to original pixels."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64)
        return self.points_to_image(boxes.reshape(*boxes.shape[:-1], 2, 2)).reshape(boxes.shape)

    def resize_image(self, image: torch.Tensor) -> torch.Tensor:
        """Resize a (B, C, H, W) float image to :attr:`input_size` (antialiased bilinear)."""
        if tuple(image.shape[-2:]) == self.input_size:
            return image
        return F.interpolate(
            image, size=self.input_size, mode="bilinear", align_corners=False, antialias=True
        )

    def pad_to_square(self, image: torch.Tensor) -> torch.Tensor:
        """Zero-pad a resized (B, C, h, w) image at the bottom and right to the model input."""
        in_h, in_w = image.shape[-2:]
        return F.pad(image, (0, self.image_size - in_w, 0, self.image_size - in_h))

    def upscale_logits(self, low_res: torch.Tensor) -> torch.Tensor:
        """Resample low-res logits (B, K, L, L) onto the original image, (B, K, H, W).

        One bilinear resampling straight from the valid part of the low-res grid to the
        original pixels (SAM's reference goes through the padded input size first: same
        geometry, one pass less). Output pixel centre ``i`` samples the low-res grid at
        ``(i + 0.5) * valid / H - 0.5``.
        """
        height, width = self.original_size
        cropped, (valid_h, valid_w) = self.valid_low_res(low_res)
        batch, masks = cropped.shape[:2]
        # One channel per image: upsample_bilinear2d is several times faster on (N, 1, h, w)
        # than on (1, N, h, w) on the CPU.
        cropped = cropped.reshape(batch * masks, 1, *cropped.shape[-2:])
        out = F.interpolate(
            cropped,
            scale_factor=(height / valid_h, width / valid_w),
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=False,
        )
        if out.shape[-2] < height or out.shape[-1] < width:  # float rounding in the size
            out = F.pad(
                out,
                (0, max(0, width - out.shape[-1]), 0, max(0, height - out.shape[-2])),
                mode="replicate",
            )
        return out[..., :height, :width].reshape(batch, masks, height, width)

    def upscale_masks(self, low_res: torch.Tensor) -> np.ndarray:
        """The masks of low-res logits (B, K, L, L) on the original image: (B, K, H, W) bool.

        Equal to ``upscale_logits(low_res) > 0``, computed with less work: a bilinear sample
        is a weighted mean of at most four grid values, so it can only be positive next to a
        positive grid value. Each mask is resampled only over the pixels around its positive
        grid cells, and thresholded there: columns first, on the few grid rows those pixels
        read (the slow gather along rows runs on the small grid), then rows.
        """
        height, width = self.original_size
        grid, (valid_h, valid_w) = self.valid_low_res(low_res)
        grid = grid.float()
        batch, count = grid.shape[:2]
        out = np.zeros((batch, count, height, width), dtype=bool)
        rows = _bilinear_taps(height, valid_h, grid.shape[-2])
        cols = _bilinear_taps(width, valid_w, grid.shape[-1])
        positive = grid.numpy() > 0
        # Which grid rows and columns of each mask hold a positive cell (NumPy: the spans
        # below are a few scalar look-ups each, cheaper there than as tensor ops).
        positive_rows = np.any(positive, axis=-1)
        positive_cols = np.any(positive, axis=-2)
        for b in range(batch):
            for k in range(count):
                row_span = _sample_span(positive_rows[b, k], rows)
                col_span = _sample_span(positive_cols[b, k], cols)
                if row_span is None or col_span is None:
                    continue  # no positive cell: an empty mask
                (r0, r1), (c0, c1) = row_span, col_span
                low, high = int(rows.first[r0]), int(rows.second[r1 - 1]) + 1
                values = cols.resample(grid[b, k, low:high], c0, c1, dim=1)
                values = rows.resample(values, r0, r1, dim=0, offset=low)
                # Thresholded straight into the result; NumPy's comparison into a bool array
                # is about four times faster than torch.gt's here.
                np.greater(values.numpy(), 0, out=out[b, k, r0:r1, c0:c1])
        return out

    def valid_low_res(self, low_res: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
        """The low-res grid cropped to the cells that cover the image, and the (fractional)
        height and width of the image on that grid."""
        ratio = low_res.shape[-1] / self.image_size
        in_h, in_w = self.input_size
        valid_h, valid_w = in_h * ratio, in_w * ratio
        return low_res[..., : math.ceil(valid_h), : math.ceil(valid_w)], (valid_h, valid_w)

    def mask_to_low_res(self, mask: np.ndarray, low_res_size: int) -> np.ndarray:
        """Map an original-resolution mask (H, W) onto the low-res model grid (L, L), float."""
        tensor = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None, None]
        ratio = low_res_size / self.image_size
        in_h, in_w = self.input_size
        target = (max(1, round(in_h * ratio)), max(1, round(in_w * ratio)))
        small = F.interpolate(
            tensor, size=target, mode="bilinear", align_corners=False, antialias=True
        )
        small = F.pad(small, (0, low_res_size - target[1], 0, low_res_size - target[0]))
        return small[0, 0].numpy()


@dataclass(frozen=True)
class _Taps:
    """Where each output pixel of a 1-D bilinear resampling reads the input (PyTorch's
    ``align_corners=False`` rule): ``(1 - weight) * x[first] + weight * x[second]``."""

    first: torch.Tensor
    second: torch.Tensor
    weight: torch.Tensor

    def resample(
        self, values: torch.Tensor, start: int, stop: int, *, dim: int, offset: int = 0
    ) -> torch.Tensor:
        """Output pixels ``start:stop`` along ``dim`` of a 2-D tensor whose first entry along
        ``dim`` is input pixel ``offset``."""
        weight = self.weight[start:stop]
        weight = weight[None] if dim == 1 else weight[:, None]
        low = values.index_select(dim, self.first[start:stop] - offset)
        high = values.index_select(dim, self.second[start:stop] - offset)
        return torch.lerp(low, high, weight, out=low)  # low is a fresh gather: reuse it


@functools.lru_cache(maxsize=16)
def _bilinear_taps(out_size: int, valid: float, in_size: int) -> _Taps:
    """Taps for resampling ``valid`` input pixels (of ``in_size`` stored) to ``out_size``."""
    scale = np.float32(valid / out_size)
    source = np.maximum((np.arange(out_size, dtype=np.float32) + 0.5) * scale - 0.5, 0)
    first = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    weight = (source - first).astype(np.float32)
    return _Taps(torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(weight))


def _sample_span(positive: np.ndarray, taps: _Taps) -> tuple[int, int] | None:
    """Output pixels ``(start, stop)`` whose taps can reach a positive input, or None."""
    where = np.flatnonzero(positive)
    if not len(where):
        return None
    lowest, highest = int(where[0]), int(where[-1])
    start = int(np.searchsorted(taps.second.numpy(), lowest, side="left"))
    stop = int(np.searchsorted(taps.first.numpy(), highest, side="right"))
    return start, stop
