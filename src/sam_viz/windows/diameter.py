"""The typical object diameter of a microscopy image, estimated from the image alone.

Windows are magnified so that objects have a good size at the model's input; the
magnification follows from the typical object diameter in image pixels (cellpose's
``diameter``). :func:`estimate_diameter` finds blobs in a scale-normalised
Laplacian-of-Gaussian (LoG) scale space, then measures the objects under them:

1. The image becomes one float channel (RGB: the colour direction with the most variance,
   oriented so that larger means brighter) with a robust 0..1 stretch; NaN pixels take the
   median value.
2. A pyramid of 2x2 block means lets every scale be computed at a resolution where the
   Gaussian spans a few pixels, so large scales cost little. Levels of a large image are
   analysed in a central region only, and blobs found there count by the inverse of the
   sampled fraction.
3. Blobs are local maxima of the normalised LoG response over space and scale, for bright
   objects (``-sigma**2 * LoG``) and for dark ones (its negative), above a noise- and
   contrast-based threshold, and not ridge-like. The scale of each blob is refined between
   the sampled scales. For a disc of diameter ``d`` the normalised LoG peaks at
   ``sigma = d / (2 * sqrt(2))``.
4. The polarity whose strongest blobs respond more is taken; its strong blobs' area-weighted
   median diameter is a first guess. The LoG scale follows an object's brightness profile,
   not its outline (a cell that is dim at its border reads smaller), hence step 5.
5. Objects are measured: watershed basins of the image smoothed in proportion to a trial
   diameter, one per maximum of enough dynamic; each basin holding a strong blob is an
   object, outlined at its outermost steep edge (or the whole basin when the object fills
   most of it, as touching cells do). The trial diameter grows until the measured median
   equivalent diameter no longer exceeds it: too little smoothing splits textured objects,
   too much merges neighbours, and the crossing is the estimate.

:func:`diameter_from_boxes` gives the typical diameter implied by boxes a user drew.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from sam_viz.image import validate_image

Polarity = Literal["bright", "dark"]

SCALES_PER_OCTAVE = 5  # log-spaced sigmas; the peak is interpolated between them
MIN_LEVEL_SIGMA = 1.6  # a level's Gaussian spans at least this many of its pixels
MAX_REGION_SIDE = 1024  # pixels analysed per pyramid level and axis, to bound the time
DISC_SIGMA_TO_DIAMETER = 2.0 * math.sqrt(2.0)  # LoG peak of a disc of diameter d: d / 2√2
NOISE_SIGMAS = 6.0  # a blob must exceed the noise response by this many standard deviations
EDGE_RATIO = 5.0  # largest ratio of the response's principal curvatures at a blob
MIN_RESPONSE = 0.02  # and respond with at least this fraction of the image's robust range
STRONG_FRACTION = 0.5  # blobs counted: at least this fraction of the strongest blobs' response
TOP_PERCENTILE = 90.0  # "the strongest blobs" of a polarity: this percentile of its responses
MIN_BLOBS = 3  # a polarity with fewer blobs is taken only when the other has none
# Measuring objects (step 5):
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


@dataclass(frozen=True)
class DiameterEstimate:
    """A typical object diameter and what it rests on.

    Attributes:
        diameter: Typical object diameter in image pixels.
        count: How many objects the estimate rests on (0: nothing was found, and ``diameter``
            is only a placeholder; fall back to the model's default scale).
        polarity: ``"bright"`` when the objects are brighter than their surroundings
            (fluorescence), ``"dark"`` when darker (bright field, phase contrast, stains).
    """

    diameter: float
    count: int
    polarity: Polarity

    def __str__(self) -> str:
        noun = "object" if self.count == 1 else "objects"
        return f"{self.diameter:.0f} px (from {self.count} {noun}, {self.polarity})"


@dataclass(frozen=True)
class _Blobs:
    """Blobs of one polarity: centre (original pixels), sigma, response and count weight."""

    y: np.ndarray
    x: np.ndarray
    sigma: np.ndarray
    response: np.ndarray
    weight: np.ndarray

    @staticmethod
    def concatenate(parts: list[_Blobs]) -> _Blobs:
        if not parts:
            empty = np.zeros(0, np.float64)
            return _Blobs(empty, empty, empty, empty, empty)
        return _Blobs(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _Blobs.FIELDS)
        )

    def select(self, keep: np.ndarray) -> _Blobs:
        return _Blobs(*(getattr(self, name)[keep] for name in _Blobs.FIELDS))

    FIELDS = ("y", "x", "sigma", "response", "weight")


def estimate_diameter(
    image: np.ndarray, *, min_diameter: float = 4.0, max_diameter: float | None = None
) -> DiameterEstimate:
    """Estimate the typical diameter of the objects in a microscopy image.

    Args:
        image: (H, W) grayscale, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA; bool, integer
            or float; NaN/inf pixels are ignored.
        min_diameter: Smallest object diameter considered, in pixels (>= 2).
        max_diameter: Largest object diameter considered, in pixels; by default a third of
            the image's shorter side.

    Returns:
        The estimate. When no blob stands out from noise (a constant or pure-noise image),
        ``count`` is 0, ``diameter`` is the geometric mean of the diameter range and
        callers should fall back to the model's default scale.

    Raises:
        TypeError: For an unsupported dtype or non-numeric diameters.
        ValueError: For an unsupported shape, or a diameter range that is empty or
            outside the image.
    """
    gray, invalid = _to_gray(validate_image(image))
    low, high = _diameter_range(gray.shape, min_diameter, max_diameter)
    fallback = math.sqrt(low * high)
    if not np.any(gray != gray.flat[0]):
        return DiameterEstimate(fallback, 0, "bright")

    # Blobs of both polarities in a LoG scale space; the objects are the stronger polarity.
    sigmas = _sigmas(low / DISC_SIGMA_TO_DIAMETER, high / DISC_SIGMA_TO_DIAMETER)
    levels = np.maximum(0, np.floor(np.log2(sigmas / MIN_LEVEL_SIGMA))).astype(int)
    pyramid = _pyramid(gray, int(levels.max()))
    bright, dark = _scale_space_blobs(pyramid, invalid, sigmas, _noise_std(gray))
    chosen = _choose_polarity(bright, dark)
    if chosen is None:
        return DiameterEstimate(fallback, 0, "bright")
    polarity, blobs, strength = chosen

    # A first guess from the blobs' scales, weighted by area: texture inside objects is
    # numerous but small.
    diameters = blobs.sigma * DISC_SIGMA_TO_DIAMETER
    guess = _weighted_median(diameters, blobs.weight * diameters**2)

    # Measure objects' outlines at the smoothing their own size calls for. A disc of
    # contrast c peaks at c / e in the normalised LoG: strength * e is the objects' contrast.
    sign = 1.0 if polarity == "bright" else -1.0
    measured = _measured_diameter(pyramid, sign, guess, blobs, strength * math.e, high)
    if measured is None:
        diameter, count = guess, len(blobs.sigma)
    else:
        diameter, count = measured
    return DiameterEstimate(float(np.clip(diameter, low, high)), int(count), polarity)


def diameter_from_boxes(boxes_xyxy: np.ndarray) -> float:
    """The typical object diameter implied by boxes drawn around objects.

    Args:
        boxes_xyxy: (N, 4) boxes ``(x0, y0, x1, y1)`` in pixels, or one box of shape (4,).

    Returns:
        The median over boxes of ``sqrt(width * height)``, in pixels.

    Raises:
        ValueError: For no boxes, a wrong shape, non-finite values or a box with
            ``x1 <= x0`` or ``y1 <= y0``.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"boxes_xyxy must have shape (N, 4) as (x0, y0, x1, y1), got {boxes.shape}."
        )
    if len(boxes) == 0:
        raise ValueError("boxes_xyxy is empty; draw at least one box around an object.")
    if not np.isfinite(boxes).all():
        raise ValueError("boxes_xyxy contains NaN or inf; give finite pixel coordinates.")
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    if (widths <= 0).any() or (heights <= 0).any():
        raise ValueError("Every box needs x1 > x0 and y1 > y0 (boxes are (x0, y0, x1, y1)).")
    return float(np.median(np.sqrt(widths * heights)))


def _diameter_range(
    shape: tuple[int, ...], min_diameter: float, max_diameter: float | None
) -> tuple[float, float]:
    """Check the requested diameter range and fill in the default maximum."""
    for name, value in (("min_diameter", min_diameter), ("max_diameter", max_diameter)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float, np.number))
        ):
            raise TypeError(f"{name} must be a number of pixels, got {type(value).__name__}.")
    if not math.isfinite(min_diameter) or min_diameter < 2:
        raise ValueError(f"min_diameter must be a finite number >= 2 pixels, got {min_diameter}.")
    side = min(shape[:2])
    if max_diameter is None:
        max_diameter = max(side / 3.0, 2.0 * min_diameter)
    if not math.isfinite(max_diameter) or max_diameter <= min_diameter:
        raise ValueError(
            f"max_diameter must be finite and larger than min_diameter ({min_diameter}), "
            f"got {max_diameter}."
        )
    if min_diameter > side / 2:
        raise ValueError(
            f"min_diameter {min_diameter} is more than half the image's shorter side "
            f"({side} pixels); give a smaller min_diameter or a larger image."
        )
    return float(min_diameter), float(max_diameter)


def _to_gray(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """One float32 channel stretched to a robust 0..1, and the mask of non-finite pixels."""
    if array.ndim == 3:
        array = array[..., :3] if array.shape[-1] >= 3 else array[..., 0]
    gray = np.array(array, dtype=np.float32)  # a copy, changed in place below
    invalid: np.ndarray | None = None
    if array.dtype.kind == "f":
        finite = np.isfinite(gray) if gray.ndim == 2 else np.isfinite(gray).all(axis=-1)
        invalid = None if finite.all() else np.logical_not(finite)
    if gray.ndim == 3:
        gray = _colour_projection(gray, invalid)
    sample = gray[::4, ::4] if invalid is None else gray[~invalid]
    sample = sample[np.isfinite(sample)].ravel()
    stride = max(1, sample.size // 1_000_000)
    low, mid, high = np.percentile(sample[::stride], [0.5, 50.0, 99.5])
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    if invalid is not None:
        gray[invalid] = mid
    if high <= low:
        gray[:] = 0
        return gray, invalid
    gray -= low
    gray *= 1.0 / (high - low)
    np.clip(gray, -0.25, 1.25, out=gray)
    return gray, invalid


def _colour_projection(rgb: np.ndarray, invalid: np.ndarray | None) -> np.ndarray:
    """Project RGB onto its direction of most variance, signed so that larger is brighter."""
    pixels = rgb[::4, ::4].reshape(-1, 3) if invalid is None else rgb[~invalid]
    stride = max(1, len(pixels) // 200_000)
    sample = pixels[::stride].astype(np.float64)
    centred = sample - sample.mean(axis=0)
    covariance = centred.T @ centred / max(1, len(sample) - 1)
    _, vectors = np.linalg.eigh(covariance)
    direction = vectors[:, -1]
    if direction.sum() < 0:
        direction = -direction
    if invalid is not None:
        rgb[invalid] = 0
    return rgb @ direction.astype(np.float32)


def _noise_std(gray: np.ndarray) -> float:
    """Pixel noise from the median absolute second difference (robust to object edges)."""
    (y0, y1), (x0, x1) = _central_region(gray.shape, 1)[1]
    g = gray[y0:y1, x0:x1]
    laplace = 4.0 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    # The 5-point Laplacian of white noise has 20x its variance; MAD -> std for a Gaussian.
    return float(1.4826 * np.median(np.abs(laplace - np.median(laplace))) / math.sqrt(20.0))


def _sigmas(sigma_low: float, sigma_high: float) -> np.ndarray:
    """Log-spaced sigmas covering the range, with one extra on each side for the maxima."""
    step = 2.0 ** (1.0 / SCALES_PER_OCTAVE)
    count = math.ceil(math.log(sigma_high / sigma_low, step)) + 1
    return sigma_low * step ** np.arange(-1, count + 1)


def _pyramid(gray: np.ndarray, levels: int) -> list[np.ndarray]:
    """2x2 block means, level 0 being the image itself."""
    pyramid = [gray]
    for _ in range(levels):
        prev = pyramid[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        if h < 4 or w < 4:
            break
        block = prev[0:h:2, 0:w:2] + prev[1:h:2, 0:w:2]
        block += prev[0:h:2, 1:w:2]
        block += prev[1:h:2, 1:w:2]
        block *= 0.25
        pyramid.append(block)
    return pyramid


def _scale_space_blobs(
    pyramid: list[np.ndarray], invalid: np.ndarray | None, sigmas: np.ndarray, noise: float
) -> tuple[_Blobs, _Blobs]:
    """Bright and dark blobs: local maxima of the normalised LoG over space and scale."""
    # Each sigma goes to the coarsest level where it still spans MIN_LEVEL_SIGMA pixels.
    levels = np.maximum(0, np.floor(np.log2(sigmas / MIN_LEVEL_SIGMA))).astype(int)
    levels = np.minimum(levels, len(pyramid) - 1)
    shape = pyramid[0].shape
    jobs = []
    for level in np.unique(levels):
        own = np.flatnonzero(levels == level)
        # Interior scales are detected at this level; one neighbour each side is computed too.
        own = own[(own > 0) & (own < len(sigmas) - 1)]
        if len(own) > 0:
            jobs.append((int(level), sigmas[own[0] - 1 : own[-1] + 2]))
    # Levels are independent and SciPy's filters release the GIL: run them side by side.
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1, 4)) as pool:
        found = list(
            pool.map(
                lambda job: _level_blobs(pyramid[job[0]], job[0], job[1], noise, shape, invalid),
                jobs,
            )
        )
    return (
        _Blobs.concatenate([bright for bright, _ in found]),
        _Blobs.concatenate([dark for _, dark in found]),
    )


def _level_blobs(
    level_image: np.ndarray,
    level: int,
    sigmas: np.ndarray,
    noise: float,
    full_shape: tuple[int, ...],
    invalid: np.ndarray | None,
) -> tuple[_Blobs, _Blobs]:
    """Blobs of one pyramid level, at the interior scales of ``sigmas`` (original pixels)."""
    factor = 2**level
    step = sigmas[1] / sigmas[0]
    # Differences of Gaussians between sigma / sqrt(step) and sigma * sqrt(step), divided by
    # log(step), average the normalised LoG over that scale interval.
    edges = np.append(sigmas / math.sqrt(step), sigmas[-1] * math.sqrt(step))
    # Block means blur by a variance of (4**level - 1) / 12 original pixels squared.
    blurs = np.sqrt(np.maximum(edges**2 - (4.0**level - 1) / 12.0, 0.0)) / factor
    level_sigmas = sigmas / factor
    # Analyse a central region (plus a halo of context) of at most MAX_REGION_SIDE pixels.
    halo = math.ceil(4 * blurs[-1])
    region, window = _central_region(level_image.shape, halo)
    (ry0, ry1), (rx0, rx1) = region
    (wy0, wy1), (wx0, wx1) = window
    crop = level_image[wy0:wy1, wx0:wx1]
    sampled = ((ry1 - ry0) * (rx1 - rx0)) / (level_image.shape[0] * level_image.shape[1])

    # Normalised LoG responses, bright blobs positive, from incremental Gaussian blurs.
    blurred = ndimage.gaussian_filter(crop, blurs[0], mode="reflect") if blurs[0] > 0 else crop
    responses = np.empty((len(sigmas), *crop.shape), np.float32)
    for i in range(len(sigmas)):
        increment = math.sqrt(blurs[i + 1] ** 2 - blurs[i] ** 2)
        following = ndimage.gaussian_filter(blurred, increment, mode="reflect")
        np.subtract(blurred, following, out=responses[i])
        responses[i] /= math.log(blurs[i + 1] / blurs[i]) if blurs[i] > 0 else math.log(step)
        blurred = following

    # Noise response of the normalised LoG: std = noise / (sqrt(2 pi) sigma_level).
    threshold = np.maximum(
        NOISE_SIGMAS * noise / (math.sqrt(2 * math.pi) * level_sigmas), MIN_RESPONSE
    )
    steps = np.maximum(1, np.round(level_sigmas)).astype(int)
    inner = (slice(ry0 - wy0, ry1 - wy0), slice(rx0 - wx0, rx1 - wx0))
    results = []
    for sign in (1.0, -1.0):
        signed = responses if sign > 0 else -responses
        # Local maxima over space of the maximum over scales, at an interior scale.
        strongest = signed.max(axis=0)
        peaks = strongest == ndimage.maximum_filter(strongest, size=3, mode="nearest")
        py, px = np.nonzero(peaks[inner])
        py += inner[0].start
        px += inner[1].start
        index = signed[:, py, px].argmax(axis=0)
        keep = (index > 0) & (index < len(sigmas) - 1)
        keep &= strongest[py, px] > threshold[index]
        index, py, px = index[keep], py[keep], px[keep]
        value = signed[index, py, px]
        # Blobs, not ridges: the response's spatial Hessian has two similar eigenvalues
        # (maxima along an object's edge are ridges, with one eigenvalue near zero).
        keep = _blob_like(signed, index, py, px, steps)
        index, py, px, value = index[keep], py[keep], px[keep], value[keep]
        # Refine the scale with a parabola through the three responses in log sigma.
        below = signed[index - 1, py, px]
        above = signed[index + 1, py, px]
        curvature = below - 2 * value + above
        offset = np.where(curvature < 0, 0.5 * (below - above) / np.minimum(curvature, -1e-12), 0)
        sigma = sigmas[index] * step ** np.clip(offset, -0.5, 0.5)
        # Back to original pixel coordinates (a level pixel covers factor x factor pixels),
        # keeping blobs at least a radius inside the image and off non-finite pixels.
        y = (py + wy0) * factor + (factor - 1) / 2
        x = (px + wx0) * factor + (factor - 1) / 2
        radius = sigma * math.sqrt(2.0)
        on_image = (
            (y >= radius)
            & (x >= radius)
            & (y < full_shape[0] - radius)
            & (x < full_shape[1] - radius)
        )
        if invalid is not None:
            on_image &= ~invalid[
                np.clip(y.astype(int), 0, full_shape[0] - 1),
                np.clip(x.astype(int), 0, full_shape[1] - 1),
            ]
        weight = np.full(len(y), 1.0 / sampled)
        results.append(_Blobs(y, x, sigma, value.astype(np.float64), weight).select(on_image))
    return results[0], results[1]


def _blob_like(
    signed: np.ndarray, index: np.ndarray, py: np.ndarray, px: np.ndarray, steps: np.ndarray
) -> np.ndarray:
    """Whether each maximum of the response is blob-like rather than ridge-like.

    The Hessian is taken with finite differences one sigma apart, the scale at which the
    response is smooth.
    """
    h, w = signed.shape[1:]
    step = steps[index]
    ym, yp = np.maximum(py - step, 0), np.minimum(py + step, h - 1)
    xm, xp = np.maximum(px - step, 0), np.minimum(px + step, w - 1)
    centre = signed[index, py, px]
    dyy = signed[index, yp, px] + signed[index, ym, px] - 2 * centre
    dxx = signed[index, py, xp] + signed[index, py, xm] - 2 * centre
    dxy = 0.25 * (
        signed[index, yp, xp]
        + signed[index, ym, xm]
        - signed[index, yp, xm]
        - signed[index, ym, xp]
    )
    trace = dxx + dyy
    det = dxx * dyy - dxy**2
    return (det > 0) & (trace**2 < det * (EDGE_RATIO + 1) ** 2 / EDGE_RATIO)


def _central_region(
    shape: tuple[int, ...], halo: int, side: int = MAX_REGION_SIDE
) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """The central region (at most ``side`` pixels per axis) and its window with a halo."""
    region = []
    window = []
    for size in shape[:2]:
        extent = min(size, side)
        start = (size - extent) // 2
        region.append((start, start + extent))
        window.append((max(0, start - halo), min(size, start + side + halo)))
    return tuple(region), tuple(window)


def _choose_polarity(bright: _Blobs, dark: _Blobs) -> tuple[Polarity, _Blobs, float] | None:
    """The polarity whose strongest blobs respond more, its strong blobs and their strength.

    Returns None when neither polarity has a blob.
    """
    strength = [
        _weighted_percentile(b.response, b.weight, TOP_PERCENTILE)
        if len(b.response) >= MIN_BLOBS
        else 0.0
        for b in (bright, dark)
    ]
    if max(strength) == 0:
        # Too few blobs to compare: the polarity that has more.
        blobs = bright if len(bright.response) >= len(dark.response) else dark
        if len(blobs.response) == 0:
            return None
        strength = [float(blobs.response.max())] * 2
    else:
        blobs = bright if strength[0] >= strength[1] else dark
    polarity: Polarity = "bright" if blobs is bright else "dark"
    # Strong blobs only: weaker ones are texture, edges and gaps between objects.
    strong = blobs.select(blobs.response >= STRONG_FRACTION * max(strength))
    return polarity, strong, max(strength)


def _measured_diameter(
    pyramid: list[np.ndarray],
    sign: float,
    guess: float,
    blobs: _Blobs,
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
    pyramid: list[np.ndarray], sign: float, diameter: float, blobs: _Blobs, contrast: float
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
    (y0, y1), (x0, x1) = _central_region(pyramid[level].shape, 0, MEASURE_REGION_SIDE)[0]
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

    # Each basin's outline: the lowest level whose mean gradient is near the steepest.
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
    area = np.where(area >= FILLED_BASIN * basin_area, basin_area, area)

    # Objects: basins that hold a strong blob of a comparable size, not cut by the region.
    near = (blobs.sigma * DISC_SIGMA_TO_DIAMETER > diameter / 4) & (
        blobs.sigma * DISC_SIGMA_TO_DIAMETER < diameter * 4
    )
    rows = np.round((blobs.y[near] - (factor - 1) / 2) / factor).astype(int) - y0
    cols = np.round((blobs.x[near] - (factor - 1) / 2) / factor).astype(int) - x0
    within = (rows >= 0) & (rows < y1 - y0) & (cols >= 0) & (cols < x1 - x0)
    holds = np.zeros(count, bool)
    holds[basins[rows[within], cols[within]] - 1] = True
    edge = np.concatenate([basins[0], basins[-1], basins[:, 0], basins[:, -1]]) - 1
    holds[edge] = False
    holds &= area >= 4
    if not holds.any():
        return None
    diameters = 2 * np.sqrt(area[holds] / math.pi) * factor
    return float(np.median(diameters)), int(holds.sum())


def _weighted_percentile(values: np.ndarray, weights: np.ndarray, percentile: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    index = np.searchsorted(cumulative, percentile / 100.0 * cumulative[-1])
    return float(values[order][min(index, len(values) - 1)])


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    return _weighted_percentile(values, weights, 50.0)
