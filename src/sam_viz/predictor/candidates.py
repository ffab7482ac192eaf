"""The answer to a prompt set as every front end shows it: ranked candidate label images."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sam_viz.masks import InstanceMask, paint_labels
from sam_viz.prompts import (
    CANDIDATE_NAMES,
    OVERLAP_NOTE,
    SEVERAL_BOXES_NOTE,
    UNUSED_WITH_BOXES_NOTE,
    PromptSet,
)

# Candidates this alike are one answer said three times, not a subpart/part/whole hierarchy.
NEAR_DUPLICATE_IOU = 0.9


@dataclass(frozen=True)
class Prediction:
    """Candidate masks for one object.

    Attributes:
        masks: (K, H, W) bool masks at the original image resolution, smallest first.
        iou_scores: (K,) the model's predicted IoU for each mask.
        low_res_logits: (K, L, L) float32 logits on the model's low-res grid; pass one back
            as ``mask_input`` to refine a prediction (on the same embedding).
        names: K names; with three candidates ``("subpart", "part", "whole")`` by area.
        token_indices: (K,) which of SAM's output tokens each mask came from (0 is the
            single-mask output, 1-3 the ambiguity-aware ones).
        stability_scores: (K,) how little each mask changes when its logits' cut-off moves
            by 1 either way, on the low-res grid over the image (SAM's stability score).
    """

    masks: np.ndarray
    iou_scores: np.ndarray
    low_res_logits: np.ndarray
    names: tuple[str, ...]
    token_indices: np.ndarray
    stability_scores: np.ndarray

    @property
    def quality(self) -> np.ndarray:
        """(K,) predicted IoU times stability: the candidates' ranking.

        SAM's automatic mask generator keeps masks on both scores; their product puts the
        best candidate first more often than the predicted IoU alone (docs/decisions.md).
        """
        return np.asarray(self.iou_scores * self.stability_scores, dtype=np.float32)

    @property
    def best(self) -> int:
        """Index of the best candidate: the highest :attr:`quality` among non-empty masks."""
        return best_candidate(self.quality, [bool(m.any()) for m in self.masks])

    def mask(self, name: str) -> np.ndarray:
        """The (H, W) mask called ``name`` (e.g. ``"whole"``)."""
        if name not in self.names:
            raise KeyError(f"No candidate {name!r}; candidates are {self.names}.")
        return self.masks[self.names.index(name)]


@dataclass(frozen=True)
class BoxesPrediction:
    """One mask per box, from one batched decoder call.

    Attributes:
        masks: (M, H, W) bool, one per box in the order given.
        iou_scores: (M,) predicted IoU of each.
        low_res_logits: (M, L, L) float32 logits.
        stability_scores: (M,) stability score of each.
    """

    masks: np.ndarray
    iou_scores: np.ndarray
    low_res_logits: np.ndarray
    stability_scores: np.ndarray


def label_areas(labels: np.ndarray, count: int) -> np.ndarray:
    """(count,) pixels of labels 1..count, counted in row blocks (no image-sized temporary)."""
    areas = np.zeros(count + 1, dtype=np.int64)
    rows = max(1, (1 << 22) // max(1, labels.shape[1]))
    for start in range(0, labels.shape[0], rows):
        block = labels[start : start + rows].ravel()
        areas += np.bincount(block, minlength=count + 1)[: count + 1]
    return areas[1:]


def paint_smallest_on_top(
    masks: list[InstanceMask], shape_hw: tuple[int, int]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """A label image of one object per mask (mask i is label i + 1), and notes on overlaps.

    Where objects overlap, the pixel goes to the smallest of them (larger objects are painted
    first), so an object inside or on top of a larger one stays visible; the notes say how
    many pixels several objects claimed and which objects were hidden entirely.
    """
    count = len(masks)
    dtype = np.uint8 if count < 2**8 else np.uint16 if count < 2**16 else np.uint32
    order = sorted(range(count), key=lambda i: -masks[i].area)
    labels = paint_labels(shape_hw, masks, order, dtype, keep_numbers=True)
    return labels, overlap_notes(masks, labels)


def overlap_notes(masks: list[InstanceMask], labels: np.ndarray) -> tuple[str, ...]:
    """What the user should know about objects that overlap in ``labels``: how many pixels
    several objects claimed, and which objects were hidden by smaller ones."""
    visible = label_areas(labels, len(masks))
    areas = np.array([mask.area for mask in masks], dtype=np.int64)
    shared = int(areas.sum() - visible.sum())
    if shared == 0:
        return ()
    hidden = [str(i + 1) for i in np.flatnonzero((visible == 0) & (areas > 0))]
    return (
        OVERLAP_NOTE.format(
            shared=shared,
            objects=int(np.count_nonzero(visible < areas)),
            hidden=f"; hidden entirely: object {', '.join(hidden)}" if hidden else "",
        ),
    )


def best_candidate(quality: np.ndarray, non_empty: list[bool]) -> int:
    """The highest-quality candidate, never an empty one while a non-empty one exists."""
    ranked = np.where(np.asarray(non_empty), np.asarray(quality, dtype=np.float64), -np.inf)
    if not np.isfinite(ranked).any():
        return int(np.argmax(quality))
    return int(np.argmax(ranked))


@dataclass(frozen=True)
class Candidates:
    """SAM's answer to a prompt set, as label images the front ends show and commit.

    Attributes:
        labels: (K, H, W) label images, smallest candidate first; 0 is background and
            object i (the i-th box, with several boxes) is label i.
        iou_scores: (K,) predicted IoU of each candidate (the mean over objects).
        stability_scores: (K,) stability score of each candidate (the least over objects).
        names: The candidates' names.
        n_objects: Objects in each label image (1, or the number of boxes).
        notes: Things the user should know about how the prompts were used.
        low_res_logits: (K, L, L) logits of a one-object answer, for feeding back as a mask
            prompt on the same embedding; None with several objects.
        token_indices: (K,) the decoder output token of each candidate (0 is SAM's single
            mask output; several boxes are answered with it).
    """

    labels: np.ndarray
    iou_scores: np.ndarray
    stability_scores: np.ndarray
    names: tuple[str, ...]
    n_objects: int
    notes: tuple[str, ...] = ()
    low_res_logits: np.ndarray | None = None
    token_indices: np.ndarray | None = None

    @classmethod
    def from_prediction(cls, prediction: Prediction, notes: tuple[str, ...] = ()) -> Candidates:
        """The candidates of a one-object :class:`Prediction`."""
        return cls(
            labels=prediction.masks.astype(np.uint8),
            iou_scores=np.asarray(prediction.iou_scores, dtype=np.float32),
            stability_scores=np.asarray(prediction.stability_scores, dtype=np.float32),
            names=tuple(prediction.names),
            n_objects=1,
            notes=notes,
            low_res_logits=prediction.low_res_logits,
            token_indices=np.asarray(prediction.token_indices),
        )

    @classmethod
    def from_boxes(cls, prediction: BoxesPrediction, prompts: PromptSet) -> Candidates:
        """The candidates of several boxes: every candidate holds one mask per box."""
        return cls.from_masks(
            [InstanceMask.from_full(mask) for mask in prediction.masks],
            prediction.masks.shape[1:],
            prediction.iou_scores,
            prediction.stability_scores,
            prompts,
        )

    @classmethod
    def from_masks(
        cls,
        masks: list[InstanceMask],
        shape_hw: tuple[int, int],
        iou_scores: np.ndarray,
        stability_scores: np.ndarray,
        prompts: PromptSet,
    ) -> Candidates:
        """The candidates of several boxes from one mask per box (overlaps as
        :func:`paint_smallest_on_top`, and reported in the notes)."""
        count = len(masks)
        labels, overlaps = paint_smallest_on_top(masks, shape_hw)
        notes = [SEVERAL_BOXES_NOTE.format(count=count), *overlaps]
        if len(prompts.points_xy) or prompts.mask is not None:
            notes.append(UNUSED_WITH_BOXES_NOTE)
        score = float(np.mean(iou_scores))
        stability = float(np.min(stability_scores))
        return cls(
            labels=np.stack([labels] * len(CANDIDATE_NAMES)),
            iou_scores=np.full(len(CANDIDATE_NAMES), score, dtype=np.float32),
            stability_scores=np.full(len(CANDIDATE_NAMES), stability, dtype=np.float32),
            names=CANDIDATE_NAMES,
            n_objects=count,
            notes=(*prompts.notes, *notes),
            token_indices=np.zeros(len(CANDIDATE_NAMES), dtype=np.int64),
        )

    @property
    def quality(self) -> np.ndarray:
        """(K,) the candidates' ranking (see :attr:`Prediction.quality`)."""
        return np.asarray(self.iou_scores * self.stability_scores, dtype=np.float32)

    @property
    def best(self) -> int:
        """Index of the best-ranked candidate (never an empty one while others are not)."""
        return best_candidate(self.quality, [bool(layer.any()) for layer in self.labels])

    @property
    def masks(self) -> np.ndarray:
        """(K, H, W) bool: every object of each candidate."""
        return self.labels > 0

    def mask(self, name: str) -> np.ndarray:
        """The (H, W) bool mask of the candidate called ``name``."""
        if name not in self.names:
            raise KeyError(f"No candidate {name!r}; candidates are {self.names}.")
        return self.labels[self.names.index(name)] > 0

    @cached_property
    def areas(self) -> tuple[int, ...]:
        """Pixels of each candidate."""
        return tuple(int(np.count_nonzero(layer)) for layer in self.labels)

    @cached_property
    def offered(self) -> tuple[int, ...]:
        """Indices of the candidates worth offering the user, in candidate order.

        The best one always; with several boxes only it (every candidate is the same answer);
        otherwise each one that is not empty (while another is not) and not a near-duplicate
        (mask IoU above :data:`NEAR_DUPLICATE_IOU`) of a better-ranked one.
        """
        best = self.best
        if self.n_objects > 1:
            return (best,)
        ranked = sorted(range(len(self.labels)), key=lambda i: (i != best, -self.quality[i]))
        kept: list[int] = []
        for index in ranked:
            if kept and self.areas[index] == 0:
                continue
            if any(self._iou(index, other) > NEAR_DUPLICATE_IOU for other in kept):
                continue
            kept.append(index)
        return tuple(sorted(kept))

    @property
    def offer_note(self) -> str | None:
        """Why fewer candidates than the model's three are offered, or None."""
        if self.n_objects > 1 or len(self.offered) == len(self.labels):
            return None
        if not any(self.areas):
            return None  # :meth:`describe` says it
        empty = [self.names[i] for i in range(len(self.labels)) if self.areas[i] == 0]
        alike = len(self.labels) - len(self.offered) - len(empty)
        parts = []
        if alike:
            parts.append(f"{alike + 1} candidates are near-identical (IoU > {NEAR_DUPLICATE_IOU})")
        if empty:
            plural = "candidates are" if len(empty) > 1 else "candidate is"
            parts.append(f"the {' and '.join(empty)} {plural} empty")
        count = len(self.offered)
        offered = (
            "one answer is offered"
            if count == 1
            else f"{count} of the {len(self.labels)} are offered"
        )
        text = "; ".join(parts)
        return f"{text[0].upper()}{text[1:]}: {offered}."

    def describe(self, index: int) -> str:
        """What the user sees when candidate ``index`` is shown, in one honest sentence."""
        if not any(self.areas):
            return "No object found: every candidate is empty. Redraw the box around the object."
        name, area = self.names[index], self.areas[index]
        if area == 0:
            return f"{name} is empty (0 px); choose another candidate."
        objects = f" for {self.n_objects} objects" if self.n_objects > 1 else ""
        return f"{name} shown{objects} (predicted IoU {self.iou_scores[index]:.2f}, {area} px)"

    def _iou(self, a: int, b: int) -> float:
        first, second = self.labels[a] > 0, self.labels[b] > 0
        union = np.count_nonzero(first | second)
        return np.count_nonzero(first & second) / union if union else 1.0
