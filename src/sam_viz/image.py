"""Image intake: any 2-D microscopy or photo array to the RGB float image SAM expects.

Accepted input (NumPy array or array-like):

* shape ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA
  (alpha is dropped);
* dtype bool, any integer (uint8, uint16, int32, ...) or float; NaN and inf are allowed.

Contrast (``contrast="auto"``): bool and uint8 images are taken as they are (scaled to
0..1), since photos are already in display range. Every other dtype is stretched so that the
``percentiles`` (default 0.5 and 99.5, over all channels and finite pixels) map to 0 and 1,
then clipped: a 16-bit microscopy image whose signal uses a tenth of the range comes out with
full contrast, and a few hot pixels do not flatten it. ``"minmax"`` stretches the full finite
range, ``"none"`` expects floats already in 0..1. NaN/inf pixels become 0. A constant image is
valid and becomes all zeros. A masked array's masked pixels are taken as NaN (left out of the
contrast and shown as 0). A torch tensor is detached and copied to the CPU.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Literal

import numpy as np

Contrast = Literal["auto", "percentile", "minmax", "none"]
ACCEPTED_SHAPES = "(H, W) grayscale, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA"
MIN_SIDE = 2


def validate_image(image: object) -> np.ndarray:
    """Check an image's shape and dtype and return it as an array (no copy when possible).

    Raises:
        TypeError: For a dtype that is not bool, integer or float.
        ValueError: For a shape other than the accepted ones, or an image with no finite pixel.
    """
    if isinstance(image, (str, bytes, os.PathLike)):
        raise TypeError(
            f"Pass the image as an array, not the path {os.fsdecode(image)!r}; to read a file "
            "use sam_viz.io.read_image(path)."
        )
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # a torch tensor, maybe with grad
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ma.MaskedArray):
        image = _masked_as_nan(image)
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"Image dtype {array.dtype} is not supported; give a bool, integer or float array."
        )
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        pass
    elif array.ndim != 2:
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = " Channels look first: move them last with np.moveaxis(image, 0, -1)."
        elif array.ndim > 3 or array.ndim == 3:
            hint = " For a stack, pass one 2-D plane (e.g. image[z])."
        raise ValueError(
            f"Image has shape {array.shape}; accepted shapes are {ACCEPTED_SHAPES}.{hint}"
        )
    if min(array.shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"Image of shape {array.shape} is too small: both sides must be >= {MIN_SIDE} pixels."
        )
    if array.dtype.kind == "f" and not np.isfinite(array).any():
        raise ValueError("Image has no finite pixel (all NaN or inf); nothing to segment.")
    return array


def _masked_as_nan(image: np.ma.MaskedArray) -> np.ndarray:
    """A masked array's data with its masked pixels as NaN, which intake leaves out."""
    if not np.ma.is_masked(image):
        return np.ma.getdata(image)
    if image.dtype.kind not in "biuf":
        return np.ma.getdata(image)  # the dtype check reports it
    dtype = image.dtype if image.dtype.kind == "f" else np.float32
    if image.dtype.kind in "iu" and image.dtype.itemsize > 2:
        dtype = np.float64  # float32 would round 32-bit integer values
    return np.ma.filled(image.astype(dtype), np.nan)


def to_rgb01(
    image: object,
    *,
    contrast: Contrast = "auto",
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Convert an accepted image to float32 RGB in 0..1 with the contrast rule above.

    Args:
        image: The image, in one of the accepted shapes and dtypes.
        contrast: ``"auto"``, ``"percentile"``, ``"minmax"`` or ``"none"``.
        percentiles: Low and high percentiles for the percentile stretch.

    Returns:
        Array of shape (H, W, 3), float32, values in [0, 1].

    Raises:
        ValueError / TypeError: As :func:`validate_image`, or for bad contrast settings.
    """
    array = validate_image(image)
    low_pct, high_pct = percentiles
    if not 0 <= low_pct < high_pct <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    if array.ndim == 3:
        array = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]

    if contrast == "auto":
        contrast = "none" if array.dtype in (np.bool_, np.uint8) else "percentile"
    if contrast == "none":
        if array.dtype == np.bool_:
            scaled = array.astype(np.float32)
        elif array.dtype.kind in "iu":
            scaled = array.astype(np.float32) / float(np.iinfo(array.dtype).max)
        else:
            scaled = array.astype(np.float32)
    elif contrast in ("percentile", "minmax"):
        values = array.astype(np.float32)
        finite = np.isfinite(values)
        sample = values[finite] if not finite.all() else values
        if contrast == "minmax":
            low, high = float(sample.min()), float(sample.max())
        else:
            low, high = (float(v) for v in np.percentile(sample, [low_pct, high_pct]))
        span = high - low
        scaled = (values - low) / span if span > 0 else np.zeros_like(values)
    else:
        raise ValueError(
            f"contrast must be 'auto', 'percentile', 'minmax' or 'none', got {contrast!r}."
        )
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    if scaled.ndim == 2:
        scaled = scaled[..., None]
    if scaled.shape[-1] == 1:
        scaled = np.repeat(scaled, 3, axis=-1)
    return np.ascontiguousarray(scaled, dtype=np.float32)


def contrast_limits(
    values: np.ndarray,
    *,
    contrast: Contrast = "auto",
    percentiles: tuple[float, float] = (0.5, 99.5),
    max_samples: int = 4_000_000,
) -> tuple[float, float] | None:
    """The (low, high) values the contrast rule stretches to 0 and 1, for a whole stack.

    Computed on an even sample of at most ``max_samples`` pixels, so one call covers a
    stack of any size; None where the rule takes values as they are (``"none"``, or bool
    and uint8 images under ``"auto"``).
    """
    array = np.asarray(values)
    if contrast not in ("auto", "percentile", "minmax", "none"):
        raise ValueError(
            f"contrast must be 'auto', 'percentile', 'minmax' or 'none', got {contrast!r}."
        )
    if contrast == "auto":
        contrast = "none" if array.dtype in (np.bool_, np.uint8) else "percentile"
    if contrast == "none":
        return None
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // max_samples)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return 0.0, 1.0
    if contrast == "minmax":
        return float(sample.min()), float(sample.max())
    low, high = np.percentile(sample, percentiles)
    return float(low), float(high)


def image_key(
    image: object, *, contrast: str = "auto", percentiles: tuple[float, float] = (0.5, 99.5)
) -> str:
    """A content hash of an image and its contrast settings, used as the embedding cache key."""
    array = np.ascontiguousarray(validate_image(image))  # a masked array's mask counts
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.shape}|{array.dtype.str}|{contrast}|{percentiles}".encode())
    digest.update(array.data.cast("B"))
    return digest.hexdigest()


# Images with more pixels than this are read lazily and segmented tile by tile
# (sam_viz.automatic.tiled): converting one whole would take 12 bytes a pixel.
TILED_ABOVE = 4096 * 4096


def is_large(shape: Sequence[int]) -> bool:
    """Whether an image of this (H, W, ...) shape goes tile by tile."""
    height, width = list(shape)[:2]
    return int(height) * int(width) > TILED_ABOVE
