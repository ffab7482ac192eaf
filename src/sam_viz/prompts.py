"""The prompt set every front end builds, its validation, and which prompts a model answers.

Coordinates are in pixels of the original image: points ``(x, y)``, boxes ``XYXY``.
napari gives ``(row, col)``; :func:`napari_to_xy` is the one place that flips it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sam_viz.models.registry import ModelSpec

POSITIVE, NEGATIVE = 1, 0
# Names for the three ambiguity-aware candidates, smallest mask first. SAM's output tokens
# are not ordered by size, so names are given by area (see :func:`order_by_area`).
CANDIDATE_NAMES: tuple[str, str, str] = ("subpart", "part", "whole")
# A user's binary mask becomes mask-prompt logits of +/- this value.
MASK_PROMPT_LOGIT = 8.0
# What several boxes mean, said wherever the policy applies (napari, the CLI, the API).
SEVERAL_BOXES_NOTE = "{count} boxes: one object per box, the same in all three candidates."
OVERLAP_NOTE = (
    "{shared} px were claimed by several boxes ({objects} objects): each went to the smallest "
    "object claiming it{hidden}."
)
UNUSED_WITH_BOXES_NOTE = (
    "Points and mask prompts refine a single box; with several boxes they are unused."
)


def _points_array() -> np.ndarray:
    return np.zeros((0, 2))


def _labels_array() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _boxes_array() -> np.ndarray:
    return np.zeros((0, 4))


@dataclass(frozen=True, eq=False)
class PromptSet:
    """The prompts of one request, in original-image pixels; immutable.

    Every front end (napari, Jupyter, the command line, the teaching views) builds one of
    these and hands it to the predictor. :meth:`add_point` and :meth:`add_box` return a new
    set; :meth:`validated` checks it against an image.

    Attributes:
        points_xy: (N, 2) float64 points (x, y); N may be 0.
        point_labels: (N,) int64, 1 positive and 0 negative.
        boxes_xyxy: (M, 4) float64 boxes. One box is one object; several boxes are several
            objects, one mask each (points and masks are then unused, see
            :data:`SEVERAL_BOXES_NOTE`).
        mask: A dense prompt: an (H, W) bool mask of the image, or (L, L) float low-res
            logits (a previous prediction's), or None.
        notes: Things the user should know about how the prompts were read.
    """

    points_xy: np.ndarray = field(default_factory=_points_array)
    point_labels: np.ndarray = field(default_factory=_labels_array)
    boxes_xyxy: np.ndarray = field(default_factory=_boxes_array)
    mask: np.ndarray | None = None
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether there is nothing to predict from."""
        return not len(self.points_xy) and not len(self.boxes_xyxy) and self.mask is None

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

    @property
    def n_objects(self) -> int:
        """How many objects the prompts ask for: one per box, else one."""
        return max(1, len(self.boxes_xyxy))

    @property
    def points(self) -> tuple[tuple[float, float, int], ...]:
        """The points as ``((x, y, label), ...)``."""
        return tuple(
            (float(x), float(y), int(label))
            for (x, y), label in zip(self.points_xy, self.point_labels, strict=True)
        )

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        """The one box as ``(x0, y0, x1, y1)``, or None when there is none.

        Raises:
            ValueError: With several boxes (read :attr:`boxes_xyxy` instead).
        """
        if len(self.boxes_xyxy) > 1:
            raise ValueError(f"This prompt set has {len(self.boxes_xyxy)} boxes; use boxes_xyxy.")
        if not len(self.boxes_xyxy):
            return None
        x0, y0, x1, y1 = (float(v) for v in self.boxes_xyxy[0])
        return x0, y0, x1, y1

    def add_point(self, x: float, y: float, positive: bool = True) -> PromptSet:
        """This set with one more point (positive marks the object, negative background)."""
        label = POSITIVE if positive else NEGATIVE
        return replace(
            self,
            points_xy=np.concatenate([self.points_xy, [[float(x), float(y)]]]),
            point_labels=np.concatenate([self.point_labels, [label]]).astype(np.int64),
        )

    def add_box(
        self, x0: float, y0: float, x1: float, y1: float, *, replace_boxes: bool = False
    ) -> PromptSet:
        """This set with one more box; with ``replace_boxes`` the box replaces the others
        (one object at a time, as the Jupyter widget works)."""
        box = np.array([[float(x0), float(y0), float(x1), float(y1)]])
        boxes = box if replace_boxes else np.concatenate([self.boxes_xyxy, box])
        return replace(self, boxes_xyxy=boxes)

    def with_mask(self, mask: np.ndarray | None) -> PromptSet:
        """This set with ``mask`` as its dense prompt."""
        return replace(self, mask=mask)

    def with_notes(self, *notes: str) -> PromptSet:
        """This set with more notes for the user."""
        return replace(self, notes=(*self.notes, *notes))

    def validated(self, image_size_hw: tuple[int, int]) -> PromptSet:
        """This set checked against an image (see :func:`validate_prompts`)."""
        checked = validate_prompts(
            image_size_hw, self.points_xy, self.point_labels, self.boxes_xyxy, self.mask
        )
        return replace(checked, notes=self.notes)

    def bounds_xyxy(self) -> np.ndarray | None:
        """(x0, y0, x1, y1) around every point, box and mask pixel, or None when empty."""
        corners = [self.points_xy, self.boxes_xyxy[:, :2], self.boxes_xyxy[:, 2:]]
        if self.mask is not None and self.mask.dtype == bool and self.mask.any():
            rows = np.flatnonzero(self.mask.any(axis=1))
            cols = np.flatnonzero(self.mask.any(axis=0))
            corners.append(np.array([[cols[0], rows[0]], [cols[-1] + 1, rows[-1] + 1]], float))
        stacked = np.concatenate([c.reshape(-1, 2) for c in corners])
        if not len(stacked):
            return None
        return np.concatenate([stacked.min(axis=0), stacked.max(axis=0)])

    def signature(self) -> str:
        """A digest of the prompts: equal digests mean an equal prediction."""
        digest = hashlib.blake2b(digest_size=16)
        for array in (self.points_xy, self.point_labels, self.boxes_xyxy):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
            digest.update(b"|")
        if self.mask is not None:
            mask = np.asarray(self.mask)
            digest.update(str(mask.shape).encode())
            digest.update(np.packbits(mask).tobytes() if mask.dtype == bool else mask.tobytes())
        return digest.hexdigest()


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
    if array.size == 0:
        array = array.reshape(0, width)
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
) -> PromptSet:
    """Check a prompt set against an image and return it as a :class:`PromptSet`.

    Points must lie inside the image (0 <= x <= W, 0 <= y <= H). A box may be drawn past the
    image edge and is clipped to it, but must overlap the image and have a non-zero area;
    corners given in any order are sorted.

    Raises:
        ValueError: For an empty prompt set, mismatched points and labels, labels other than
            0/1, NaN coordinates, points outside the image, or a box outside it.
    """
    height, width = image_size_hw
    points, labels = _checked_points(points_xy, point_labels, width, height)
    boxes = _checked_boxes(boxes_xyxy, width, height)
    if len(points) == 0 and len(boxes) == 0 and mask is None:
        raise ValueError("The prompt set is empty: give at least one point, box or mask.")
    return PromptSet(points, labels, boxes, mask)


def _checked_points(
    points_xy: object, point_labels: object, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 2) float64 inside the image and their labels (N,) int64 (all positive
    when omitted)."""
    if (
        points_xy is None
        and point_labels is not None
        and len(np.atleast_1d(np.asarray(point_labels)))
    ):
        raise ValueError("point_labels were given without points_xy.")
    points = _points_array() if points_xy is None else _finite_array("points_xy", points_xy, 2)
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
    return points, labels


def _checked_boxes(boxes_xyxy: object, width: int, height: int) -> np.ndarray:
    """Boxes (M, 4) float64 with sorted corners, clipped to the image, each overlapping it
    with a non-zero area."""
    boxes = _boxes_array() if boxes_xyxy is None else _finite_array("boxes_xyxy", boxes_xyxy, 4)
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
    return boxes


class PromptProblem(ValueError):
    """The model cannot answer these prompts usefully (the message says what to do)."""


def check_answerable(spec: ModelSpec, prompts: PromptSet) -> None:
    """Raise :class:`PromptProblem` with :func:`prompt_problem`'s message, if there is one."""
    problem = prompt_problem(spec, prompts)
    if problem is not None:
        raise PromptProblem(problem)


def prompt_problem(spec: ModelSpec, prompts: PromptSet) -> str | None:
    """Why a model cannot answer ``prompts`` usefully, or None if it can.

    This is the one place that says which prompts a model answers: the command line,
    napari and Jupyter all refuse such prompts with this message. A model trained with
    boxes only (the embedded LiteMedSAM) answers points without a box with an empty or
    meaningless mask.
    """
    if spec.trained_with_points or prompts.empty:
        return None
    if len(prompts.boxes_xyxy) or prompts.mask is not None:
        return None
    clicks = _clicks_variant(spec)
    hint = f" To segment with clicks, choose {clicks.title}." if clicks else ""
    return f"{spec.title} was trained with boxes only: draw a box around the object.{hint}"


def _clicks_variant(spec: ModelSpec) -> ModelSpec | None:
    """A registered variant of the same encoder that was taught clicks, if there is one."""
    from sam_viz.models.registry import MODELS

    return next(
        (
            other
            for other in MODELS.values()
            if other.encoder_name == spec.encoder_name and other.trained_with_points
        ),
        None,
    )


def prompt_guide(spec: ModelSpec | None) -> str:
    """What to draw for this model, in a sentence every front end shows (plain text).

    For a box-only model it says what clicks after a box really do: a corrective click
    usually makes its mask worse (benchmarks/eval_box_clicks.py), so it points to redrawing
    the box, or to the click-trained variant.
    """
    if spec is None:
        return "Draw a box around an object, or click on it."
    if not spec.trained_with_points:
        clicks = _clicks_variant(spec)
        hint = f"; for clicks, choose {clicks.title}" if clicks else ""
        return (
            f"{spec.title} was trained with boxes only: draw a box around the object. A click "
            "alone is not answered, and a click after a box usually makes the mask worse: "
            f"redraw the box instead{hint}."
        )
    return f"{spec.title}: click on the object or draw a box around it."


def order_by_area(masks: np.ndarray) -> np.ndarray:
    """Indices that sort candidate masks (K, H, W) from smallest to largest area (stable)."""
    # One count per mask: count_nonzero along an axis is several times slower.
    areas = [np.count_nonzero(mask) for mask in np.asarray(masks)]
    return np.argsort(areas, kind="stable")
