"""Prompt validation, the napari flip and candidate ordering."""

import numpy as np
import pytest

from sam_viz.prompts import napari_to_xy, order_by_area, validate_prompts

HW = (96, 64)  # non-square: height 96, width 64


def test_valid_prompts_become_arrays_with_default_positive_labels():
    prompts = validate_prompts(HW, points_xy=[[10, 80]], boxes_xyxy=[5, 6, 30, 40])
    assert prompts.points_xy.shape == (1, 2)
    assert prompts.point_labels.tolist() == [1]
    assert prompts.boxes_xyxy.tolist() == [[5, 6, 30, 40]]
    assert prompts.kinds == {"point", "box"}


def test_box_corners_are_sorted_and_clipped_to_the_image():
    prompts = validate_prompts(HW, boxes_xyxy=[[50, 90, -5, 10]])
    assert prompts.boxes_xyxy.tolist() == [[0, 10, 50, 90]]
    prompts = validate_prompts(HW, boxes_xyxy=[[40, 80, 100, 200]])
    assert prompts.boxes_xyxy.tolist() == [[40, 80, 64, 96]]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "empty"),
        ({"points_xy": [[70, 10]]}, "outside the image"),  # x beyond width 64
        ({"points_xy": [[10, -1]]}, "outside the image"),
        ({"points_xy": [[10, 10]], "point_labels": [1, 0]}, "one label per point"),
        ({"points_xy": [[10, 10]], "point_labels": [2]}, "1 \\(positive\\) or 0"),
        ({"point_labels": [1]}, "without points_xy"),
        ({"points_xy": [[np.nan, 3]]}, "NaN"),
        ({"points_xy": [[1, 2, 3]]}, "shape"),
        ({"boxes_xyxy": [100, 100, 120, 130]}, "outside the image"),
        ({"boxes_xyxy": [10, 10, 10, 30]}, "no area"),
        ({"boxes_xyxy": [10, 10, np.inf, 30]}, "NaN or inf"),
    ],
)
def test_bad_prompts_raise_clear_errors(kwargs, words):
    with pytest.raises(ValueError, match=words):
        validate_prompts(HW, **kwargs)


def test_prompts_of_wrong_type():
    with pytest.raises(TypeError, match="numbers"):
        validate_prompts(HW, points_xy=[["a", "b"]])


def test_napari_row_col_becomes_x_y_using_last_two_axes_and_pixel_corners():
    rc = np.array([[3.0, 10.0, 20.0]])  # (z, row, col)
    np.testing.assert_array_equal(napari_to_xy(rc), [[20.5, 10.5]])
    # the first pixel's top-left corner in napari (-0.5, -0.5) is SAM's image origin
    np.testing.assert_array_equal(napari_to_xy([[-0.5, -0.5]]), [[0.0, 0.0]])


def test_order_by_area_is_smallest_first_and_stable():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2] = True  # 8 px
    masks[1, :1, :1] = True  # 1 px
    masks[2] = True  # 16 px
    assert order_by_area(masks).tolist() == [1, 0, 2]


def test_the_guide_does_not_promise_that_clicks_refine_a_box():
    from sam_viz.models.registry import MODELS
    from sam_viz.prompts import prompt_guide

    box_only = prompt_guide(MODELS["lite_medsam"])
    assert "usually makes the mask worse" in box_only and "redraw the box" in box_only
    assert MODELS["lite_medsam_clicks"].title in box_only  # where clicks matter
    assert "refine" not in box_only and "adjust" not in box_only
    assert "refine" not in prompt_guide(MODELS["lite_medsam_clicks"])
