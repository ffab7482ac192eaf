"""The acquisition: optical blur, uneven illumination and the camera's noise and quantisation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sam_viz.synthetic.microscopy.noise import random_field, upsample

_F32 = np.float32


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide kernels are applied on a block-averaged copy (nearly the same
    result, much faster)."""
    if sigma < 6.0:
        return ndimage.gaussian_filter(image, sigma, truncate=3.0)
    step = int(sigma / 2.0)
    height, width = image.shape
    padded = np.pad(image, ((0, -height % step), (0, -width % step)), mode="edge")
    small = padded.reshape(padded.shape[0] // step, step, -1, step).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma / step, truncate=3.0)
    return upsample(small, image.shape, step, origin=(step - 1) / 2)  # block centres


def illumination(rng: np.random.Generator, shape: tuple[int, int], strength: float) -> np.ndarray:
    """Uneven illumination around 1: vignetting, a tilt and a smooth blotch (computed on a
    coarse grid: it is smooth)."""
    step = max(shape) / 64
    grid = (int(shape[0] / step) + 2, int(shape[1] / step) + 2)
    rows = (np.arange(grid[0]) * step - rng.uniform(0.3, 0.7) * shape[0]) / max(shape)
    cols = (np.arange(grid[1]) * step - rng.uniform(0.3, 0.7) * shape[1]) / max(shape)
    radius2 = rows[:, None] ** 2 + cols[None, :] ** 2
    tilt = rng.normal(0, 0.5, 2)
    field = 1.0 - strength * (1.2 * radius2 - tilt[0] * rows[:, None] - tilt[1] * cols[None, :])
    field += 0.3 * strength * random_field(rng, grid, 64 / 3)
    return upsample(np.clip(field, 0.3, None), shape, step)


def camera(
    rng: np.random.Generator,
    electrons: np.ndarray,
    *,
    gain: float,
    offset: float,
    read_noise: float,
    dtype=np.uint16,
) -> np.ndarray:
    """Counts from expected photoelectrons: shot noise, gain, offset, read noise, quantisation.

    ``read_noise`` is in counts; each column gets its own small offset (sCMOS fixed pattern).
    """
    counts = gain * rng.poisson(np.maximum(electrons, 0)).astype(_F32)
    counts += offset + rng.normal(0, 0.1 * read_noise, (electrons.shape[1],)).astype(_F32)
    counts += read_noise * rng.standard_normal(electrons.shape, _F32)
    return np.clip(np.round(counts), 0, np.iinfo(dtype).max).astype(dtype)
