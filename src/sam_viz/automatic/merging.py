"""Join the candidates found in overlapping tiles into one set, each object once.

Conventions as in :mod:`sam_viz.automatic.instances`: boxes ``XYXY`` with exclusive ends in
image pixels; a tile is its window and the inner region it owns (``(x0, y0, x1, y1)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sam_viz.automatic.instances import (
    InstanceMask,
    mask_overlap,
    nms,
    touches_window_edge,
    union,
)
from sam_viz.automatic.results import Proposals
from sam_viz.windows.geometry import Window

# Pixels: a mask this close to a tile window's inner edge is cut by it (a fragment).
TILE_EDGE_TOLERANCE = 1.0
# Added to a complete mask's NMS score when its tile owns its centre: more than any
# predicted-IoU difference, so the owning tile's copy of an object always wins.
OWNER_PRIORITY = 2.0
# A fragment this much covered by complete masks is a piece of an object already found.
COVERED_FRACTION = 0.5
# Two fragments from different tiles are one object when they overlap on at least this
# fraction of the smaller one's pixels in the windows' shared region.
JOIN_OVERLAP = 0.5


def _inside(boxes: np.ndarray, region: Window) -> np.ndarray:
    """Whether each box's centre lies in a region (start inclusive, end exclusive)."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    x0, y0, x1, y1 = region
    return (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)


def _pixels_in(mask: InstanceMask, window: Window) -> int:
    mx0, my0, mx1, my1 = mask.box_xyxy
    x0, y0, x1, y1 = (
        max(mx0, window[0]),
        max(my0, window[1]),
        min(mx1, window[2]),
        min(my1, window[3]),
    )
    if x1 <= x0 or y1 <= y0:
        return 0
    return int(np.count_nonzero(mask.crop[y0 - my0 : y1 - my0, x0 - mx0 : x1 - mx0]))


def merge_tiles(
    per_tile: Sequence[tuple[Window, Window | None, Proposals]],
    shape_hw: tuple[int, int],
    nms_thresh: float,
) -> Proposals:
    """Join the objects found in overlapping tiles into one set, each object once.

    * A mask that does not reach its tile window's inner edges is complete. Complete masks
      of all tiles go through one NMS in which the tile that owns a mask's centre wins.
    * A mask cut by its window's edge (an object larger than the halo) is a fragment.
      Fragments mostly covered by a complete mask are dropped; the others are joined with
      the fragments of neighbouring tiles they overlap, and their union is one object.

    Args:
        per_tile: (window, inner region, candidates in image pixels) per tile.
        shape_hw: (H, W) of the image.
        nms_thresh: Box IoU above which two complete masks are the same object.

    Returns:
        The merged candidates.
    """
    complete, fragments, fragment_windows, priority = [], [], [], []
    for window, inner, found in per_tile:
        if not len(found):
            continue
        boxes = found.boxes
        cut = touches_window_edge(boxes, window, shape_hw, TILE_EDGE_TOLERANCE)
        owned = _inside(boxes, inner) if inner is not None else np.ones(len(found), bool)
        whole = np.flatnonzero(~cut)
        complete.append(found.subset(whole))
        priority.append(owned[whole].astype(np.float64))
        cut_rows = np.flatnonzero(cut)
        fragments.append(found.subset(cut_rows))
        fragment_windows += [window] * len(cut_rows)
    merged = Proposals.empty()
    for part in complete:
        merged = merged.concat(part)
    if len(merged):
        scores = OWNER_PRIORITY * np.concatenate(priority) + merged.iou
        merged = merged.subset(np.sort(nms(merged.nms_boxes, scores, nms_thresh)))
    pieces = Proposals.empty()
    for part in fragments:
        pieces = pieces.concat(part)
    if not len(pieces):
        return merged
    return merged.concat(_join_fragments(pieces, fragment_windows, merged))


def _join_fragments(pieces: Proposals, windows: Sequence[Window], complete: Proposals) -> Proposals:
    """Union fragments that overlap across tiles; drop those explained by complete masks."""
    alive = _unexplained(pieces, complete)
    joined = Proposals.empty()
    for members in _overlapping_groups(pieces, windows, alive):
        group = pieces.subset(members)
        mask = union(group.masks) if len(members) > 1 else group.masks[0]
        joined = joined.concat(
            Proposals(
                (mask,),
                np.array([group.iou.mean()], dtype=np.float32),
                np.array([group.stability.min()], dtype=np.float32),
                group.prompts[:1],
                group.window_areas[:1],
            )
        )
    return joined


def _unexplained(pieces: Proposals, complete: Proposals) -> list[int]:
    """The pieces that complete masks do not cover (COVERED_FRACTION of them or more)."""
    covered = np.zeros(len(pieces), dtype=bool)
    boxes = pieces.boxes
    complete_boxes = complete.boxes
    for i, piece in enumerate(pieces.masks):
        near: np.ndarray | list[int] = (
            np.flatnonzero(
                (complete_boxes[:, 0] < boxes[i, 2])
                & (complete_boxes[:, 2] > boxes[i, 0])
                & (complete_boxes[:, 1] < boxes[i, 3])
                & (complete_boxes[:, 3] > boxes[i, 1])
            )
            if len(complete)
            else []
        )
        overlap = sum(mask_overlap(piece, complete.masks[j]) for j in near)
        covered[i] = overlap >= COVERED_FRACTION * piece.area
    return [int(i) for i in np.flatnonzero(~covered)]


def _overlapping_groups(
    pieces: Proposals, windows: Sequence[Window], alive: list[int]
) -> list[list[int]]:
    """The ``alive`` pieces grouped by overlap across windows (union-find)."""
    parent = {i: i for i in alive}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a_pos, a in enumerate(alive):
        for b in alive[a_pos + 1 :]:
            if _fragments_join(pieces, windows, a, b):
                parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for i in alive:
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _fragments_join(pieces: Proposals, windows: Sequence[Window], a: int, b: int) -> bool:
    """Whether pieces ``a`` and ``b``, from different windows, overlap by JOIN_OVERLAP of the
    smaller one's pixels in the windows' shared part."""
    if windows[a] == windows[b]:
        return False
    shared = (
        max(windows[a][0], windows[b][0]),
        max(windows[a][1], windows[b][1]),
        min(windows[a][2], windows[b][2]),
        min(windows[a][3], windows[b][3]),
    )
    if shared[2] <= shared[0] or shared[3] <= shared[1]:
        return False
    inter = mask_overlap(pieces.masks[a], pieces.masks[b])
    if not inter:
        return False
    smaller = min(_pixels_in(pieces.masks[a], shared), _pixels_in(pieces.masks[b], shared))
    return bool(inter >= JOIN_OVERLAP * max(smaller, 1))
