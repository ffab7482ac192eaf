"""3-D and time stacks: consistent contrast, per-slice embeddings, propagation of an object.

A stack is an array ``(Z, H, W)`` (grayscale) or ``(Z, H, W, C)`` with C in 1, 3, 4; Z is
depth or time. Contrast is computed once over the whole stack, so every slice is normalised
alike, and one object diameter serves every slice. Each slice is a
:class:`~sam_viz.windows.scaled.ScaledImage`, whose window embeddings are cached (with
``EmbeddingCache(directory=...)`` they persist on disk, keyed by slice content, window, zoom
and model).

:func:`propagate` carries an object committed on one slice to its neighbours: each next
slice is prompted with the previous slice's mask's box (a margin added, none by default),
optionally with the mask itself as a mask prompt, until the object ends; its result says,
per direction, how far the object went and which test ended it (:class:`PropagationRun`).

Conventions: boxes ``XYXY`` in pixels of a slice; masks (H, W) bool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from sam_viz.image import Contrast, contrast_limits, validate_image
from sam_viz.predictor import Cancelled, ProgressCallback
from sam_viz.progress import check_cancel
from sam_viz.windows.geometry import Window, touches_inner_edge
from sam_viz.windows.scale import GOOD_FRACTIONS
from sam_viz.windows.scaled import ScaledImage

if TYPE_CHECKING:  # imports torch: the napari dock imports this module to open
    from sam_viz.predictor import Predictor

Direction = Literal["both", "forward", "backward"]

# Room a grid window must leave around an object's box, as a fraction of the box's side,
# for propagation to answer it there (half of ScaledImage's CONTEXT_FRACTION: the halo
# keeps objects up to twice the diameter whole in a window, and a mask cut by its window
# is answered again in a larger one).
GRID_ROOM = 0.25
# How far a slice's predicted IoU or stability may fall below the object's own answer on
# its start slice (bench_propagation.py: generated nuclei through z).
TOLERANCE = 0.1


def validate_stack(stack: object) -> np.ndarray:
    """Check a stack's shape and dtype: (Z, H, W) or (Z, H, W, C) with C in 1, 3, 4.

    Raises:
        ValueError / TypeError: As :func:`sam_viz.image.validate_image` for a slice, or
            when the array is not a stack of images.
    """
    array = np.asarray(stack)
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3, 4)):
        raise ValueError(
            f"A stack must have shape (Z, H, W) or (Z, H, W, C) with C in 1, 3, 4; got "
            f"{array.shape}. For one image use the 2-D functions."
        )
    if array.shape[0] < 1:
        raise ValueError("The stack has no slices.")
    validate_image(array[0])
    return array


class StackImages:
    """A stack whose slices share contrast limits and one object scale.

    Args:
        predictor: The predictor whose windows the slices are cut for.
        stack: (Z, H, W) or (Z, H, W, C) array.
        diameter: Typical object diameter in pixels; estimated once, on the middle slice,
            when None.
        contrast: ``"auto"`` (uint8/bool as they are, others stretched to the stack's
            percentiles), ``"percentile"``, ``"minmax"`` or ``"none"`` (floats in 0..1).
        percentiles: Percentiles of the stretch, over the whole stack.
    """

    def __init__(
        self,
        predictor: Predictor,
        stack: object,
        *,
        diameter: float | None = None,
        contrast: Contrast = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
    ) -> None:
        self.predictor = predictor
        self.stack = validate_stack(stack)
        values = self.stack[..., :3] if self.stack.ndim == 4 else self.stack
        self._limits = contrast_limits(values, contrast=contrast, percentiles=percentiles)
        self._slices: dict[int, ScaledImage] = {}
        self.diameter = diameter if diameter is not None else self.slice(len(self) // 2).diameter

    def __len__(self) -> int:
        return int(self.stack.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of a slice."""
        return int(self.stack.shape[1]), int(self.stack.shape[2])

    def slice(self, index: int) -> ScaledImage:
        """Slice ``index`` at the stack's scale, with the stack's contrast."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"Slice {index} is outside the stack of {len(self)} slices.")
        index %= len(self)
        if index not in self._slices:
            plane = self.stack[index]
            diameter = getattr(self, "diameter", None)
            if self._limits is None:  # uint8/bool, or floats already in 0..1
                image = ScaledImage(self.predictor, plane, diameter=diameter, contrast="none")
            else:
                image = ScaledImage(self.predictor, plane, diameter=diameter, limits=self._limits)
            self._slices[index] = image
            if len(self._slices) > 4:  # keep memory bounded on long stacks
                self._slices.pop(next(iter(self._slices)))
        return self._slices[index]


def embed_stack(
    predictor: Predictor,
    stack: StackImages | np.ndarray,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> int:
    """Embed every window of every slice (computed once, then from the predictor's cache).

    Args:
        predictor: The shared predictor; give it an ``EmbeddingCache(directory=...)`` to keep
            the embeddings on disk.
        stack: A :class:`StackImages` or a stack array.
        progress: Called as ``progress(done, total)`` after each slice.
        cancel: Set it to stop; :class:`~sam_viz.progress.Cancelled` is raised.

    Returns:
        How many windows were embedded or found cached.
    """
    images = stack if isinstance(stack, StackImages) else StackImages(predictor, stack)
    windows = 0
    for index in range(len(images)):
        check_cancel(cancel, "Embedding the stack")
        windows += images.slice(index).embed_all(cancel=cancel)
        if progress is not None:
            progress(index + 1, len(images))
    return windows


StopReason = Literal["empty", "small", "score", "stability", "overlap", "growth", "stack_end"]

# How each stop reads: what failed, from the value and the threshold (see PropagationRun).
_WHY = {
    "empty": "its mask there was empty",
    "small": "its mask there had {value:.0f} px (< {threshold:.0f})",
    "score": "predicted IoU {value:.2f} < {threshold:.2f}",
    "stability": "stability score {value:.2f} < {threshold:.2f}",
    "overlap": "only {value:.0%} of its mask there lay on the previous slice's (< {threshold:.0%})",
    "growth": "its mask there was {value:.1f}x the previous slice's area (> {threshold:.1f}x)",
}


@dataclass(frozen=True)
class PropagationRun:
    """How far an object was carried in one direction from its start slice, and why it
    stopped there.

    Attributes:
        direction: ``"forward"`` (increasing slice index) or ``"backward"``.
        start: The slice the object was propagated from.
        slices: The slices it was carried to, in the order visited (possibly none).
        reason: ``"stack_end"`` when it reached the stack's last (forward) or first
            (backward) slice; otherwise the test the next slice's mask failed (see
            :func:`propagate`): ``"empty"``, ``"small"``, ``"score"``, ``"stability"``,
            ``"overlap"`` or ``"growth"``.
        stopped_at: The slice whose mask failed the test (None at the stack's end).
        value: The value that failed it: the mask's pixels (``"empty"``, ``"small"``),
            its predicted IoU, its stability score, the fraction of it on the previous
            mask, or its area over the previous mask's (None at the stack's end).
        threshold: The limit that value failed (None at the stack's end).
    """

    direction: Literal["forward", "backward"]
    start: int
    slices: tuple[int, ...]
    reason: StopReason
    stopped_at: int | None = None
    value: float | None = None
    threshold: float | None = None

    @property
    def reached(self) -> int:
        """The last slice the object was carried to (the start slice if none)."""
        return self.slices[-1] if self.slices else self.start

    def describe(self) -> str:
        """The run in one line, e.g. ``"forward: not carried; stopped at slice 11:
        stability score 0.74 < 0.80"`` or ``"backward: carried to slices 9-0, the
        stack's first slice"``."""
        first, last = (self.slices[0], self.slices[-1]) if self.slices else (None, None)
        if first is None:
            carried = "not carried"
        elif first == last:
            carried = f"carried to slice {first}"
        else:
            carried = f"carried to slices {first}-{last}"
        if self.reason == "stack_end":
            end = "last" if self.direction == "forward" else "first"
            if first is None:
                return f"{self.direction}: {carried}, slice {self.start} is the stack's {end}"
            return f"{self.direction}: {carried}, the stack's {end} slice"
        why = _WHY[self.reason].format(value=self.value, threshold=self.threshold)
        return f"{self.direction}: {carried}; stopped at slice {self.stopped_at}: {why}"


@dataclass(frozen=True)
class Propagation:
    """An object carried through a stack.

    Attributes:
        masks: (Z, H, W) bool: the object on every slice it was found on.
        scores: (Z,) predicted IoU per slice (NaN where not predicted; 1 on the start slice).
        first: First slice of the object.
        last: Last slice of the object.
        runs: One :class:`PropagationRun` per direction followed, forward first.
    """

    masks: np.ndarray
    scores: np.ndarray
    first: int
    last: int
    runs: tuple[PropagationRun, ...] = ()

    def run(self, direction: Literal["forward", "backward"]) -> PropagationRun | None:
        """The run in ``direction``, or None if that direction was not followed."""
        return next((run for run in self.runs if run.direction == direction), None)

    def describe(self) -> str:
        """Where and why the object stopped in each direction, one run per sentence."""
        lines = [run.describe() for run in self.runs]
        return " ".join(f"{line[0].upper()}{line[1:]}." for line in lines)


def _box_with_margin(mask: np.ndarray, margin: float) -> np.ndarray:
    """The mask's XYXY box, each side moved out by ``margin`` of its size. No pixel more:
    a box one pixel looser than the previous mask on every slice gave a mask a little
    larger each time, until its stability fell and propagation stopped mid-object."""
    x0, y0, x1, y1 = _bounds(mask)
    pad_x, pad_y = margin * (x1 - x0), margin * (y1 - y0)
    height, width = mask.shape
    return np.array(
        [max(0, x0 - pad_x), max(0, y0 - pad_y), min(width, x1 + pad_x), min(height, y1 + pad_y)]
    )


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """XYXY box (exclusive ends) of a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def propagate(
    predictor: Predictor,
    stack: StackImages | np.ndarray,
    slice_index: int,
    mask: np.ndarray,
    *,
    direction: Direction = "both",
    margin: float = 0.0,
    use_mask_prompt: bool = False,
    min_score: float = 0.7,
    min_stability: float = 0.8,
    tolerance: float = TOLERANCE,
    min_overlap: float = 0.5,
    max_growth: float = 2.0,
    min_area: int = 4,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Propagation:
    """Carry an object from one slice to its neighbours until it ends.

    On each next slice the previous mask's box (plus ``margin``) is the prompt. It is
    answered in the slice's grid window holding it when the object's size suits the grid
    (those windows are what :func:`embed_stack` and the front ends' "embed all" compute, so
    an embedded stack is only decoded), else in a window that suits its size
    (:class:`~sam_viz.windows.scaled.ScaledImage`).

    The object has ended when the new mask is empty or smaller than ``min_area``, its
    predicted IoU or its stability score
    (:func:`~sam_viz.predictor.stability.stability_scores`) is too low, less than
    ``min_overlap`` of it lies on the previous mask, or it is more than ``max_growth``
    times the previous mask's area (it leaked into a neighbour). Past an object's end the
    model still outlines something in the box, but with soft edges, so such masks score
    lower than masks of the object. How high masks of the object score depends on the
    object (small objects have less stable masks) and on the model, so the object is
    first answered on its own start slice from its own box: a mask is too unsure when
    its score falls below ``min_score``, or ``tolerance`` below that start-slice answer's,
    whichever is lower (and the same for the stability score).

    Args:
        predictor: The shared predictor (its current image is left alone).
        stack: A :class:`StackImages` or a (Z, H, W[, C]) array.
        slice_index: The slice the object was committed on.
        mask: (H, W) bool mask of the object on that slice.
        direction: ``"both"``, ``"forward"`` (increasing index) or ``"backward"``.
        margin: Margin added to each side of the box, as a fraction of its size (none by
            default: the model's own box margin, ``spec.box_margin``, loosens the box).
        use_mask_prompt: Also give the previous mask as a mask prompt (off: it did not
            help the embedded LiteMedSAM; docs/decisions.md, "Propagation").
        min_score: Predicted IoU accepted whatever the start slice's answer scored.
        min_stability: Stability score accepted whatever the start slice's answer scored.
        tolerance: How far below the start slice's answer a score may fall.
        min_overlap: Lowest fraction of the new mask lying on the previous one.
        max_growth: Largest area ratio new / previous.
        min_area: Smallest mask (pixels) that continues the object.
        progress: Called as ``progress(done, total)`` after each slice (total: the slices
            that may be visited).
        cancel: Set it to stop; :class:`~sam_viz.predictor.Cancelled` is raised.

    Returns:
        The object's masks through the stack, and where and why it stopped each way.

    Raises:
        ValueError: For a mask of the wrong shape, an empty mask, or a bad slice index.
    """
    images = stack if isinstance(stack, StackImages) else StackImages(predictor, stack)
    start = _start_mask(images, slice_index, mask, direction)
    depth = len(images)
    masks = np.zeros((depth, *images.shape), dtype=bool)
    scores = np.full(depth, np.nan)
    masks[slice_index], scores[slice_index] = start, 1.0
    # How sure the model is of this object: its answer on the start slice.
    own = _next_slice(images.slice(slice_index), start, margin, use_mask_prompt, cancel)
    end = _ObjectEnd(
        min(min_score, own.score - tolerance),
        min(min_stability, own.stability - tolerance),
        min_overlap,
        max_growth,
        min_area,
    )
    runs = _runs(slice_index, depth, direction)
    total, visited = sum(len(run) for run in runs), 0
    ends = []
    for name, run in runs:
        # Follow the object away from the start slice, one run per direction.
        reached: list[int] = []
        follow = _Follow(images, end, margin, use_mask_prompt, cancel)
        for index, step in follow.along(run, start):
            masks[index], scores[index] = step.mask, step.score
            reached.append(index)
            if progress is not None:
                progress(visited + len(reached), total)
        ends.append(PropagationRun(name, slice_index, tuple(reached), *follow.stop))
        # The slices past the object's end count as visited.
        visited += len(run)
        if progress is not None:
            progress(visited, total)
    found = [slice_index, *(index for run in ends for index in run.slices)]
    return Propagation(masks, scores, min(found), max(found), tuple(ends))


def _start_mask(
    images: StackImages, slice_index: int, mask: np.ndarray, direction: Direction
) -> np.ndarray:
    """The object's (H, W) bool mask on its start slice, once the arguments are checked."""
    depth = len(images)
    if not 0 <= slice_index < depth:
        raise ValueError(f"slice_index {slice_index} is outside the stack of {depth} slices.")
    start = np.asarray(mask, dtype=bool)
    if start.shape != images.shape:
        raise ValueError(f"mask has shape {start.shape}; slices have shape {images.shape}.")
    if not start.any():
        raise ValueError("The mask to propagate is empty; commit an object first.")
    if direction not in ("both", "forward", "backward"):
        raise ValueError(f"direction must be 'both', 'forward' or 'backward', got {direction!r}.")
    return start


def _runs(
    slice_index: int, depth: int, direction: Direction
) -> list[tuple[Literal["forward", "backward"], range]]:
    """The slices to visit, in order, one range per direction away from ``slice_index``."""
    runs: list[tuple[Literal["forward", "backward"], range]] = []
    if direction in ("both", "forward"):
        runs.append(("forward", range(slice_index + 1, depth)))
    if direction in ("both", "backward"):
        runs.append(("backward", range(slice_index - 1, -1, -1)))
    return runs


@dataclass(frozen=True)
class _ObjectEnd:
    """The tests that end a propagated object (see :func:`propagate`)."""

    min_score: float
    min_stability: float
    min_overlap: float
    max_growth: float
    min_area: int

    def failed(
        self, new: np.ndarray, score: float, stability: float, previous: np.ndarray
    ) -> tuple[StopReason, float, float] | None:
        """The first test ``new`` (the mask on the next slice) fails as the continuation of
        ``previous``, as (reason, value, threshold); None if it passes them all."""
        area, before = int(np.count_nonzero(new)), int(np.count_nonzero(previous))
        min_area = max(self.min_area, 1)
        if area == 0:
            return "empty", 0.0, float(min_area)
        if area < min_area:
            return "small", float(area), float(min_area)
        if score < self.min_score:
            return "score", score, self.min_score
        if stability < self.min_stability:
            return "stability", stability, self.min_stability
        overlap = np.count_nonzero(new & previous) / area
        if overlap < self.min_overlap:
            return "overlap", overlap, self.min_overlap
        if area > self.max_growth * before:
            return "growth", area / before, self.max_growth
        return None


@dataclass(frozen=True)
class _Step:
    """The object's answer on one slice."""

    mask: np.ndarray  # (H, W) bool
    score: float  # predicted IoU
    stability: float


class _Follow:
    """Follows an object along one run of slices; ``stop`` says why it stopped."""

    def __init__(
        self,
        images: StackImages,
        end: _ObjectEnd,
        margin: float,
        use_mask_prompt: bool,
        cancel: threading.Event | None,
    ) -> None:
        self.images, self.end = images, end
        self.margin, self.use_mask_prompt, self.cancel = margin, use_mask_prompt, cancel
        self.stop: tuple[StopReason, int | None, float | None, float | None] = (
            "stack_end",
            None,
            None,
            None,
        )

    def along(self, run: range, start: np.ndarray) -> Iterator[tuple[int, _Step]]:
        """Yield ``(slice, step)`` along ``run`` until the object ends."""
        previous = start
        for index in run:
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled("Propagation was cancelled.")
            image = self.images.slice(index)
            step = _next_slice(image, previous, self.margin, self.use_mask_prompt, self.cancel)
            failed = self.end.failed(step.mask, step.score, step.stability, previous)
            if failed is not None:
                reason, value, threshold = failed
                self.stop = (reason, index, value, threshold)
                return
            yield index, step
            previous = step.mask


def _next_slice(
    image: ScaledImage,
    previous: np.ndarray,
    margin: float,
    use_mask_prompt: bool,
    cancel: threading.Event | None,
) -> _Step:
    """Predict the object on a slice from the previous slice's mask: in the slice's grid
    window holding it where the object's size suits the grid, else in a window that suits
    its size (and larger ones while the mask is cut by its window)."""
    box = _box_with_margin(previous, margin)
    mask_prompt = previous if use_mask_prompt else None
    window = _grid_window(image, box)
    if window is not None:
        step = _answer_in(image, window, box, mask_prompt, cancel)
        if step is not None:
            return step
    result = image.predict(
        box_xyxy=box, mask_input=mask_prompt, multimask_output=False, cancel=cancel
    )
    return _Step(result.masks[0], float(result.iou_scores[0]), float(result.stability_scores[0]))


def _grid_window(image: ScaledImage, box: np.ndarray) -> Window | None:
    """The grid window that holds ``box`` with the most room, if the object's size suits
    the grid's zoom and the window leaves it room to grow; else None."""
    side = float(max(box[2] - box[0], box[3] - box[1], 1.0))
    low, high = GOOD_FRACTIONS  # as ScaledImage's routing: smaller ones lose detail
    if not low <= side / image.scale.side <= high:
        return None
    return image.grid.holding(box.tolist(), GRID_ROOM * side)


def _answer_in(
    image: ScaledImage,
    window: Window,
    box: np.ndarray,
    mask_prompt: np.ndarray | None,
    cancel: threading.Event | None,
) -> _Step | None:
    """The object's answer in one window of a slice; None if its mask is cut by the window
    (the object goes on past it)."""
    x0, y0, x1, y1 = window
    embedding = image.embedding(window, cancel=cancel)
    local = image.predictor.predict(
        box_xyxy=box - np.array([x0, y0, x0, y0]),
        mask_input=None if mask_prompt is None else mask_prompt[y0:y1, x0:x1],
        multimask_output=False,
        embedding=embedding,
    )
    found = local.masks[0]
    if found.any():
        bx0, by0, bx1, by1 = _bounds(found)
        if touches_inner_edge((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0), window, image.shape):
            return None
    mask = np.zeros(image.shape, dtype=bool)
    mask[y0:y1, x0:x1] = found
    return _Step(mask, float(local.iou_scores[0]), float(local.stability_scores[0]))
