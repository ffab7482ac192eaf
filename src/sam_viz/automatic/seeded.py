"""Segment everything on microscopy: objects found at their scale, outlined by the model.

The SAM paper's generator lays a grid of prompts and keeps the masks the model is sure of.
On microscopy fields with hundreds of small, touching, dim objects that finds few of them,
and the grid costs many decoder calls. Here the image says where the objects are
(:mod:`sam_viz.automatic.seeds`: a seed and a region per object, at the typical diameter),
and the model outlines each from its region's box, decoded in batches on the window
embeddings of the object scale (:class:`~sam_viz.windows.scaled.ScaledImage`). Steps:

1. Seeds and regions from the image.
2. One box prompt per region; the boxes of one window in one call.
3. Keep the model's mask where it is confident and agrees with the region; otherwise keep
   the region itself, or nothing when the region is doubtful too.
4. One label image: where masks overlap, the smaller object is on top, and a mask mostly
   hidden under others is dropped (:func:`~sam_viz.automatic.results.to_segmentation`).
"""

from __future__ import annotations

import threading

import numpy as np

from sam_viz.automatic.instances import mask_iou
from sam_viz.automatic.results import Proposals
from sam_viz.automatic.seeds import Seeds
from sam_viz.masks import InstanceMask
from sam_viz.models.registry import SeededThresholds
from sam_viz.progress import ProgressCallback
from sam_viz.windows.scaled import ScaledImage


def _region_masks(seeds: Seeds) -> list[InstanceMask]:
    masks = []
    for index, (x0, y0, x1, y1) in enumerate(seeds.boxes_xyxy.astype(int)):
        crop = seeds.regions[y0:y1, x0:x1] == index + 1
        masks.append(InstanceMask((x0, y0, x1, y1), crop))
    return masks


def outline_seeds(
    scaled: ScaledImage,
    seeds: Seeds,
    thresholds: SeededThresholds,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Proposals:
    """The model's outline of every seed's region (or the region, where it is not kept).

    Args:
        scaled: The image at its object scale.
        seeds: Seeds and regions found in it.
        thresholds: When an outline is kept.
        progress: Called as ``progress(done, total)`` per window decoded.
        cancel: Set it to stop; :class:`~sam_viz.progress.Cancelled` is raised.

    Returns:
        One proposal per seed that kept a mask, with its scores and prompt box.
    """
    count = len(seeds)
    if not count:
        return Proposals.empty()
    regions = _region_masks(seeds)
    boxes = seeds.boxes_xyxy.astype(np.float64)
    outlines: list[InstanceMask | None] = [None] * count
    iou = np.zeros(count, np.float32)
    stability = np.zeros(count, np.float32)
    # Seeds' boxes are small in their window: local decoding (docs/decisions.md).
    found = scaled.boxes_by_window(
        boxes, grid_only=True, local=True, progress=progress, cancel=cancel
    )
    for window, members, local in found:
        x0, y0 = window[:2]
        for row, index in enumerate(members):
            mask = InstanceMask.from_full(local.masks[row])
            outlines[index] = mask.shifted(x0, y0) if mask.area else None
            iou[index] = local.iou_scores[row]
            stability[index] = local.stability_scores[row]
    kept, kept_iou, kept_stability, prompts = [], [], [], []
    for index in range(count):
        outline, region = outlines[index], regions[index]
        confident = (
            outline is not None
            and iou[index] >= thresholds.min_predicted_iou
            and stability[index] >= thresholds.min_stability
            and mask_iou(outline, region) >= thresholds.min_agreement
        )
        chosen = outline if confident else (region if thresholds.keep_regions else None)
        if chosen is None:
            continue
        kept.append(chosen)
        kept_iou.append(iou[index] if confident else 0.0)
        kept_stability.append(stability[index] if confident else 0.0)
        prompts.append(boxes[index])
    return Proposals(
        tuple(kept),
        np.asarray(kept_iou, np.float32),
        np.asarray(kept_stability, np.float32),
        np.asarray(prompts, np.float64).reshape(-1, 4),
        np.zeros(len(kept)),
    )
