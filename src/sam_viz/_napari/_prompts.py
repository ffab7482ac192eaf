"""Points and Shapes layer data to one SAM prompt set (plain NumPy, no Qt).

Coordinates arrive as napari data coordinates of the *image* layer, ``(..., row, col)``
(see :func:`to_image_coords`); only prompts on the plane being segmented are used. The flip
to SAM's ``(x, y)`` happens in :func:`sam_viz.prompts.napari_to_xy` and nowhere else.

Shapes mean: rectangle = a box; polygon or ellipse = a mask prompt (all of them are
rasterised into one binary mask); lines and paths enclose nothing and are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from skimage.draw import polygon2mask

from sam_viz._napari._slicing import Plane
from sam_viz.prompts import NEGATIVE, POSITIVE, PromptSet, napari_to_xy, validate_prompts

# The Points layer's ``label`` feature values and what they mean to SAM.
POINT_LABEL_VALUES: dict[str, int] = {"positive": POSITIVE, "negative": NEGATIVE}
BOX_SHAPES = frozenset({"rectangle"})
MASK_SHAPES = frozenset({"polygon", "ellipse"})
# Vertices used to draw an ellipse as a polygon.
_ELLIPSE_VERTICES = 96


class LayerTransforms(Protocol):
    """What :func:`to_image_coords` needs of a napari layer."""

    def data_to_world(self, position: Sequence[float]) -> Sequence[float]: ...

    def world_to_data(self, position: Sequence[float]) -> np.ndarray: ...


def to_image_coords(
    coords: np.ndarray, source: LayerTransforms, image: LayerTransforms
) -> np.ndarray:
    """Data coordinates of a prompt layer to data coordinates of the image layer.

    Each position goes through world coordinates, so differing scale, translate or
    affine transforms of the two layers are honoured.

    Args:
        coords: (N, D) positions in ``source``'s data coordinates.
        source: The Points or Shapes layer.
        image: The image layer.

    Returns:
        (N, image.ndim) positions in the image's data coordinates ``(..., row, col)``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    rows = [np.asarray(image.world_to_data(source.data_to_world(row)), float) for row in coords]
    return np.array(rows) if rows else np.zeros((0, coords.shape[-1] if coords.ndim == 2 else 2))


def on_plane(coords_image: np.ndarray, plane: Plane) -> np.ndarray:
    """Which positions (N, D) lie on ``plane`` (their leading coordinates round to it)."""
    coords = np.asarray(coords_image, dtype=np.float64)
    if not len(plane) or not len(coords):
        return np.ones(len(coords), dtype=bool)
    leading = coords[:, : len(plane)]
    return np.all(np.abs(leading - np.asarray(plane, dtype=np.float64)) < 0.5, axis=1)


def point_labels_from_feature(values: Sequence[object]) -> np.ndarray:
    """The Points layer's ``label`` feature (``"positive"``/``"negative"``) as 1/0.

    Raises:
        ValueError: For a value other than the two names.
    """
    labels = []
    for value in values:
        if value not in POINT_LABEL_VALUES:
            known = ", ".join(repr(v) for v in POINT_LABEL_VALUES)
            raise ValueError(f"Point label {value!r} is not one of {known}.")
        labels.append(POINT_LABEL_VALUES[value])  # type: ignore[index]
    return np.asarray(labels, dtype=np.int64)


def ellipse_outline(vertices_rc: np.ndarray, n: int = _ELLIPSE_VERTICES) -> np.ndarray:
    """napari stores an ellipse as the 4 corners of its bounding box (possibly rotated);
    returns ``n`` points of the ellipse itself, as (row, col)."""
    corners = np.asarray(vertices_rc, dtype=np.float64)
    centre = corners.mean(axis=0)
    half_a = (corners[1] - corners[0]) / 2
    half_b = (corners[3] - corners[0]) / 2
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return centre + np.cos(angles) * half_a + np.sin(angles) * half_b


def rasterise(vertices_rc: np.ndarray, shape_type: str, image_hw: tuple[int, int]) -> np.ndarray:
    """A polygon or ellipse in (row, col) pixel coordinates to an (H, W) bool mask.

    A pixel belongs to the shape when its centre (napari's integer coordinate) is inside.
    """
    outline = ellipse_outline(vertices_rc) if shape_type == "ellipse" else vertices_rc
    return polygon2mask(image_hw, np.asarray(outline, dtype=np.float64))


def box_from_vertices(vertices_rc: np.ndarray) -> np.ndarray:
    """The (x0, y0, x1, y1) box around a rectangle's (row, col) vertices."""
    vertices = np.asarray(vertices_rc, dtype=np.float64)
    corners_rc = np.stack([vertices.min(axis=0), vertices.max(axis=0)])
    return napari_to_xy(corners_rc).reshape(4)


def collect_prompts(
    image_hw: tuple[int, int],
    plane: Plane = (),
    points: tuple[np.ndarray, Sequence[object]] | None = None,
    shapes: Sequence[tuple[np.ndarray, str]] = (),
) -> PromptSet:
    """Gather the prompts of ``plane`` into one validated :class:`PromptSet`.

    Args:
        image_hw: (height, width) of the image plane.
        plane: Leading indices of the plane (``()`` for a 2-D image).
        points: (N, D) point positions in image data coordinates and their N ``label``
            feature values (``"positive"``/``"negative"``), or None.
        shapes: (vertices (K, D) in image data coordinates, napari shape type) per shape.

    Raises:
        ValueError: With a message for the user: a point outside the image, a box outside
            it or without area, an unknown point label.
    """
    notes: list[str] = []
    points_xy = np.zeros((0, 2))
    labels = np.zeros(0, dtype=np.int64)
    if points is not None and len(points[0]):
        coords = np.asarray(points[0], dtype=np.float64)
        keep = on_plane(coords, plane)
        points_xy = napari_to_xy(coords[keep][:, -2:])
        labels = point_labels_from_feature([v for v, k in zip(points[1], keep, strict=True) if k])

    boxes: list[np.ndarray] = []
    mask: np.ndarray | None = None
    ignored = 0
    for vertices, shape_type in shapes:
        vertices = np.asarray(vertices, dtype=np.float64)
        if not len(vertices) or not on_plane(vertices, plane).all():
            continue
        vertices_rc = vertices[:, -2:]
        if shape_type in BOX_SHAPES:
            box = box_from_vertices(vertices_rc)
            if box[2] > box[0] and box[3] > box[1]:  # a flat box is one still being drawn
                boxes.append(box)
        elif shape_type in MASK_SHAPES:
            drawn = rasterise(vertices_rc, shape_type, image_hw)
            mask = drawn if mask is None else mask | drawn
        else:
            ignored += 1
    if ignored:
        notes.append(
            f"{ignored} line/path shape(s) ignored: draw rectangles (boxes) or polygons and "
            "ellipses (mask prompts)."
        )
    if mask is not None and not mask.any():
        mask = None
        notes.append("The drawn polygon/ellipse covers no pixel of the image; it was ignored.")

    boxes_xyxy = np.array(boxes) if boxes else np.zeros((0, 4))
    if len(points_xy) or len(boxes_xyxy):
        checked = validate_prompts(image_hw, points_xy, labels, boxes_xyxy)
        points_xy, labels, boxes_xyxy = checked.points_xy, checked.point_labels, checked.boxes_xyxy
    return PromptSet(points_xy, labels, boxes_xyxy, mask, tuple(notes))
