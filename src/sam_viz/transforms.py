"""Geometry between the original image and the model's square input.

Conventions: points are ``(x, y)`` in pixels of the original image, x to the right along
columns and y down along rows; boxes are ``XYXY`` (x0, y0, x1, y1) in the same frame. The
model sees the image resized so its longest side is ``image_size`` and padded at the bottom
and right to a square; its low-resolution mask logits cover that square at ``low_res_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageFrame:
    """Maps coordinates between an original image and the model input.

    Attributes:
        original_size: (height, width) of the original image.
        image_size: Side of the square model input.
    """

    original_size: tuple[int, int]
    image_size: int

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the resized image inside the padded model input."""
        height, width = self.original_size
        scale = self.image_size / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

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
        ratio = low_res.shape[-1] / self.image_size
        in_h, in_w = self.input_size
        valid_h, valid_w = in_h * ratio, in_w * ratio
        cropped = low_res[..., : math.ceil(valid_h), : math.ceil(valid_w)]
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
