"""Local decoding: each box decoded on a patch of the embedding around it.

The two-way transformer and the output upscaling cost grow with the number of image tokens
the decoder sees. A small box's object is outlined from the tokens near it, so decoding it
on a square patch of the grid a few times its side costs a small part of the whole grid's.
The masks are close to the whole-grid ones, not equal (attention is normalised over fewer
tokens): docs/decisions.md, "Local decoding", has the comparison.

Boxes are grouped by patch: patch sides come from a short ladder and patch origins from a
half-patch lattice, so the boxes near each other share one patch and one decoder call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Patch side as a multiple of the box side: context enough for the box's object to be
# outlined as on the whole grid.
LOCAL_CONTEXT = 3.0
# Patch sides in embedding cells (the smallest gives a tiny box its neighbourhood); a box
# gets the first side at least LOCAL_CONTEXT times its own.
PATCH_SIDES = (8, 12, 16, 24, 32, 48, 64)
# Logit given to low-res pixels outside a patch (far below any mask cut-off).
OUTSIDE_LOGIT = -40.0


@dataclass(frozen=True)
class Patch:
    """A square of embedding cells: top-left ``(row, col)`` and ``side``."""

    row: int
    col: int
    side: int

    @property
    def rows(self) -> slice:
        return slice(self.row, self.row + self.side)

    @property
    def cols(self) -> slice:
        return slice(self.col, self.col + self.side)

    def crop(self, grid_tensor: torch.Tensor) -> torch.Tensor:
        """The patch of a (..., h, w) tensor over the embedding grid, contiguous."""
        return grid_tensor[..., self.rows, self.cols].contiguous()

    def paste(self, canvas: torch.Tensor, members: np.ndarray, low: torch.Tensor) -> None:
        """Write patch logits (B, T, s·k, s·k) into rows ``members`` of whole-grid logits
        (N, T, h·k, w·k)."""
        scale = low.shape[-1] // self.side
        r0, c0 = self.row * scale, self.col * scale
        index = torch.as_tensor(members, device=canvas.device)
        canvas[index, :, r0 : r0 + low.shape[-2], c0 : c0 + low.shape[-1]] = low


def patch_groups(cells_xyxy: np.ndarray, grid: tuple[int, int]) -> dict[Patch, np.ndarray]:
    """The patch each box is decoded on, and the boxes (indices) sharing each.

    Args:
        cells_xyxy: (B, 4) boxes in embedding cells.
        grid: The embedding's (rows, columns).

    Returns:
        Patches in first-use order, each with the indices of its boxes.
    """
    rows, cols = grid
    sides_wanted = LOCAL_CONTEXT * np.max(cells_xyxy[:, 2:] - cells_xyxy[:, :2], axis=1)
    ladder = np.array([s for s in PATCH_SIDES if s < min(rows, cols)] + [min(rows, cols)])
    sides = ladder[np.minimum(np.searchsorted(ladder, sides_wanted), len(ladder) - 1)]
    steps = np.maximum(1, sides // 2)
    centres = (cells_xyxy[:, :2] + cells_xyxy[:, 2:]) / 2
    col0 = np.clip(np.round((centres[:, 0] - sides / 2) / steps) * steps, 0, cols - sides)
    row0 = np.clip(np.round((centres[:, 1] - sides / 2) / steps) * steps, 0, rows - sides)
    groups: dict[Patch, list[int]] = {}
    for index, (r, c, s) in enumerate(zip(row0, col0, sides, strict=True)):
        groups.setdefault(Patch(int(r), int(c), int(s)), []).append(index)
    return {patch: np.asarray(members) for patch, members in groups.items()}


def low_res_canvas(count: int, side: int, device: torch.device) -> torch.Tensor:
    """Whole-grid low-res logits (count, 1, side, side) for patches to be pasted into."""
    return torch.full((count, 1, side, side), OUTSIDE_LOGIT, device=device)
