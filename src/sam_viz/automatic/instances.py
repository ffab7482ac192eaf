"""The operations automatic segmentation needs on instance masks (:mod:`sam_viz.masks`).

Everything here is plain NumPy/PyTorch (no torchvision, no OpenCV).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sam_viz.masks import InstanceMask


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Bounding boxes of a batch of masks.

    Args:
        masks: (K, H, W) bool.

    Returns:
        (K, 4) int64 XYXY boxes with exclusive ends; (0, 0, 0, 0) for an empty mask.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (K, H, W), got {tuple(masks.shape)}.")
    count, height, width = masks.shape
    if count == 0:
        return torch.zeros((0, 4), dtype=torch.int64)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    row_index = torch.arange(height, device=masks.device)
    col_index = torch.arange(width, device=masks.device)
    y0 = torch.where(rows, row_index, height).amin(dim=1)
    y1 = torch.where(rows, row_index + 1, 0).amax(dim=1)
    x0 = torch.where(cols, col_index, width).amin(dim=1)
    x1 = torch.where(cols, col_index + 1, 0).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).long()
    empty = ~rows.any(dim=1)
    boxes[empty] = 0
    return boxes


def compact(masks: torch.Tensor, boxes: torch.Tensor | None = None) -> list[InstanceMask]:
    """Crop each of (K, H, W) bool masks to its box (see :func:`masks_to_boxes`)."""
    if boxes is None:
        boxes = masks_to_boxes(masks)
    out = []
    for mask, box in zip(masks, boxes.tolist(), strict=True):
        x0, y0, x1, y1 = box
        out.append(InstanceMask((x0, y0, x1, y1), mask[y0:y1, x0:x1].cpu().numpy()))
    return out


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of XYXY boxes (K, 4) and (L, 4): (K, L); 0 where a union is empty."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    width = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    height = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = width * height
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Boxes are visited from the highest score down (ties in the given order); a box is
    dropped when its IoU with a kept box exceeds ``iou_threshold``.

    Args:
        boxes_xyxy: (K, 4) boxes.
        scores: (K,) scores.
        iou_threshold: IoU above which the lower-scored box is dropped.

    Returns:
        Indices of the kept boxes, highest score first.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"Got {len(boxes)} boxes but {len(scores)} scores.")
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, None)
        width = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        height = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.clip(width, 0, None) * np.clip(height, 0, None)
        union = area[i] + area[rest] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        suppressed[rest] |= iou > iou_threshold
    return order[np.asarray(keep, dtype=np.int64)]


def touches_window_edge(
    boxes_xyxy: np.ndarray,
    window_xyxy: Sequence[int],
    image_hw: tuple[int, int],
    tolerance: float = 0.0,
) -> np.ndarray:
    """Which boxes (in image pixels) reach an edge of a window that is not the image's edge.

    A mask cut by a window's edge is incomplete; the same object is whole in a neighbouring
    window. Edges of the image itself do not count.

    Args:
        boxes_xyxy: (K, 4) boxes in image pixels.
        window_xyxy: (x0, y0, x1, y1) window in image pixels.
        image_hw: (H, W) of the image.
        tolerance: Pixels from an edge that count as touching it.

    Returns:
        (K,) bool.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in window_xyxy)
    height, width = image_hw
    near = np.zeros(len(boxes), dtype=bool)
    if x0 > 0:
        near |= boxes[:, 0] <= x0 + tolerance
    if y0 > 0:
        near |= boxes[:, 1] <= y0 + tolerance
    if x1 < width:
        near |= boxes[:, 2] >= x1 - tolerance
    if y1 < height:
        near |= boxes[:, 3] >= y1 - tolerance
    return near


def remove_small_regions(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, bool]:
    """Fill holes and drop islands smaller than ``min_area`` pixels (8-connectivity).

    If every island is smaller, the largest is kept.

    Returns:
        (cleaned mask, whether anything changed).
    """
    from skimage.measure import label

    mask = np.asarray(mask, dtype=bool)
    if min_area <= 0 or mask.size == 0:
        return mask, False
    changed = False
    holes = label(~mask, connectivity=2)
    if holes.max():
        sizes = np.bincount(holes.ravel())
        # Background components touching the border are outside, not holes.
        border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        small = np.flatnonzero(sizes < min_area)
        small = small[(small > 0) & ~np.isin(small, border)]
        if len(small):
            mask = mask | np.isin(holes, small)
            changed = True
    islands = label(mask, connectivity=2)
    if islands.max() > 1 or (islands.max() == 1 and mask.sum() < min_area):
        sizes = np.bincount(islands.ravel())
        sizes[0] = 0
        keep = np.flatnonzero(sizes >= min_area)
        if len(keep) == 0:
            keep = np.array([int(np.argmax(sizes))])
        if len(keep) < islands.max():
            mask = np.isin(islands, keep)
            changed = True
    return mask, changed


def mask_overlap(a: InstanceMask, b: InstanceMask) -> int:
    """Number of pixels two compact masks share."""
    ax0, ay0, ax1, ay1 = a.box_xyxy
    bx0, by0, bx1, by1 = b.box_xyxy
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x1 <= x0 or y1 <= y0:
        return 0
    crop_a = a.crop[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0]
    crop_b = b.crop[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
    return int(np.count_nonzero(crop_a & crop_b))


def mask_iou(a: InstanceMask, b: InstanceMask) -> float:
    """IoU of two compact masks (0 when both are empty)."""
    inter = mask_overlap(a, b)
    union = a.area + b.area - inter
    return inter / union if union else 0.0


def mask_nms(masks: Sequence[InstanceMask], scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression on mask IoU (only masks whose boxes overlap compared).

    Returns:
        Indices of the kept masks, highest score first.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    boxes = np.array([m.box_xyxy for m in masks], dtype=np.int64).reshape(-1, 4)
    kept: list[int] = []
    for index in order:
        box = boxes[index]
        duplicate = False
        for other in kept:
            ob = boxes[other]
            overlap = ob[0] < box[2] and box[0] < ob[2] and ob[1] < box[3] and box[1] < ob[3]
            if overlap and mask_iou(masks[index], masks[other]) > iou_threshold:
                duplicate = True
                break
        if not duplicate:
            kept.append(int(index))
    return np.asarray(kept, dtype=np.int64)


def union(masks: Sequence[InstanceMask]) -> InstanceMask:
    """One compact mask covering all of ``masks``."""
    boxes = np.array([m.box_xyxy for m in masks])
    x0, y0 = boxes[:, :2].min(axis=0)
    x1, y1 = boxes[:, 2:].max(axis=0)
    crop = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for m in masks:
        mx0, my0, mx1, my1 = m.box_xyxy
        crop[my0 - y0 : my1 - y0, mx0 - x0 : mx1 - x0] |= m.crop
    return InstanceMask((int(x0), int(y0), int(x1), int(y1)), crop)
