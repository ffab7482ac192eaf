"""3-D and time stacks: consistent contrast, per-slice embeddings, propagation of an object.

A stack is an array ``(Z, H, W)`` (grayscale) or ``(Z, H, W, C)`` with C in 1, 3, 4; Z is
depth or time. Contrast is computed once over the whole stack, so every slice is normalised
alike, and one object diameter serves every slice. Each slice is a
:class:`~sam_viz.windows.scaled.ScaledImage`, whose window embeddings are cached (with
``EmbeddingCache(directory=...)`` they persist on disk, keyed by slice content, window, zoom
and model).

:func:`propagate` carries an object committed on one slice to its neighbours: each next
slice is prompted with the previous slice's mask's box (a margin added), optionally with
the mask itself as a mask prompt, until the object ends.

Conventions: boxes ``XYXY`` in pixels of a slice; masks (H, W) bool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sam_viz.image import Contrast, contrast_limits, validate_image
from sam_viz.predictor import Cancelled, Predictor, ProgressCallback
from sam_viz.progress import check_cancel
from sam_viz.windows.scaled import ScaledImage

Direction = Literal["both", "forward", "backward"]


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


@dataclass(frozen=True)
class Propagation:
    """An object carried through a stack.

    Attributes:
        masks: (Z, H, W) bool: the object on every slice it was found on.
        scores: (Z,) predicted IoU per slice (NaN where not predicted; 1 on the start slice).
        first: First slice of the object.
        last: Last slice of the object.
    """

    masks: np.ndarray
    scores: np.ndarray
    first: int
    last: int


def _box_with_margin(mask: np.ndarray, margin: float) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    pad_x = max(1.0, margin * (x1 - x0))
    pad_y = max(1.0, margin * (y1 - y0))
    height, width = mask.shape
    return np.array(
        [max(0, x0 - pad_x), max(0, y0 - pad_y), min(width, x1 + pad_x), min(height, y1 + pad_y)]
    )


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
    min_overlap: float = 0.5,
    max_growth: float = 2.0,
    min_area: int = 4,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Propagation:
    """Carry an object from one slice to its neighbours until it ends.

    On each next slice the previous mask's box (plus ``margin``) is the prompt, answered in a
    window that suits its size (:class:`~sam_viz.windows.scaled.ScaledImage`). The object
    has ended when the new mask is empty or smaller than ``min_area``, its predicted IoU is
    below ``min_score``, its stability score
    (:func:`~sam_viz.predictor.stability.stability_scores`) is below ``min_stability``,
    less than ``min_overlap`` of it lies on the previous mask, or it is more than
    ``max_growth`` times the previous mask's area (it leaked into a neighbour). Past an
    object's end the model still outlines something in the box, but with soft edges, so
    such masks score lower in predicted IoU and stability than masks of the object; the
    default cut-offs sit between the two (set on synthetic balls only: docs/decisions.md,
    "Propagation").

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
        min_score: Lowest predicted IoU accepted.
        min_stability: Lowest stability score accepted.
        min_overlap: Lowest fraction of the new mask lying on the previous one.
        max_growth: Largest area ratio new / previous.
        min_area: Smallest mask (pixels) that continues the object.
        progress: Called as ``progress(done, total)`` after each slice (total: the slices
            that may be visited).
        cancel: Set it to stop; :class:`~sam_viz.predictor.Cancelled` is raised.

    Returns:
        The object's masks through the stack.

    Raises:
        ValueError: For a mask of the wrong shape, an empty mask, or a bad slice index.
    """
    images = stack if isinstance(stack, StackImages) else StackImages(predictor, stack)
    start = _start_mask(images, slice_index, mask, direction)
    end = _ObjectEnd(min_score, min_stability, min_overlap, max_growth, min_area)
    depth = len(images)
    masks = np.zeros((depth, *images.shape), dtype=bool)
    scores = np.full(depth, np.nan)
    masks[slice_index], scores[slice_index] = start, 1.0
    runs = _runs(slice_index, depth, direction)
    total, visited = sum(len(run) for run in runs), 0
    first = last = slice_index
    for run in runs:
        # Follow the object away from the start slice, one run per direction.
        followed = _follow(images, run, start, end, margin, use_mask_prompt, cancel)
        for reached, (index, new, score) in enumerate(followed, start=1):
            masks[index], scores[index] = new, score
            first, last = min(first, index), max(last, index)
            if progress is not None:
                progress(visited + reached, total)
        # The slices past the object's end count as visited.
        visited += len(run)
        if progress is not None:
            progress(visited, total)
    return Propagation(masks, scores, first, last)


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


def _runs(slice_index: int, depth: int, direction: Direction) -> list[range]:
    """The slices to visit, in order, one range per direction away from ``slice_index``."""
    runs = []
    if direction in ("both", "forward"):
        runs.append(range(slice_index + 1, depth))
    if direction in ("both", "backward"):
        runs.append(range(slice_index - 1, -1, -1))
    return runs


@dataclass(frozen=True)
class _ObjectEnd:
    """The tests that end a propagated object (see :func:`propagate`)."""

    min_score: float
    min_stability: float
    min_overlap: float
    max_growth: float
    min_area: int

    def reached(
        self, new: np.ndarray, score: float, stability: float, previous: np.ndarray
    ) -> bool:
        """Whether ``new`` (the mask on the next slice) no longer continues ``previous``."""
        area, before = int(new.sum()), int(previous.sum())
        return bool(
            area < max(self.min_area, 1)
            or score < self.min_score
            or stability < self.min_stability
            or np.count_nonzero(new & previous) < self.min_overlap * area
            or area > self.max_growth * before
        )


def _follow(
    images: StackImages,
    run: range,
    start: np.ndarray,
    end: _ObjectEnd,
    margin: float,
    use_mask_prompt: bool,
    cancel: threading.Event | None,
) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield ``(slice, mask, predicted IoU)`` along ``run`` until the object ends."""
    previous = start
    for index in run:
        if cancel is not None and cancel.is_set():
            raise Cancelled("Propagation was cancelled.")
        new, score, stability = _next_slice(images.slice(index), previous, margin, use_mask_prompt)
        if end.reached(new, score, stability, previous):
            return
        yield index, new, score
        previous = new


def _next_slice(
    image: ScaledImage,
    previous: np.ndarray,
    margin: float,
    use_mask_prompt: bool,
) -> tuple[np.ndarray, float, float]:
    """Predict the object on a slice from the previous slice's mask (in a window that suits
    the object's size).

    Returns:
        (mask, predicted IoU, stability score of its low-res logits).
    """
    box = _box_with_margin(previous, margin)
    result = image.predict(
        box_xyxy=box,
        mask_input=previous if use_mask_prompt else None,
        multimask_output=False,
    )
    return result.masks[0], float(result.iou_scores[0]), float(result.stability_scores[0])
