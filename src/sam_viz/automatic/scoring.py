"""Scoring instance segmentations against ground truth, and the classical baseline.

The metrics are the ones the microscopy community reports (and micro-sam, so our figures
compare with theirs): objects are matched one to one by IoU; F1 at an IoU threshold counts
matched pairs above it; the mean segmentation accuracy (mSA) is the mean, over thresholds
0.50, 0.55, ..., 0.95, of TP / (TP + FP + FN).

:func:`otsu_watershed` is the baseline a user could write in ten lines of scikit-image
(Otsu threshold, distance transform, seeded watershed): automatic segmentation must beat it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

MSA_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)


def iou_matrix(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every predicted object with every true object: (P, T).

    Args:
        predicted: (H, W) integer label image, 0 background.
        truth: (H, W) integer label image of the same shape.
    """
    if predicted.shape != truth.shape:
        raise ValueError(f"Label images differ in shape: {predicted.shape} and {truth.shape}.")
    _, pred = np.unique(predicted, return_inverse=True)
    _, true = np.unique(truth, return_inverse=True)
    pred = pred.reshape(-1)
    true = true.reshape(-1)
    n_pred, n_true = int(pred.max()) + 1, int(true.max()) + 1
    overlap = np.bincount(pred * n_true + true, minlength=n_pred * n_true).reshape(n_pred, n_true)
    pred_area = overlap.sum(axis=1, keepdims=True)
    true_area = overlap.sum(axis=0, keepdims=True)
    union = pred_area + true_area - overlap
    iou = overlap / np.maximum(union, 1)
    # Row and column 0 are background when present.
    has_pred_bg = bool((predicted == 0).any())
    has_true_bg = bool((truth == 0).any())
    return iou[int(has_pred_bg) :, int(has_true_bg) :]


@dataclass(frozen=True)
class InstanceScores:
    """How an instance segmentation matches the truth.

    Attributes:
        matched_ious: IoU of each one-to-one matched pair (optimal assignment).
        n_predicted: Objects predicted.
        n_true: True objects.
    """

    matched_ious: np.ndarray
    n_predicted: int
    n_true: int

    def counts(self, threshold: float) -> tuple[int, int, int]:
        """(TP, FP, FN) at an IoU threshold."""
        tp = int(np.count_nonzero(self.matched_ious >= threshold))
        return tp, self.n_predicted - tp, self.n_true - tp

    def f1(self, threshold: float = 0.5) -> float:
        """F1 score at an IoU threshold (1 when both are empty)."""
        tp, fp, fn = self.counts(threshold)
        return 2 * tp / max(2 * tp + fp + fn, 1) if (tp + fp + fn) else 1.0

    def accuracy(self, threshold: float) -> float:
        """TP / (TP + FP + FN) at an IoU threshold."""
        tp, fp, fn = self.counts(threshold)
        return tp / (tp + fp + fn) if (tp + fp + fn) else 1.0

    @property
    def msa(self) -> float:
        """Mean segmentation accuracy over IoU thresholds 0.50 to 0.95."""
        return float(np.mean([self.accuracy(t) for t in MSA_THRESHOLDS]))


def score_instances(predicted: np.ndarray, truth: np.ndarray) -> InstanceScores:
    """Match predicted objects to true ones (one to one, maximising total IoU)."""
    iou = iou_matrix(np.asarray(predicted), np.asarray(truth))
    n_pred, n_true = iou.shape
    if not n_pred or not n_true:
        return InstanceScores(np.zeros(0), n_pred, n_true)
    rows, cols = linear_sum_assignment(-iou)
    matched = iou[rows, cols]
    return InstanceScores(matched[matched > 0], n_pred, n_true)


def otsu_watershed(image: np.ndarray, *, bright: bool = True) -> np.ndarray:
    """The classical baseline: Otsu threshold, distance transform, seeded watershed.

    Args:
        image: (H, W) grayscale image (any dtype) or (H, W, 3) RGB (averaged).
        bright: Objects are brighter than the background (fluorescence).

    Returns:
        (H, W) int32 label image.
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    gray = np.asarray(image, dtype=np.float64)
    if gray.ndim == 3:
        gray = gray[..., :3].mean(axis=-1)
    gray = np.nan_to_num(gray)
    foreground = gray > threshold_otsu(gray) if bright else gray < threshold_otsu(gray)
    distance = ndimage.distance_transform_edt(foreground)
    peaks = peak_local_max(distance, min_distance=5, labels=ndimage.label(foreground)[0])
    markers = np.zeros(gray.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=foreground).astype(np.int32)


@dataclass(frozen=True)
class CutObjects:
    """How the true objects that tile borders cut came out: each should be one object.

    Attributes:
        once: Cut objects covered by exactly one predicted object.
        split: Cut objects covered by two or more predicted objects (found twice, or cut).
        missed: Cut objects no predicted object covers.
    """

    once: int
    split: int
    missed: int

    @property
    def total(self) -> int:
        return self.once + self.split + self.missed


def cut_objects(
    truth: np.ndarray, predicted: np.ndarray, borders_x: list[int], borders_y: list[int]
) -> CutObjects:
    """Score the true objects crossing the given tile borders (image columns and rows).

    A predicted object *covers* a true one when it holds at least a fifth of its pixels.
    """
    slices = ndimage.find_objects(truth)
    once = split = missed = 0
    for label, where in enumerate(slices, start=1):
        if where is None:
            continue
        rows, cols = where
        crosses = any(cols.start < b < cols.stop for b in borders_x) or any(
            rows.start < b < rows.stop for b in borders_y
        )
        if not crosses:
            continue
        mine = truth[where] == label
        found = predicted[where][mine]
        counts = np.bincount(found[found > 0].astype(np.int64))
        covering = int(np.count_nonzero(counts >= 0.2 * mine.sum()))
        if covering == 1:
            once += 1
        elif covering == 0:
            missed += 1
        else:
            split += 1
    return CutObjects(once, split, missed)
