"""Object masks kept as the crop inside their bounding box, and painting them into labels.

A mask covering a few hundred pixels of a 4096x4096 image is kept as its bounding box and
the boolean crop inside it (:class:`InstanceMask`), so thousands of objects fit in memory.
Boxes are ``XYXY`` in pixels of the original image with exclusive ends: a mask whose pixels
span columns 10..20 and rows 5..9 has the box ``(10, 5, 21, 10)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InstanceMask:
    """One object's mask, stored as the crop inside its bounding box.

    Attributes:
        box_xyxy: (x0, y0, x1, y1) integer box with exclusive ends, in image pixels.
        crop: (y1 - y0, x1 - x0) bool mask inside the box.
    """

    box_xyxy: tuple[int, int, int, int]
    crop: np.ndarray

    @property
    def area(self) -> int:
        """Number of pixels in the mask."""
        return int(self.crop.sum())

    def full(self, shape_hw: tuple[int, int]) -> np.ndarray:
        """The mask as an (H, W) bool array of the image's shape."""
        out = np.zeros(shape_hw, dtype=bool)
        x0, y0, x1, y1 = self.box_xyxy
        out[y0:y1, x0:x1] = self.crop
        return out

    def shifted(self, dx: int, dy: int) -> InstanceMask:
        """The same mask moved by (dx, dy) pixels (from a window to the whole image)."""
        x0, y0, x1, y1 = self.box_xyxy
        return InstanceMask((x0 + dx, y0 + dy, x1 + dx, y1 + dy), self.crop)

    @classmethod
    def from_full(cls, mask: np.ndarray) -> InstanceMask:
        """Compact an (H, W) bool mask; an empty mask gets the box (0, 0, 0, 0)."""
        mask = np.asarray(mask, dtype=bool)
        rows = np.flatnonzero(mask.any(axis=1))
        if len(rows) == 0:
            return cls((0, 0, 0, 0), np.zeros((0, 0), dtype=bool))
        cols = np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return cls((int(x0), int(y0), int(x1), int(y1)), mask[y0:y1, x0:x1].copy())


def paint_labels(
    shape_hw: tuple[int, int],
    masks: Sequence[InstanceMask],
    order: Sequence[int] | np.ndarray | None = None,
    dtype: type = np.int32,
    *,
    keep_numbers: bool = False,
) -> np.ndarray:
    """Paint masks into an (H, W) label image: mask ``order[k]`` gets label k + 1, or with
    ``keep_numbers`` mask i gets label i + 1 whatever the order.

    Masks are painted in the given order, so later ones cover earlier ones where they
    overlap (pass the largest first to keep small objects visible).
    """
    labels = np.zeros(shape_hw, dtype=dtype)
    indices = range(len(masks)) if order is None else order
    for value, index in enumerate(indices, start=1):
        m = masks[int(index)]
        x0, y0, x1, y1 = m.box_xyxy
        view = labels[y0:y1, x0:x1]
        view[m.crop] = int(index) + 1 if keep_numbers else value
    return labels
