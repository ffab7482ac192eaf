"""Blobs in a scale-normalised LoG scale space: steps 2-4 of the diameter estimate."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

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


@dataclass(frozen=True)
class Blobs:
    """Blobs of one polarity: centre (original pixels), sigma, response and count weight."""

    y: np.ndarray
    x: np.ndarray
    sigma: np.ndarray
    response: np.ndarray
    weight: np.ndarray

    @staticmethod
    def concatenate(parts: list[Blobs]) -> Blobs:
        if not parts:
            empty = np.zeros(0, np.float64)
            return Blobs(empty, empty, empty, empty, empty)
        return Blobs(*(np.concatenate([getattr(p, name) for p in parts]) for name in Blobs.FIELDS))

    def select(self, keep: np.ndarray) -> Blobs:
        return Blobs(*(getattr(self, name)[keep] for name in Blobs.FIELDS))

    FIELDS = ("y", "x", "sigma", "response", "weight")


def noise_std(gray: np.ndarray) -> float:
    """Pixel noise from the median absolute second difference (robust to object edges)."""
    (y0, y1), (x0, x1) = central_region(gray.shape, 1)[1]
    g = gray[y0:y1, x0:x1]
    laplace = 4.0 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    # The 5-point Laplacian of white noise has 20x its variance; MAD -> std for a Gaussian.
    return float(1.4826 * np.median(np.abs(laplace - np.median(laplace))) / math.sqrt(20.0))


def log_sigmas(sigma_low: float, sigma_high: float) -> np.ndarray:
    """Log-spaced sigmas covering the range, with one extra on each side for the maxima."""
    step = 2.0 ** (1.0 / SCALES_PER_OCTAVE)
    count = math.ceil(math.log(sigma_high / sigma_low, step)) + 1
    return sigma_low * step ** np.arange(-1, count + 1)


def mean_pyramid(gray: np.ndarray, levels: int) -> list[np.ndarray]:
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


def scale_space_blobs(
    pyramid: list[np.ndarray], invalid: np.ndarray | None, sigmas: np.ndarray, noise: float
) -> tuple[Blobs, Blobs]:
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
        Blobs.concatenate([bright for bright, _ in found]),
        Blobs.concatenate([dark for _, dark in found]),
    )


def _level_blobs(
    level_image: np.ndarray,
    level: int,
    sigmas: np.ndarray,
    noise: float,
    full_shape: tuple[int, ...],
    invalid: np.ndarray | None,
) -> tuple[Blobs, Blobs]:
    """Blobs of one pyramid level, at the interior scales of ``sigmas`` (original pixels)."""
    factor = 2**level
    step = sigmas[1] / sigmas[0]
    blurs = _level_blurs(sigmas, step, level)
    level_sigmas = sigmas / factor
    # Analyse a central region (plus a halo of context) of at most MAX_REGION_SIDE pixels.
    halo = math.ceil(4 * blurs[-1])
    region, window = central_region(level_image.shape, halo)
    (ry0, ry1), (rx0, rx1) = region
    (wy0, wy1), (wx0, wx1) = window
    crop = level_image[wy0:wy1, wx0:wx1]
    sampled = ((ry1 - ry0) * (rx1 - rx0)) / (level_image.shape[0] * level_image.shape[1])
    responses = _log_responses(crop, blurs, step)

    # Noise response of the normalised LoG: std = noise / (sqrt(2 pi) sigma_level).
    threshold = np.maximum(
        NOISE_SIGMAS * noise / (math.sqrt(2 * math.pi) * level_sigmas), MIN_RESPONSE
    )
    steps = np.maximum(1, np.round(level_sigmas)).astype(int)
    inner = (slice(ry0 - wy0, ry1 - wy0), slice(rx0 - wx0, rx1 - wx0))
    results = []
    for sign in (1.0, -1.0):
        signed = responses if sign > 0 else -responses
        index, py, px, value = _scale_space_maxima(signed, inner, threshold, steps)
        sigma = _refined_sigma(signed, index, py, px, value, sigmas, step)
        # Back to original pixel coordinates (a level pixel covers factor x factor pixels),
        # keeping blobs at least a radius inside the image and off non-finite pixels.
        y = (py + wy0) * factor + (factor - 1) / 2
        x = (px + wx0) * factor + (factor - 1) / 2
        on_image = _well_inside(y, x, sigma * math.sqrt(2.0), full_shape, invalid)
        weight = np.full(len(y), 1.0 / sampled)
        results.append(Blobs(y, x, sigma, value.astype(np.float64), weight).select(on_image))
    return results[0], results[1]


def _level_blurs(sigmas: np.ndarray, step: float, level: int) -> np.ndarray:
    """The Gaussian blurs (level pixels) whose differences give the responses at ``sigmas``.

    Differences of Gaussians between sigma / sqrt(step) and sigma * sqrt(step), divided by
    log(step), average the normalised LoG over that scale interval.
    """
    edges = np.append(sigmas / math.sqrt(step), sigmas[-1] * math.sqrt(step))
    # Block means blur by a variance of (4**level - 1) / 12 original pixels squared.
    return np.sqrt(np.maximum(edges**2 - (4.0**level - 1) / 12.0, 0.0)) / 2**level


def _log_responses(crop: np.ndarray, blurs: np.ndarray, step: float) -> np.ndarray:
    """Normalised LoG responses (S, H, W) float32, bright blobs positive, from incremental
    Gaussian blurs (S + 1 ``blurs``)."""
    blurred = ndimage.gaussian_filter(crop, blurs[0], mode="reflect") if blurs[0] > 0 else crop
    responses = np.empty((len(blurs) - 1, *crop.shape), np.float32)
    for i in range(len(blurs) - 1):
        increment = math.sqrt(blurs[i + 1] ** 2 - blurs[i] ** 2)
        following = ndimage.gaussian_filter(blurred, increment, mode="reflect")
        np.subtract(blurred, following, out=responses[i])
        responses[i] /= math.log(blurs[i + 1] / blurs[i]) if blurs[i] > 0 else math.log(step)
        blurred = following
    return responses


def _scale_space_maxima(
    signed: np.ndarray,
    inner: tuple[slice, slice],
    threshold: np.ndarray,
    steps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Blob-like maxima of the responses in the ``inner`` region: (scale index, row, col,
    response)."""
    # Local maxima over space of the maximum over scales, at an interior scale.
    strongest = signed.max(axis=0)
    peaks = strongest == ndimage.maximum_filter(strongest, size=3, mode="nearest")
    py, px = np.nonzero(peaks[inner])
    py += inner[0].start
    px += inner[1].start
    index = signed[:, py, px].argmax(axis=0)
    keep = (index > 0) & (index < len(signed) - 1)
    keep &= strongest[py, px] > threshold[index]
    index, py, px = index[keep], py[keep], px[keep]
    value = signed[index, py, px]
    # Blobs, not ridges: the response's spatial Hessian has two similar eigenvalues
    # (maxima along an object's edge are ridges, with one eigenvalue near zero).
    keep = _blob_like(signed, index, py, px, steps)
    return index[keep], py[keep], px[keep], value[keep]


def _refined_sigma(
    signed: np.ndarray,
    index: np.ndarray,
    py: np.ndarray,
    px: np.ndarray,
    value: np.ndarray,
    sigmas: np.ndarray,
    step: float,
) -> np.ndarray:
    """Each maximum's scale, refined with a parabola through the three responses in log
    sigma (original pixels)."""
    below = signed[index - 1, py, px]
    above = signed[index + 1, py, px]
    curvature = below - 2 * value + above
    offset = np.where(curvature < 0, 0.5 * (below - above) / np.minimum(curvature, -1e-12), 0)
    return sigmas[index] * step ** np.clip(offset, -0.5, 0.5)


def _well_inside(
    y: np.ndarray,
    x: np.ndarray,
    radius: np.ndarray,
    full_shape: tuple[int, ...],
    invalid: np.ndarray | None,
) -> np.ndarray:
    """Whether each blob lies at least its radius inside the image, off non-finite pixels."""
    on_image = (
        (y >= radius) & (x >= radius) & (y < full_shape[0] - radius) & (x < full_shape[1] - radius)
    )
    if invalid is not None:
        on_image &= ~invalid[
            np.clip(y.astype(int), 0, full_shape[0] - 1),
            np.clip(x.astype(int), 0, full_shape[1] - 1),
        ]
    return on_image


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


def central_region(
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


def choose_polarity(bright: Blobs, dark: Blobs) -> tuple[Polarity, Blobs, float] | None:
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


def _weighted_percentile(values: np.ndarray, weights: np.ndarray, percentile: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    index = np.searchsorted(cumulative, percentile / 100.0 * cumulative[-1])
    return float(values[order][min(index, len(values) - 1)])


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The median of ``values``, each counted with its weight."""
    return _weighted_percentile(values, weights, 50.0)
