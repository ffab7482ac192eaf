"""Canvas geometry and pictures (plain NumPy)."""

from __future__ import annotations

import numpy as np
import pytest

from sam_viz.jupyter.display import DisplayFrame, outline, overlay_rgba, png_bytes, png_to_array
from sam_viz.render import CANDIDATE_COLORS, candidate_color


@pytest.mark.parametrize(
    ("image_hw", "display_hw"),
    [
        ((96, 64), (192, 128)),
        ((303, 384), (303, 384)),
        ((1500, 1000), (640, 427)),
        ((10, 3000), (2, 640)),
    ],
)
def test_fit(image_hw, display_hw):
    assert DisplayFrame.fit(image_hw, 640).display_hw == display_hw


def test_round_trip_and_nearest_sampling():
    frame = DisplayFrame.fit((1500, 1000), 640)
    x, y = frame.to_image(*frame.to_display(np.array([123.0, 456.0])))
    assert (x, y) == pytest.approx((123.0, 456.0))
    labels = np.zeros((1500, 1000), np.uint16)
    labels[300:600, 100:200] = 7
    shown = frame.resample_nearest(labels)
    assert shown.shape == (640, 427)
    rows, cols = np.nonzero(shown == 7)
    assert frame.to_image(cols.min(), rows.min()) == pytest.approx((100, 300), abs=3)
    with pytest.raises(ValueError, match="max_side"):
        DisplayFrame.fit((10, 10), 4)


def test_overlay_is_lossless_with_an_opaque_outline():
    mask = np.zeros((9, 7), bool)
    mask[2:7, 1:6] = True
    rgba = overlay_rgba(mask, (10, 20, 30), alpha=0.5)
    assert rgba[4, 3].tolist() == [10, 20, 30, 128]
    assert rgba[2, 3].tolist() == [10, 20, 30, 255]  # edge
    assert rgba[0, 0].tolist() == [0, 0, 0, 0]
    assert outline(mask).sum() == 5 * 5 - 3 * 3
    np.testing.assert_array_equal(png_to_array(png_bytes(rgba)), rgba)


def test_candidates_are_coloured_by_name():
    assert candidate_color("part") == CANDIDATE_COLORS["part"] != CANDIDATE_COLORS["subpart"]
    # SAM's single mask, and a name without a colour of its own, are drawn as "mask".
    assert candidate_color("") == candidate_color("mask") == CANDIDATE_COLORS["mask"]
