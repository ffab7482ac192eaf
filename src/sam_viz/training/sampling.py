"""What a training step draws: an image, the masks a click can mean, clicks and boxes.

Everything is on the decoder's low-res grid (pixel units of that grid); :func:`prompt_tensors`
scales prompts to model-input pixels for the prompt encoder.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from sam_viz.training.data import TrainingImage


class ImagePool:
    """Draws a training image: a generated scene with probability ``scene_fraction``.

    Args:
        images: The encoded training images.
        rng: The random generator (shared with the rest of the stage's draws).
        scene_fraction: Share of draws that are generated scenes (when both kinds exist).
    """

    def __init__(
        self, images: list[TrainingImage], rng: np.random.Generator, scene_fraction: float
    ) -> None:
        self.images = images
        self.rng = rng
        self.scene_fraction = scene_fraction
        self.scenes = [i for i, image in enumerate(images) if image.generated]
        self.others = [i for i, image in enumerate(images) if not image.generated]

    def draw(self) -> TrainingImage:
        use_scene = self.scenes and (not self.others or self.rng.random() < self.scene_fraction)
        pool = self.scenes if use_scene else self.others
        return self.images[pool[self.rng.integers(len(pool))]]


class PromptSampler:
    """Draws clicks and boxes from masks on the low-res grid (pixel units of that grid)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def click(self, mask: np.ndarray, interior: bool) -> np.ndarray:
        """(x, y) of a pixel in the mask, uniform over it or over its deeper half."""
        if interior:
            depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
            mask = depth >= 0.5 * depth.max()
        rows, cols = np.nonzero(mask)
        pick = self.rng.integers(len(rows))
        return np.array([cols[pick], rows[pick]], np.float32)

    def box(self, mask: np.ndarray) -> np.ndarray:
        """The mask's box (x0, y0, x1, y1) with SAM's noise: 10% of each side, at most 5 px."""
        rows, cols = np.nonzero(mask)
        box: np.ndarray = np.array(
            [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32
        )
        side = np.array([box[2] - box[0], box[3] - box[1]] * 2, np.float32)
        noise = np.clip(self.rng.normal(0, 0.1, 4) * side, -5, 5)
        box = box + noise  # float64 from here (noise is float64)
        limit = mask.shape[1], mask.shape[0]
        x0, x1 = sorted(np.clip(box[[0, 2]], 0, limit[0]))
        y0, y1 = sorted(np.clip(box[[1, 3]], 0, limit[1]))
        return np.array([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)], np.float32)

    def correction(self, logits: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, int]:
        """A click in the error region: positive on a missed pixel, negative on a false one."""
        error = (logits > 0) != mask
        if not error.any():
            return self.click(mask, interior=True), 1
        rows, cols = np.nonzero(error)
        pick = self.rng.integers(len(rows))
        row, col = rows[pick], cols[pick]
        return np.array([col, row], np.float32), int(mask[row, col])


def containing_masks(image: TrainingImage, points_xy: np.ndarray) -> torch.Tensor:
    """(B, M) which of the image's masks contain each (x, y) low-res pixel."""
    cols = torch.as_tensor(points_xy[:, 0], dtype=torch.long)
    rows = torch.as_tensor(points_xy[:, 1], dtype=torch.long)
    return image.masks[:, rows, cols].T


def click_levels(
    masks: torch.Tensor, inside: torch.Tensor, drawn: int, limit: int = 3, same: float = 0.9
) -> list[int]:
    """The masks a click can mean: the one it was drawn from, then up to ``limit - 1`` more
    of those containing it, closest in area first, skipping near-copies (IoU > ``same``) of
    a mask already taken.

    Args:
        masks: (M, L, L) bool masks of the image.
        inside: (M,) which masks contain the click.
        drawn: The mask the click was drawn from.
    """
    areas = masks.flatten(1).sum(1).float()
    others = [int(i) for i in torch.nonzero(inside).flatten() if int(i) != drawn]
    others.sort(key=lambda i: abs(math.log(float(areas[i]) / float(areas[drawn]))))
    levels = [drawn]
    for index in others:
        if len(levels) == limit:
            break
        overlap = (masks[levels] & masks[index]).flatten(1).sum(1).float()
        union = areas[levels] + areas[index] - overlap
        if bool((overlap / union <= same).all()):
            levels.append(index)
    return levels


def prompt_tensors(
    points: tuple[np.ndarray, np.ndarray] | None, boxes: np.ndarray | None, scale: float
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None]:
    """Low-res-grid clicks (BxNx2, labels BxN) and boxes (Bx4) as model-input tensors."""
    point_tensors = None
    if points is not None:
        point_tensors = (torch.from_numpy(points[0] * scale), torch.from_numpy(points[1]))
    box_tensor = None if boxes is None else torch.from_numpy(boxes * scale)
    return point_tensors, box_tensor
