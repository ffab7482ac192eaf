"""SAM's own way to segment everything, window by window: a grid of prompts, filtered.

As in the SAM paper, prompts are laid over a window and decoded in large batches; masks are
kept by the model's predicted IoU and by their stability score, and duplicates are removed
by non-maximum suppression (NMS) on their boxes. Two grids:

* ``"points"``: a regular grid of points, each decoded into the three multimask candidates,
  as SAM's reference generator (for models trained with clicks).
* ``"boxes"``: a multi-scale grid of boxes (for models trained with boxes only). Each box
  returns the object filling it best; each kept mask is then prompted again with its own
  tight box, which gives a cleaner mask and a better quality estimate.

Conventions: prompts in pixels of the window; masks returned in pixels of the image.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sam_viz.automatic.grids import box_grid, point_grid
from sam_viz.automatic.grids import centres as prompt_centres
from sam_viz.automatic.instances import mask_nms, nms, remove_small_regions
from sam_viz.automatic.results import Proposals
from sam_viz.automatic.window_decoder import WindowDecoder
from sam_viz.masks import InstanceMask
from sam_viz.predictor import Predictor
from sam_viz.predictor.batch_decoder import BatchDecoder
from sam_viz.predictor.cache import ImageEmbedding
from sam_viz.progress import ProgressCallback, check_cancel
from sam_viz.windows.geometry import Window

GridScheme = Literal["boxes", "points"]

# A tile's prompts are laid over its inner region plus this fraction of its window's longest
# side: a prompt centred just outside the inner region can still hit an object whose centre
# (what decides which tile owns it) lies inside.
TILE_PROMPT_MARGIN = 0.05


@dataclass(frozen=True)
class GridSettings:
    """How the prompt grids are laid and their masks filtered.

    The point grid's defaults are those of SAM's reference generator; the box grid's were
    set on one image, scikit-image's coins, with the embedded LiteMedSAM
    (docs/decisions.md, "Segment everything").

    Attributes:
        points_per_side: Points per side of the point grid (``"points"``).
        box_sizes: Box sides of the box grid, in pixels of the model input (the window
            resized to ``spec.image_size``), one grid per size (``"boxes"``).
        box_stride: Step between neighbouring boxes, as a fraction of their side.
        refine: Prompt each kept mask again with its tight box (``"boxes"``).
        skip_covered: Decode box sizes from the largest down, and skip boxes centred on an
            object already found with confidence (``"boxes"``).
        local_first_pass: Decode the grid boxes on a patch of the embedding around each
            (:mod:`sam_viz.automatic.window_decoder`); the refined masks are decoded in full.
        refine_margin: Margin added to each side of a tight box, as a fraction of its side.
        first_pass_iou_thresh: Predicted IoU a grid box's mask needs before refinement.
        first_pass_stability_thresh: Stability score a grid box's mask needs before
            refinement (in a box on empty background LiteMedSAM outlines texture with a
            high predicted IoU but a low stability).
        cover_stability_thresh: A grid box's mask this stable marks its pixels as found.
        refine_dedupe_iou: Before refinement, masks overlapping a better one by more than
            this IoU are dropped (they would be refined into the same object).
        multimask: Use the three multimask outputs per prompt (default: for points).
        batch_size: Prompts decoded at a time.
        pred_iou_thresh: Keep masks whose predicted IoU exceeds this.
        stability_score_thresh: Keep masks whose stability score reaches this; by default
            0.95 for points (SAM's default) and 0.9 for boxes (LiteMedSAM's boundaries are
            softer than SAM's, so its good masks score lower).
        stability_score_offset: Logit offset of the stability score.
        box_nms_thresh: Box IoU above which the lower-scored of two masks is dropped.
        min_region_area: Fill holes and remove islands smaller than this (pixels); 0 skips.
    """

    points_per_side: int = 32
    box_sizes: tuple[float, ...] = (32.0, 48.0, 64.0, 96.0)
    box_stride: float = 0.5
    refine: bool = True
    skip_covered: bool = True
    local_first_pass: bool = True
    refine_margin: float = 0.1
    first_pass_iou_thresh: float = 0.7
    first_pass_stability_thresh: float = 0.7
    cover_stability_thresh: float = 0.85
    refine_dedupe_iou: float = 0.7
    multimask: bool | None = None
    batch_size: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float | None = None
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_region_area: int = 0


@dataclass
class Ticker:
    """Counts steps for ``progress(done, total)`` and checks the cancel event."""

    total: int
    progress: ProgressCallback | None
    cancel: threading.Event | None
    done: int = field(default=0)

    def check(self) -> None:
        check_cancel(self.cancel, "Segmenting everything")

    def tick(self) -> None:
        self.advance_to(self.done + 1)

    def advance_to(self, done: int) -> None:
        done = min(done, self.total)
        if done > self.done:
            self.done = done
            if self.progress is not None:
                self.progress(self.done, self.total)


class GridPrompts:
    """Lays a prompt grid over windows and keeps the masks the model is sure of.

    Args:
        predictor: The predictor whose model decodes.
        scheme: ``"points"`` or ``"boxes"``.
        settings: The grid and its filters.
    """

    def __init__(self, predictor: Predictor, scheme: GridScheme, settings: GridSettings) -> None:
        self.predictor = predictor
        self.scheme = scheme
        self.settings = settings
        self._decoder = BatchDecoder(predictor.model)

    @property
    def token_indices(self) -> list[int]:
        """Decoder output tokens read per prompt (0: single mask; 1-3: multimask)."""
        multimask = self.settings.multimask
        if multimask is None:
            multimask = self.scheme == "points"
        return [1, 2, 3] if multimask else [0]

    @property
    def stability_thresh(self) -> float:
        """The stability score a mask needs (see :class:`GridSettings`)."""
        if self.settings.stability_score_thresh is not None:
            return self.settings.stability_score_thresh
        return 0.95 if self.scheme == "points" else 0.9

    def steps(self, groups: list[np.ndarray]) -> int:
        """Progress steps of one window's decoding: its batches, plus one to refine."""
        batches = sum(-(-len(g) // self.settings.batch_size) for g in groups)
        refine = 1 if self.scheme == "boxes" and self.settings.refine else 0
        return batches + refine

    def plan(self, window: Window, inner: Window | None) -> list[np.ndarray]:
        """Prompts for one window in window pixels, in groups decoded one after the other.

        Points: one group of (P, 2) points. Boxes: one (P, 4) group per box size, the
        largest first. In a tile, only prompts near its inner region.
        """
        x0, y0, x1, y1 = window
        height, width = y1 - y0, x1 - x0
        if self.scheme == "points":
            groups = [point_grid(self.settings.points_per_side) * np.array([width, height])]
        else:
            scale = max(height, width) / self.predictor.spec.image_size
            sides = sorted((s * scale for s in self.settings.box_sizes), reverse=True)
            groups = [box_grid((height, width), [side], self.settings.box_stride) for side in sides]
        if inner is not None:
            ix0, iy0, ix1, iy1 = inner
            margin = TILE_PROMPT_MARGIN * max(height, width)
            for index, prompts in enumerate(groups):
                xy = prompt_centres(prompts)
                inside = (
                    (xy[:, 0] >= ix0 - x0 - margin)
                    & (xy[:, 0] <= ix1 - x0 + margin)
                    & (xy[:, 1] >= iy0 - y0 - margin)
                    & (xy[:, 1] <= iy1 - y0 + margin)
                )
                groups[index] = prompts[inside]
        return groups

    def window(
        self,
        embedding: ImageEmbedding,
        window: Window,
        groups: list[np.ndarray],
        ticker: Ticker,
    ) -> Proposals:
        """Decode, filter and de-duplicate one window's prompts; masks in image pixels.

        With boxes, each size's boxes whose centre lies on an object already found with
        confidence are skipped: a smaller box there would find the same object or a part.
        """
        settings = self.settings
        decoder = WindowDecoder(
            self.predictor,
            self._decoder,
            embedding,
            batch_size=settings.batch_size,
            stability_offset=settings.stability_score_offset,
        )

        def on_batch() -> None:
            ticker.check()
            ticker.tick()

        boxes_mode = self.scheme == "boxes"
        two_pass = boxes_mode and settings.refine
        covered = np.zeros(embedding.frame.original_size, dtype=bool)
        found = Proposals.empty()
        for prompts in groups:
            if boxes_mode and settings.skip_covered and found.iou.size:
                xy = prompt_centres(prompts).astype(np.int64)
                rows = xy[:, 1].clip(0, covered.shape[0] - 1)
                cols = xy[:, 0].clip(0, covered.shape[1] - 1)
                prompts = prompts[~covered[rows, cols]]
            group = decoder.decode(
                prompts,
                self.token_indices,
                iou_thresh=settings.first_pass_iou_thresh if two_pass else settings.pred_iou_thresh,
                stability_thresh=(
                    settings.first_pass_stability_thresh if two_pass else self.stability_thresh
                ),
                local=two_pass and settings.local_first_pass,
                on_batch=on_batch,
            )
            confident = group.stability >= (
                settings.cover_stability_thresh if two_pass else self.stability_thresh
            )
            for index in np.flatnonzero(confident):
                mx0, my0, mx1, my1 = group.masks[index].box_xyxy
                covered[my0:my1, mx0:mx1] |= group.masks[index].crop
            found = found.concat(group)
        found = found.subset(nms(found.nms_boxes, found.iou, settings.box_nms_thresh))
        if two_pass:
            found = self._refine(decoder, found, embedding.frame.original_size, ticker)
        return found.shifted(window[0], window[1], window)

    def _refine(
        self,
        decoder: WindowDecoder,
        found: Proposals,
        shape: tuple[int, int],
        ticker: Ticker,
    ) -> Proposals:
        """Prompt each kept mask again with its tight box (one refinement per object)."""
        settings = self.settings
        found = found.subset(mask_nms(found.masks, found.iou, settings.refine_dedupe_iou))
        height, width = shape
        tight = found.boxes.astype(np.float64)
        pad = settings.refine_margin * (tight[:, 2:] - tight[:, :2])
        refined = np.concatenate([tight[:, :2] - pad, tight[:, 2:] + pad], axis=1)
        refined = np.clip(refined, 0, [width, height, width, height])
        ticker.check()
        found = decoder.decode(
            refined,
            [0],
            iou_thresh=settings.pred_iou_thresh,
            stability_thresh=self.stability_thresh,
        )
        ticker.tick()
        return found.subset(nms(found.nms_boxes, found.iou, settings.box_nms_thresh))

    def clean(self, proposals: Proposals) -> Proposals:
        """Fill small holes, drop small islands, then NMS again preferring unchanged masks."""
        area = self.settings.min_region_area
        if area <= 0 or not len(proposals):
            return proposals
        cleaned, unchanged = [], []
        for mask in proposals.masks:
            crop, changed = remove_small_regions(mask.crop, area)
            if changed:
                x0, y0 = mask.box_xyxy[:2]
                mask = InstanceMask.from_full(crop).shifted(x0, y0)
            cleaned.append(mask)
            unchanged.append(0.0 if changed else 1.0)
        proposals = proposals.with_masks(cleaned)
        keep = nms(proposals.nms_boxes, np.asarray(unchanged), self.settings.box_nms_thresh)
        return proposals.subset(np.sort(keep))
