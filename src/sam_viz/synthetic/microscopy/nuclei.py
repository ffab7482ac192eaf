"""Nuclei in a widefield DNA stain (Hoechst/DAPI): placement in colonies and rendering."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

_F32 = np.float32


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
    weight = np.exp(clustering * random_field(rng, weight_shape, scale)).astype(np.float64)
    weight = 0.8 * weight / weight.mean() + 0.2
    count = 3 * target + 20
    points = candidates(rng, shape, count, weight)
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
    keep = hard_core(points, sizes, spacing, target)
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
    objects = shapes(rng, points, sizes, (6.0, 1.8), wobble=0.04, rough=0.04)
    objects.aspect[mitotic] = rng.uniform(0.25, 0.7, mitotic.sum())  # plates and rods
    objects.aspect[len(keep) :] = rng.uniform(0.7, 1.0, len(parents))
    roughness = random_field(rng, shape, max(1.0, 0.1 * diameter))
    labels, depth = rasterise(shape, objects, roughness)
    labels, source = clean_labels(labels, np.pi * objects.radius**2)
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
    shape = checked_shape(shape)
    checked_positive("diameter", diameter)
    checked_positive("density", density)
    rng = np.random.default_rng(seed)
    nominal = diameter if diameter is not None else float(loguniform(rng, 10, 40))
    if density is None:  # half the fields crowded, half sparse to moderate
        crowded = rng.random() < 0.5
        density = rng.uniform(0.25, 0.5) if crowded else float(loguniform(rng, 0.02, 0.25))
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

    _, nuclei = fit_diameter(build, int(geometry_seed), nominal, diameter)
    image = _render_nuclei(np.random.default_rng(int(render_seed)), nuclei, nominal)
    return Field(image, nuclei.labels, "nuclei", median_diameter(nuclei.labels))


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
    fine = random_field(rng, shape, rng.uniform(0.8, 1.5)).ravel()[where]
    coarse = nuclei.roughness.ravel()  # the outline roughness field, read elsewhere
    grain = rng.uniform(0.08, 0.2) * fine
    grain += rng.uniform(0.04, 0.12) * coarse[(where + 7 * shape[1] + 7) % coarse.size]
    grain[mitotic] *= 2.0
    nucleoli = np.clip((coarse[where] - 1.5) / 0.6, 0, 1) * rng.uniform(0.25, 0.55) * ~mitotic
    signal: np.ndarray = np.zeros(labels.size, _F32)
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
        image = blur(np.where(blurred, 0, signal), psf)
        image += blur(np.where(blurred, signal, 0), rng.uniform(0.06, 0.12) * diameter)
    else:
        image = blur(signal, psf)
    image += rng.uniform(0.01, 0.06) * blur(image, 2.5 * diameter)
    # Background (unbound dye, autofluorescence) and uneven illumination.
    background = rng.uniform(0.01, 0.12) * (1 + 0.25 * random_field(rng, shape, max(shape) / 4))
    image = (image + background) * illumination(rng, shape, rng.uniform(0.05, 0.35))
    # Camera: a few hundred counts at most above an offset.
    gain = float(loguniform(rng, 0.5, 2.0))  # counts per photoelectron
    peak = float(loguniform(rng, 40, 450))  # counts of a typical nucleus above offset
    offset = float(rng.choice([100, 100, 100, 200, 500]))
    return camera(
        rng,
        image * (peak / gain),
        gain=gain,
        offset=offset,
        read_noise=gain * rng.uniform(1.0, 2.5),
    )
