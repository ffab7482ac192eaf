"""Prompt validation and candidate naming, as plain NumPy shared by every front end.

Coordinates are in pixels of the original image: points ``(x, y)``, boxes ``XYXY``.
napari gives ``(row, col)``; :func:`napari_to_xy` is the one place that flips it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITIVE, NEGATIVE = 1, 0
# Names for the three ambiguity-aware candidates, smallest mask first. SAM's output tokens
# are not ordered by size, so names are given by area (see :func:`order_by_area`).
CANDIDATE_NAMES: tuple[str, str, str] = ("subpart", "part", "whole")
# A user's binary mask becomes mask-prompt logits of +/- this value.
MASK_PROMPT_LOGIT = 8.0


@dataclass(frozen=True)
class Prompts:
    """A validated prompt set in original-image pixels.

    Attributes:
        points_xy: (N, 2) float64 (x, y) points, N may be 0.
        point_labels: (N,) int64, 1 positive and 0 negative.
        boxes_xyxy: (M, 4) float64 boxes, M may be 0.
        mask: A (L, L) low-res logits mask prompt, or None.
    """

    points_xy: np.ndarray
    point_labels: np.ndarray
    boxes_xyxy: np.ndarray
    mask: np.ndarray | None = None

    @property
    def kinds(self) -> frozenset[str]:
        """The prompt kinds present: a subset of {"point", "box", "mask"}."""
        present = set()
        if len(self.points_xy):
            present.add("point")
        if len(self.boxes_xyxy):
            present.add("box")
        if self.mask is not None:
            present.add("mask")
        return frozenset(present)


def napari_to_xy(coords_rc: np.ndarray) -> np.ndarray:
    """Flip napari's (..., row, col) data coordinates to SAM's (x, y) = (col + 0.5, row + 0.5).

    napari puts pixel centres at whole numbers (pixel i spans [i - 0.5, i + 0.5]); SAM's pixel
    i spans [i, i + 1], hence the half-pixel shift. Only the last two axes are used, so points
    from an n-D layer can be passed whole.
    """
    coords = np.asarray(coords_rc, dtype=np.float64)
    return coords[..., [-1, -2]] + 0.5


def _finite_array(name: str, value: object, width: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be numbers, got {type(value).__name__}.") from None
    if array.ndim == 1 and array.shape[0] == width:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} must have shape (N, {width}), got {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf; give finite pixel coordinates.")
    return array


def validate_prompts(
    image_size_hw: tuple[int, int],
    points_xy: object = None,
    point_labels: object = None,
    boxes_xyxy: object = None,
    mask: np.ndarray | None = None,
) -> Prompts:
    """Check a prompt set against an image and return it as arrays.

    Points must lie inside the image (0 <= x <= W, 0 <= y <= H). A box may be drawn past the
    image edge and is clipped to it, but must overlap the image and have a non-zero area;
    corners given in any order are sorted.

    Raises:
        ValueError: For an empty prompt set, mismatched points and labels, labels other than
            0/1, NaN coordinates, points outside the image, or a box outside it.
    """
    height, width = image_size_hw
    if points_xy is None and point_labels is not None:
        raise ValueError("point_labels were given without points_xy.")
    points = np.zeros((0, 2)) if points_xy is None else _finite_array("points_xy", points_xy, 2)
    if point_labels is None:
        labels = np.full(len(points), POSITIVE, dtype=np.int64)
    else:
        labels = np.asarray(point_labels).reshape(-1)
        if len(labels) != len(points):
            raise ValueError(
                f"Got {len(points)} points but {len(labels)} point_labels; give one label per "
                "point (1 positive, 0 negative)."
            )
        if not np.isin(labels, (POSITIVE, NEGATIVE)).all():
            raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {labels}.")
        labels = labels.astype(np.int64)
    outside = (
        (points[:, 0] < 0) | (points[:, 0] > width) | (points[:, 1] < 0) | (points[:, 1] > height)
    )
    if outside.any():
        index = int(np.flatnonzero(outside)[0])
        x, y = points[index]
        raise ValueError(
            f"Point {index} at (x={x:g}, y={y:g}) lies outside the image "
            f"(x in [0, {width}], y in [0, {height}]). Remove it or click inside the image."
        )

    boxes = np.zeros((0, 4)) if boxes_xyxy is None else _finite_array("boxes_xyxy", boxes_xyxy, 4)
    boxes = np.concatenate(
        [np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1
    )
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise ValueError(
                f"Box {index} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the image of "
                f"width {width} and height {height}. Draw it over the object."
            )
    boxes = np.clip(boxes, 0, [width, height, width, height])
    flat = (boxes[:, 2] - boxes[:, 0] <= 0) | (boxes[:, 3] - boxes[:, 1] <= 0)
    if flat.any():
        raise ValueError(f"Box {int(np.flatnonzero(flat)[0])} has no area; drag a rectangle.")

    if len(points) == 0 and len(boxes) == 0 and mask is None:
        raise ValueError("The prompt set is empty: give at least one point, box or mask.")
    return Prompts(points, labels, boxes, mask)


def order_by_area(masks: np.ndarray) -> np.ndarray:
    """Indices that sort candidate masks (K, H, W) from smallest to largest area (stable)."""
    # One count per mask: count_nonzero along an axis is several times slower.
    areas = [np.count_nonzero(mask) for mask in np.asarray(masks)]
    return np.argsort(areas, kind="stable")
