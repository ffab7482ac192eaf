"""Segment everything: automatic instance segmentation with SAM, as a label image + table.

As in the SAM paper, prompts are laid over the image and decoded in large batches; masks are
kept by the model's predicted IoU and by their stability score, and duplicates are removed
by non-maximum suppression (NMS) on their boxes. Two prompt schemes:

* ``"points"`` (models trained with clicks, ``spec.trained_with_points``): a regular grid
  of points, each decoded into the three multimask candidates, as SAM's reference generator.
* ``"boxes"`` (models trained with boxes only, such as the embedded LiteMedSAM, which
  answers a lone click with an empty mask): a multi-scale grid of boxes. Each box returns
  the object filling it best; each kept mask is then prompted again with its own tight
  box, the prompt such models were trained on, which gives a cleaner mask and a better
  quality estimate.

Small objects: with ``crop_n_layers`` > 0 the generator also runs on overlapping crops of
the image (2x2, 4x4, ...), each encoded at the model's input size. Images larger than the
model input are cut into tiles with a halo (:mod:`sam_viz.windows.tiling`); an object is taken from
the tile that owns its centre, and objects larger than the halo are joined across tiles.

Conventions: points ``(x, y)`` and boxes ``XYXY`` (exclusive ends) in pixels of the image.
:class:`MaskGenerator` may run in a worker thread: it reports ``progress(done, total)`` and
stops with :class:`~sam_viz.predictor.Cancelled` when its ``cancel`` event is set.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields, replace
from typing import Literal

import numpy as np

from sam_viz.automatic.grids import box_grid, crop_windows, point_grid
from sam_viz.automatic.grids import centres as prompt_centres
from sam_viz.automatic.instances import (
    InstanceMask,
    mask_nms,
    nms,
    remove_small_regions,
    touches_window_edge,
)
from sam_viz.automatic.merging import merge_tiles
from sam_viz.automatic.results import Candidates, Segmentation, to_segmentation
from sam_viz.automatic.window_decoder import WindowDecoder
from sam_viz.image import Contrast
from sam_viz.predictor import Cancelled, Predictor, ProgressCallback
from sam_viz.predictor.batch_decoder import BatchDecoder
from sam_viz.predictor.cache import ImageEmbedding
from sam_viz.windows.tiling import TileGrid, Window, WindowedImage, default_tiling

PromptScheme = Literal["auto", "boxes", "points"]

# A tile's prompts are laid over its inner region plus this fraction of its window's longest
# side: a prompt centred just outside the inner region can still hit an object whose centre
# (what decides which tile owns it) lies inside.
TILE_PROMPT_MARGIN = 0.05

__all__ = [
    "EverythingSettings",
    "MaskGenerator",
    "Segmentation",
    "box_grid",
    "crop_windows",
    "point_grid",
]


@dataclass(frozen=True)
class EverythingSettings:
    """How :class:`MaskGenerator` lays prompts and filters masks.

    The point scheme's defaults are those of SAM's reference generator; the box scheme's
    were set on one image, scikit-image's coins, with the embedded LiteMedSAM
    (docs/decisions.md, "Segment everything").

    Attributes:
        prompts: ``"points"``, ``"boxes"`` or ``"auto"`` (the model's
            ``spec.everything_prompts`` where set, else points for models trained with
            clicks, boxes otherwise).
        points_per_side: Points per side of the point grid (``"points"``).
        box_sizes: Box sides of the box grid, in pixels of the model input (the window
            resized to ``spec.image_size``), one grid per size (``"boxes"``).
        box_stride: Step between neighbouring boxes, as a fraction of their side.
        refine: Prompt each kept mask again with its tight box (``"boxes"``).
        skip_covered: Decode box sizes from the largest down, and skip boxes centred on an
            object already found with confidence (``"boxes"``).
        local_first_pass: Decode the grid boxes on a patch of the embedding around each
            (see :mod:`sam_viz.automatic.window_decoder`); the refined masks are decoded in full.
        refine_margin: Margin added to each side of a tight box, as a fraction of its side.
        first_pass_iou_thresh: Predicted IoU a grid box's mask needs before refinement.
        first_pass_stability_thresh: Stability score a grid box's mask needs before
            refinement (in a box on empty background LiteMedSAM outlines texture with a
            high predicted IoU but a low stability).
        cover_stability_thresh: A grid box's mask this stable (and above
            ``first_pass_iou_thresh``) marks its pixels as found for ``skip_covered``.
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
        crop_n_layers: Extra layers of crops (layer i has 2^i x 2^i crops) for small objects.
        crop_overlap_ratio: Overlap of the first crop layer, as a fraction of the short side.
        crop_n_points_downscale_factor: Points per side in crop layer i are divided by this^i.
        crop_nms_thresh: Box IoU for NMS between masks of different crops.
        crop_edge_tolerance: Masks within this many pixels of a crop's inner edge are dropped
            (they are cut by the crop).
        min_region_area: Fill holes and remove islands smaller than this (pixels); 0 skips.
        min_visible_fraction: In the label image, drop an object when less than this
            fraction of its mask stays visible under smaller objects painted on top.
        tiling: Cut the image into tiles: True, False, or None for images larger than a
            tile's window.
        tile_size: Inner side of a tile in pixels (default from the model).
        halo: Context around each tile in pixels (default from the model).
    """

    prompts: PromptScheme = "auto"
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
    crop_n_layers: int = 0
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    crop_nms_thresh: float = 0.7
    crop_edge_tolerance: float = 20.0
    min_region_area: int = 0
    min_visible_fraction: float = 0.5
    tiling: bool | None = None
    tile_size: int | None = None
    halo: int | None = None

    def validated(self) -> EverythingSettings:
        """Check the settings; returns them unchanged.

        Raises:
            ValueError: For a setting out of range (the message names it).
        """
        if self.prompts not in ("auto", "boxes", "points"):
            raise ValueError(f"prompts must be 'auto', 'boxes' or 'points', got {self.prompts!r}.")
        for name in ("points_per_side", "batch_size", "crop_n_points_downscale_factor"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {self.crop_n_layers}.")
        if not self.box_sizes or min(self.box_sizes) <= 0:
            raise ValueError(
                f"box_sizes must be positive model-input pixels, got {self.box_sizes}."
            )
        if not 0 < self.box_stride <= 1:
            raise ValueError(f"box_stride must be in (0, 1], got {self.box_stride}.")
        for name in (
            "pred_iou_thresh",
            "stability_score_thresh",
            "box_nms_thresh",
            "crop_nms_thresh",
            "first_pass_iou_thresh",
            "first_pass_stability_thresh",
            "cover_stability_thresh",
            "refine_dedupe_iou",
            "min_visible_fraction",
            "crop_overlap_ratio",
        ):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}.")
        if self.refine_margin < 0 or self.stability_score_offset < 0 or self.min_region_area < 0:
            raise ValueError(
                "refine_margin, stability_score_offset and min_region_area must be >= 0."
            )
        return self


class MaskGenerator:
    """Finds every object in an image with a SAM predictor.

    Args:
        predictor: The shared predictor (its model and embedding cache are used; its current
            image is left alone).
        settings: An :class:`EverythingSettings`; keyword arguments override its fields.

    Example::

        generator = MaskGenerator(Predictor.from_pretrained())
        result = generator.generate(image, progress=lambda d, t: print(d, t))
        result.labels        # (H, W) int32, 0 background
        result.table()       # one dict per object: label, area, box, scores
    """

    def __init__(
        self, predictor: Predictor, settings: EverythingSettings | None = None, **overrides: object
    ) -> None:
        settings = settings or EverythingSettings()
        known = {f.name for f in fields(EverythingSettings)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"Unknown setting(s) {unknown}; known settings: {sorted(known)}.")
        self.settings = replace(settings, **overrides).validated()  # type: ignore[arg-type]
        self.predictor = predictor
        self._decoder = BatchDecoder(predictor.model)

    @property
    def scheme(self) -> Literal["boxes", "points"]:
        """The prompt scheme used with this predictor's model."""
        if self.settings.prompts != "auto":
            return self.settings.prompts
        spec = self.predictor.spec
        if spec.everything_prompts is not None:
            return spec.everything_prompts
        return "points" if spec.trained_with_points else "boxes"

    @property
    def token_indices(self) -> list[int]:
        """Decoder output tokens read per prompt (0: single mask; 1-3: multimask)."""
        multimask = self.settings.multimask
        if multimask is None:
            multimask = self.scheme == "points"
        return [1, 2, 3] if multimask else [0]

    @property
    def stability_thresh(self) -> float:
        """The stability score a mask needs (see :class:`EverythingSettings`)."""
        if self.settings.stability_score_thresh is not None:
            return self.settings.stability_score_thresh
        return 0.95 if self.scheme == "points" else 0.9

    def tile_grid(self, shape_hw: tuple[int, int]) -> TileGrid | None:
        """The tiles an image of this shape is cut into, or None when it is not tiled."""
        tile_size, halo = default_tiling(self.predictor.spec)
        tile_size = self.settings.tile_size or tile_size
        halo = self.settings.halo if self.settings.halo is not None else halo
        tiling = self.settings.tiling
        if tiling is None:
            tiling = max(shape_hw) > tile_size + 2 * halo
        return TileGrid.create(shape_hw, tile_size, halo) if tiling else None

    # ------------------------------------------------------------------------------ public
    def generate(
        self,
        image: object,
        *,
        contrast: Contrast = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Segmentation:
        """Segment every object in ``image``.

        Args:
            image: 2-D grayscale, RGB or RGBA array (see :mod:`sam_viz.image`).
            contrast: Contrast rule, see :func:`sam_viz.image.to_rgb01`.
            percentiles: Percentiles of the percentile stretch.
            progress: Called as ``progress(done, total)`` after each step (an embedding or a
                batch of prompts).
            cancel: Set it to stop; :class:`~sam_viz.predictor.Cancelled` is raised.

        Returns:
            The label image, the masks and a table of the objects.
        """
        source = WindowedImage(image, contrast=contrast, percentiles=percentiles)
        shape = source.shape
        grid = self.tile_grid(shape)
        jobs: list[tuple[Window, int, Window | None]]
        if grid is not None:
            jobs = [(tile.window_xyxy, 0, tile.inner_xyxy) for tile in grid.tiles]
        else:
            jobs = [
                (window, layer, None)
                for window, layer in crop_windows(
                    shape, self.settings.crop_n_layers, self.settings.crop_overlap_ratio
                )
            ]
        plans = [self._plan(window, layer, inner) for window, layer, inner in jobs]
        steps = [1 + self._steps(groups) for groups in plans]
        ticker = _Ticker(sum(steps), progress, cancel)
        per_window: list[tuple[Window, Window | None, Candidates]] = []
        for (window, _, inner), groups, count in zip(jobs, plans, steps, strict=True):
            ticker.check()
            target = ticker.done + count
            embedding = source.embed(self.predictor, window, cancel=cancel)
            ticker.tick()
            found = self._window(embedding, window, groups, ticker)
            ticker.advance_to(target)  # steps of skipped prompts
            per_window.append((window, inner, found))
        if grid is not None:
            candidates = merge_tiles(per_window, shape, self.settings.box_nms_thresh)
        else:
            candidates = self._merge_crops(per_window, shape)
        candidates = self._clean(candidates)
        return to_segmentation(candidates, shape, self.settings.min_visible_fraction)

    # --------------------------------------------------------------------------- planning
    def _steps(self, groups: list[np.ndarray]) -> int:
        """Progress steps of one window's decoding: its batches, plus one to refine."""
        batches = sum(-(-len(g) // self.settings.batch_size) for g in groups)
        refine = 1 if self.scheme == "boxes" and self.settings.refine else 0
        return batches + refine

    def _plan(self, window: Window, layer: int, inner: Window | None) -> list[np.ndarray]:
        """Prompts for one window in window pixels, in groups decoded one after the other.

        Points: one group of (P, 2) points. Boxes: one (P, 4) group per box size, the
        largest first.
        """
        x0, y0, x1, y1 = window
        height, width = y1 - y0, x1 - x0
        if self.scheme == "points":
            per_side = int(
                self.settings.points_per_side / self.settings.crop_n_points_downscale_factor**layer
            )
            groups = [point_grid(max(per_side, 1)) * np.array([width, height])]
        else:
            scale = max(height, width) / self.predictor.spec.image_size
            sides = sorted((s * scale for s in self.settings.box_sizes), reverse=True)
            groups = [box_grid((height, width), [side], self.settings.box_stride) for side in sides]
        if inner is not None:  # a tile: prompt only where objects it owns can be
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

    # ---------------------------------------------------------------------------- windows
    def _window(
        self,
        embedding: ImageEmbedding,
        window: Window,
        groups: list[np.ndarray],
        ticker: _Ticker,
    ) -> Candidates:
        """Decode, filter and de-duplicate one window's prompts; masks in image pixels.

        With boxes, each size's boxes whose centre lies on an object already found with
        confidence (predicted IoU and stability above the final thresholds) are skipped:
        a smaller box there would find the same object or a part of it.
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
        found = Candidates.empty()
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
                x0, y0, x1, y1 = group.masks[index].box_xyxy
                covered[y0:y1, x0:x1] |= group.masks[index].crop
            found = found.concat(group)
        found = found.subset(nms(found.nms_boxes, found.iou, settings.box_nms_thresh))
        if two_pass:
            # One refinement per object: near-copies of a better mask add nothing.
            found = found.subset(mask_nms(found.masks, found.iou, settings.refine_dedupe_iou))
            height, width = embedding.frame.original_size
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
            found = found.subset(nms(found.nms_boxes, found.iou, settings.box_nms_thresh))
        x0, y0, _, _ = window
        return found.shifted(x0, y0, window)

    # ---------------------------------------------------------------------------- merging
    def _merge_crops(
        self, per_window: list[tuple[Window, Window | None, Candidates]], shape: tuple[int, int]
    ) -> Candidates:
        """Drop masks cut by a crop's edge, then NMS across crops preferring smaller crops."""
        merged = Candidates.empty()
        for window, _, found in per_window:
            cut = touches_window_edge(found.boxes, window, shape, self.settings.crop_edge_tolerance)
            merged = merged.concat(found.subset(np.flatnonzero(~cut)))
        if len(per_window) > 1 and len(merged):
            keep = nms(merged.nms_boxes, 1.0 / merged.window_areas, self.settings.crop_nms_thresh)
            merged = merged.subset(keep)
        return merged

    def _clean(self, candidates: Candidates) -> Candidates:
        """Fill small holes, drop small islands, then NMS again preferring unchanged masks."""
        area = self.settings.min_region_area
        if area <= 0 or not len(candidates):
            return candidates
        cleaned, unchanged = [], []
        for mask in candidates.masks:
            crop, changed = remove_small_regions(mask.crop, area)
            if changed:
                x0, y0 = mask.box_xyxy[:2]
                mask = InstanceMask.from_full(crop).shifted(x0, y0)
            cleaned.append(mask)
            unchanged.append(0.0 if changed else 1.0)
        candidates = candidates.with_masks(cleaned)
        keep = nms(
            candidates.nms_boxes,
            np.asarray(unchanged),
            max(self.settings.box_nms_thresh, self.settings.crop_nms_thresh),
        )
        return candidates.subset(np.sort(keep))


@dataclass
class _Ticker:
    """Counts steps for ``progress(done, total)`` and checks the cancel event."""

    total: int
    progress: ProgressCallback | None
    cancel: threading.Event | None
    done: int = field(default=0)

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("Segmenting everything was cancelled.")

    def tick(self) -> None:
        self.advance_to(self.done + 1)

    def advance_to(self, done: int) -> None:
        done = min(done, self.total)
        if done > self.done:
            self.done = done
            if self.progress is not None:
                self.progress(self.done, self.total)
