"""Smooth Gaussian random fields and log-uniform draws: the randomness every field is built from."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_F32 = np.float32


def loguniform(rng: np.random.Generator, low: float, high: float, size: int | None = None):
    """Draws spread evenly in log scale between ``low`` and ``high`` (a scalar when ``size`` is
    None)."""
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def upsample(
    small: np.ndarray, shape: tuple[int, int], step: float, origin: float = 0.0
) -> np.ndarray:
    """Bilinear resampling of a coarse grid to ``shape``: pixel i lies at grid position
    (i - origin) / step. Columns first (on the small array), then whole-row gathers."""

    def weights(size: int, grid: int):
        position = np.clip((np.arange(size) - origin) / step, 0, grid - 1)
        low = np.minimum(position.astype(np.int64), grid - 2)
        return low, (position - low).astype(_F32)

    small = small.astype(_F32, copy=False)
    low, weight = weights(shape[1], small.shape[1])
    wide = small[:, low] * (1 - weight) + small[:, low + 1] * weight
    low, weight = weights(shape[0], small.shape[0])
    return wide[low] * (1 - weight)[:, None] + wide[low + 1] * weight[:, None]


def random_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Gaussian random field with correlation length ``scale`` px, mean 0 and std 1.

    The std is the field's theoretical one, not the sample's: a window much smaller than
    ``scale`` sees a nearly constant field, as it should.
    """
    if scale <= 4.0:
        white = rng.standard_normal(shape, _F32)
        return ndimage.gaussian_filter(white, scale, truncate=3.0) / _filtered_std(scale)
    # Smooth fields are drawn on a coarse grid (2 samples per scale) and interpolated.
    step = scale / 2.0
    small = rng.standard_normal(tuple(int(s / step) + 3 for s in shape), _F32)
    small = ndimage.gaussian_filter(small, 2.0, mode="wrap", truncate=3.0) / _filtered_std(2.0)
    return upsample(small, shape, step)


def _filtered_std(sigma: float) -> float:
    """Std of 2-D white noise after ``gaussian_filter(sigma, truncate=3)``."""
    radius = int(3.0 * sigma + 0.5)
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    # The 2-D variance is the square of the 1-D one, so the 2-D std is the 1-D variance.
    return float(np.sum(weights**2) / np.sum(weights) ** 2)
