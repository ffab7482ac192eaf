"""Segment everything on images too large to hold at once: tile by tile, in bounded memory.

A whole-slide scan or a stitched plate of 20,000 x 20,000 px does not fit the usual path,
which converts the whole image to float RGB (12 bytes a pixel). Here the image is read one
tile at a time from any array that slices lazily (a dask array over OME-Zarr or TIFF tiles,
a zarr array, a memory map), and the labels are written tile by tile into any array that
takes slice assignment (a zarr array on disk, or a NumPy array for the front ends).

1. :func:`survey`: one strided pass over the image gives what every tile must share:
   contrast limits, the object diameter (estimated on the crops with the most objects) and
   polarity, the seed stretch and a floor for the seed level (from an empty crop: a tile
   of mostly empty slide must not take its noise for objects), and a coarse map of where
   there is anything to segment.
2. Each tile is segmented with a margin of :data:`MARGIN_DIAMETERS` object diameters
   (:func:`segment_tile`). A tile *owns* the objects whose centre lies in its core (with
   :data:`OWNER_SLACK`), so an object cut by a tile border is whole in the tile that owns
   it and is found once.
3. :func:`paint_tile` writes a tile's objects where no earlier tile's object lies, in tile
   order, so the result does not depend on which worker finished first.

Conventions: windows ``XYXY`` with exclusive ends in image pixels; labels int32, 0 for
background, numbered in tile order.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from sam_viz.automatic.results import Segmentation
from sam_viz.automatic.seeds import SeedLevels, seed_levels
from sam_viz.image import Contrast, contrast_limits, is_large, validate_image
from sam_viz.io import to_numpy
from sam_viz.masks import InstanceMask, paint_labels
from sam_viz.progress import ProgressCallback, check_cancel
from sam_viz.windows.geometry import Window

if TYPE_CHECKING:
    from sam_viz.automatic.everything import MaskGenerator
    from sam_viz.automatic.seeds import Polarity
    from sam_viz.windows.scaled import ScaledImage

TILE_SIDE = 2048
# Each tile sees this many object diameters past its core: an object cut by the core's
# border lies whole in the tile owning its centre as long as it is no larger.
MARGIN_DIAMETERS = 3.0
# The survey's strided overview has at most this many pixels.
OVERVIEW_PIXELS = 4_000_000
# The diameter is estimated on up to this many crops of this side, the busiest first.
ESTIMATE_CROPS = 3
ESTIMATE_CROP_SIDE = 1024
MIN_ESTIMATE_OBJECTS = 5
# Noise is measured on a crop of this side with nothing in it (see seeds.seed_levels).
EMPTY_CROP_SIDE = 256
# A tile keeps objects whose centre lies this many diameters past its core's edge too.
OWNER_SLACK = 0.25
# Overview pixels this many noise deviations above its median are content.
CONTENT_NOISE = 6.0
# A tile whose overview has fewer foreground pixels than this is left empty.
MIN_CONTENT_PIXELS = 2
STEPS_PER_TILE = 100


@dataclass(frozen=True)
class Tile:
    """One tile: the ``core`` it owns objects in and the ``outer`` region it segments."""

    index: int
    core: Window
    outer: Window


def plan_tiles(shape_hw: tuple[int, int], side: int, margin: int) -> list[Tile]:
    """Cores of ``side`` pixels tiling the image in row-major order, each with ``margin``
    pixels of context around it (clipped to the image).

    Raises:
        ValueError: For a side below 64 pixels or a negative margin.
    """
    if side < 64:
        raise ValueError(f"The tile side must be at least 64 pixels, got {side}.")
    if margin < 0:
        raise ValueError(f"The tile margin must be >= 0, got {margin}.")
    height, width = shape_hw
    return [
        Tile(
            index,
            (x0, y0, x1, y1),
            (
                max(0, x0 - margin),
                max(0, y0 - margin),
                min(width, x1 + margin),
                min(height, y1 + margin),
            ),
        )
        for index, (x0, y0, x1, y1) in enumerate(chunk_windows(shape_hw, side))
    ]


@dataclass(frozen=True)
class Overview:
    """What every tile of an image shares, from one strided pass over it.

    Attributes:
        shape: (H, W) of the image.
        limits: Contrast limits (low, high) for the whole image; None to take values as
            they are (uint8 and bool images).
        diameter: Typical object diameter in image pixels.
        diameter_source: ``"given"``, or the estimate and what it rests on.
        polarity: Whether objects are brighter or darker than their surroundings.
        foreground: Where the overview has something to segment, one pixel per ``step``.
        step: The overview's stride in image pixels.
        seed_levels: The seed stretch (busiest crops) and level floor (an empty crop)
            every tile uses.
    """

    shape: tuple[int, int]
    limits: tuple[float, float] | None
    diameter: float
    diameter_source: str
    polarity: Polarity
    foreground: np.ndarray
    step: int
    seed_levels: SeedLevels | None = None

    @property
    def margin(self) -> int:
        """The context each tile gets past its core, in pixels."""
        return math.ceil(MARGIN_DIAMETERS * self.diameter)

    def has_content(self, window: Window) -> bool:
        """Whether the overview shows anything to segment in ``window``."""
        x0, y0, x1, y1 = (v // self.step for v in window)
        region = self.foreground[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
        return int(np.count_nonzero(region)) >= MIN_CONTENT_PIXELS


def _gray(array: np.ndarray) -> np.ndarray:
    values = array.astype(np.float32)
    return values[..., :3].mean(axis=-1) if values.ndim == 3 else values


def survey(
    image: Any,
    *,
    diameter: float | None = None,
    contrast: Contrast = "auto",
    percentiles: tuple[float, float] = (0.5, 99.5),
    polarity: Polarity | None = None,
) -> Overview:
    """Read the image once at a stride and derive what its tiles share.

    Args:
        image: (H, W) or (H, W, C) array-like that slices lazily.
        diameter: Typical object diameter in pixels; estimated when None.
        contrast: Contrast rule (:func:`sam_viz.image.contrast_limits`).
        percentiles: Percentiles of the percentile stretch.
        polarity: ``"bright"`` or ``"dark"`` objects; estimated when None.

    Raises:
        ValueError: When no diameter is given and too few objects are found to estimate
            one (the message says to give it).
    """
    from skimage.filters import threshold_otsu

    from sam_viz.windows.diameter import estimate_diameter

    height, width = int(image.shape[0]), int(image.shape[1])
    step = max(1, math.ceil(math.sqrt(height * width / OVERVIEW_PIXELS)))
    overview = validate_image(to_numpy(image[::step, ::step]))
    limits = contrast_limits(overview, contrast=contrast, percentiles=percentiles)
    gray = _gray(overview)
    smooth = ndimage.gaussian_filter(np.nan_to_num(gray), 1.0)
    crops = _busiest_crops(image, smooth, step)
    source = "given"
    if diameter is None or polarity is None:
        estimate = max((estimate_diameter(crop) for crop in crops), key=lambda e: e.count)
        if diameter is None:
            if estimate.count < MIN_ESTIMATE_OBJECTS:
                raise ValueError(
                    f"Found only {estimate.count} objects to estimate their size from in "
                    "the busiest parts of the image: give the typical object diameter "
                    "(--diameter in pixels)."
                )
            diameter, source = estimate.diameter, f"estimated: {estimate}"
        polarity = polarity or estimate.polarity
    signed = smooth if polarity == "bright" else -smooth
    level = threshold_otsu(signed) if np.ptp(signed) > 0 else np.inf
    # Or clearly above the background's noise: a faint region a bright one sets Otsu above.
    spread = 1.4826 * float(np.median(np.abs(signed - np.median(signed))))
    foreground = signed > min(level, float(np.median(signed)) + CONTENT_NOISE * spread)
    empty = _empty_crop(image, smooth, foreground, step)
    return Overview(
        (height, width),
        limits,
        float(diameter),
        source,
        polarity,
        foreground,
        step,
        seed_levels(crops, float(diameter), polarity, empty),
    )


def _cells(
    image: Any, overview: np.ndarray, step: int, side: int
) -> Iterator[tuple[Window, Window]]:
    """Crops of ``side`` pixels tiling the image: (in the overview, in the image)."""
    height, width = int(image.shape[0]), int(image.shape[1])
    side = min(side, height, width)
    cells = max(1, side // step)
    for r in range(max(1, overview.shape[0] // cells)):
        for c in range(max(1, overview.shape[1] // cells)):
            y0, x0 = min(r * cells * step, height - side), min(c * cells * step, width - side)
            small = (c * cells, r * cells, (c + 1) * cells, (r + 1) * cells)
            yield small, (x0, y0, x0 + side, y0 + side)


def _read(image: Any, window: Window) -> np.ndarray:
    x0, y0, x1, y1 = window
    return validate_image(to_numpy(image[y0:y1, x0:x1]))


def _busiest_crops(image: Any, smooth: np.ndarray, step: int) -> list[np.ndarray]:
    """Up to :data:`ESTIMATE_CROPS` full-resolution crops where the overview varies most."""
    busy = [
        (_part(smooth, small).std(), crop)
        for small, crop in _cells(image, smooth, step, ESTIMATE_CROP_SIDE)
    ]
    busy.sort(key=lambda item: -item[0])
    return [_read(image, crop) for _, crop in busy[:ESTIMATE_CROPS]]


def _empty_crop(
    image: Any, smooth: np.ndarray, foreground: np.ndarray, step: int
) -> np.ndarray | None:
    """The quietest full-resolution crop the overview shows nothing in, if there is one."""
    empty = [
        (_part(smooth, small).std(), crop)
        for small, crop in _cells(image, smooth, step, EMPTY_CROP_SIDE)
        if not _part(foreground, small).any()
    ]
    return _read(image, min(empty, key=lambda item: item[0])[1]) if empty else None


def _part(overview: np.ndarray, window: Window) -> np.ndarray:
    x0, y0, x1, y1 = window
    return overview[y0:y1, x0:x1]


@dataclass(frozen=True)
class TileResult:
    """The objects one tile owns, in image pixels, in the order they are painted (largest
    first, so smaller objects stay on top), and how many windows the tile embedded."""

    tile: Tile
    masks: tuple[InstanceMask, ...]
    iou: np.ndarray
    stability: np.ndarray
    prompts: np.ndarray
    windows: int

    @classmethod
    def empty(cls, tile: Tile, windows: int = 0) -> TileResult:
        """No objects (``windows`` were embedded looking for them)."""
        zeros = np.zeros(0, dtype=np.float32)
        return cls(tile, (), zeros, zeros, np.zeros((0, 4)), windows)


def segment_tile(
    generator: MaskGenerator,
    image: Any,
    tile: Tile,
    overview: Overview,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> TileResult:
    """Segment one tile's outer region and keep the objects whose centre is in its core
    (the centre of their seed's region with the seeds scheme, else of their mask)."""
    from sam_viz.automatic.everything import EVERYTHING_FRACTION
    from sam_viz.windows.scaled import ScaledImage

    if not overview.has_content(tile.outer):
        return TileResult.empty(tile)
    x0, y0, x1, y1 = tile.outer
    pixels = to_numpy(image[y0:y1, x0:x1])
    scaled = ScaledImage(
        generator.predictor,
        pixels,
        diameter=overview.diameter,
        contrast="none" if overview.limits is None else "auto",
        limits=overview.limits,
        fraction=EVERYTHING_FRACTION,
    )
    scaled.polarity = overview.polarity
    scaled.seed_levels = overview.seed_levels
    found = generator.generate(pixels, scaled=scaled, progress=progress, cancel=cancel)
    labels = found.labels
    kept = np.flatnonzero(found.mask_labels)
    if not len(kept):
        return TileResult.empty(tile, len(scaled.embedded))
    if generator.scheme == "seeds":
        # A seed's region comes from the whole image's levels and the pixels around it, so
        # two tiles holding an object find the same one: its centre decides the owner alike.
        boxes = found.prompts.reshape(-1, 4)[kept]
        centres = np.stack([boxes[:, [1, 3]].mean(axis=1), boxes[:, [0, 2]].mean(axis=1)], 1)
    else:
        index = found.mask_labels[kept]
        centres = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, index))
    # Two tiles may place an object's centre a little apart: with some slack both may keep
    # it (painting keeps the first), and never neither.
    slack = OWNER_SLACK * overview.diameter
    cx0, cy0, cx1, cy1 = tile.core
    owned = [
        k
        for k, (cy, cx) in zip(kept, centres.reshape(-1, 2), strict=True)
        if cx0 - slack <= cx + x0 < cx1 + slack and cy0 - slack <= cy + y0 < cy1 + slack
    ]
    owned.sort(key=lambda k: -found.masks[k].area)
    return TileResult(
        tile,
        tuple(found.masks[k].shifted(x0, y0) for k in owned),
        found.predicted_iou[owned],
        found.stability_score[owned],
        found.prompts.reshape(-1, 4)[owned] + np.array([x0, y0, x0, y0]),
        len(scaled.embedded),
    )


def paint_tile(
    labels: Any, result: TileResult, first_label: int, min_visible_fraction: float = 0.5
) -> tuple[np.ndarray, list[dict[str, float | int]]]:
    """Write a tile's objects into ``labels`` where no earlier object lies.

    An object left with less than ``min_visible_fraction`` of its pixels (it lies mostly
    under an object an earlier tile owns) is left out.

    Returns:
        The label each of the tile's masks got (0: left out) and one table row per object.
    """
    count = len(result.masks)
    if not count:
        return np.zeros(0, np.int32), []
    x0, y0, x1, y1 = result.tile.outer
    block = to_numpy(labels[y0:y1, x0:x1])
    local = paint_labels(
        (y1 - y0, x1 - x0), [m.shifted(-x0, -y0) for m in result.masks], dtype=np.int32
    )
    local[block != 0] = 0
    visible = np.bincount(local.ravel(), minlength=count + 1)[1:]
    areas = np.array([m.area for m in result.masks])
    keep = (visible > 0) & (visible >= min_visible_fraction * areas)
    numbers = np.zeros(count + 1, np.int32)
    numbers[1:][keep] = first_label + np.arange(int(keep.sum()), dtype=np.int32)
    painted = numbers[local]
    block = np.where(painted != 0, painted, block)
    labels[y0:y1, x0:x1] = block
    return numbers[1:], _rows(painted, numbers[1:], result, (x0, y0))


def _rows(
    painted: np.ndarray, numbers: np.ndarray, result: TileResult, offset: tuple[int, int]
) -> list[dict[str, float | int]]:
    """Table rows of a tile's painted objects (the columns of :meth:`Segmentation.table`)."""
    kept = np.flatnonzero(numbers)
    if not len(kept):
        return []
    first = int(numbers[kept[0]])
    dense = np.where(painted > 0, painted - first + 1, 0)
    index = np.arange(1, len(kept) + 1)
    areas = np.bincount(dense.ravel(), minlength=len(kept) + 1)[1:]
    centroids = ndimage.center_of_mass(np.ones_like(dense), dense, index)
    slices = ndimage.find_objects(dense, max_label=len(kept))
    dx, dy = offset
    rows = []
    for n, k in enumerate(kept):
        rows_slice, cols_slice = slices[n]
        cy, cx = centroids[n]
        rows.append(
            {
                "label": int(numbers[k]),
                "area": int(areas[n]),
                "x0": int(cols_slice.start) + dx,
                "y0": int(rows_slice.start) + dy,
                "x1": int(cols_slice.stop) + dx,
                "y1": int(rows_slice.stop) + dy,
                "centroid_x": round(float(cx) + dx, 2),
                "centroid_y": round(float(cy) + dy, 2),
                "predicted_iou": round(float(result.iou[k]), 4),
                "stability_score": round(float(result.stability[k]), 4),
                "mask_area": int(result.masks[k].area),
            }
        )
    return rows


class TileAssembler:
    """Paints tile results into a label array in tile order, whatever order they arrive in,
    and collects the table and the masks."""

    def __init__(self, labels: Any, min_visible_fraction: float = 0.5) -> None:
        self.labels = labels
        self.min_visible_fraction = min_visible_fraction
        self.next_index = 0
        self.next_label = 1
        self.windows = 0
        self._waiting: dict[int, TileResult] = {}
        self._results: list[TileResult] = []
        self._numbers: list[np.ndarray] = []
        self.rows: list[dict[str, float | int]] = []

    def add(self, result: TileResult) -> int:
        """Take one tile's result; paint it and every waiting one now in order. Returns how
        many tiles are painted."""
        self._waiting[result.tile.index] = result
        while self.next_index in self._waiting:
            ready = self._waiting.pop(self.next_index)
            numbers, rows = paint_tile(
                self.labels, ready, self.next_label, self.min_visible_fraction
            )
            self.next_label += len(rows)
            self.windows += ready.windows
            self._results.append(ready)
            self._numbers.append(numbers)
            self.rows.extend(rows)
            self.next_index += 1
        return self.next_index

    def segmentation(self) -> Segmentation:
        """Everything painted so far, as a :class:`Segmentation` (its labels the array)."""
        results = self._results
        return Segmentation(
            self.labels,
            tuple(m for r in results for m in r.masks),
            _joined([r.iou for r in results], np.float32),
            _joined([r.stability for r in results], np.float32),
            np.concatenate([r.prompts.reshape(-1, 4) for r in results] or [np.zeros((0, 4))]),
            _joined(self._numbers, np.int32),
            rows=self.rows,
        )


def _joined(parts: Sequence[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def tile_progress(
    progress: ProgressCallback | None, index: int, total: int
) -> Callable[[int, int], None] | None:
    """A tile's own ``progress(done, total)`` reported as part of the whole run's."""
    if progress is None:
        return None

    reached = 0  # a tile's total grows as it learns its windows: never step back

    def report(done: int, of: int) -> None:
        nonlocal reached
        share = min(STEPS_PER_TILE * done // max(of, 1), STEPS_PER_TILE - 1)
        reached = max(reached, share)
        progress(index * STEPS_PER_TILE + reached, total * STEPS_PER_TILE)

    return report


def segment_tiled(
    generator: MaskGenerator,
    image: Any,
    labels: Any = None,
    *,
    tile_side: int = TILE_SIDE,
    overview: Overview | None = None,
    contrast: Contrast = "auto",
    percentiles: tuple[float, float] = (0.5, 99.5),
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Segmentation:
    """Segment every object of a large image tile by tile (see the module docstring).

    Args:
        generator: The mask generator (its settings' diameter, if given, is used).
        image: (H, W) or (H, W, C) array-like that slices lazily (dask, zarr, NumPy).
        labels: Where the labels go: an (H, W) integer array-like taking slice assignment
            (e.g. a zarr array on disk); a NumPy array is made when None.
        tile_side: Side of each tile's core in pixels.
        overview: The image's :func:`survey`, made here when None.
        contrast: Contrast rule for the survey.
        percentiles: Percentiles of the percentile stretch.
        progress: Called as ``progress(done, total)``, :data:`STEPS_PER_TILE` per tile.
        cancel: Set it to stop between windows; :class:`~sam_viz.progress.Cancelled`.

    Returns:
        The segmentation; its ``labels`` is ``labels`` and its table was made tile by tile.
    """
    height, width = int(image.shape[0]), int(image.shape[1])
    if overview is None:
        check_cancel(cancel, "Segmenting")
        overview = survey(
            image,
            diameter=generator.settings.diameter,
            contrast=contrast,
            percentiles=percentiles,
        )
    if labels is None:
        labels = np.zeros((height, width), np.int32)
    if tuple(labels.shape) != (height, width):
        raise ValueError(
            f"labels must have the image's shape {(height, width)}, got {labels.shape}."
        )
    tiles = plan_tiles((height, width), tile_side, overview.margin)
    assembler = TileAssembler(labels, generator.settings.min_visible_fraction)
    for tile in tiles:
        check_cancel(cancel, "Segmenting")
        report = tile_progress(progress, tile.index, len(tiles))
        assembler.add(
            segment_tile(generator, image, tile, overview, progress=report, cancel=cancel)
        )
        if progress is not None:
            progress((tile.index + 1) * STEPS_PER_TILE, len(tiles) * STEPS_PER_TILE)
    return assembler.segmentation()


def segment_image(
    generator: MaskGenerator,
    image: Any,
    *,
    scaled: ScaledImage | None = None,
    contrast: Contrast = "auto",
    percentiles: tuple[float, float] = (0.5, 99.5),
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Segmentation:
    """Segment everything in an image of any size, as every front end does: one over
    :data:`~sam_viz.image.TILED_ABOVE` pixels (read lazily where it is a dask or zarr array)
    goes tile by tile (:func:`segment_tiled`; ``scaled`` is then not used), others through
    :meth:`MaskGenerator.generate`.
    """
    if is_large(np.shape(image)) and not generator.settings.whole_image:
        return segment_tiled(
            generator,
            image,
            contrast=contrast,
            percentiles=percentiles,
            progress=progress,
            cancel=cancel,
        )
    return generator.generate(
        to_numpy(image),
        contrast=contrast,
        percentiles=percentiles,
        progress=progress,
        cancel=cancel,
        scaled=scaled,
    )


def chunk_windows(shape_hw: tuple[int, int], side: int) -> Iterator[Window]:
    """Row-major windows of ``side`` pixels covering an image (the last ones clipped)."""
    height, width = shape_hw
    for y0 in range(0, height, side):
        for x0 in range(0, width, side):
            yield x0, y0, min(width, x0 + side), min(height, y0 + side)


LABEL_CHUNK = 1024
TIFF_TILE = 512


def label_store(path: str | os.PathLike[str], shape_hw: tuple[int, int]):
    """An empty (H, W) int32 zarr array on disk for :func:`segment_tiled` to write into."""
    import zarr

    chunk = (min(LABEL_CHUNK, shape_hw[0]), min(LABEL_CHUNK, shape_hw[1]))
    return zarr.open_array(
        str(path), mode="w", shape=shape_hw, chunks=chunk, dtype=np.int32, fill_value=0
    )


def write_tiff_tiles(path: str | os.PathLike[str], labels: Any) -> None:
    """Write an (H, W) label array as a tiled TIFF, reading it one tile at a time."""
    import tifffile

    height, width = int(labels.shape[0]), int(labels.shape[1])
    side = TIFF_TILE

    def tiles() -> Iterator[np.ndarray]:
        for x0, y0, x1, y1 in chunk_windows((height, width), side):
            tile = np.zeros((side, side), np.int32)
            tile[: y1 - y0, : x1 - x0] = to_numpy(labels[y0:y1, x0:x1])
            yield tile

    tifffile.imwrite(
        path,
        tiles(),
        shape=(height, width),
        dtype=np.int32,
        tile=(side, side),
        compression="zlib",
        bigtiff=height * width * 4 > 2**31,
    )
