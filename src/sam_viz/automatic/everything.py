"""Segment everything: automatic instance segmentation, as a label image and a table.

The image is seen at its object scale (:class:`~sam_viz.windows.scaled.ScaledImage`:
windows magnified for the typical object ``diameter``, given or estimated). Three prompt
schemes:

* ``"seeds"`` (the default): the image says where the objects are, one seed and region
  each, and the model outlines each from its region's box
  (:mod:`sam_viz.automatic.seeded`). Made for microscopy: many small, touching, dim objects.
* ``"points"`` and ``"boxes"``: SAM's own generator, a grid of prompts per window with the
  confident masks kept (:mod:`sam_viz.automatic.grid_prompts`); objects found in
  overlapping windows are joined (:func:`~sam_viz.automatic.merging.merge_tiles`).

Conventions: boxes ``XYXY`` (exclusive ends) in pixels of the image. :class:`MaskGenerator`
may run in a worker thread: it reports ``progress(done, total)`` and stops with
:class:`~sam_viz.progress.Cancelled` when its ``cancel`` event is set.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from sam_viz.automatic.grid_prompts import GridPrompts, GridScheme, GridSettings, Ticker
from sam_viz.automatic.merging import merge_tiles
from sam_viz.automatic.results import Proposals, Segmentation, to_segmentation
from sam_viz.automatic.seeded import outline_seeds
from sam_viz.automatic.seeds import find_seeds
from sam_viz.image import Contrast
from sam_viz.models.registry import SeededThresholds
from sam_viz.progress import ProgressCallback
from sam_viz.windows.geometry import Window
from sam_viz.windows.scaled import ScaledImage

if TYPE_CHECKING:
    from sam_viz.predictor import Predictor

PromptScheme = Literal["auto", "seeds", "boxes", "points"]
# Windows for segment everything show a typical object at this fraction of the model input:
# coarser than for prompts, so a field needs fewer windows (README, "Segment everything").
EVERYTHING_FRACTION = 0.08

__all__ = ["EverythingSettings", "MaskGenerator", "Segmentation"]


@dataclass(frozen=True)
class EverythingSettings:
    """How :class:`MaskGenerator` finds objects.

    Attributes:
        prompts: ``"seeds"``, ``"points"``, ``"boxes"`` or ``"auto"`` (seeds).
        diameter: Typical object diameter in image pixels; estimated when None.
        whole_image: See the whole image at once, at SAM's usual frame, instead of windows
            at the object scale.
        seeded: When the seeds scheme keeps the model's outlines; the model's own
            (``spec.seeded``, in the registry) when None.
        grid: The point and box grids and their filters.
        min_visible_fraction: In the label image, drop an object when less than this
            fraction of its mask stays visible under smaller objects painted on top.
    """

    prompts: PromptScheme = "auto"
    diameter: float | None = None
    whole_image: bool = False
    seeded: SeededThresholds | None = None
    grid: GridSettings = field(default_factory=GridSettings)
    min_visible_fraction: float = 0.5

    def validated(self) -> EverythingSettings:
        """Check the settings; returns them unchanged.

        Raises:
            ValueError: For a setting out of range (the message names it).
        """
        if self.prompts not in ("auto", "seeds", "boxes", "points"):
            raise ValueError(
                f"prompts must be 'auto', 'seeds', 'boxes' or 'points', got {self.prompts!r}."
            )
        if self.diameter is not None and not (np.isfinite(self.diameter) and self.diameter > 0):
            raise ValueError(f"diameter must be a positive number of pixels, got {self.diameter}.")
        grid = self.grid
        for name in ("points_per_side", "batch_size"):
            if int(getattr(grid, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(grid, name)}.")
        if not grid.box_sizes or min(grid.box_sizes) <= 0:
            raise ValueError(
                f"box_sizes must be positive model-input pixels, got {grid.box_sizes}."
            )
        if not 0 < grid.box_stride <= 1:
            raise ValueError(f"box_stride must be in (0, 1], got {grid.box_stride}.")
        for owner, name in [
            (grid, "pred_iou_thresh"),
            (grid, "stability_score_thresh"),
            (grid, "box_nms_thresh"),
            (grid, "first_pass_iou_thresh"),
            (grid, "first_pass_stability_thresh"),
            (grid, "cover_stability_thresh"),
            (grid, "refine_dedupe_iou"),
            (self, "min_visible_fraction"),
        ]:
            value = getattr(owner, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}.")
        if grid.refine_margin < 0 or grid.stability_score_offset < 0 or grid.min_region_area < 0:
            raise ValueError(
                "refine_margin, stability_score_offset and min_region_area must be >= 0."
            )
        return self

    def with_overrides(self, **overrides: object) -> EverythingSettings:
        """These settings with fields replaced; grid fields may be named directly.

        Raises:
            ValueError: For a name that is no setting (the message lists them).
        """
        own = {f.name for f in fields(EverythingSettings)}
        grid_names = {f.name for f in fields(GridSettings)}
        unknown = sorted(set(overrides) - own - grid_names)
        if unknown:
            raise ValueError(
                f"Unknown setting(s) {unknown}; known settings: {sorted(own | grid_names)}."
            )
        grid = {k: v for k, v in overrides.items() if k in grid_names}
        mine = {k: v for k, v in overrides.items() if k in own}
        settings = replace(self, **mine)  # type: ignore[arg-type]
        if grid:
            settings = replace(settings, grid=replace(settings.grid, **grid))  # type: ignore[arg-type]
        return settings.validated()


class MaskGenerator:
    """Finds every object in an image with a SAM predictor.

    Args:
        predictor: The shared predictor (its model and embedding cache are used; its current
            image is left alone).
        settings: An :class:`EverythingSettings`; keyword arguments override its fields (and
            those of its ``grid``).

    Example::

        generator = MaskGenerator(Predictor.from_pretrained(), diameter=24)
        result = generator.generate(image, progress=lambda d, t: print(d, t))
        result.labels        # (H, W) int32, 0 background
        result.table()       # one dict per object: label, area, box, scores
    """

    def __init__(
        self, predictor: Predictor, settings: EverythingSettings | None = None, **overrides: object
    ) -> None:
        self.settings = (settings or EverythingSettings()).with_overrides(**overrides)
        self.predictor = predictor

    @property
    def scheme(self) -> Literal["seeds", "boxes", "points"]:
        """The prompt scheme used."""
        return "seeds" if self.settings.prompts == "auto" else self.settings.prompts

    @property
    def thresholds(self) -> SeededThresholds:
        """When the seeds scheme keeps the model's outlines."""
        return self.settings.seeded or self.predictor.spec.seeded

    def scaled(
        self,
        image: object,
        *,
        contrast: Contrast = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
    ) -> ScaledImage:
        """The image at the scale segmenting it uses (its windows, its diameter)."""
        if self.settings.whole_image:
            array = np.asarray(image)
            diameter = float(max(array.shape[:2]))
        else:
            diameter = self.settings.diameter  # type: ignore[assignment]
        return ScaledImage(
            self.predictor,
            image,
            diameter=diameter,
            contrast=contrast,
            percentiles=percentiles,
            fraction=EVERYTHING_FRACTION,
        )

    def generate(
        self,
        image: object,
        *,
        contrast: Contrast = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        scaled: ScaledImage | None = None,
    ) -> Segmentation:
        """Segment every object in ``image``.

        Args:
            image: 2-D grayscale, RGB or RGBA array (see :mod:`sam_viz.image`).
            contrast: Contrast rule, see :func:`sam_viz.image.to_rgb01`.
            percentiles: Percentiles of the percentile stretch.
            progress: Called as ``progress(done, total)`` after each step.
            cancel: Set it to stop; :class:`~sam_viz.progress.Cancelled` is raised.
            scaled: The image as a front end prepared it (its contrast and diameter are
                used, with windows at :data:`EVERYTHING_FRACTION`); made from ``image`` when
                None.

        Returns:
            The label image, the masks and a table of the objects.
        """
        if scaled is None:
            scaled = self.scaled(image, contrast=contrast, percentiles=percentiles)
        elif not self.settings.whole_image:
            diameter = self.settings.diameter
            if scaled.fraction != EVERYTHING_FRACTION or diameter not in (None, scaled.diameter):
                scaled = scaled.with_scale(diameter=diameter, fraction=EVERYTHING_FRACTION)
        if self.scheme == "seeds":
            proposals = self._seeded(image, scaled, progress, cancel)
        else:
            proposals = self._grid(scaled, self.scheme, progress, cancel)
        return to_segmentation(proposals, scaled.shape, self.settings.min_visible_fraction)

    def _seeded(
        self,
        image: object,
        scaled: ScaledImage,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> Proposals:
        # Seeds and regions from the image (one step), then the model, window by window.
        ticker = Ticker(1, progress, cancel)
        ticker.check()
        seeds = find_seeds(
            np.asarray(image),
            scaled.diameter,
            polarity=scaled.polarity,
            levels=scaled.seed_levels,
        )

        def windows(done: int, total: int) -> None:
            ticker.total = total + 1
            ticker.advance_to(done + 1)

        ticker.tick()
        ticker.check()
        return outline_seeds(scaled, seeds, self.thresholds, progress=windows, cancel=cancel)

    def _grid(
        self,
        scaled: ScaledImage,
        scheme: GridScheme,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> Proposals:
        grid = GridPrompts(self.predictor, scheme, self.settings.grid)
        tiled = len(scaled.grid) > 1
        jobs = list(zip(scaled.grid.windows, scaled.grid.inners, strict=True))
        plans = [grid.plan(window, inner if tiled else None) for window, inner in jobs]
        steps = [1 + grid.steps(groups) for groups in plans]
        ticker = Ticker(sum(steps), progress, cancel)
        per_window: list[tuple[Window, Window | None, Proposals]] = []
        for (window, inner), groups, count in zip(jobs, plans, steps, strict=True):
            ticker.check()
            target = ticker.done + count
            embedding = scaled.embedding(window, cancel=cancel)
            ticker.tick()
            found = grid.window(embedding, window, groups, ticker)
            ticker.advance_to(target)  # steps of skipped prompts
            per_window.append((window, inner if tiled else None, found))
        if tiled:
            found = merge_tiles(per_window, scaled.shape, self.settings.grid.box_nms_thresh)
        else:
            found = per_window[0][2]
        return grid.clean(found)
