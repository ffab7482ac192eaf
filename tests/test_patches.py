"""Local decoding: boxes grouped onto patches of the embedding, and masks close to the grid's."""

from __future__ import annotations

import numpy as np
import pytest

from sam_viz.predictor.patches import LOCAL_CONTEXT, OUTSIDE_LOGIT, patch_groups
from sam_viz.synthetic.microscopy import TUNING_SEEDS, nuclei_field
from sam_viz.windows.scaled import ScaledImage


def test_each_box_sits_inside_its_patch_with_context():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 60, size=(200, 2))
    sides = rng.uniform(0.5, 12, size=(200, 1))
    cells = np.hstack([corners, np.minimum(corners + sides, 64)])
    groups = patch_groups(cells, (64, 64))
    seen = np.concatenate(list(groups.values()))
    assert sorted(seen.tolist()) == list(range(len(cells)))  # every box once
    for patch, members in groups.items():
        assert patch.row >= 0 and patch.row + patch.side <= 64
        assert patch.col >= 0 and patch.col + patch.side <= 64
        for x0, y0, x1, y1 in cells[members]:
            assert patch.col <= x0 and x1 <= patch.col + patch.side
            assert patch.row <= y0 and y1 <= patch.row + patch.side
            if patch.side < 64:  # the whole grid when the box needs more
                assert patch.side >= LOCAL_CONTEXT * max(x1 - x0, y1 - y0)
    # Boxes of one size share the patches of one lattice: at most 10 x 10 of side 12.
    same = np.hstack([corners, corners + 3.0])
    assert len(patch_groups(same, (64, 64))) <= 100


def test_a_box_near_the_edge_gets_a_patch_inside_the_grid():
    groups = patch_groups(np.array([[0.0, 60.0, 3.0, 63.5]]), (64, 48))
    (patch,) = groups
    assert patch.col == 0 and patch.row + patch.side == 64


def test_local_masks_match_the_whole_grid_on_small_objects(lite_predictor):
    field = nuclei_field(TUNING_SEEDS[3], (256, 256), diameter=16.0, density=0.3)
    scaled = ScaledImage(lite_predictor, field.image, diameter=field.diameter, fraction=0.08)
    window = scaled.grid.windows[0]
    embedding = scaled.embedding(window, window[2] - window[0])
    labels = field.labels[window[1] : window[3], window[0] : window[2]]
    boxes = []
    for label in np.unique(labels[labels > 0]):
        rows, cols = np.nonzero(labels == label)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    boxes = np.array(boxes, float)
    whole = lite_predictor.predict_boxes(boxes, embedding=embedding)
    local = lite_predictor.predict_boxes(boxes, embedding=embedding, local=True)
    agreement = [
        np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))
        for a, b in zip(whole.masks, local.masks, strict=True)
    ]
    assert len(boxes) >= 10
    assert np.mean(agreement) > 0.9
    assert np.abs(whole.iou_scores - local.iou_scores).mean() < 0.05
    # Away from a box's patch the logits are the "outside" value, never a mask.
    assert (local.low_res_logits == OUTSIDE_LOGIT).any(axis=(1, 2)).all()


@pytest.mark.parametrize("bad", [np.array([[5.0, np.nan, 4.0, 9.0]]), np.zeros((1, 3))])
def test_local_decoding_checks_its_boxes(tiny_predictor, bad):
    tiny_predictor.set_image(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError):
        tiny_predictor.predict_boxes(bad, local=True)
