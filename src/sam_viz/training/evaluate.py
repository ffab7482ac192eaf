"""The checks click training must pass, shared by the tests and ``benchmarks/eval_clicks.py``.

* single positive clicks at each object's interior (its deepest pixel), best-of-three IoU,
  on held-out generated scenes and on scikit-image's coins (one click at each coin's centre);
* how often the IoU head ranks the best candidate first, on clicks whose pixel belongs to
  one object only (see :class:`ClickScores`);
* box prompts on coins against the original checkpoint (and, for reference, tight boxes on
  the held-out scenes: what the model makes of the most informative prompt);
* a click on a nucleus inside a cell: the candidates should differ, nucleus to cell.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sam_viz.predictor import Predictor
from sam_viz.synthetic.scenes import Scene

# A top-ranked candidate within this IoU of the best one counts as the best (two candidates
# can be the same mask but for a few pixels).
RANK_TOLERANCE = 0.01


def coins_reference(coins: np.ndarray) -> np.ndarray:
    """A careful classical segmentation of scikit-image's coins (its tutorial's watershed).

    Sobel elevation map, watershed from background/foreground markers, holes filled and
    bits under 100 pixels removed: 24 labelled coins.
    """
    from skimage.filters import sobel
    from skimage.measure import label
    from skimage.segmentation import watershed

    markers = np.zeros_like(coins, dtype=np.int32)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    foreground = ndimage.binary_fill_holes(watershed(sobel(coins), markers) == 2)
    labels = label(foreground)
    small = np.flatnonzero(np.bincount(labels.ravel()) < 100)
    labels[np.isin(labels, small)] = 0
    return label(labels > 0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1 for two empty masks)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def deepest_point(mask: np.ndarray) -> np.ndarray:
    """(x, y) of the mask pixel farthest from its border: a click in its interior."""
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return np.array([col, row], np.float64)


@dataclass(frozen=True)
class ClickScores:
    """Single-click results, one entry per click.

    Attributes:
        best_iou: IoU of the best of the three candidates with the clicked object.
        top_iou: IoU of the candidate the IoU head ranks first.
        top_is_best: Whether that candidate is the best (within :data:`RANK_TOLERANCE`).
        shown_is_best: Whether the candidate shown first (the prediction's ``best``: IoU
            head times stability) is the best.
        unambiguous: Whether the clicked pixel lies in the clicked object only. A click in
            a nucleolus is also a click in its nucleus and its cell: every candidate can be
            the one meant, so no ranking is right for all of them, and ranking is judged on
            unambiguous clicks.
    """

    best_iou: np.ndarray
    top_iou: np.ndarray
    top_is_best: np.ndarray
    shown_is_best: np.ndarray
    unambiguous: np.ndarray

    @property
    def mean_best_iou(self) -> float:
        return float(self.best_iou.mean()) if len(self.best_iou) else float("nan")

    @property
    def ranking_accuracy(self) -> float:
        """Share of unambiguous clicks whose top-ranked candidate is the best."""
        chosen = self.top_is_best[self.unambiguous]
        return float(chosen.mean()) if len(chosen) else float("nan")

    @property
    def shown_accuracy(self) -> float:
        """Share of unambiguous clicks whose candidate shown first is the best."""
        chosen = self.shown_is_best[self.unambiguous]
        return float(chosen.mean()) if len(chosen) else float("nan")

    @property
    def ranking_accuracy_all(self) -> float:
        """Share of all clicks whose top-ranked candidate is the best."""
        return float(self.top_is_best.mean()) if len(self.top_is_best) else float("nan")

    def subset(self, selection: np.ndarray) -> ClickScores:
        return ClickScores(*(getattr(self, f)[selection] for f in self._fields()))

    @classmethod
    def merge(cls, parts: Iterable[ClickScores]) -> ClickScores:
        parts = list(parts)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls._fields()))

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("best_iou", "top_iou", "top_is_best", "shown_is_best", "unambiguous")


def click_scores(predictor: Predictor, image: np.ndarray, targets: np.ndarray) -> ClickScores:
    """Click once at the interior of each target mask and score the three candidates.

    Args:
        predictor: The model.
        image: The image.
        targets: (M, H, W) masks of every object in the image (nested ones included).
    """
    embedding = predictor.set_image(image)
    targets = np.asarray(targets, bool)
    best, top, top_is_best, shown_is_best, unambiguous = [], [], [], [], []
    for target in targets:
        point = deepest_point(target)
        x, y = int(point[0]), int(point[1])
        unambiguous.append(int(targets[:, y, x].sum()) == 1)
        prediction = predictor.predict(points_xy=point[None], point_labels=[1], embedding=embedding)
        ious = np.array([iou(mask, target) for mask in prediction.masks])
        ranked_first = int(np.argmax(prediction.iou_scores))
        best.append(ious.max())
        top.append(ious[ranked_first])
        top_is_best.append(ious[ranked_first] >= ious.max() - RANK_TOLERANCE)
        shown_is_best.append(ious[prediction.best] >= ious.max() - RANK_TOLERANCE)
    return ClickScores(
        np.array(best),
        np.array(top),
        np.array(top_is_best, bool),
        np.array(shown_is_best, bool),
        np.array(unambiguous, bool),
    )


def label_masks(labels: np.ndarray) -> np.ndarray:
    """(M, H, W) boolean masks of labels 1..M of a label image."""
    return np.stack([labels == label for label in range(1, int(labels.max()) + 1)])


def coin_click_scores(
    predictor: Predictor, coins: np.ndarray, reference: np.ndarray
) -> ClickScores:
    """One click at the centre of each reference coin."""
    return click_scores(predictor, coins, label_masks(reference))


def box_ious(predictor: Predictor, image: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """IoU of the answer to each target's tight box (its single-mask output).

    Args:
        predictor: The model.
        image: The image.
        targets: (M, H, W) boolean masks (nested ones included).

    Returns:
        (M,) IoU of each answer with its target.
    """
    embedding = predictor.set_image(image)
    boxes = []
    for target in targets:
        rows, cols = np.nonzero(target)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    answer = predictor.predict_boxes(np.array(boxes, np.float64), embedding=embedding)
    return np.array([iou(mask, target) for mask, target in zip(answer.masks, targets, strict=True)])


@dataclass(frozen=True)
class NestedClick:
    """The answer to a click on a nucleus inside a cell.

    Attributes:
        areas: Candidate areas, smallest first (the predictor orders them by area).
        nucleus_iou: Best IoU of a candidate with the nucleus, and which candidate.
        cell_iou: Best IoU of a candidate with the cell, and which candidate.
    """

    areas: np.ndarray
    nucleus_iou: tuple[float, int]
    cell_iou: tuple[float, int]


def nested_click(predictor: Predictor, scene: Scene, nucleus: int) -> NestedClick:
    """Click the middle of mask ``nucleus`` (whose parent is a cell) and compare candidates."""
    cell = int(scene.parents[nucleus])
    if cell < 0:
        raise ValueError(f"Mask {nucleus} has no enclosing mask.")
    prediction = predictor.predict(
        points_xy=deepest_point(scene.masks[nucleus])[None],
        point_labels=[1],
        embedding=predictor.set_image(scene.image),
    )
    areas = prediction.masks.reshape(len(prediction.masks), -1).sum(1)
    with_nucleus = [iou(m, scene.masks[nucleus]) for m in prediction.masks]
    with_cell = [iou(m, scene.masks[cell]) for m in prediction.masks]
    return NestedClick(
        areas=areas,
        nucleus_iou=(max(with_nucleus), int(np.argmax(with_nucleus))),
        cell_iou=(max(with_cell), int(np.argmax(with_cell))),
    )
