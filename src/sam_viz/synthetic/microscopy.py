"""Synthetic microscopy fields that imitate real acquisitions, with exact instance labels.

The training scenes (:mod:`sam_viz.synthetic.scenes`) are small and stylised. These fields
are what a microscope hands a user: 512-4096 px, many 10-80 px objects, crowded regions
where objects touch, and the acquisition's defects. Five kinds:

* ``"nuclei"``: a DNA stain (Hoechst/DAPI, as in BBBC039 or the fluorescence part of
  DSB2018): dim 16-bit counts on a camera offset, nuclei of uneven brightness with chromatin
  texture and darker nucleoli, a few small bright mitotic figures, some out of focus,
  point-spread blur, scattered light, uneven illumination, shot and read noise.
* ``"cells_fluorescence"``: a cytoplasm stain: sheets of touching cells and isolated ones,
  brightest over the nucleus, dim at the borders between neighbours.
* ``"cells_phase"``: phase contrast: grey background, dark cells with bright halos, rounded
  phase-bright cells.
* ``"cells_brightfield"``: bright field: faint, slightly darker cells with darker rims,
  8- or 16-bit.
* ``"histology"``: H&E-like RGB: hematoxylin nuclei (labelled) in eosin stroma.

Objects are wobbly ellipses; where two overlap, each pixel goes to the object it lies deeper
in, so touching objects share a flattened border, as annotated ones do. Every label is one
4-connected region; objects left with too few of their pixels are dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import label as connected_components

FIELD_KINDS = ("nuclei", "cells_fluorescence", "cells_phase", "cells_brightfield", "histology")
TUNING_SEEDS = range(0, 10_000)  # for choosing thresholds and defaults
HELD_OUT_SEEDS = range(1_000_000, 1_010_000)  # for benchmarks only, never for tuning
_CELL_MODALITIES = ("fluorescence", "phase", "brightfield")
_MIN_AREA = 15  # pixels; smaller fragments are not objects an annotator would draw
_KEEP_FRACTION = 0.3  # an object clipped to less than this share of its pixels is dropped
_F32 = np.float32


@dataclass(frozen=True)
class Field:
    """A generated field and its instance labels.

    Attributes:
        image: (H, W) uint16 for fluorescence and phase contrast; (H, W) uint8 or uint16 for
            bright field; (H, W, 3) uint8 RGB for histology.
        labels: (H, W) int32 instance labels: 0 background, objects 1..N, each one
            4-connected region.
        kind: One of :data:`FIELD_KINDS`.
        diameter: Median equivalent diameter (2 * sqrt(area / pi)) of the objects, pixels.
    """

    image: np.ndarray
    labels: np.ndarray
    kind: str
    diameter: float

    @property
    def n_objects(self) -> int:
        """The number of labelled objects."""
        return int(self.labels.max()) if self.labels.size else 0


# --------------------------------------------------------------------------- noise fields


def _loguniform(rng: np.random.Generator, low: float, high: float, size=None):
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def _upsample(small: np.ndarray, shape: tuple[int, int], step: float, origin: float = 0.0):
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


def _noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
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
    return _upsample(small, shape, step)


def _filtered_std(sigma: float) -> float:
    """Std of 2-D white noise after ``gaussian_filter(sigma, truncate=3)``."""
    radius = int(3.0 * sigma + 0.5)
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    # The 2-D variance is the square of the 1-D one, so the 2-D std is the 1-D variance.
    return float(np.sum(weights**2) / np.sum(weights) ** 2)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide kernels are applied on a block-averaged copy (nearly the same
    result, much faster)."""
    if sigma < 6.0:
        return ndimage.gaussian_filter(image, sigma, truncate=3.0)
    step = int(sigma / 2.0)
    height, width = image.shape
    padded = np.pad(image, ((0, -height % step), (0, -width % step)), mode="edge")
    small = padded.reshape(padded.shape[0] // step, step, -1, step).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma / step, truncate=3.0)
    return _upsample(small, image.shape, step, origin=(step - 1) / 2)  # block centres


def _illumination(rng: np.random.Generator, shape: tuple[int, int], strength: float):
    """Uneven illumination around 1: vignetting, a tilt and a smooth blotch (computed on a
    coarse grid: it is smooth)."""
    step = max(shape) / 64
    grid = (int(shape[0] / step) + 2, int(shape[1] / step) + 2)
    rows = (np.arange(grid[0]) * step - rng.uniform(0.3, 0.7) * shape[0]) / max(shape)
    cols = (np.arange(grid[1]) * step - rng.uniform(0.3, 0.7) * shape[1]) / max(shape)
    radius2 = rows[:, None] ** 2 + cols[None, :] ** 2
    tilt = rng.normal(0, 0.5, 2)
    field = 1.0 - strength * (1.2 * radius2 - tilt[0] * rows[:, None] - tilt[1] * cols[None, :])
    field += 0.3 * strength * _noise(rng, grid, 64 / 3)
    return _upsample(np.clip(field, 0.3, None), shape, step)


def _camera(
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
    counts += offset + rng.normal(0, 0.1 * read_noise, electrons.shape[1]).astype(_F32)
    counts += read_noise * rng.standard_normal(electrons.shape, _F32)
    return np.clip(np.round(counts), 0, np.iinfo(dtype).max).astype(dtype)


# --------------------------------------------------------------------------- geometry


@dataclass
class _Objects:
    """Wobbly ellipses: centres (N, 2) as (row, col), equivalent radius, short/long axis
    ratio, orientation, radius harmonics (N, 4) complex for orders 2-5, edge roughness."""

    centres: np.ndarray
    radius: np.ndarray
    aspect: np.ndarray
    angle: np.ndarray
    harmonics: np.ndarray
    rough: np.ndarray


def _shapes(
    rng: np.random.Generator,
    centres: np.ndarray,
    radius: np.ndarray,
    aspect: tuple[float, float],
    wobble: float,
    rough: float,
) -> _Objects:
    """Random orientations and outlines around given centres and equivalent radii."""
    n = len(centres)
    orders = np.arange(2, 6)
    amplitude = wobble * rng.exponential(1.0, (n, 1)) / orders**0.8
    harmonics = amplitude * rng.normal(0, 1, (n, 4)) * np.exp(2j * np.pi * rng.random((n, 4)))
    return _Objects(
        centres=centres,
        radius=radius,
        aspect=rng.beta(*aspect, n) * 0.8 + 0.2,
        angle=rng.uniform(0, np.pi, n),
        harmonics=harmonics,
        rough=rough * rng.uniform(0.5, 1.5, n),
    )


def _candidates(rng: np.random.Generator, shape: tuple[int, int], count: int, weight):
    """``count`` points drawn with a density proportional to a coarse weight map."""
    grid_h, grid_w = weight.shape
    cells = rng.choice(weight.size, size=count, p=(weight / weight.sum()).ravel())
    rows = (cells // grid_w + rng.random(count)) * shape[0] / grid_h
    cols = (cells % grid_w + rng.random(count)) * shape[1] / grid_w
    return np.stack([rows, cols], axis=1)


def _hard_core(points: np.ndarray, radius: np.ndarray, factor: float, limit: int):
    """Indices of the first ``limit`` points, in order, kept by sequential thinning: a point
    is dropped when a kept earlier one lies closer than ``factor`` times their radii's sum.

    Computed in parallel rounds (a point is kept when no undecided earlier neighbour is left),
    which gives exactly the sequential result.
    """
    n = len(points)
    if n == 0:
        return np.zeros(0, np.int64)
    pairs = cKDTree(points).query_pairs(2 * factor * radius.max(), output_type="ndarray")
    first, second = pairs[:, 0], pairs[:, 1]  # first < second
    gap = np.hypot(*(points[first] - points[second]).T)
    conflict = gap < factor * (radius[first] + radius[second])
    first, second = first[conflict], second[conflict]
    state = np.zeros(n, np.int8)  # 0 undecided, 1 kept, -1 dropped
    while (state == 0).any():
        live = (state[first] == 0) & (state[second] == 0)
        blocked = np.zeros(n, bool)
        blocked[second[live]] = True
        state[(state == 0) & ~blocked] = 1
        state[second[(state[first] == 1) & (state[second] == 0)]] = -1
        state[first[(state[second] == 1) & (state[first] == 0)]] = -1
    return np.flatnonzero(state == 1)[:limit]


def _rasterise(
    shape: tuple[int, int], objects: _Objects, roughness: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Paint the objects; each pixel goes to the object it lies deepest in.

    Args:
        shape: (H, W) of the field.
        objects: The objects to paint.
        roughness: (H, W) noise field that roughens the outlines; each object reads it at
            its own offset, so neighbours' outlines differ.

    Returns:
        labels: (H, W) int32, object i painted as i + 1 (not yet cleaned up).
        depth: (H, W) float32 normalised radius of the pixel in its object (0 centre, 1 edge).
    """
    height, width = shape
    n = len(objects.radius)
    long_axis = (objects.radius / np.sqrt(objects.aspect)).astype(_F32)
    short_axis = (objects.radius * np.sqrt(objects.aspect)).astype(_F32)
    cos, sin = np.cos(objects.angle).astype(_F32), np.sin(objects.angle).astype(_F32)
    coef_re = objects.harmonics.real.astype(_F32)
    coef_im = objects.harmonics.imag.astype(_F32)
    rough = objects.rough.astype(_F32)
    # Each object's half box side: that of its ellipse grown by the most its outline wobbles.
    bound = (1 + np.abs(objects.harmonics).sum(1) + 3 * objects.rough).astype(_F32)
    grown_a, grown_b = long_axis * bound + 1, short_axis * bound + 1
    half = np.ceil(
        np.maximum(np.hypot(grown_a * cos, grown_b * sin), np.hypot(grown_a * sin, grown_b * cos))
    ).astype(np.int64)
    origin = np.floor(objects.centres).astype(np.int64)
    rough_flat = roughness.ravel()
    rough_shift = (np.arange(n, dtype=np.int64) * 2_654_435_761) % rough_flat.size
    best = np.full(height * width, np.inf, _F32)
    flat_type = np.int32 if height * width < 2**31 else np.int64
    found_pixels, found_rho, found_ids = [], [], []
    # Batches of similar-sized objects, each in a (P, P) patch; about 2 M patch pixels each.
    order = np.argsort(half, kind="stable")
    batch = np.cumsum((2 * half[order] + 1) ** 2) // 2_000_000
    bounds = np.r_[0, np.flatnonzero(np.diff(batch)) + 1, n]
    for start, stop in itertools.pairwise(bounds):
        index = order[start:stop]
        size = int(half[index[-1]])
        offsets = np.arange(-size, size + 1)
        rows = origin[index, 0, None] + offsets  # (n, P)
        cols = origin[index, 1, None] + offsets
        dy = (rows - objects.centres[index, 0, None]).astype(_F32)[:, :, None]
        dx = (cols - objects.centres[index, 1, None]).astype(_F32)[:, None, :]
        c, s = cos[index, None, None], sin[index, None, None]
        u = (dx * c + dy * s) / long_axis[index, None, None]
        v = (dy * c - dx * s) / short_axis[index, None, None]
        rho = np.hypot(u, v)
        # Keep the pixels the wobbly outline can reach, as flat lists.
        near = rho < bound[index, None, None]
        near &= ((rows >= 0) & (rows < height))[:, :, None]
        near &= ((cols >= 0) & (cols < width))[:, None, :]
        u, v, rho = u[near], v[near], rho[near]
        obj = np.broadcast_to(index[:, None, None], near.shape)[near]
        pixels = (rows.astype(flat_type)[:, :, None] * width + cols.astype(flat_type)[:, None, :])[
            near
        ]
        # The outline's radius wobbles with the angle (harmonics 2-5) and the roughness.
        cos_1, sin_1 = u / np.maximum(rho, 1e-6), v / np.maximum(rho, 1e-6)
        cos_k, sin_k = cos_1, sin_1
        outline = np.ones_like(rho)
        for k in range(4):
            cos_k, sin_k = cos_k * cos_1 - sin_k * sin_1, sin_k * cos_1 + cos_k * sin_1
            outline += coef_re[obj, k] * cos_k - coef_im[obj, k] * sin_k
        rho /= np.maximum(outline, 0.3)
        rho += rough[obj] * rough_flat[(pixels + rough_shift[obj]) % rough_flat.size]
        inside = rho < 1.0
        pixels, rho = pixels[inside], rho[inside]
        np.minimum.at(best, pixels, rho)
        found_pixels.append(pixels)
        found_rho.append(rho)
        found_ids.append(obj[inside].astype(np.int32) + 1)
    labels = np.zeros(height * width, np.int32)
    if found_pixels:
        pixels = np.concatenate(found_pixels)
        values = np.concatenate(found_rho)
        ids = np.concatenate(found_ids)
        win = values == best[pixels]
        labels[pixels[win]] = ids[win]
    depth = np.where(np.isfinite(best), best, 1.0).reshape(shape)
    return labels.reshape(shape), depth


def _clean(labels: np.ndarray, expected_area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep each object's largest 4-connected piece; drop objects clipped too much.

    Returns:
        labels: (H, W) int32 renumbered 1..N.
        source: (N + 1,) the index of each new label's object in ``expected_area`` (-1 for 0).
    """
    pieces = connected_components(labels, background=0, connectivity=1)
    count = int(pieces.max())
    owner = np.zeros(count + 1, np.int64)
    owner[pieces.ravel()] = labels.ravel()
    size = np.bincount(pieces.ravel(), minlength=count + 1)
    size[0] = 0
    largest = np.zeros(len(expected_area) + 1, np.int64)
    by_size = np.argsort(size, kind="stable")
    largest[owner[by_size]] = by_size  # the last write is the largest piece
    area = size[largest]
    keep = area >= np.maximum(_MIN_AREA, _KEEP_FRACTION * np.r_[np.inf, expected_area])
    keep[0] = False
    new_id = np.where(keep, np.cumsum(keep), 0).astype(np.int32)
    piece_lut = np.where(largest[owner] == np.arange(count + 1), new_id[owner], 0)
    piece_lut[0] = 0
    source = np.r_[-1, np.flatnonzero(keep) - 1]
    return piece_lut.astype(np.int32)[pieces], source


def _median_diameter(labels: np.ndarray) -> float:
    area = np.bincount(labels.ravel())[1:]
    area = area[area > 0]
    return float(np.median(2 * np.sqrt(area / np.pi))) if len(area) else 0.0


def _checked_shape(shape) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) < 32:
        raise ValueError(f"shape must be (height, width) with both at least 32, got {shape!r}")
    return int(shape[0]), int(shape[1])


def _checked_positive(name: str, value: float | None) -> float | None:
    if value is not None and not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")
    return value


def _fit_diameter(
    build: Callable[[np.random.Generator, float], tuple],
    seed: int,
    nominal: float,
    requested: float | None,
) -> tuple:
    """Run a geometry builder; when a diameter was requested, rescale until the labelled
    objects' median diameter is within 3 % of it (clipping by neighbours shrinks objects)."""
    scale = 1.0
    result = build(np.random.default_rng(seed), nominal)
    for _ in range(3):
        measured = _median_diameter(result[0])
        if requested is None or measured == 0 or abs(measured / requested - 1) < 0.03:
            break
        scale *= requested / measured
        result = build(np.random.default_rng(seed), nominal * scale)
    return result


# --------------------------------------------------------------------------- nuclei


@dataclass
class _Nuclei:
    labels: np.ndarray
    depth: np.ndarray
    mitotic: np.ndarray  # (N + 1,) bool per label
    roughness: np.ndarray  # the noise field that roughened the outlines (scale 0.1 diameter)


def _nuclei_geometry(
    rng: np.random.Generator,
    shape: tuple[int, int],
    diameter: float,
    density: float,
    *,
    clustering: float,
    spacing: float,
    mitotic_rate: float,
    micronuclei_rate: float,
) -> _Nuclei:
    """Nuclei placed in colonies, ellipses with smooth, slightly irregular outlines."""
    height, width = shape
    radius = 0.5 * diameter
    target = int(density * height * width / (np.pi * radius**2)) + 1
    # Colonies: a smooth weight map; candidates follow it, a fifth are spread evenly.
    grid = max(4.0, 2 * radius)
    weight_shape = (int(np.ceil(height / grid)), int(np.ceil(width / grid)))
    scale = rng.uniform(4, 15) * diameter / grid
    weight = np.exp(clustering * _noise(rng, weight_shape, scale)).astype(np.float64)
    weight = 0.8 * weight / weight.mean() + 0.2
    count = 3 * target + 20
    points = _candidates(rng, shape, count, weight)
    # Candidates in dense places come first, so colonies fill up (neighbours touch) before
    # the sparse places get their share.
    local = weight[
        (points[:, 0] * weight_shape[0] / height).astype(int),
        (points[:, 1] * weight_shape[1] / width).astype(int),
    ]
    points = points[np.argsort(rng.exponential(size=count) / local ** min(clustering, 1.0))]
    # Sizes: a lognormal spread, a few large (polyploid) nuclei, small mitotic figures.
    sizes = radius * np.exp(0.18 * rng.standard_normal(count))
    sizes[rng.random(count) < 0.03] *= 1.4
    mitotic = rng.random(count) < mitotic_rate
    sizes[mitotic] *= rng.uniform(0.45, 0.7, mitotic.sum())
    sizes = np.clip(sizes, 0.2 * radius, 1.8 * radius)
    keep = _hard_core(points, sizes, spacing, target)
    points, sizes, mitotic = points[keep], sizes[keep], mitotic[keep]
    # Micronuclei: tiny round bodies against the edge of some nuclei.
    parents = np.flatnonzero((rng.random(len(keep)) < micronuclei_rate) & ~mitotic)
    micro = sizes[parents] * rng.uniform(0.15, 0.3, len(parents))
    direction = rng.uniform(0, 2 * np.pi, len(parents))
    reach = sizes[parents] + micro * rng.uniform(0.6, 1.6, len(parents))
    around = points[parents] + reach[:, None] * np.stack([np.sin(direction), np.cos(direction)], 1)
    points = np.concatenate([points, around])
    sizes = np.concatenate([sizes, micro])
    mitotic = np.concatenate([mitotic, np.zeros(len(parents), bool)])
    objects = _shapes(rng, points, sizes, (6.0, 1.8), wobble=0.04, rough=0.04)
    objects.aspect[mitotic] = rng.uniform(0.25, 0.7, mitotic.sum())  # plates and rods
    objects.aspect[len(keep) :] = rng.uniform(0.7, 1.0, len(parents))
    roughness = _noise(rng, shape, max(1.0, 0.1 * diameter))
    labels, depth = _rasterise(shape, objects, roughness)
    labels, source = _clean(labels, np.pi * objects.radius**2)
    return _Nuclei(labels, depth, np.r_[False, mitotic[source[1:]]], roughness)


def nuclei_field(
    seed: int,
    shape: tuple[int, int] = (512, 512),
    *,
    diameter: float | None = None,
    density: float | None = None,
) -> Field:
    """A widefield DNA-stain image (Hoechst/DAPI-like) of nuclei, as a 16-bit camera gives it.

    Args:
        seed: Random seed; the same seed and arguments give the same field.
        shape: (H, W) in pixels.
        diameter: Typical nucleus diameter in pixels; drawn from 10-40 when None. Objects
            vary around it (about 18 %), mitotic figures are smaller.
        density: Share of the field the nuclei would cover before clipping (0.02 sparse,
            0.5 confluent); drawn over that range when None.

    Returns:
        A :class:`Field` of kind ``"nuclei"``: uint16 counts on a camera offset.

    Raises:
        ValueError: For a bad shape, diameter or density.
    """
    shape = _checked_shape(shape)
    _checked_positive("diameter", diameter)
    _checked_positive("density", density)
    rng = np.random.default_rng(seed)
    nominal = diameter if diameter is not None else float(_loguniform(rng, 10, 40))
    if density is None:  # half the fields crowded, half sparse to moderate
        crowded = rng.random() < 0.5
        density = rng.uniform(0.25, 0.5) if crowded else float(_loguniform(rng, 0.02, 0.25))
    options = {
        "clustering": rng.uniform(0.0, 2.5),  # 0: evenly spread; 2.5: dense colonies
        "spacing": rng.uniform(0.7, 0.95),  # below 1, neighbours press against each other
        "mitotic_rate": rng.uniform(0.0, 0.05),
        "micronuclei_rate": rng.uniform(0.0, 0.03),
    }
    geometry_seed, render_seed = rng.integers(2**63, size=2)

    def build(geo_rng, size):
        # Neighbours clip each other: start larger in crowded fields (fewer refits).
        nuclei = _nuclei_geometry(geo_rng, shape, size * (1 + 0.12 * density), density, **options)
        return nuclei.labels, nuclei

    _, nuclei = _fit_diameter(build, int(geometry_seed), nominal, diameter)
    image = _render_nuclei(np.random.default_rng(int(render_seed)), nuclei, nominal)
    return Field(image, nuclei.labels, "nuclei", _median_diameter(nuclei.labels))


def _render_nuclei(rng: np.random.Generator, nuclei: _Nuclei, diameter: float) -> np.ndarray:
    labels = nuclei.labels
    shape = labels.shape
    n = int(labels.max())
    # Per nucleus: brightness (x2-x4 between dim and bright ones), focus.
    spread = rng.uniform(0.2, 0.38)
    bright = np.exp(spread * rng.standard_normal(n + 1))
    bright[nuclei.mitotic] *= rng.uniform(1.8, 3.0)
    out_of_focus = rng.random(n + 1) < rng.uniform(0.0, 0.2)
    out_of_focus[nuclei.mitotic] = False
    bright[out_of_focus] *= rng.uniform(0.6, 0.9, out_of_focus.sum())
    bright[0] = 0.0
    # Inside a nucleus: a flat dome (thickness), chromatin grain, darker nucleoli. Computed
    # on the nuclei's pixels only.
    where = np.flatnonzero(labels)
    owner = labels.ravel()[where]
    mitotic = nuclei.mitotic[owner]
    dome = np.power(np.clip(1 - nuclei.depth.ravel()[where] ** 4, 0, 1), rng.uniform(0.3, 0.6))
    fine = _noise(rng, shape, rng.uniform(0.8, 1.5)).ravel()[where]
    coarse = nuclei.roughness.ravel()  # the outline roughness field, read elsewhere
    grain = rng.uniform(0.08, 0.2) * fine
    grain += rng.uniform(0.04, 0.12) * coarse[(where + 7 * shape[1] + 7) % coarse.size]
    grain[mitotic] *= 2.0
    nucleoli = np.clip((coarse[where] - 1.5) / 0.6, 0, 1) * rng.uniform(0.25, 0.55) * ~mitotic
    signal = np.zeros(labels.size, _F32)
    signal[where] = bright[owner] * dome * np.clip(1 + grain, 0.2, None) * (1 - nucleoli)
    signal = signal.reshape(shape)
    # Debris: a few small unlabelled specks on the background.
    specks = rng.integers(0, labels.size, int(rng.uniform(0, 3e-5) * labels.size))
    specks = specks[labels.ravel()[specks] == 0]
    for shift in (0, 1, shape[1], shape[1] + 1):  # 2 x 2 pixels each
        signal.ravel()[(specks + shift) % labels.size] += rng.uniform(0.3, 1.5, len(specks))
    # Optics: point-spread blur, a wider one out of focus, scattered light.
    psf = rng.uniform(0.7, 1.4)
    if out_of_focus.any():
        blurred = out_of_focus[labels]
        image = _blur(np.where(blurred, 0, signal), psf)
        image += _blur(np.where(blurred, signal, 0), rng.uniform(0.06, 0.12) * diameter)
    else:
        image = _blur(signal, psf)
    image += rng.uniform(0.01, 0.06) * _blur(image, 2.5 * diameter)
    # Background (unbound dye, autofluorescence) and uneven illumination.
    background = rng.uniform(0.01, 0.12) * (1 + 0.25 * _noise(rng, shape, max(shape) / 4))
    image = (image + background) * _illumination(rng, shape, rng.uniform(0.05, 0.35))
    # Camera: a few hundred counts at most above an offset.
    gain = float(_loguniform(rng, 0.5, 2.0))  # counts per photoelectron
    peak = float(_loguniform(rng, 40, 450))  # counts of a typical nucleus above offset
    offset = float(rng.choice([100, 100, 100, 200, 500]))
    return _camera(
        rng,
        image * (peak / gain),
        gain=gain,
        offset=offset,
        read_noise=gain * rng.uniform(1.0, 2.5),
    )


# --------------------------------------------------------------------------- cells


def cell_field(
    seed: int,
    shape: tuple[int, int] = (512, 512),
    *,
    diameter: float | None = None,
    modality: str = "fluorescence",
) -> Field:
    """Whole cells: sheets of touching cells and isolated ones, each labelled.

    Args:
        seed: Random seed; the same seed and arguments give the same field.
        shape: (H, W) in pixels.
        diameter: Typical cell diameter in pixels; drawn from 25-80 when None.
        modality: ``"fluorescence"`` (cytoplasm stain, uint16), ``"phase"`` (phase contrast,
            uint16) or ``"brightfield"`` (uint8 or uint16).

    Returns:
        A :class:`Field` of kind ``"cells_<modality>"``.

    Raises:
        ValueError: For a bad shape, diameter or modality.
    """
    shape = _checked_shape(shape)
    _checked_positive("diameter", diameter)
    if modality not in _CELL_MODALITIES:
        raise ValueError(f"modality must be one of {_CELL_MODALITIES}, got {modality!r}")
    rng = np.random.default_rng(seed)
    nominal = diameter if diameter is not None else float(_loguniform(rng, 25, 80))
    confluence = rng.uniform(0.15, 0.9)
    morphology = str(rng.choice(list(_MORPHOLOGIES), p=[0.5, 0.3, 0.2]))
    geometry_seed, render_seed = rng.integers(2**63, size=2)

    def build(geo_rng, size):
        return _cell_geometry(geo_rng, shape, size, confluence, morphology)

    _, cells = _fit_diameter(build, int(geometry_seed), nominal, diameter)
    render = {
        "fluorescence": _render_fluorescent_cells,
        "phase": _render_phase,
        "brightfield": _render_brightfield,
    }[modality]
    image = render(np.random.default_rng(int(render_seed)), cells, nominal)
    return Field(image, cells.labels, f"cells_{modality}", _median_diameter(cells.labels))


@dataclass
class _Cells:
    labels: np.ndarray
    depth: np.ndarray  # normalised radius in the cell's outline: 0 at its seed, 1 at the edge
    rounded: np.ndarray  # (N + 1,) bool: small, round (dividing) cells


# Cell shapes per culture: (short/long axis beta parameters, outline wobble, roughness,
# spacing between seeds relative to their radii, whether neighbours align).
_MORPHOLOGIES = {
    "epithelial": ((3.0, 2.0), 0.12, 0.12, 0.62, False),  # polygonal sheets
    "fibroblast": ((1.5, 5.0), 0.1, 0.1, 0.5, True),  # spindles in aligned streams
    "round": ((8.0, 1.5), 0.04, 0.05, 0.8, False),  # small round cells, few contacts
}


def _cell_geometry(rng, shape, diameter, confluence, morphology):
    """Cells: seeds packed in colony regions (touching cells whose borders split the space
    between them) plus scattered isolated cells; a few are small, round (dividing) cells."""
    aspect, wobble, rough, spacing, aligned = _MORPHOLOGIES[morphology]
    height, width = shape
    radius = 0.5 * diameter
    grid = max(4.0, radius)
    weight_shape = (int(np.ceil(height / grid)), int(np.ceil(width / grid)))
    colony = _noise(rng, weight_shape, rng.uniform(2, 5) * diameter / grid)
    threshold = np.quantile(colony, 1 - confluence)
    weight = (colony > threshold) + 0.03
    target = int(confluence * height * width / (np.pi * radius**2) * 1.1) + 3
    count = 4 * target
    points = _candidates(rng, shape, count, weight.astype(np.float64))
    sizes = 1.25 * radius * np.exp(0.2 * rng.standard_normal(count))
    rounded = rng.random(count) < 0.05
    sizes[rounded] *= 0.5
    keep = _hard_core(points, sizes, spacing, target)
    objects = _shapes(rng, points[keep], sizes[keep], aspect, wobble, rough)
    if aligned:  # orientation follows a smooth field, so neighbours run side by side
        flow = rng.uniform(0, np.pi) + 1.2 * _noise(rng, shape, rng.uniform(3, 8) * diameter)
        at = np.clip(objects.centres.astype(int), 0, [height - 1, width - 1])
        objects.angle = flow[at[:, 0], at[:, 1]] + rng.normal(0, 0.15, len(at))
    rounded = rounded[keep]
    objects.aspect[rounded] = rng.uniform(0.85, 1.0, rounded.sum())
    objects.harmonics[rounded] *= 0.2
    objects.rough[rounded] *= 0.2
    labels, depth = _rasterise(shape, objects, _noise(rng, shape, 0.15 * diameter))
    labels, source = _clean(labels, np.pi * objects.radius**2)
    return labels, _Cells(labels, depth, np.r_[False, rounded[source[1:]]])


def _cell_layers(rng, cells: _Cells, diameter: float):
    """Thickness (0 outside, about 1 over the nucleus) and the nucleus share (0-1).

    A spread cell is thin at its periphery and rises towards the nucleus around its seed; a
    rounded (dividing) cell is a thick dome.
    """
    labels = cells.labels
    n = int(labels.max())
    inside = labels > 0
    inner = inside.copy()  # inside, and not on a border with the background or a neighbour
    inner[:, 1:] &= labels[:, 1:] == labels[:, :-1]
    inner[:, :-1] &= labels[:, 1:] == labels[:, :-1]
    inner[1:] &= labels[1:] == labels[:-1]
    inner[:-1] &= labels[1:] == labels[:-1]
    distance = ndimage.distance_transform_edt(inner).astype(_F32)  # to the cell's own border
    rise = 1 - np.exp(-distance / (rng.uniform(0.015, 0.04) * diameter + 0.5))  # membrane edge
    body = 1 - np.exp(-distance / (rng.uniform(0.1, 0.25) * diameter))  # thin lamella outside
    dome = np.clip(1 - cells.depth**2, 0, 1)
    floor = rng.uniform(0.1, 0.35)  # periphery thickness relative to the middle
    thickness = rise * (floor + (1 - floor) * body * (0.6 + 0.4 * dome))
    thickness *= np.exp(0.15 * rng.standard_normal(n + 1))[labels]
    is_round = cells.rounded[labels]
    thickness[is_round] = 1.8 * np.sqrt(dome[is_round]) * rise[is_round]
    wobble = 0.06 * _noise(rng, labels.shape, 0.1 * diameter)
    cut = rng.uniform(0.3, 0.5, n + 1)[labels]
    nucleus = 1 / (1 + np.exp(-(cut - cells.depth + wobble) / 0.03)) * rise
    nucleus[is_round | ~inside] = 0
    return thickness.astype(_F32), nucleus.astype(_F32)


def _render_fluorescent_cells(rng, cells: _Cells, diameter: float):
    labels = cells.labels
    shape = labels.shape
    n = int(labels.max())
    thickness, nucleus = _cell_layers(rng, cells, diameter)
    bright = np.exp(rng.uniform(0.25, 0.5) * rng.standard_normal(n + 1))
    grain = 1 + rng.uniform(0.12, 0.3) * _noise(rng, shape, rng.uniform(0.8, 1.6))
    grain += rng.uniform(0.1, 0.25) * _noise(rng, shape, 0.05 * diameter)
    # Cytoplasm stains leave the nucleus darker; whole-cell stains make it brighter.
    nucleus_level = rng.choice([rng.uniform(0.35, 0.7), rng.uniform(1.1, 1.4)])
    signal = bright[labels] * thickness * np.clip(grain, 0.2, None)
    signal *= 1 + (nucleus_level - 1) * nucleus
    image = _blur(signal.astype(_F32), rng.uniform(0.8, 1.6))
    image += rng.uniform(0.02, 0.08) * _blur(image, 2 * diameter)
    background = rng.uniform(0.02, 0.1) * (1 + 0.3 * _noise(rng, shape, max(shape) / 4))
    image = (image + background) * _illumination(rng, shape, rng.uniform(0.05, 0.3))
    gain = float(_loguniform(rng, 0.5, 2.0))
    peak = float(_loguniform(rng, 80, 900))
    return _camera(
        rng, image * (peak / gain), gain=gain, offset=100.0, read_noise=gain * rng.uniform(1, 2.5)
    )


def _optical_path(rng, cells: _Cells, diameter: float):
    """Optical path difference: thickness, a denser nucleus with nucleoli, granules."""
    thickness, nucleus = _cell_layers(rng, cells, diameter)
    granules = np.clip(_noise(rng, cells.labels.shape, 1.2) - 1.0, 0, None)
    nucleoli = np.clip(_noise(rng, cells.labels.shape, 0.04 * diameter) - 1.5, 0, None)
    path = thickness * (1 + nucleus * (0.15 + 0.5 * nucleoli) + 0.3 * granules * (1 - nucleus))
    return path.astype(_F32)


def _render_phase(rng, cells: _Cells, diameter: float):
    shape = cells.labels.shape
    path = _optical_path(rng, cells, diameter)
    # Phase contrast shows the path minus its local mean: dark cells, bright halos outside.
    contrast = path - _blur(path, rng.uniform(0.12, 0.3) * diameter)
    contrast[cells.rounded[cells.labels]] *= -1.5  # thick round cells: bright, dark rim
    image = 1 - rng.uniform(0.25, 0.5) * _blur(contrast, rng.uniform(0.7, 1.2))
    image *= _illumination(rng, shape, rng.uniform(0.03, 0.15))
    level = float(_loguniform(rng, 1500, 8000))
    return _camera(rng, image * level, gain=1.0, offset=100.0, read_noise=2.0)


def _render_brightfield(rng, cells: _Cells, diameter: float):
    shape = cells.labels.shape
    path = _optical_path(rng, cells, diameter)
    # Slight absorption plus a defocus term (a band-passed path): thin dark or bright rims.
    fine = _blur(path, 0.015 * diameter + 0.8)
    rim = fine - _blur(path, 0.05 * diameter + 2.0)
    defocus = rng.choice([-1.0, 1.0], p=[0.7, 0.3]) * rng.uniform(0.05, 0.2)
    image = 1 - rng.uniform(0.02, 0.06) * fine - defocus * rim
    image *= _illumination(rng, shape, rng.uniform(0.05, 0.2))
    if rng.random() < 0.5:  # an 8-bit camera
        level = rng.uniform(150, 220)
        noisy = rng.poisson(np.maximum(image * level * 20, 0)) / 20.0 + rng.normal(0, 0.8, shape)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    level = float(_loguniform(rng, 2000, 20000))
    return _camera(rng, image * level, gain=1.0, offset=100.0, read_noise=3.0)


# --------------------------------------------------------------------------- histology

# Optical density per unit stain in (R, G, B): hematoxylin absorbs red and green (blue-purple
# nuclei), eosin mostly green and some blue (pink). Close to the vectors stain-separation
# methods estimate on real slides.
_HEMATOXYLIN = np.array([0.62, 0.72, 0.30], _F32)
_EOSIN = np.array([0.05, 0.95, 0.45], _F32)


def histology_field(
    seed: int, shape: tuple[int, int] = (512, 512), *, diameter: float | None = None
) -> Field:
    """An H&E-stained tissue section: hematoxylin nuclei (labelled) in eosin stroma.

    Epithelial nests of crowded, often vesicular nuclei; stroma of wavy collagen fibres with
    thin, aligned fibroblast nuclei; small dark lymphocytes; empty spaces (lumens, fat).

    Args:
        seed: Random seed; the same seed and arguments give the same field.
        shape: (H, W) in pixels.
        diameter: Typical (epithelial) nucleus diameter in pixels; drawn from 8-25 when None.

    Returns:
        A :class:`Field` of kind ``"histology"`` with an (H, W, 3) uint8 RGB image.

    Raises:
        ValueError: For a bad shape or diameter.
    """
    shape = _checked_shape(shape)
    _checked_positive("diameter", diameter)
    rng = np.random.default_rng(seed)
    nominal = diameter if diameter is not None else float(_loguniform(rng, 10, 25))
    layout_seed, geometry_seed, render_seed = rng.integers(2**63, size=3)
    tissue = _tissue_layout(np.random.default_rng(int(layout_seed)), shape, nominal)

    def build(geo_rng, size):
        return _histology_geometry(geo_rng, tissue, size)

    labels, kinds, depth = _fit_diameter(build, int(geometry_seed), nominal, diameter)
    image = _render_histology(np.random.default_rng(int(render_seed)), tissue, labels, kinds, depth)
    return Field(image, labels, "histology", _median_diameter(labels))


@dataclass
class _Tissue:
    epithelium: np.ndarray  # (H, W) 0-1: nests of epithelial cells
    empty: np.ndarray  # (H, W) 0-1: lumens, fat, tears (no stain)
    fibres: np.ndarray  # (H, W) wavy collagen texture, std about 1
    direction: np.ndarray  # (H, W) local fibre angle, radians


def _tissue_layout(rng: np.random.Generator, shape: tuple[int, int], diameter: float):
    height, width = shape
    epithelium = _noise(rng, shape, rng.uniform(3, 8) * diameter)
    epithelium = np.clip((epithelium - rng.uniform(-0.8, 0.8)) / 0.3 + 0.5, 0, 1)
    empty = _noise(rng, shape, rng.uniform(1.5, 4) * diameter)
    empty = np.clip((empty - rng.uniform(1.2, 2.5)) / 0.15, 0, 1)
    # Fibres: streaks along one axis, sampled through a smooth warp and a rotation.
    streaks = ndimage.gaussian_filter(
        rng.standard_normal(shape, _F32), (1.0, rng.uniform(4, 9)), mode="wrap"
    )
    streaks /= streaks.std()
    angle = rng.uniform(0, np.pi)
    bend, wave = rng.uniform(1, 4) * diameter, rng.uniform(4, 12) * diameter
    warp_r = bend * _noise(rng, shape, wave)
    warp_c = bend * _noise(rng, shape, wave)
    rows, cols = np.mgrid[:height, :width].astype(_F32)
    src_r = np.cos(angle) * rows - np.sin(angle) * cols + warp_r
    src_c = np.sin(angle) * rows + np.cos(angle) * cols + warp_c
    fibres = ndimage.map_coordinates(streaks, [src_r, src_c], order=1, mode="grid-wrap")
    # The streaks run where src_r is constant: across its gradient. As (x, y) = (col, row)
    # angles, the convention of the object outlines.
    slope_r, slope_c = np.gradient(src_r)
    direction = np.arctan2(-slope_c, slope_r).astype(_F32)
    return _Tissue(epithelium.astype(_F32), empty.astype(_F32), fibres, direction)


_EPITHELIAL, _STROMAL, _LYMPHOCYTE = 0, 1, 2


def _histology_geometry(rng: np.random.Generator, tissue: _Tissue, diameter: float):
    """Nuclei of three kinds placed by the tissue layout; returns labels, kinds, depth."""
    shape = tissue.empty.shape
    height, width = shape
    radius = 0.5 * diameter
    grid = max(4.0, radius)
    coarse = tuple(int(np.ceil(s / grid)) for s in shape)
    rows = np.minimum((np.arange(coarse[0]) * grid).astype(int), height - 1)
    cols = np.minimum((np.arange(coarse[1]) * grid).astype(int), width - 1)
    epi = tissue.epithelium[np.ix_(rows, cols)].astype(np.float64)
    solid = 1 - tissue.empty[np.ix_(rows, cols)].astype(np.float64)
    area = np.pi * radius**2
    kinds, points = [], []
    for kind, weight, per_area in (
        (_EPITHELIAL, epi * solid, 0.55),  # nests: nuclei cover about half of them
        (_STROMAL, (1 - epi) * solid, 0.04),
        (_LYMPHOCYTE, solid * np.exp(1.5 * _noise(rng, coarse, 6.0)), 0.05),
    ):
        count = int(per_area * weight.sum() * grid**2 / area) + 1
        if weight.sum() > 0:
            points.append(_candidates(rng, shape, 3 * count, weight + 1e-9))
            kinds.append(np.full(3 * count, kind))
    points, kinds = np.concatenate(points), np.concatenate(kinds)
    order = rng.permutation(len(points))
    points, kinds = points[order], kinds[order]
    scale = np.choose(kinds, [1.0, 0.9, 0.6]) * np.exp(0.2 * rng.standard_normal(len(kinds)))
    sizes = radius * scale
    target = int(0.3 * (1 - tissue.empty).mean() * height * width / area) + 1
    keep = _hard_core(points, sizes, rng.uniform(0.75, 0.9), target)
    points, sizes, kinds = points[keep], sizes[keep], kinds[keep]
    objects = _shapes(rng, points, sizes, (4.0, 2.0), 0.07, 0.06)
    stromal = kinds == _STROMAL
    objects.aspect[stromal] = rng.uniform(0.15, 0.4, stromal.sum())
    at = np.clip(points[stromal].astype(int), 0, [height - 1, width - 1])
    objects.angle[stromal] = tissue.direction[at[:, 0], at[:, 1]] + rng.normal(0, 0.2, len(at))
    round_ = kinds == _LYMPHOCYTE
    objects.aspect[round_] = rng.uniform(0.8, 1.0, round_.sum())
    objects.harmonics[round_] *= 0.3
    labels, depth = _rasterise(shape, objects, _noise(rng, shape, max(1.0, 0.1 * diameter)))
    labels, source = _clean(labels, np.pi * objects.radius**2)
    return labels, np.r_[-1, kinds[source[1:]]], depth


def _render_histology(rng, tissue: _Tissue, labels, kinds, depth) -> np.ndarray:
    shape = labels.shape
    n = int(labels.max())
    inside = labels > 0
    solid = 1 - tissue.empty
    # Eosin: fibrous stroma with loose gaps, paler epithelial cytoplasm.
    fibres = tissue.fibres
    stroma = (0.55 + 0.15 * fibres) * np.clip(2.0 + fibres, 0, 1)  # gaps where fibres < -2
    cytoplasm = 0.4 + 0.08 * _noise(rng, shape, 2.0)
    epi = tissue.epithelium
    eosin = (stroma * (1 - epi) + cytoplasm * epi) * solid * rng.uniform(0.7, 1.3)
    hema = (0.04 + 0.08 * epi) * solid * (1 + 0.3 * _noise(rng, shape, 1.5))
    # Nuclei: lymphocytes small and dark, stromal dark and thin, epithelial paler, some
    # vesicular (a dark rim and a nucleolus around a pale middle).
    level = np.choose(np.maximum(kinds, 0), [1.15, 1.4, 1.8]) * rng.uniform(0.8, 1.2)
    level = level * np.exp(0.2 * rng.standard_normal(n + 1))
    vesicular = (kinds == _EPITHELIAL) & (rng.random(n + 1) < rng.uniform(0.2, 0.7))
    is_vesicular = vesicular[labels]
    rim = np.where(is_vesicular, 0.45 + 0.8 * depth**4, 1.0)
    nucleolus = np.clip(_noise(rng, shape, 1.2) - 2.0, 0, None) * is_vesicular
    chromatin = np.clip(1 + rng.uniform(0.2, 0.35) * _noise(rng, shape, 0.9), 0.3, None)
    stain = level[labels] * rim * chromatin * (1 - 0.6 * depth**6) + 1.5 * nucleolus
    hema = np.where(inside, stain, hema)
    eosin = np.where(inside, 0.5 * eosin + 0.1, eosin)
    # Scanner: slight blur, Beer-Lambert colour, sensor noise, 8 bits.
    blur = rng.uniform(0.5, 1.0)
    hema = _blur(hema.astype(_F32), blur)
    eosin = _blur(eosin.astype(_F32), blur)
    h_vec = _HEMATOXYLIN * rng.uniform(0.85, 1.15, 3).astype(_F32)
    e_vec = _EOSIN * rng.uniform(0.85, 1.15, 3).astype(_F32)
    density = hema[..., None] * h_vec + eosin[..., None] * e_vec
    white = rng.uniform(235, 250) * rng.uniform(0.97, 1.0, 3)
    rgb = white * np.exp(-density) + rng.normal(0, 2.0, (*shape, 3)).astype(_F32)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- dispatch


def make_field(kind: str, seed: int, shape: tuple[int, int] = (512, 512), **kwargs) -> Field:
    """A field of the named kind (one of :data:`FIELD_KINDS`); keyword arguments go to the
    kind's generator (``diameter``, and ``density`` for nuclei)."""
    if kind == "nuclei":
        return nuclei_field(seed, shape, **kwargs)
    if kind.startswith("cells_") and kind in FIELD_KINDS:
        return cell_field(seed, shape, modality=kind.removeprefix("cells_"), **kwargs)
    if kind == "histology":
        return histology_field(seed, shape, **kwargs)
    raise ValueError(f"kind must be one of {FIELD_KINDS}, got {kind!r}")


def tiled(field: Field, reps: tuple[int, int]) -> Field:
    """The same field repeated ``reps`` = (rows, columns) times: the same objects in a larger
    field, each copy's labels renumbered after the previous copies'."""
    if len(reps) != 2 or min(reps) < 1:
        raise ValueError(f"reps must be two positive integers (rows, columns), got {reps!r}")
    rows, cols = int(reps[0]), int(reps[1])
    n = field.n_objects
    copy = np.arange(rows * cols, dtype=np.int32).reshape(rows, cols) * n
    offset = np.kron(copy, np.ones(field.labels.shape, np.int32))
    labels = np.tile(field.labels, (rows, cols))
    labels = np.where(labels > 0, labels + offset, 0).astype(np.int32)
    image_reps = (rows, cols) + (1,) * (field.image.ndim - 2)
    return Field(np.tile(field.image, image_reps), labels, field.kind, field.diameter)
