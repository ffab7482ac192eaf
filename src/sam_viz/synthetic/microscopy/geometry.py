"""Object geometry: wobbly-ellipse outlines, their placement, and exact instance labels."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial import cKDTree
from skimage.measure import label as connected_components

_MIN_AREA = 15  # pixels; smaller fragments are not objects an annotator would draw
_KEEP_FRACTION = 0.3  # an object clipped to less than this share of its pixels is dropped
_F32 = np.float32


@dataclass
class Objects:
    """Wobbly ellipses: centres (N, 2) as (row, col), equivalent radius, short/long axis
    ratio, orientation, radius harmonics (N, 4) complex for orders 2-5, edge roughness."""

    centres: np.ndarray
    radius: np.ndarray
    aspect: np.ndarray
    angle: np.ndarray
    harmonics: np.ndarray
    rough: np.ndarray


def shapes(
    rng: np.random.Generator,
    centres: np.ndarray,
    radius: np.ndarray,
    aspect: tuple[float, float],
    wobble: float,
    rough: float,
) -> Objects:
    """Random orientations and outlines around given centres and equivalent radii."""
    n = len(centres)
    orders = np.arange(2, 6)
    amplitude = wobble * rng.exponential(1.0, (n, 1)) / orders**0.8
    harmonics = amplitude * rng.normal(0, 1, (n, 4)) * np.exp(2j * np.pi * rng.random((n, 4)))
    return Objects(
        centres=centres,
        radius=radius,
        aspect=rng.beta(*aspect, n) * 0.8 + 0.2,
        angle=rng.uniform(0, np.pi, n),
        harmonics=harmonics,
        rough=rough * rng.uniform(0.5, 1.5, n),
    )


def candidates(
    rng: np.random.Generator, shape: tuple[int, int], count: int, weight: np.ndarray
) -> np.ndarray:
    """``count`` points drawn with a density proportional to a coarse weight map."""
    grid_h, grid_w = weight.shape
    cells = rng.choice(weight.size, size=count, p=(weight / weight.sum()).ravel())
    rows = (cells // grid_w + rng.random(count)) * shape[0] / grid_h
    cols = (cells % grid_w + rng.random(count)) * shape[1] / grid_w
    return np.stack([rows, cols], axis=1)


def hard_core(points: np.ndarray, radius: np.ndarray, factor: float, limit: int) -> np.ndarray:
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


def rasterise(
    shape: tuple[int, int], objects: Objects, roughness: np.ndarray
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
    ellipses = _Ellipses.of(objects)
    rough_flat = roughness.ravel()
    rough_shift = (np.arange(len(objects.radius), dtype=np.int64) * 2_654_435_761) % rough_flat.size
    best = np.full(height * width, np.inf, _F32)
    found_pixels, found_rho, found_ids = [], [], []
    for index in _batches(ellipses.half):
        # Keep the pixels the wobbly outline can reach, as flat lists.
        pixels, obj, u, v, rho = _reachable(ellipses, index, shape)
        # The outline's radius wobbles with the angle (harmonics 2-5) and the roughness.
        rho /= np.maximum(_outline(ellipses, obj, u, v, rho), 0.3)
        rho += ellipses.rough[obj] * rough_flat[(pixels + rough_shift[obj]) % rough_flat.size]
        inside = rho < 1.0
        pixels, rho = pixels[inside], rho[inside]
        np.minimum.at(best, pixels, rho)
        found_pixels.append(pixels)
        found_rho.append(rho)
        found_ids.append(obj[inside].astype(np.int32) + 1)
    # Each pixel goes to the object it lies deepest in.
    labels = np.zeros(height * width, np.int32)
    if found_pixels:
        pixels = np.concatenate(found_pixels)
        values = np.concatenate(found_rho)
        ids = np.concatenate(found_ids)
        win = values == best[pixels]
        labels[pixels[win]] = ids[win]
    depth = np.where(np.isfinite(best), best, 1.0).reshape(shape)
    return labels.reshape(shape), depth


@dataclass(frozen=True)
class _Ellipses:
    """The objects' outlines as :func:`rasterise` computes with them (float32 arrays (N,)
    unless said otherwise)."""

    centres: np.ndarray  # (N, 2) (row, col), as given
    long_axis: np.ndarray
    short_axis: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    coef_re: np.ndarray  # (N, 4) radius harmonics
    coef_im: np.ndarray
    rough: np.ndarray
    bound: np.ndarray  # largest normalised radius the outline reaches
    half: np.ndarray  # int64 half side of the box that holds the object
    origin: np.ndarray  # (N, 2) int64 pixel of the centre

    @classmethod
    def of(cls, objects: Objects) -> _Ellipses:
        long_axis = (objects.radius / np.sqrt(objects.aspect)).astype(_F32)
        short_axis = (objects.radius * np.sqrt(objects.aspect)).astype(_F32)
        cos, sin = np.cos(objects.angle).astype(_F32), np.sin(objects.angle).astype(_F32)
        # Each object's half box side: that of its ellipse grown by the most its outline
        # wobbles.
        bound = (1 + np.abs(objects.harmonics).sum(1) + 3 * objects.rough).astype(_F32)
        grown_a, grown_b = long_axis * bound + 1, short_axis * bound + 1
        half = np.ceil(
            np.maximum(
                np.hypot(grown_a * cos, grown_b * sin), np.hypot(grown_a * sin, grown_b * cos)
            )
        ).astype(np.int64)
        return cls(
            centres=objects.centres,
            long_axis=long_axis,
            short_axis=short_axis,
            cos=cos,
            sin=sin,
            coef_re=objects.harmonics.real.astype(_F32),
            coef_im=objects.harmonics.imag.astype(_F32),
            rough=objects.rough.astype(_F32),
            bound=bound,
            half=half,
            origin=np.floor(objects.centres).astype(np.int64),
        )


def _batches(half: np.ndarray) -> Iterator[np.ndarray]:
    """Batches of similar-sized objects, each in a (P, P) patch; about 2 M patch pixels
    each (the objects' indices, smallest first)."""
    order = np.argsort(half, kind="stable")
    batch = np.cumsum((2 * half[order] + 1) ** 2) // 2_000_000
    bounds = np.r_[0, np.flatnonzero(np.diff(batch)) + 1, len(half)]
    for start, stop in itertools.pairwise(bounds):
        yield order[start:stop]


def _reachable(
    ellipses: _Ellipses, index: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The field's pixels that objects ``index``'s outlines can reach, as flat lists.

    Returns:
        (flat pixel index, object, u, v, rho): u and v are the pixel's position along the
        ellipse's long and short axes over their lengths, rho its normalised radius.
    """
    height, width = shape
    flat_type: type[np.signedinteger[Any]] = np.int32 if height * width < 2**31 else np.int64
    size = int(ellipses.half[index[-1]])
    offsets = np.arange(-size, size + 1)
    rows = ellipses.origin[index, 0, None] + offsets  # (n, P)
    cols = ellipses.origin[index, 1, None] + offsets
    dy = (rows - ellipses.centres[index, 0, None]).astype(_F32)[:, :, None]
    dx = (cols - ellipses.centres[index, 1, None]).astype(_F32)[:, None, :]
    c, s = ellipses.cos[index, None, None], ellipses.sin[index, None, None]
    u = (dx * c + dy * s) / ellipses.long_axis[index, None, None]
    v = (dy * c - dx * s) / ellipses.short_axis[index, None, None]
    rho = np.hypot(u, v)
    near = rho < ellipses.bound[index, None, None]
    near &= ((rows >= 0) & (rows < height))[:, :, None]
    near &= ((cols >= 0) & (cols < width))[:, None, :]
    u, v, rho = u[near], v[near], rho[near]
    obj = np.broadcast_to(index[:, None, None], near.shape)[near]
    pixels = (rows.astype(flat_type)[:, :, None] * width + cols.astype(flat_type)[:, None, :])[near]
    return pixels, obj, u, v, rho


def _outline(
    ellipses: _Ellipses, obj: np.ndarray, u: np.ndarray, v: np.ndarray, rho: np.ndarray
) -> np.ndarray:
    """The outline's radius (1 for a plain ellipse) in the direction of each pixel."""
    cos_1, sin_1 = u / np.maximum(rho, 1e-6), v / np.maximum(rho, 1e-6)
    cos_k, sin_k = cos_1, sin_1
    outline = np.ones_like(rho)
    for k in range(4):
        cos_k, sin_k = cos_k * cos_1 - sin_k * sin_1, sin_k * cos_1 + cos_k * sin_1
        outline += ellipses.coef_re[obj, k] * cos_k - ellipses.coef_im[obj, k] * sin_k
    return outline


def clean_labels(labels: np.ndarray, expected_area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def median_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter (2 * sqrt(area / pi)) of the labelled objects; 0 for none."""
    area = np.bincount(labels.ravel())[1:]
    area = area[area > 0]
    return float(np.median(2 * np.sqrt(area / np.pi))) if len(area) else 0.0


def fit_diameter(
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
        measured = median_diameter(result[0])
        if requested is None or measured == 0 or abs(measured / requested - 1) < 0.03:
            break
        scale *= requested / measured
        result = build(np.random.default_rng(seed), nominal * scale)
    return result
