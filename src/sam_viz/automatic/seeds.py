"""Where the objects of a microscopy image are, found at the object scale without the model.

Segment everything on microscopy starts here: one seed per object and a region around it,
from the image alone, at the typical object ``diameter`` (:mod:`sam_viz.windows.scale`).
The model then outlines each object from the box of its region (:mod:`sam_viz.automatic.
microscopy`). Steps:

1. One float channel, objects bright (:func:`object_channel`), stretched between robust
   percentiles.
2. The slowly varying background (uneven illumination) is removed: a grey opening larger
   than the objects, smoothed.
3. Foreground: pixels above a threshold between the background and the objects' level.
4. Seeds: maxima of the scale-normalised Laplacian of Gaussian over scales around the
   diameter, inside the foreground, at least a third of a diameter apart, so touching
   objects get one seed each.
5. Regions: a seeded watershed of the smoothed image inside the foreground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from sam_viz.image import validate_image

Polarity = Literal["bright", "dark"]

# Scales (as multiples of the diameter's LoG sigma) searched for seeds.
SEED_SCALES = (0.7, 1.0, 1.4)
DISC_SIGMA_TO_DIAMETER = 2.0 * math.sqrt(2.0)
# Seeds at least this many diameters apart (touching objects are about one apart).
SEED_SPACING = 0.35
# The background is an opening over this many diameters (larger than any object).
BACKGROUND_DIAMETERS = 2.0
# Foreground: this far from the background's level towards the objects' (Otsu) level.
FOREGROUND_LEVEL = 0.5
# Seeds of a large image's tiles: this percentile of an empty crop stays background.
EMPTY_PERCENTILE = 99.9
# A seed's LoG response must reach this fraction of the strong seeds' median response.
SEED_RESPONSE = 0.2
# Regions smaller than this fraction of a typical object's area are dropped.
MIN_AREA_FRACTION = 0.1


@dataclass(frozen=True)
class Seeds:
    """One seed and one region per object found.

    Attributes:
        points_xy: (N, 2) seed positions (x, y) in image pixels.
        boxes_xyxy: (N, 4) the box of each seed's region, exclusive ends.
        regions: (H, W) int32 label image: seed i's region is label i + 1.
        foreground: (H, W) bool foreground.
        channel: (H, W) float32 the image as one channel, objects bright, background
            removed, in about 0..1.
    """

    points_xy: np.ndarray
    boxes_xyxy: np.ndarray
    regions: np.ndarray
    foreground: np.ndarray
    channel: np.ndarray

    def __len__(self) -> int:
        return len(self.points_xy)


@dataclass(frozen=True)
class SeedLevels:
    """Seed-finding levels fixed for a whole image, so that its tiles find seeds alike
    (each tile would otherwise stretch and threshold itself: a tile of mostly empty slide
    would take its noise for objects).

    Attributes:
        low: The object channel's value stretched to 0.
        high: Its value stretched to 1.
        floor: The lowest foreground level a tile may take (its own Otsu level otherwise):
            above the noise of the image's empty parts, 0 where it has none.
        direction: For RGB images, the colour direction of the object channel.
    """

    low: float
    high: float
    floor: float
    direction: tuple[float, ...] | None = None


def seed_levels(
    crops: list[np.ndarray],
    diameter: float,
    polarity: Polarity,
    empty: np.ndarray | None = None,
) -> SeedLevels:
    """The levels of an image: the stretch from crops of it that hold objects (the busiest
    ones) and, where it has one, the floor from a crop without objects, so that its noise
    is never foreground. Each tile still takes its own Otsu level above the floor: one
    level for the whole image would lose a region stained more faintly than the busiest."""

    direction = _colour_direction(np.concatenate([_rgb_rows(c) for c in crops]))
    values = [_projected(validate_image(c), direction) for c in crops]
    low, high = np.nanpercentile(np.concatenate([v.ravel() for v in values]), [1.0, 99.8])

    def smoothed(value: np.ndarray) -> np.ndarray:
        gray = _stretched(value, float(low), float(high), polarity)
        flat = gray - _background(gray, diameter)
        return ndimage.gaussian_filter(flat, max(0.7, diameter / 10)).ravel()

    floor = 0.0
    if empty is not None:
        noise = smoothed(_projected(validate_image(empty), direction))
        floor = float(np.percentile(noise, EMPTY_PERCENTILE)) / FOREGROUND_LEVEL
    as_tuple = None if direction is None else tuple(float(v) for v in direction)
    return SeedLevels(float(low), float(high), floor, as_tuple)


def object_channel(
    image: np.ndarray, polarity: Polarity | None = None, levels: SeedLevels | None = None
) -> np.ndarray:
    """The image as one float32 channel in about 0..1 with the objects bright.

    RGB images use the colour direction with the most contrast (H&E nuclei: the
    hematoxylin direction). ``polarity`` says whether objects are brighter (fluorescence)
    or darker (bright field, stains) than their surroundings; when None it is taken from
    :func:`sam_viz.windows.diameter.estimate_diameter`. ``levels`` fixes the direction and
    the stretch (a tile of a large image); the image's own are used when None.
    """
    array = validate_image(image)
    if levels is not None:
        direction = None if levels.direction is None else np.asarray(levels.direction)
    else:
        direction = _colour_direction(_rgb_rows(array)) if array.ndim == 3 else None
    values = _projected(array, direction)
    if levels is not None:
        low, high = levels.low, levels.high
    else:
        low, high = np.nanpercentile(values, [1.0, 99.8])
    if polarity is None:
        from sam_viz.windows.diameter import estimate_diameter

        polarity = estimate_diameter(array).polarity
    return _stretched(values, float(low), float(high), polarity)


def _rgb_rows(image: np.ndarray) -> np.ndarray:
    """An image's finite colour pixels as (N, C) rows ((N, 1) for a gray image)."""
    values = np.asarray(validate_image(image), dtype=np.float32)
    if values.ndim == 2:
        return values.reshape(-1, 1)
    rgb = values[..., :3] if values.shape[-1] >= 3 else values[..., :1]
    flat = rgb.reshape(-1, rgb.shape[-1])
    return flat[np.isfinite(flat).all(axis=1)]


def _colour_direction(rows: np.ndarray) -> np.ndarray | None:
    """The colour direction with the most contrast, brighter along it (None for gray)."""
    if rows.shape[1] == 1:
        return None
    centred = rows - rows.mean(axis=0)
    sample = centred[:: max(1, len(centred) // 200_000)]
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    return vt[0] * np.sign(vt[0].sum() or 1.0)


def _projected(array: np.ndarray, direction: np.ndarray | None) -> np.ndarray:
    """One float32 channel, NaN where a pixel is not finite."""
    values = np.asarray(array, dtype=np.float32)
    if values.ndim == 3:
        rgb = values[..., :3] if values.shape[-1] >= 3 else values[..., :1]
        if direction is None or rgb.shape[-1] != len(direction):
            values = rgb.mean(axis=-1)
        else:
            values = (np.nan_to_num(rgb) @ direction).astype(np.float32)
    return np.where(np.isfinite(values), values, np.nan)


def _stretched(values: np.ndarray, low: float, high: float, polarity: Polarity) -> np.ndarray:
    gray = np.nan_to_num((values - low) / max(high - low, 1e-6), nan=0.0)
    return (gray if polarity == "bright" else 1.0 - gray).astype(np.float32)


def _background(gray: np.ndarray, diameter: float) -> np.ndarray:
    """The slowly varying background: a grey opening larger than the objects, smoothed.

    Computed on a downsampled copy (the background is smooth) and brought back."""
    factor = max(1, int(diameter // 4))
    small = gray[::factor, ::factor]
    size = max(3, round(BACKGROUND_DIAMETERS * diameter / factor) | 1)
    opened = ndimage.grey_opening(small, size=(size, size))
    smooth = ndimage.uniform_filter(opened, size=size)
    zoom = (gray.shape[0] / small.shape[0], gray.shape[1] / small.shape[1])
    return ndimage.zoom(smooth, zoom, order=1, grid_mode=True, mode="nearest")[
        : gray.shape[0], : gray.shape[1]
    ]


def find_seeds(
    image: np.ndarray,
    diameter: float,
    *,
    polarity: Polarity | None = None,
    levels: SeedLevels | None = None,
) -> Seeds:
    """Seeds and regions of the objects of an image, at the typical ``diameter``.

    Args:
        image: Any image :func:`sam_viz.image.validate_image` accepts.
        diameter: Typical object diameter in image pixels.
        polarity: ``"bright"`` or ``"dark"`` objects; estimated when None.
        levels: The stretch and foreground level of the whole image this is a tile of
            (:func:`seed_levels`); the image's own when None.

    Raises:
        ValueError: For a diameter that is not a positive number.
    """
    if not (math.isfinite(diameter) and diameter > 0):
        raise ValueError(f"diameter must be a positive number of pixels, got {diameter!r}.")
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    gray = object_channel(image, polarity, levels)
    # Remove the background, then smooth away pixel noise (a tenth of the diameter).
    flat = gray - _background(gray, diameter)
    smooth = ndimage.gaussian_filter(flat, max(0.7, diameter / 10))
    level = threshold_otsu(smooth) if np.ptp(smooth) > 0 else np.inf
    if levels is not None:
        level = max(level, levels.floor)
    foreground = smooth > FOREGROUND_LEVEL * level
    foreground = ndimage.binary_opening(foreground, iterations=max(1, int(diameter / 12)))

    # Seeds: the strongest LoG response over scales around the diameter's.
    sigma = diameter / DISC_SIGMA_TO_DIAMETER
    response = np.max(
        [-((s * sigma) ** 2) * ndimage.gaussian_laplace(flat, s * sigma) for s in SEED_SCALES],
        axis=0,
    )
    spacing = max(1, int(SEED_SPACING * diameter))
    local_max = response == ndimage.maximum_filter(response, size=2 * spacing + 1)
    peaks = np.argwhere(local_max & foreground & (response > 0))
    if len(peaks):
        strength = response[tuple(peaks.T)]
        strong = np.median(strength[strength >= np.percentile(strength, 50)])
        peaks = peaks[strength >= SEED_RESPONSE * strong]
    markers = np.zeros(gray.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    regions = watershed(-smooth, markers, mask=foreground).astype(np.int32)

    # Drop specks; number what is left in seed order.
    min_area = MIN_AREA_FRACTION * math.pi * diameter**2 / 4
    areas = np.bincount(regions.ravel(), minlength=len(peaks) + 1)
    keep = np.flatnonzero(areas[1:] >= min_area)
    relabel = np.zeros(len(peaks) + 1, np.int32)
    relabel[keep + 1] = np.arange(1, len(keep) + 1)
    regions = relabel[regions]
    slices = ndimage.find_objects(regions)
    boxes = np.array(
        [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices], np.float64
    ).reshape(-1, 4)
    points = peaks[keep][:, ::-1].astype(np.float64) + 0.5
    return Seeds(points, boxes, regions, foreground, flat.astype(np.float32))
