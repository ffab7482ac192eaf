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

Steps 2-4 live in :mod:`sam_viz.windows.blobs`, step 5 in :mod:`sam_viz.windows.measure`.
:func:`diameter_from_boxes` gives the typical diameter implied by boxes a user drew.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sam_viz.image import validate_image
from sam_viz.windows.blobs import (
    DISC_SIGMA_TO_DIAMETER,
    MIN_LEVEL_SIGMA,
    Polarity,
    choose_polarity,
    log_sigmas,
    mean_pyramid,
    noise_std,
    scale_space_blobs,
    weighted_median,
)
from sam_viz.windows.measure import measured_diameter


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
        return f"{self.diameter:.0f} px from {self.count} {noun}, {self.polarity}"


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
    sigmas = log_sigmas(low / DISC_SIGMA_TO_DIAMETER, high / DISC_SIGMA_TO_DIAMETER)
    levels = np.maximum(0, np.floor(np.log2(sigmas / MIN_LEVEL_SIGMA))).astype(int)
    pyramid = mean_pyramid(gray, int(levels.max()))
    bright, dark = scale_space_blobs(pyramid, invalid, sigmas, noise_std(gray))
    chosen = choose_polarity(bright, dark)
    if chosen is None:
        return DiameterEstimate(fallback, 0, "bright")
    polarity, blobs, strength = chosen

    # A first guess from the blobs' scales, weighted by area: texture inside objects is
    # numerous but small.
    diameters = blobs.sigma * DISC_SIGMA_TO_DIAMETER
    guess = weighted_median(diameters, blobs.weight * diameters**2)

    # Measure objects' outlines at the smoothing their own size calls for. A disc of
    # contrast c peaks at c / e in the normalised LoG: strength * e is the objects' contrast.
    sign = 1.0 if polarity == "bright" else -1.0
    measured = measured_diameter(pyramid, sign, guess, blobs, strength * math.e, high)
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
