"""Objects measured under the blobs at a growing trial diameter: step 5 of the diameter estimate."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from sam_viz.windows.blobs import DISC_SIGMA_TO_DIAMETER, Blobs, central_region

MEASURE_OBJECT_PIXELS = 24.0  # measured at the pyramid level where objects span 24-48 pixels
MEASURE_REGION_SIDE = 512  # pixels per axis of the measured region, to bound the time
MARKER_SMOOTHING = 1 / 6  # basins from the image smoothed by this fraction of the diameter
OUTLINE_SMOOTHING = 0.06  # outlines from the image smoothed by this fraction of the diameter
MARKER_DYNAMIC = 0.05  # a basin's maximum rises this fraction of the object contrast above its pass
FILLED_BASIN = 0.5  # an object filling this share of its basin extends to the basin's border
OUTLINE_LEVELS = 16  # intensity levels tried for each object's outline
OUTLINE_GRADIENT = 0.6  # outline: the outermost edge with this fraction of the steepest gradient
MERGED_COUNT = 0.2  # a trial that finds under this share of the most objects found merges them
TRIAL_START, TRIAL_STEP, TRIAL_COUNT = 0.7, math.sqrt(2.0), 8  # trial diameters / blob diameter


def measured_diameter(
    pyramid: list[np.ndarray],
    sign: float,
    guess: float,
    blobs: Blobs,
    contrast: float,
    high: float,
) -> tuple[float, int] | None:
    """The diameter at which measured objects are as large as the size they were measured for.

    Basins and outlines depend on a smoothing proportional to the diameter: too little splits
    textured objects, too much merges neighbours. Trial diameters grow from below the blob
    guess until the measured diameter falls below the trial one; the crossing is interpolated.
    A trial that finds far fewer objects than earlier ones is merging them: the last good
    trial's measurement is kept.

    Returns:
        The diameter and how many objects were measured at the last trial, or None when no
        trial found objects.
    """
    previous: tuple[float, float] | None = None
    result = None
    most = 0
    for step in range(TRIAL_COUNT):
        trial = guess * TRIAL_START * TRIAL_STEP**step
        if trial > high and previous is not None:
            break
        measured = _measure_objects(pyramid, sign, trial, blobs, contrast)
        if measured is None:
            continue
        if result is not None and measured[1] < MERGED_COUNT * most:
            break  # objects are merging into a few large basins: keep the last good trial
        most = max(most, measured[1])
        result = measured
        excess = math.log(measured[0] / trial)
        if excess <= 0:
            if previous is None:
                return measured
            trial_before, excess_before = previous
            share = excess_before / (excess_before - excess)
            crossing = math.exp(math.log(trial_before) + share * math.log(trial / trial_before))
            return crossing, measured[1]
        previous = (trial, excess)
    return result


def _measure_objects(
    pyramid: list[np.ndarray], sign: float, diameter: float, blobs: Blobs, contrast: float
) -> tuple[float, int] | None:
    """Median equivalent diameter of the objects outlined at a trial diameter, and their count.

    Works at the pyramid level where the trial diameter spans MEASURE_OBJECT_PIXELS or more,
    in a central region. Each object is a watershed basin of the smoothed image (a basin
    per maximum that rises MARKER_DYNAMIC of the contrast above its surroundings) that holds
    one of the strong blobs; its outline is the level where the image falls most steeply
    towards the basin's lowest value.
    """
    level = min(len(pyramid) - 1, max(0, int(math.log2(diameter / MEASURE_OBJECT_PIXELS))))
    factor = 2**level
    (y0, y1), (x0, x1) = central_region(pyramid[level].shape, 0, MEASURE_REGION_SIDE)[0]
    image = sign * pyramid[level][y0:y1, x0:x1]
    size = diameter / factor
    smooth = ndimage.gaussian_filter(image, MARKER_SMOOTHING * size)
    light = ndimage.gaussian_filter(image, max(0.5, OUTLINE_SMOOTHING * size))

    # Basins of the smoothed image, one per maximum of enough dynamic.
    markers, count = ndimage.label(h_maxima(smooth, max(MARKER_DYNAMIC * contrast, 1e-6)))
    if count == 0:
        return None
    basins = watershed(-smooth, markers)
    index = np.arange(1, count + 1)
    peak = np.asarray(ndimage.maximum(smooth, basins, index))
    low = np.asarray(ndimage.minimum(light, basins, index))
    span = np.maximum(peak - low, 1e-6)

    # Each basin's object, inside its outline; objects: basins that hold a strong blob.
    area = _object_areas(light, basins, count, low, span)
    holds = _holding_blobs(basins, count, blobs, diameter, factor, (y0, x0))
    holds &= area >= 4
    if not holds.any():
        return None
    diameters = 2 * np.sqrt(area[holds] / math.pi) * factor
    return float(np.median(diameters)), int(holds.sum())


def _object_areas(
    light: np.ndarray, basins: np.ndarray, count: int, low: np.ndarray, span: np.ndarray
) -> np.ndarray:
    """Each basin's object area (pixels), inside its outline.

    The outline is the lowest of OUTLINE_LEVELS levels (between the basin's ``low`` and
    ``low + span``) whose mean gradient is near the steepest.
    """
    relative = (light - low[basins - 1]) / span[basins - 1]
    bins = np.clip((relative * OUTLINE_LEVELS).astype(np.int64), 0, OUTLINE_LEVELS - 1)
    key = ((basins - 1) * OUTLINE_LEVELS + bins).ravel()
    gradient = np.hypot(*np.gradient(light)).ravel()
    total = np.bincount(key, gradient, minlength=count * OUTLINE_LEVELS)
    pixels = np.bincount(key, minlength=count * OUTLINE_LEVELS)
    mean = (total / np.maximum(pixels, 1)).reshape(count, OUTLINE_LEVELS)
    mean[:, [0, -1]] = 0  # the basin's floor and summit are no outline
    outline = np.argmax(mean >= OUTLINE_GRADIENT * mean.max(axis=1, keepdims=True), axis=1)
    rows = np.arange(count)
    for _ in range(OUTLINE_LEVELS - 1):  # climb to that edge's steepest level
        step = np.minimum(outline + 1, OUTLINE_LEVELS - 1)
        outline = np.where(mean[rows, step] > mean[rows, outline], step, outline)
    threshold = low + (outline + 0.5) / OUTLINE_LEVELS * span
    inside = ndimage.binary_fill_holes(light > threshold[basins - 1])
    area = np.bincount(basins[inside] - 1, minlength=count)
    # A basin mostly filled by its object is bounded by neighbours: the object is the basin.
    basin_area = np.bincount(basins.ravel() - 1, minlength=count)
    return np.where(area >= FILLED_BASIN * basin_area, basin_area, area)


def _holding_blobs(
    basins: np.ndarray,
    count: int,
    blobs: Blobs,
    diameter: float,
    factor: int,
    origin: tuple[int, int],
) -> np.ndarray:
    """Which basins hold a strong blob of a size comparable to ``diameter`` and are not cut
    by the region (whose top-left level pixel is ``origin``)."""
    y0, x0 = origin
    height, width = basins.shape
    near = (blobs.sigma * DISC_SIGMA_TO_DIAMETER > diameter / 4) & (
        blobs.sigma * DISC_SIGMA_TO_DIAMETER < diameter * 4
    )
    rows = np.round((blobs.y[near] - (factor - 1) / 2) / factor).astype(int) - y0
    cols = np.round((blobs.x[near] - (factor - 1) / 2) / factor).astype(int) - x0
    within = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    holds = np.zeros(count, bool)
    holds[basins[rows[within], cols[within]] - 1] = True
    edge = np.concatenate([basins[0], basins[-1], basins[:, 0], basins[:, -1]]) - 1
    holds[edge] = False
    return holds
