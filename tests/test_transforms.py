"""Coordinates between the original image and the model input, on a non-square image."""

import numpy as np
import pytest
import torch

from sam_viz.predictor.transforms import ImageFrame


@pytest.mark.parametrize(
    ("size", "image_size"), [((96, 64), 1024), ((300, 451), 256), ((64, 96), 1024)]
)
def test_points_and_boxes_round_trip(size, image_size):
    frame = ImageFrame(size, image_size)
    rng = np.random.default_rng(0)
    points = rng.random((20, 2)) * [size[1], size[0]]
    np.testing.assert_allclose(
        frame.points_to_image(frame.points_to_model(points)), points, atol=1e-9
    )
    boxes = np.concatenate([points[:10], points[10:]], axis=1)
    np.testing.assert_allclose(frame.boxes_to_image(frame.boxes_to_model(boxes)), boxes, atol=1e-9)


def test_longest_side_scaling_keeps_axes_apart():
    frame = ImageFrame((96, 64), 1024)  # tall image: height is the long side
    assert frame.input_size == (1024, 683)
    # the bottom-right corner (x=64, y=96) maps to the input's width and height
    np.testing.assert_allclose(frame.points_to_model([[64, 96]]), [[683, 1024]], atol=1e-9)


def test_upscale_logits_maps_a_low_res_square_back_to_the_right_place():
    frame = ImageFrame((96, 64), 256)  # low-res grid 64 covers the 256 input; input 256x171
    low = torch.full((1, 1, 64, 64), -10.0)
    # a block in input pixels x 64..128, y 128..192 -> low-res 16..32, 32..48
    low[..., 32:48, 16:32] = 10.0
    out = frame.upscale_logits(low)
    assert out.shape == (1, 1, 96, 64)
    mask = (out[0, 0] > 0).numpy()
    rows, cols = np.nonzero(mask)
    # in original pixels: x = 64 * 64/171 .. 128 * 64/171, y = 128 * 96/256 .. 192 * 96/256
    assert rows.min() == pytest.approx(48, abs=1) and rows.max() == pytest.approx(71, abs=1)
    assert cols.min() == pytest.approx(24, abs=1) and cols.max() == pytest.approx(47, abs=1)


def test_mask_to_low_res_and_back_is_close():
    frame = ImageFrame((96, 64), 256)
    mask = np.zeros((96, 64), bool)
    mask[20:60, 10:40] = True
    low = frame.mask_to_low_res(mask, 64)
    assert low.shape == (64, 64)
    back = frame.upscale_logits(torch.as_tensor(low - 0.5)[None, None])[0, 0].numpy() > 0
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.9


@pytest.mark.parametrize("original_size", [(1024, 1024), (96, 64), (333, 517), (50, 3000)])
@pytest.mark.parametrize("image_size", [256, 1024])
def test_upscale_masks_equals_thresholded_upscale_logits(original_size, image_size):
    frame = ImageFrame(original_size, image_size)
    side = image_size // 4
    generator = torch.Generator().manual_seed(0)
    low = torch.randn(2, 4, side, side, generator=generator) * 3 - 4  # scattered specks
    low[0, 1] = -1.0  # empty
    low[0, 2, 10:30, 20:25] = 5.0  # one block
    low[1, 3] = -low[1, 3]  # mostly positive
    expected = (frame.upscale_logits(low) > 0).numpy()
    got = frame.upscale_masks(low)
    assert got.dtype == bool and got.shape == expected.shape
    assert not got[0, 1].any()
    np.testing.assert_array_equal(got, expected)
