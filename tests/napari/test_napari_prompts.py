"""Layer data to SAM prompts and plane selection, without a viewer."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Points, Shapes

from sam_viz._napari._prompts import (
    box_from_vertices,
    collect_prompts,
    on_plane,
    rasterise,
    to_image_coords,
)
from sam_viz._napari._slicing import (
    all_planes,
    current_plane,
    display_problem,
    plane_from_data_point,
    plane_geometry,
)

IMAGE_HW = (96, 64)  # rows x cols, non-square to catch swapped axes


def test_points_become_xy_with_labels():
    coords = np.array([[10.0, 20.0], [50.0, 5.0]])  # (row, col)
    prompts = collect_prompts(IMAGE_HW, (), (coords, ["positive", "negative"]))
    # (x, y) = (col, row) + 0.5: napari's pixel centres are whole numbers, SAM's are halves
    np.testing.assert_array_equal(prompts.points_xy, [[20.5, 10.5], [5.5, 50.5]])
    np.testing.assert_array_equal(prompts.point_labels, [1, 0])
    assert not len(prompts.boxes_xyxy) and prompts.mask is None


def test_rectangle_becomes_an_xyxy_box():
    corners_rc = np.array([[30.0, 12.0], [30.0, 40.0], [70.0, 40.0], [70.0, 12.0]])
    np.testing.assert_array_equal(box_from_vertices(corners_rc), [12.5, 30.5, 40.5, 70.5])
    prompts = collect_prompts(IMAGE_HW, (), shapes=[(corners_rc, "rectangle")])
    np.testing.assert_array_equal(prompts.boxes_xyxy, [[12.5, 30.5, 40.5, 70.5]])


def test_a_flat_rectangle_is_skipped_not_an_error():
    flat = np.array([[30.0, 12.0], [30.0, 12.0], [30.0, 12.0], [30.0, 12.0]])
    assert collect_prompts(IMAGE_HW, (), shapes=[(flat, "rectangle")]).empty


def test_polygon_and_ellipse_are_rasterised_into_one_mask():
    triangle = np.array([[10.0, 10.0], [10.0, 30.0], [30.0, 10.0]])
    ellipse = np.array([[50.0, 20.0], [50.0, 40.0], [80.0, 40.0], [80.0, 20.0]])  # bbox corners
    prompts = collect_prompts(IMAGE_HW, (), shapes=[(triangle, "polygon"), (ellipse, "ellipse")])
    assert prompts.mask is not None and prompts.mask.shape == IMAGE_HW
    assert prompts.mask[12, 12] and prompts.mask[65, 30]  # inside each
    assert not prompts.mask[28, 28]  # outside the triangle's hypotenuse
    assert not prompts.mask[51, 21]  # a bounding-box corner, outside the ellipse
    area = rasterise(ellipse, "ellipse", IMAGE_HW).sum()
    assert area == pytest.approx(np.pi * 15 * 10, rel=0.08)


def test_lines_are_ignored_with_a_note():
    line = np.array([[10.0, 10.0], [20.0, 20.0]])
    prompts = collect_prompts(IMAGE_HW, (), shapes=[(line, "line")])
    assert prompts.empty
    assert "ignored" in prompts.notes[0]


def test_only_prompts_on_the_plane_are_used():
    coords = np.array([[2.0, 10.0, 10.0], [3.0, 20.0, 20.0]])  # (z, row, col)
    box_z3 = np.array([[3.0, 5, 5], [3.0, 5, 25], [3.0, 25, 25], [3.0, 25, 5]])
    prompts = collect_prompts(
        IMAGE_HW, (3,), (coords, ["positive", "positive"]), [(box_z3, "rectangle")]
    )
    np.testing.assert_array_equal(prompts.points_xy, [[20.5, 20.5]])
    assert len(prompts.boxes_xyxy) == 1
    assert collect_prompts(
        IMAGE_HW, (4,), (coords, ["positive"] * 2), [(box_z3, "rectangle")]
    ).empty
    np.testing.assert_array_equal(on_plane(coords, (2,)), [True, False])


def test_prompt_outside_the_image_is_a_clear_error():
    with pytest.raises(ValueError, match="outside the image"):
        collect_prompts(IMAGE_HW, (), (np.array([[10.0, 200.0]]), ["positive"]))
    with pytest.raises(ValueError, match="not one of"):
        collect_prompts(IMAGE_HW, (), (np.array([[10.0, 20.0]]), ["maybe"]))


def test_signature_changes_with_the_prompts():
    a = collect_prompts(IMAGE_HW, (), (np.array([[10.0, 20.0]]), ["positive"]))
    b = collect_prompts(IMAGE_HW, (), (np.array([[10.0, 20.0]]), ["negative"]))
    c = collect_prompts(IMAGE_HW, (), (np.array([[10.0, 20.0]]), ["positive"]))
    assert a.signature() != b.signature()
    assert a.signature() == c.signature()


def test_layer_scale_and_translate_are_honoured():
    """A point drawn in a layer with its own scale lands on the right image pixel."""
    image = Image(np.zeros((4, *IMAGE_HW)), scale=(5.0, 0.5, 0.5), translate=(0.0, 10.0, 20.0))
    points = Points(np.array([[3.0, 40.0, 30.0]]), scale=(5.0, 1.0, 1.0))  # world (15, 40, 30)
    coords = to_image_coords(points.data, points, image)
    # world z 15 / 5 = plane 3; world row (40 - 10) / 0.5 = 60; col (30 - 20) / 0.5 = 20
    np.testing.assert_allclose(coords, [[3.0, 60.0, 20.0]])
    shapes = Shapes(ndim=3)
    assert to_image_coords(np.zeros((0, 3)), shapes, image).shape == (0, 3)


def test_plane_geometry_and_current_plane():
    assert plane_geometry((7, 96, 64), rgb=False) == ((7,), (96, 64))
    assert plane_geometry((96, 64, 3), rgb=True) == ((), (96, 64))
    assert plane_geometry((2, 5, 96, 64, 3), rgb=True) == ((2, 5), (96, 64))
    with pytest.raises(ValueError, match="two spatial axes"):
        plane_geometry((10, 3), rgb=True)
    assert plane_from_data_point([6.7, 1.0, 1.0], (7,)) == (6,)  # clipped to the stack
    assert plane_from_data_point([2.4, 1.0, 1.0], (7,)) == (2,)
    image = Image(np.zeros((7, *IMAGE_HW)), scale=(2.0, 1.0, 1.0))
    assert current_plane(image, [8.0, 0.0, 0.0], (7,)) == (4,)
    assert list(all_planes((2, 2))) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert list(all_planes(())) == [()]


def test_display_problem_names_what_to_do():
    assert display_problem(2, (1, 2), 3) is None
    assert "2-D" in display_problem(3, (0, 1, 2), 3)
    assert "axes" in display_problem(2, (0, 2), 3)
