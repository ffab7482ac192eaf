"""Several boxes whose masks overlap: every object stays visible, and the user is told."""

from __future__ import annotations

import numpy as np

from sam_viz.masks import InstanceMask
from sam_viz.predictor.candidates import BoxesPrediction, Candidates, paint_smallest_on_top
from sam_viz.prompts import PromptSet
from sam_viz.windows.scaled import ScaledImage


def _square(shape, y0, x0, side):
    mask = np.zeros(shape, bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def test_a_small_object_inside_a_large_one_stays_visible_whatever_the_box_order():
    shape = (40, 60)
    small, large = _square(shape, 10, 10, 5), _square(shape, 0, 0, 30)
    for masks in ([small, large], [large, small]):
        labels, notes = paint_smallest_on_top([InstanceMask.from_full(m) for m in masks], shape)
        small_label = 1 + next(i for i, m in enumerate(masks) if m is small)
        assert (labels == small_label).sum() == 25  # painted last, on top
        assert (labels > 0).sum() == 900
        assert len(notes) == 1 and "25 px" in notes[0] and "smallest" in notes[0]


def test_many_boxes_keep_every_object_and_report_what_is_hidden():
    shape = (64, 64)
    rng = np.random.default_rng(0)
    masks = [
        _square(shape, int(y), int(x), int(s))
        for y, x, s in zip(
            rng.integers(0, 40, 300),
            rng.integers(0, 40, 300),
            rng.integers(3, 20, 300),
            strict=True,
        )
    ]
    prediction = BoxesPrediction(
        np.stack(masks), np.ones(300, np.float32), np.zeros((300, 4, 4)), np.ones(300, np.float32)
    )
    boxes = np.tile([0.0, 0, 10, 10], (300, 1))
    answer = Candidates.from_boxes(prediction, PromptSet(boxes_xyxy=boxes))
    assert answer.labels.dtype == np.uint16  # 300 objects do not fit uint8
    visible = np.bincount(answer.labels[0].ravel(), minlength=301)[1:]
    hidden = np.flatnonzero(visible == 0) + 1
    # Painted later over earlier (the old rule), most of these squares vanish.
    assert (visible > 0).sum() > 150
    note = next(n for n in answer.notes if "claimed by several boxes" in n)
    if len(hidden):
        assert f"object {hidden[0]}" in note


def test_windows_resolve_overlaps_as_the_core_rule(tiny_predictor):
    image = np.random.default_rng(1).integers(0, 255, (300, 340), dtype=np.uint8)
    boxes = np.array([[40, 40, 120, 120], [60, 60, 80, 80], [150, 20, 230, 90]], float)
    scaled = ScaledImage(tiny_predictor, image, diameter=40)
    answer = scaled.answer(PromptSet(boxes_xyxy=boxes))
    masks = [InstanceMask.from_full(m) for m in scaled.predict_boxes(boxes).masks]
    expected, notes = paint_smallest_on_top(masks, image.shape)
    np.testing.assert_array_equal(answer.labels[0], expected)
    assert set(notes) <= set(answer.notes)
