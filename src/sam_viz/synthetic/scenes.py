"""Procedurally generated microscopy-like scenes with exact, nested masks.

Nothing can be downloaded here, so click training needs scenes whose masks are known
exactly. Three kinds, drawn at random:

* ``"cells"``: cells (wobbly ellipses, often touching, with a membrane) holding a nucleus,
  which holds up to two nucleoli. A click in a nucleolus has three right answers
  (nucleolus, nucleus, cell): the ambiguity SAM's three outputs exist for.
* ``"parts"``: objects cut by a line into two parts of different brightness; the parts and
  the whole are masks.
* ``"blobs"``: isolated objects of many sizes, small ones included, on a textured background.

Every scene then gets a point-spread blur, uneven illumination, noise, a random polarity
(fluorescence or bright field), a colour (grey or a stain-like pair of colours) and a dtype
(8-bit, 16-bit with a partial range, or float), so the model sees what microscopes produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.draw import polygon
from skimage.segmentation import find_boundaries

SceneKind = Literal["cells", "parts", "blobs"]
SCENE_KINDS: tuple[SceneKind, ...] = ("cells", "parts", "blobs")
_KIND_WEIGHTS = (0.5, 0.25, 0.25)
_MIN_AREA = 40  # pixels; smaller masks are dropped (a few pixels at the model's 256)


@dataclass(frozen=True)
class Scene:
    """An image and every object mask in it.

    Attributes:
        image: (H, W) or (H, W, 3) image: uint8, uint16 or float32.
        masks: (M, H, W) boolean masks; nested masks are separate entries.
        parents: (M,) index of the mask enclosing each mask, or -1.
        kinds: The kind of each mask (``"cell"``, ``"nucleus"``, ``"nucleolus"``,
            ``"part"``, ``"whole"``, ``"blob"``).
    """

    image: np.ndarray
    masks: np.ndarray
    parents: np.ndarray
    kinds: tuple[str, ...]

    def chain(self, index: int) -> list[int]:
        """The mask and its enclosing masks, innermost first."""
        chain = [index]
        while self.parents[chain[-1]] >= 0:
            chain.append(int(self.parents[chain[-1]]))
        return chain


class _Builder:
    """Collects masks with their parents and paints intensities on a float canvas."""

    def __init__(self, shape: tuple[int, int], background: float) -> None:
        self.canvas = np.full(shape, background, np.float32)
        self.masks: list[np.ndarray] = []
        self.parents: list[int] = []
        self.kinds: list[str] = []

    def add(self, mask: np.ndarray, kind: str, parent: int = -1) -> int:
        """Register a mask; returns its index, or -1 when it is too small to keep."""
        if mask.sum() < _MIN_AREA:
            return -1
        self.masks.append(mask)
        self.parents.append(parent)
        self.kinds.append(kind)
        return len(self.masks) - 1

    def scene(self, image: np.ndarray) -> Scene:
        shape = self.canvas.shape
        masks = np.stack(self.masks) if self.masks else np.zeros((0, *shape), bool)
        return Scene(image, masks, np.asarray(self.parents, np.int64), tuple(self.kinds))


def star_mask(
    shape: tuple[int, int],
    centre_rc: tuple[float, float],
    radius: float,
    rng: np.random.Generator,
    *,
    aspect: float = 1.0,
    wobble: float = 0.1,
    vertices: int = 48,
) -> np.ndarray:
    """A filled blob: an ellipse whose radius wobbles smoothly with the angle.

    Args:
        shape: (H, W) of the mask.
        centre_rc: Centre as (row, column).
        radius: Mean radius along the long axis, in pixels.
        rng: Random generator (orientation and wobble).
        aspect: Short axis over long axis.
        wobble: Relative amplitude of the low-frequency radius modulation.
        vertices: Vertices of the outline polygon.

    Returns:
        (H, W) boolean mask.
    """
    theta = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 4, 5):
        r += wobble / k * rng.normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.5, 1.6) * radius
    angle = rng.uniform(0, np.pi)
    x, y = r * np.cos(theta), aspect * r * np.sin(theta)
    rows = centre_rc[0] + x * np.sin(angle) + y * np.cos(angle)
    cols = centre_rc[1] + x * np.cos(angle) - y * np.sin(angle)
    mask = np.zeros(shape, bool)
    rr, cc = polygon(rows, cols, shape)
    mask[rr, cc] = True
    return mask


def _texture(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth multiplicative texture around 1 (standard deviation about 1)."""
    noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), scale)
    return noise / (noise.std() + 1e-6)


def _inside(mask: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    """A random pixel well inside a mask, as (row, col)."""
    depth = ndimage.distance_transform_edt(mask)
    candidates = np.argwhere(depth >= max(2.0, 0.4 * depth.max()))
    if not len(candidates):
        return None
    row, col = candidates[rng.integers(len(candidates))]
    return float(row), float(col)


def _cells(rng: np.random.Generator, shape: tuple[int, int]) -> _Builder:
    height, width = shape
    builder = _Builder(shape, rng.uniform(0.0, 0.2))
    radius = rng.uniform(0.08, 0.16) * min(shape)
    count = int(rng.integers(3, 13))
    labels = np.zeros(shape, np.int32)
    for index in range(1, count + 1):
        centre = (rng.uniform(0, height), rng.uniform(0, width))
        cell = star_mask(
            shape, centre, radius * rng.uniform(0.7, 1.3), rng,
            aspect=rng.uniform(0.55, 1.0), wobble=rng.uniform(0.05, 0.3),
        )  # fmt: skip
        labels[cell] = index  # later cells lie on top: touching and overlapping cells
    membrane = find_boundaries(labels, mode="inner") & (labels > 0)
    texture = _texture(rng, shape, rng.uniform(1.0, 3.0))
    body, nucleus_level = rng.uniform(0.3, 0.55), rng.uniform(0.6, 0.9)
    for index in range(1, count + 1):
        cell = labels == index
        cell_id = builder.add(cell, "cell")
        if cell_id < 0:
            continue
        builder.canvas[cell] = body * rng.uniform(0.8, 1.2)
        middle = _inside(cell, rng)
        if middle is None or rng.random() < 0.15:
            continue
        depth = ndimage.distance_transform_edt(cell)[int(middle[0]), int(middle[1])]
        nucleus = cell & star_mask(
            shape, middle, min(depth * 0.8, radius * rng.uniform(0.35, 0.6)), rng,
            aspect=rng.uniform(0.6, 1.0), wobble=0.1,
        )  # fmt: skip
        nucleus_id = builder.add(nucleus, "nucleus", cell_id)
        if nucleus_id < 0:
            continue
        builder.canvas[nucleus] = nucleus_level * rng.uniform(0.85, 1.15)
        nucleolus_level = nucleus_level + rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.35)
        for _ in range(int(rng.integers(0, 3))):
            spot = _inside(nucleus, rng)
            if spot is None:
                break
            depth = ndimage.distance_transform_edt(nucleus)[int(spot[0]), int(spot[1])]
            nucleolus = nucleus & star_mask(shape, spot, min(depth * 0.7, 0.3 * radius), rng)
            if builder.add(nucleolus, "nucleolus", nucleus_id) >= 0:
                builder.canvas[nucleolus] = nucleolus_level
    builder.canvas[membrane] += rng.uniform(-0.15, 0.2)
    builder.canvas *= 1.0 + rng.uniform(0.0, 0.25) * texture
    return builder


def _parts(rng: np.random.Generator, shape: tuple[int, int]) -> _Builder:
    height, width = shape
    builder = _Builder(shape, rng.uniform(0.0, 0.25))
    free = np.ones(shape, bool)
    rows, cols = np.mgrid[:height, :width]
    for _ in range(int(rng.integers(2, 7))):
        radius = rng.uniform(0.08, 0.22) * min(shape)
        centre = (rng.uniform(radius, height - radius), rng.uniform(radius, width - radius))
        whole = star_mask(shape, centre, radius, rng, aspect=rng.uniform(0.4, 1.0)) & free
        # A line through the object's middle splits it into two parts.
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.3, 0.3) * radius
        side = (rows - centre[0]) * np.cos(angle) + (cols - centre[1]) * np.sin(angle) > offset
        first, second = whole & side, whole & ~side
        if min(first.sum(), second.sum()) < 4 * _MIN_AREA:
            continue
        whole_id = builder.add(whole, "whole")
        if whole_id < 0:
            continue
        level = rng.uniform(0.45, 0.95)
        step = rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.3)
        builder.canvas[first] = level
        builder.canvas[second] = np.clip(level + step, 0.3, 1.0)
        builder.add(first, "part", whole_id)
        builder.add(second, "part", whole_id)
        free &= ~ndimage.binary_dilation(whole, iterations=2)
    builder.canvas *= 1.0 + rng.uniform(0.0, 0.2) * _texture(rng, shape, 2.0)
    return builder


def _blobs(rng: np.random.Generator, shape: tuple[int, int]) -> _Builder:
    height, width = shape
    background = rng.uniform(0.05, 0.3)
    builder = _Builder(shape, background)
    builder.canvas *= 1.0 + rng.uniform(0.1, 0.4) * _texture(rng, shape, rng.uniform(1.0, 4.0))
    free = np.ones(shape, bool)
    for _ in range(int(rng.integers(3, 16))):
        radius = np.exp(rng.uniform(np.log(3.0), np.log(0.18 * min(shape))))
        centre = (rng.uniform(0, height), rng.uniform(0, width))
        blob = star_mask(
            shape, centre, radius, rng, aspect=rng.uniform(0.4, 1.0), wobble=rng.uniform(0, 0.4)
        )
        if (blob & ~free).any():
            continue
        if builder.add(blob, "blob") < 0:
            continue
        level = background + rng.choice([-1.0, 1.0], p=[0.2, 0.8]) * rng.uniform(0.25, 0.7)
        builder.canvas[blob] = level * (1.0 + 0.15 * _texture(rng, shape, 1.5)[blob])
        free &= ~ndimage.binary_dilation(blob, iterations=3)
    return builder


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Blur, illumination, noise, polarity, colour and dtype: the microscope's part."""
    height, width = canvas.shape
    image = ndimage.gaussian_filter(canvas, rng.uniform(0.4, 1.5))
    rows, cols = np.mgrid[:height, :width] / max(height, width)
    gradient = rng.normal(0, 0.3) * (rows - 0.5) + rng.normal(0, 0.3) * (cols - 0.5)
    image = image * (1.0 + gradient + 0.15 * _texture(rng, canvas.shape, 0.2 * height))
    image += rng.uniform(0.005, 0.06) * rng.normal(size=image.shape)
    image = np.clip(image, 0.0, 1.0)
    if rng.random() < 0.3:  # bright field: dark objects on a bright background
        image = 1.0 - image
    if rng.random() < 0.35:  # stain-like colours
        low, high = rng.uniform(0.5, 1.0, 3), rng.uniform(0.0, 0.6, 3)
        image = low * (1.0 - image[..., None]) + high * image[..., None]
    kind = rng.choice(["uint8", "uint16", "float32"], p=[0.55, 0.35, 0.1])
    if kind == "uint8":
        return np.round(image * rng.uniform(120, 255)).astype(np.uint8)
    if kind == "uint16":
        offset, span = rng.uniform(0, 2000), rng.uniform(300, 60000)
        return np.round(offset + image * span).clip(0, 65535).astype(np.uint16)
    return image.astype(np.float32)


def random_scene(
    rng: np.random.Generator,
    kind: SceneKind | None = None,
    shape: tuple[int, int] | None = None,
) -> Scene:
    """Generate one scene.

    Args:
        rng: Random generator; the same state gives the same scene.
        kind: ``"cells"``, ``"parts"`` or ``"blobs"``; random when None.
        shape: (H, W); random between 192 and 384 pixels a side when None.

    Returns:
        The :class:`Scene`.
    """
    if kind is None:
        kind = SCENE_KINDS[rng.choice(len(SCENE_KINDS), p=_KIND_WEIGHTS)]
    if shape is None:
        shape = (int(rng.integers(192, 385)), int(rng.integers(192, 385)))
    build = {"cells": _cells, "parts": _parts, "blobs": _blobs}[kind]
    builder = build(rng, shape)
    return builder.scene(_finish(rng, builder.canvas))


def scenes(seed: int, count: int) -> list[Scene]:
    """``count`` scenes from one seed (the same seed gives the same scenes)."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng) for _ in range(count)]
