"""Windows of an image: their type, a grid of overlapping windows, and placing one window.

Conventions: a window is ``XYXY`` ``(x0, y0, x1, y1)`` in pixels of the whole image with
exclusive ends; points are ``(x, y)``. A grid's windows overlap by twice their ``halo``; each
owns an *inner* region, and the inner regions tile the image exactly, so an object no wider
than the halo lies whole in the window that owns its centre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Window = tuple[int, int, int, int]


def clip_window(window_xyxy: Sequence[float], shape_hw: tuple[int, int]) -> Window:
    """Clip an XYXY window (rounded to whole pixels) to an image of shape (H, W).

    Raises:
        ValueError: If the clipped window is empty.
    """
    height, width = shape_hw
    x0, y0, x1, y1 = (round(float(v)) for v in window_xyxy)
    x0, x1 = max(0, x0), min(width, x1)
    y0, y1 = max(0, y0), min(height, y1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ValueError(
            f"Window {tuple(window_xyxy)} does not overlap the image of width {width} and "
            f"height {height}."
        )
    return x0, y0, x1, y1


def place_window(
    centre_xy: Sequence[float], side: int, shape_hw: tuple[int, int], snap: int = 1
) -> Window:
    """A square window of ``side`` pixels around a centre, moved inside the image.

    Args:
        centre_xy: (x, y) the window is centred on.
        side: Window side in pixels; along an image side shorter than it, the window spans
            that whole side.
        shape_hw: (H, W) of the image.
        snap: The window's corner is rounded to a multiple of this (so that nearby prompts
            share a window and its cached embedding), as long as that keeps the centre at
            least a quarter side from the window's edges.
    """
    height, width = shape_hw
    bounds = []
    for centre, length in zip(centre_xy, (width, height), strict=True):
        if side >= length:
            bounds.append((0, length))
            continue
        start = float(centre) - side / 2
        snapped = round(start / snap) * snap
        if abs(snapped - start) <= side / 4:
            start = snapped
        start = round(min(max(start, 0.0), length - side))
        bounds.append((start, start + side))
    (x0, x1), (y0, y1) = bounds
    return x0, y0, x1, y1


def _axis(length: int, side: int, halo: int) -> tuple[list[int], list[int]]:
    """Window starts along one axis and the cut points between their inner regions."""
    if side >= length:
        return [0], [0, length]
    step = side - 2 * halo
    count = math.ceil((length - 2 * halo) / step)
    starts = np.round(np.linspace(0, length - side, count)).astype(int).tolist()
    cuts = [0] + [(starts[i + 1] + starts[i] + side) // 2 for i in range(count - 1)] + [length]
    return starts, cuts


@dataclass(frozen=True)
class WindowGrid:
    """Square windows of one side covering an image, overlapping by twice the halo.

    Build one with :meth:`create`.

    Attributes:
        shape: (H, W) of the image.
        side: Window side in image pixels (a window along a shorter image side spans it).
        halo: Context each window has beyond its inner region (where not at an image edge).
        windows: The windows, row-major.
        inners: The inner region each window owns; they tile the image exactly.
    """

    shape: tuple[int, int]
    side: int
    halo: int
    windows: tuple[Window, ...]
    inners: tuple[Window, ...]

    @classmethod
    def create(cls, shape_hw: tuple[int, int], side: int, halo: int) -> WindowGrid:
        """Lay windows of ``side`` pixels over an image of shape (H, W).

        Raises:
            ValueError: If the side is below 8 pixels or the halo is negative or leaves less
                than half the side as the inner region.
        """
        height, width = (int(v) for v in shape_hw[:2])
        side, halo = int(side), int(halo)
        if side < 8:
            raise ValueError(f"Window side must be at least 8 pixels, got {side}.")
        if halo < 0 or 4 * halo > side:
            raise ValueError(
                f"halo must be between 0 and a quarter of the window side ({side}), got {halo}."
            )
        x_starts, x_cuts = _axis(width, side, halo)
        y_starts, y_cuts = _axis(height, side, halo)
        windows, inners = [], []
        for row, y0 in enumerate(y_starts):
            for col, x0 in enumerate(x_starts):
                windows.append((x0, y0, min(x0 + side, width), min(y0 + side, height)))
                inners.append((x_cuts[col], y_cuts[row], x_cuts[col + 1], y_cuts[row + 1]))
        return cls((height, width), side, halo, tuple(windows), tuple(inners))

    def __len__(self) -> int:
        return len(self.windows)

    def owner(self, x: float, y: float) -> int:
        """Index of the window whose inner region holds the point (x, y) (clamped)."""
        for index, (x0, y0, x1, y1) in enumerate(self.inners):
            if x0 <= x < x1 and y0 <= y < y1:
                return index
        height, width = self.shape
        return self.owner(min(max(x, 0), width - 1), min(max(y, 0), height - 1))

    def holding(self, bounds_xyxy: Sequence[float], margin: float) -> Window | None:
        """The window holding ``bounds`` with the most room, if it has ``margin`` pixels of
        room on every side that is not the image's edge; else None."""
        windows = np.asarray(self.windows, dtype=np.float64)
        x0, y0, x1, y1 = (float(v) for v in bounds_xyxy)
        height, width = self.shape
        inf = np.inf
        room = np.min(
            [
                np.where(windows[:, 0] > 0, x0 - windows[:, 0], inf),
                np.where(windows[:, 1] > 0, y0 - windows[:, 1], inf),
                np.where(windows[:, 2] < width, windows[:, 2] - x1, inf),
                np.where(windows[:, 3] < height, windows[:, 3] - y1, inf),
            ],
            axis=0,
        )
        inside = (
            (x0 >= windows[:, 0])
            & (y0 >= windows[:, 1])
            & (x1 <= windows[:, 2])
            & (y1 <= windows[:, 3])
        )
        room = np.where(inside & (room >= margin), room, -inf)
        best = int(np.argmax(room))
        return self.windows[best] if np.isfinite(room[best]) or room[best] == inf else None


def touches_inner_edge(
    mask_box_xyxy: Sequence[int], window: Window, shape_hw: tuple[int, int], tolerance: int = 1
) -> bool:
    """Whether a mask's box reaches an edge of its window that is not the image's edge
    (the object may go on beyond the window)."""
    x0, y0, x1, y1 = mask_box_xyxy
    wx0, wy0, wx1, wy1 = window
    height, width = shape_hw
    return bool(
        (wx0 > 0 and x0 <= wx0 + tolerance - 1)
        or (wy0 > 0 and y0 <= wy0 + tolerance - 1)
        or (wx1 < width and x1 >= wx1 - tolerance + 1)
        or (wy1 < height and y1 >= wy1 - tolerance + 1)
    )
