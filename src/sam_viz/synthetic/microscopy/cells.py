"""Whole cells in fluorescence, phase contrast and bright field: sheets, layers and rendering."""

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
from sam_viz.synthetic.microscopy.optics import blur, camera, illumination

_CELL_MODALITIES = ("fluorescence", "phase", "brightfield")
_F32 = np.float32


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
    shape = checked_shape(shape)
    checked_positive("diameter", diameter)
    if modality not in _CELL_MODALITIES:
        raise ValueError(f"modality must be one of {_CELL_MODALITIES}, got {modality!r}")
    rng = np.random.default_rng(seed)
    nominal = diameter if diameter is not None else float(loguniform(rng, 25, 80))
    confluence = rng.uniform(0.15, 0.9)
    morphology = str(rng.choice(list(_MORPHOLOGIES), p=[0.5, 0.3, 0.2]))
    geometry_seed, render_seed = rng.integers(2**63, size=2)

    def build(geo_rng, size):
        return _cell_geometry(geo_rng, shape, size, confluence, morphology)

    _, cells = fit_diameter(build, int(geometry_seed), nominal, diameter)
    render = {
        "fluorescence": _render_fluorescent_cells,
        "phase": _render_phase,
        "brightfield": _render_brightfield,
    }[modality]
    image = render(np.random.default_rng(int(render_seed)), cells, nominal)
    return Field(image, cells.labels, f"cells_{modality}", median_diameter(cells.labels))


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
    colony = random_field(rng, weight_shape, rng.uniform(2, 5) * diameter / grid)
    threshold = np.quantile(colony, 1 - confluence)
    weight = (colony > threshold) + 0.03
    target = int(confluence * height * width / (np.pi * radius**2) * 1.1) + 3
    count = 4 * target
    points = candidates(rng, shape, count, weight.astype(np.float64))
    sizes = 1.25 * radius * np.exp(0.2 * rng.standard_normal(count))
    rounded = rng.random(count) < 0.05
    sizes[rounded] *= 0.5
    keep = hard_core(points, sizes, spacing, target)
    objects = shapes(rng, points[keep], sizes[keep], aspect, wobble, rough)
    if aligned:  # orientation follows a smooth field, so neighbours run side by side
        flow = rng.uniform(0, np.pi) + 1.2 * random_field(rng, shape, rng.uniform(3, 8) * diameter)
        at = np.clip(objects.centres.astype(int), 0, [height - 1, width - 1])
        objects.angle = flow[at[:, 0], at[:, 1]] + rng.normal(0, 0.15, len(at))
    rounded = rounded[keep]
    objects.aspect[rounded] = rng.uniform(0.85, 1.0, rounded.sum())
    objects.harmonics[rounded] *= 0.2
    objects.rough[rounded] *= 0.2
    labels, depth = rasterise(shape, objects, random_field(rng, shape, 0.15 * diameter))
    labels, source = clean_labels(labels, np.pi * objects.radius**2)
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
    wobble = 0.06 * random_field(rng, labels.shape, 0.1 * diameter)
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
    grain = 1 + rng.uniform(0.12, 0.3) * random_field(rng, shape, rng.uniform(0.8, 1.6))
    grain += rng.uniform(0.1, 0.25) * random_field(rng, shape, 0.05 * diameter)
    # Cytoplasm stains leave the nucleus darker; whole-cell stains make it brighter.
    nucleus_level = rng.choice([rng.uniform(0.35, 0.7), rng.uniform(1.1, 1.4)])
    signal = bright[labels] * thickness * np.clip(grain, 0.2, None)
    signal *= 1 + (nucleus_level - 1) * nucleus
    image = blur(signal.astype(_F32), rng.uniform(0.8, 1.6))
    image += rng.uniform(0.02, 0.08) * blur(image, 2 * diameter)
    background = rng.uniform(0.02, 0.1) * (1 + 0.3 * random_field(rng, shape, max(shape) / 4))
    image = (image + background) * illumination(rng, shape, rng.uniform(0.05, 0.3))
    gain = float(loguniform(rng, 0.5, 2.0))
    peak = float(loguniform(rng, 80, 900))
    return camera(
        rng, image * (peak / gain), gain=gain, offset=100.0, read_noise=gain * rng.uniform(1, 2.5)
    )


def _optical_path(rng, cells: _Cells, diameter: float):
    """Optical path difference: thickness, a denser nucleus with nucleoli, granules."""
    thickness, nucleus = _cell_layers(rng, cells, diameter)
    granules = np.clip(random_field(rng, cells.labels.shape, 1.2) - 1.0, 0, None)
    nucleoli = np.clip(random_field(rng, cells.labels.shape, 0.04 * diameter) - 1.5, 0, None)
    path = thickness * (1 + nucleus * (0.15 + 0.5 * nucleoli) + 0.3 * granules * (1 - nucleus))
    return path.astype(_F32)


def _render_phase(rng, cells: _Cells, diameter: float):
    shape = cells.labels.shape
    path = _optical_path(rng, cells, diameter)
    # Phase contrast shows the path minus its local mean: dark cells, bright halos outside.
    contrast = path - blur(path, rng.uniform(0.12, 0.3) * diameter)
    contrast[cells.rounded[cells.labels]] *= -1.5  # thick round cells: bright, dark rim
    image = 1 - rng.uniform(0.25, 0.5) * blur(contrast, rng.uniform(0.7, 1.2))
    image *= illumination(rng, shape, rng.uniform(0.03, 0.15))
    level = float(loguniform(rng, 1500, 8000))
    return camera(rng, image * level, gain=1.0, offset=100.0, read_noise=2.0)


def _render_brightfield(rng, cells: _Cells, diameter: float):
    shape = cells.labels.shape
    path = _optical_path(rng, cells, diameter)
    # Slight absorption plus a defocus term (a band-passed path): thin dark or bright rims.
    fine = blur(path, 0.015 * diameter + 0.8)
    rim = fine - blur(path, 0.05 * diameter + 2.0)
    defocus = rng.choice([-1.0, 1.0], p=[0.7, 0.3]) * rng.uniform(0.05, 0.2)
    image = 1 - rng.uniform(0.02, 0.06) * fine - defocus * rim
    image *= illumination(rng, shape, rng.uniform(0.05, 0.2))
    if rng.random() < 0.5:  # an 8-bit camera
        level = rng.uniform(150, 220)
        noisy = rng.poisson(np.maximum(image * level * 20, 0)) / 20.0 + rng.normal(0, 0.8, shape)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    level = float(loguniform(rng, 2000, 20000))
    return camera(rng, image * level, gain=1.0, offset=100.0, read_noise=3.0)
