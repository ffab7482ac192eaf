"""Honest candidates: near-duplicates and empty masks are not offered as a hierarchy."""

from __future__ import annotations

import numpy as np

from sam_viz.predictor.candidates import Candidates
from sam_viz.prompts import CANDIDATE_NAMES


def _candidates(masks, iou=(0.5, 0.9, 0.6), stability=(1.0, 1.0, 1.0), n_objects=1):
    return Candidates(
        labels=np.stack(masks).astype(np.uint8),
        iou_scores=np.array(iou, np.float32),
        stability_scores=np.array(stability, np.float32),
        names=CANDIDATE_NAMES,
        n_objects=n_objects,
    )


def _disc(radius, shape=(64, 64)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - 32) ** 2 + (xx - 32) ** 2 <= radius**2


def test_a_real_hierarchy_is_offered_whole():
    answer = _candidates([_disc(5), _disc(12), _disc(25)])
    assert answer.offered == (0, 1, 2) and answer.offer_note is None
    assert answer.describe(1) == f"part shown (predicted IoU 0.90, {_disc(12).sum()} px)"


def test_near_identical_candidates_are_one_answer():
    # Three masks of one coin (IoU 0.93-0.96 with each other), scored 0.26 / 0.95 / 0.28.
    answer = _candidates([_disc(19.5), _disc(20), _disc(20.5)], iou=(0.26, 0.95, 0.28))
    assert answer.offered == (1,)
    assert (
        answer.offer_note == "3 candidates are near-identical (IoU > 0.9): one answer is offered."
    )


def test_empty_candidates_are_never_offered_beside_a_real_one():
    empty = np.zeros((64, 64), bool)
    answer = _candidates([empty, _disc(8), _disc(20)], iou=(0.9, 0.3, 0.2), stability=(0, 0, 0))
    assert answer.best != 0 and 0 not in answer.offered
    assert answer.offer_note == "The subpart candidate is empty: 2 of the 3 are offered."
    assert answer.describe(0) == "subpart is empty (0 px); choose another candidate."


def test_three_empty_masks_say_that_nothing_was_found():
    empty = np.zeros((64, 64), bool)
    answer = _candidates([empty, empty, empty], iou=(0.07, 0.05, 0.02))
    assert len(answer.offered) == 1 and answer.offer_note is None
    assert answer.describe(answer.best).startswith("No object found")
    assert "shown" not in answer.describe(answer.best)


def test_several_boxes_offer_one_answer_without_choices():
    labels = np.zeros((64, 64), np.uint8)
    labels[:10, :10], labels[30:, 30:] = 1, 2
    answer = _candidates([labels] * 3, n_objects=2)
    assert answer.offered == (answer.best,) and answer.offer_note is None
    assert "for 2 objects" in answer.describe(answer.best)
