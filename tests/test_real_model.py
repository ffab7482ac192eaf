"""Checks with the real embedded weights (LiteMedSAM) on scikit-image's coins."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops

pytestmark = pytest.mark.slow


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _coin_boxes(reference: np.ndarray, margin: int = 3) -> tuple[np.ndarray, list[int]]:
    height, width = reference.shape
    boxes, labels = [], []
    for region in regionprops(reference):
        r0, c0, r1, c1 = region.bbox
        boxes.append(
            [
                max(0, c0 - margin),
                max(0, r0 - margin),
                min(width, c1 + margin),
                min(height, r1 + margin),
            ]
        )
        labels.append(region.label)
    return np.array(boxes, float), labels


def test_box_prompts_segment_the_coins(lite_predictor, coins, coins_reference):
    lite_predictor.set_image(coins)
    boxes, labels = _coin_boxes(coins_reference)
    assert len(boxes) == 24
    result = lite_predictor.predict_boxes(boxes)
    ious = [
        _iou(mask, coins_reference == label)
        for mask, label in zip(result.masks, labels, strict=True)
    ]
    assert np.mean(ious) >= 0.90, sorted(ious)
    assert min(ious) >= 0.6, sorted(ious)


def test_three_candidates_for_a_coin_box_are_named_by_area(lite_predictor, coins, coins_reference):
    lite_predictor.set_image(coins)
    boxes, labels = _coin_boxes(coins_reference)
    result = lite_predictor.predict(box_xyxy=boxes[0])
    assert result.names == ("subpart", "part", "whole")
    areas = result.masks.reshape(3, -1).sum(1)
    assert list(areas) == sorted(areas)
    best_iou = max(_iou(m, coins_reference == labels[0]) for m in result.masks)
    assert best_iou >= 0.85


def test_points_refine_a_box(lite_predictor, coins, coins_reference):
    """A negative point outside the coin must not make the mask grow past the box."""
    lite_predictor.set_image(coins)
    boxes, labels = _coin_boxes(coins_reference)
    x0, y0, x1, y1 = boxes[3]
    result = lite_predictor.predict(
        points_xy=[[(x0 + x1) / 2, (y0 + y1) / 2]],
        point_labels=[1],
        box_xyxy=boxes[3],
        multimask_output=False,
    )
    assert _iou(result.masks[0], coins_reference == labels[3]) >= 0.8


def test_16bit_microscopy_contrast_gives_the_same_objects(lite_predictor, coins, coins_reference):
    """The coins as a dim 16-bit image: percentile contrast must recover them."""
    dim16 = (coins.astype(np.uint16) * 40 + 1000).astype(np.uint16)
    lite_predictor.set_image(dim16)
    boxes, labels = _coin_boxes(coins_reference)
    result = lite_predictor.predict_boxes(boxes)
    ious = [
        _iou(m, coins_reference == label) for m, label in zip(result.masks, labels, strict=True)
    ]
    assert np.mean(ious) >= 0.88
