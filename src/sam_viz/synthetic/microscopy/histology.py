"""H&E histology: tissue layout, three kinds of nuclei and the stains' colours."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sam_viz.synthetic.microscopy.fields import Field, checked_positive, checked_shape
from sam_viz.synthetic.microscopy.geometry import (
    candidates,
    clean_labels,
    fit_diameter,
    hard_core,
    median_diameter,
    rasterise,
    shapes,
)
from sam_viz.synthetic.microscopy.noise import loguniform, random_field
from sam_viz.synthetic.microscopy.optics import blur

_F32 = np.float32

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
    shape = checked_shape(shape)
    checked_positive("diameter", diameter)
    rng = np.random.default_rng(seed)
    nominal = diameter if diameter is not None else float(loguniform(rng, 10, 25))
    layout_seed, geometry_seed, render_seed = rng.integers(2**63, size=3)
    tissue = _tissue_layout(np.random.default_rng(int(layout_seed)), shape, nominal)

    def build(geo_rng, size):
        return _histology_geometry(geo_rng, tissue, size)

    labels, kinds, depth = fit_diameter(build, int(geometry_seed), nominal, diameter)
    image = _render_histology(np.random.default_rng(int(render_seed)), tissue, labels, kinds, depth)
    return Field(image, labels, "histology", median_diameter(labels))


@dataclass
class _Tissue:
    epithelium: np.ndarray  # (H, W) 0-1: nests of epithelial cells
    empty: np.ndarray  # (H, W) 0-1: lumens, fat, tears (no stain)
    fibres: np.ndarray  # (H, W) wavy collagen texture, std about 1
    direction: np.ndarray  # (H, W) local fibre angle, radians


def _tissue_layout(rng: np.random.Generator, shape: tuple[int, int], diameter: float):
    height, width = shape
    epithelium = random_field(rng, shape, rng.uniform(3, 8) * diameter)
    epithelium = np.clip((epithelium - rng.uniform(-0.8, 0.8)) / 0.3 + 0.5, 0, 1)
    empty = random_field(rng, shape, rng.uniform(1.5, 4) * diameter)
    empty = np.clip((empty - rng.uniform(1.2, 2.5)) / 0.15, 0, 1)
    # Fibres: streaks along one axis, sampled through a smooth warp and a rotation.
    streaks = ndimage.gaussian_filter(
        rng.standard_normal(shape, _F32), (1.0, rng.uniform(4, 9)), mode="wrap"
    )
    streaks /= streaks.std()
    angle = rng.uniform(0, np.pi)
    bend, wave = rng.uniform(1, 4) * diameter, rng.uniform(4, 12) * diameter
    warp_r = bend * random_field(rng, shape, wave)
    warp_c = bend * random_field(rng, shape, wave)
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
    coarse = (int(np.ceil(height / grid)), int(np.ceil(width / grid)))
    rows = np.minimum((np.arange(coarse[0]) * grid).astype(int), height - 1)
    cols = np.minimum((np.arange(coarse[1]) * grid).astype(int), width - 1)
    epi = tissue.epithelium[np.ix_(rows, cols)].astype(np.float64)
    solid = 1 - tissue.empty[np.ix_(rows, cols)].astype(np.float64)
    area = np.pi * radius**2
    kind_parts: list[np.ndarray] = []
    point_parts: list[np.ndarray] = []
    for kind, weight, per_area in (
        (_EPITHELIAL, epi * solid, 0.55),  # nests: nuclei cover about half of them
        (_STROMAL, (1 - epi) * solid, 0.04),
        (_LYMPHOCYTE, solid * np.exp(1.5 * random_field(rng, coarse, 6.0)), 0.05),
    ):
        count = int(per_area * weight.sum() * grid**2 / area) + 1
        if weight.sum() > 0:
            point_parts.append(candidates(rng, shape, 3 * count, weight + 1e-9))
            kind_parts.append(np.full(3 * count, kind))
    points, kinds = np.concatenate(point_parts), np.concatenate(kind_parts)
    order = rng.permutation(len(points))
    points, kinds = points[order], kinds[order]
    scale = np.choose(kinds, [1.0, 0.9, 0.6]) * np.exp(0.2 * rng.standard_normal(len(kinds)))
    sizes = radius * scale
    target = int(0.3 * (1 - tissue.empty).mean() * height * width / area) + 1
    keep = hard_core(points, sizes, rng.uniform(0.75, 0.9), target)
    points, sizes, kinds = points[keep], sizes[keep], kinds[keep]
    objects = shapes(rng, points, sizes, (4.0, 2.0), 0.07, 0.06)
    stromal = kinds == _STROMAL
    objects.aspect[stromal] = rng.uniform(0.15, 0.4, stromal.sum())
    at = np.clip(points[stromal].astype(int), 0, [height - 1, width - 1])
    objects.angle[stromal] = tissue.direction[at[:, 0], at[:, 1]] + rng.normal(0, 0.2, len(at))
    round_ = kinds == _LYMPHOCYTE
    objects.aspect[round_] = rng.uniform(0.8, 1.0, round_.sum())
    objects.harmonics[round_] *= 0.3
    labels, depth = rasterise(shape, objects, random_field(rng, shape, max(1.0, 0.1 * diameter)))
    labels, source = clean_labels(labels, np.pi * objects.radius**2)
    return labels, np.r_[-1, kinds[source[1:]]], depth


def _render_histology(rng, tissue: _Tissue, labels, kinds, depth) -> np.ndarray:
    shape = labels.shape
    n = int(labels.max())
    inside = labels > 0
    solid = 1 - tissue.empty
    # Eosin: fibrous stroma with loose gaps, paler epithelial cytoplasm.
    fibres = tissue.fibres
    stroma = (0.55 + 0.15 * fibres) * np.clip(2.0 + fibres, 0, 1)  # gaps where fibres < -2
    cytoplasm = 0.4 + 0.08 * random_field(rng, shape, 2.0)
    epi = tissue.epithelium
    eosin = (stroma * (1 - epi) + cytoplasm * epi) * solid * rng.uniform(0.7, 1.3)
    hema = (0.04 + 0.08 * epi) * solid * (1 + 0.3 * random_field(rng, shape, 1.5))
    # Nuclei: lymphocytes small and dark, stromal dark and thin, epithelial paler, some
    # vesicular (a dark rim and a nucleolus around a pale middle).
    level = np.choose(np.maximum(kinds, 0), [1.15, 1.4, 1.8]) * rng.uniform(0.8, 1.2)
    level = level * np.exp(0.2 * rng.standard_normal(n + 1))
    vesicular = (kinds == _EPITHELIAL) & (rng.random(n + 1) < rng.uniform(0.2, 0.7))
    is_vesicular = vesicular[labels]
    rim = np.where(is_vesicular, 0.45 + 0.8 * depth**4, 1.0)
    nucleolus = np.clip(random_field(rng, shape, 1.2) - 2.0, 0, None) * is_vesicular
    chromatin = np.clip(1 + rng.uniform(0.2, 0.35) * random_field(rng, shape, 0.9), 0.3, None)
    stain = level[labels] * rim * chromatin * (1 - 0.6 * depth**6) + 1.5 * nucleolus
    hema = np.where(inside, stain, hema)
    eosin = np.where(inside, 0.5 * eosin + 0.1, eosin)
    # Scanner: slight blur, Beer-Lambert colour, sensor noise, 8 bits.
    scanner_blur = rng.uniform(0.5, 1.0)
    hema = blur(hema.astype(_F32), scanner_blur)
    eosin = blur(eosin.astype(_F32), scanner_blur)
    h_vec = _HEMATOXYLIN * rng.uniform(0.85, 1.15, 3).astype(_F32)
    e_vec = _EOSIN * rng.uniform(0.85, 1.15, 3).astype(_F32)
    density = hema[..., None] * h_vec + eosin[..., None] * e_vec
    white = rng.uniform(235, 250) * rng.uniform(0.97, 1.0, 3)
    rgb = white * np.exp(-density) + rng.normal(0, 2.0, (*shape, 3)).astype(_F32)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
