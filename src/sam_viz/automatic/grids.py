"""Where SAM's generator puts its prompts: point grids and box grids.

Conventions: points ``(x, y)`` and boxes ``XYXY`` in pixels of a window (or, for
:func:`point_grid`, in [0, 1] of its width and height).
"""

from __future__ import annotations

import numpy as np


def centres(prompts: np.ndarray) -> np.ndarray:
    """(P, 2) centres of (P, 2) points or (P, 4) boxes."""
    if prompts.shape[1] == 2:
        return prompts
    return (prompts[:, :2] + prompts[:, 2:]) / 2


def point_grid(n_per_side: int) -> np.ndarray:
    """(n^2, 2) points (x, y) in [0, 1]^2 at the centres of an n x n grid of cells, row-major."""
    if n_per_side < 1:
        raise ValueError(f"n_per_side must be >= 1, got {n_per_side}.")
    centres = (np.arange(n_per_side) + 0.5) / n_per_side
    xs, ys = np.meshgrid(centres, centres)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def box_grid(shape_hw: tuple[int, int], sides: list[float], stride: float = 0.5) -> np.ndarray:
    """Square boxes of each side laid over a window, ``stride * side`` apart.

    Box centres are spread evenly so the outermost boxes reach the window's edges; boxes
    are clipped to the window.

    Args:
        shape_hw: (H, W) of the window in pixels.
        sides: Box sides in pixels.
        stride: Step between neighbouring box centres as a fraction of the side.

    Returns:
        (K, 4) float XYXY boxes in window pixels, the smallest side first.
    """
    height, width = shape_hw
    out = []
    for side in sorted(sides):
        step = max(stride * side, 1.0)

        def centres(length: float, side: float = side, step: float = step) -> np.ndarray:
            half = min(side / 2, length / 2)
            span = length - 2 * half
            count = int(np.ceil(span / step)) + 1 if span > 0 else 1
            return np.linspace(half, length - half, count)

        cx, cy = np.meshgrid(centres(width), centres(height))
        boxes = np.stack(
            [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=-1
        ).reshape(-1, 4)
        out.append(np.clip(boxes, 0, [width, height, width, height]))
    return np.concatenate(out) if out else np.zeros((0, 4))
