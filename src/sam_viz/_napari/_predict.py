"""One prompt set to three candidate label images (plain NumPy + the predictor, no Qt).

Runs in a worker thread: everything heavy (decoder, upscaling, label images) happens here so
the UI thread only swaps layer data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam_viz._napari._prompts import PromptSet
from sam_viz.predictor import Predictor
from sam_viz.predictor.cache import ImageEmbedding
from sam_viz.prompts import CANDIDATE_NAMES
from sam_viz.render import masks_to_labels


@dataclass(frozen=True)
class Candidates:
    """SAM's three candidates for one prompt set, as label images.

    Attributes:
        labels: (3, H, W) label images, subpart/part/whole by area; 0 is background and
            object i (the i-th box with several boxes) is label i.
        iou_scores: (3,) predicted IoU of each candidate (the mean over objects).
        names: The candidates' names, smallest first.
        n_objects: Objects in each label image (1, or the number of boxes).
        quality: (3,) the candidates' ranking (see :attr:`sam_viz.predictor.Prediction.quality`).
        notes: Things the user should know about how the prompts were used.
    """

    labels: np.ndarray
    iou_scores: np.ndarray
    names: tuple[str, ...]
    n_objects: int
    quality: np.ndarray
    notes: tuple[str, ...] = ()

    @property
    def best(self) -> int:
        """Index of the best-ranked candidate."""
        return int(np.argmax(self.quality))


def needs_box(prompts: PromptSet, trained_with_points: bool) -> bool:
    """Whether the prompts hold only points for a model that was trained with boxes only
    (such a model answers a lone click with an empty mask)."""
    return not trained_with_points and not len(prompts.boxes_xyxy) and prompts.mask is None


def predict_candidates(
    predictor: Predictor, embedding: ImageEmbedding, prompts: PromptSet
) -> Candidates:
    """Predict the candidates for ``prompts`` on ``embedding``'s image.

    One box (with or without points and a mask prompt), points alone or a mask alone give
    SAM's three ambiguity-aware masks. Several boxes give one mask per box from a single
    batched call; each candidate then holds every object (the three are the same, since the
    batched call returns SAM's single-mask output), and points or mask prompts, which refine
    one box, are not used.

    Raises:
        ValueError: For prompts the predictor rejects (its message is for the user).
    """
    n_boxes = len(prompts.boxes_xyxy)
    if n_boxes >= 2:
        result = predictor.predict_boxes(prompts.boxes_xyxy, embedding=embedding)
        labels = masks_to_labels(result.masks)
        if labels.max(initial=0) < 256:
            labels = labels.astype(np.uint8)
        notes = [f"{n_boxes} boxes: one mask per box, the same in all three candidates."]
        if len(prompts.points_xy) or prompts.mask is not None:
            notes.append(
                "Points and polygons refine a single box; with several boxes they are unused."
            )
        score = float(np.mean(result.iou_scores))
        return Candidates(
            labels=np.stack([labels] * 3),
            iou_scores=np.full(3, score, dtype=np.float32),
            names=CANDIDATE_NAMES,
            n_objects=n_boxes,
            quality=np.full(3, score, dtype=np.float32),
            notes=tuple(notes),
        )
    prediction = predictor.predict(
        points_xy=prompts.points_xy if len(prompts.points_xy) else None,
        point_labels=prompts.point_labels if len(prompts.points_xy) else None,
        box_xyxy=prompts.boxes_xyxy[0] if n_boxes else None,
        mask_input=prompts.mask,
        multimask_output=True,
        embedding=embedding,
    )
    return Candidates(
        labels=prediction.masks.astype(np.uint8),
        iou_scores=np.asarray(prediction.iou_scores, dtype=np.float32),
        names=tuple(prediction.names),
        n_objects=1,
        quality=prediction.quality,
    )
