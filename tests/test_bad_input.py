"""Bad input through the Python API: a clear error that says what to do, or the right answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_viz.image import image_key, to_rgb01, validate_image
from sam_viz.io import read_image


def test_a_path_instead_of_an_array_says_how_to_read_the_file(tiny_predictor, tmp_path):
    with pytest.raises(TypeError, match=r"not the path .*sam_viz\.io\.read_image"):
        tiny_predictor.set_image(str(tmp_path / "file.png"))
    with pytest.raises(TypeError, match="read_image"):
        tiny_predictor.set_image(tmp_path / "file.png")


def test_a_tensor_that_requires_grad_is_detached(tiny_predictor):
    pixels = np.random.default_rng(0).random((40, 50), dtype=np.float32)
    tensor = torch.from_numpy(pixels.copy()).requires_grad_(True)
    from_tensor = tiny_predictor.set_image(tensor)
    from_array = tiny_predictor.embed(pixels)
    assert from_tensor.image_key == from_array.image_key


def test_a_masked_arrays_mask_is_kept_out_of_the_contrast():
    data = np.full((20, 20), 100, np.uint16)
    data[5:10, 5:10] = 60000  # hot pixels the user masked out
    data[12:, :] = 200
    masked = np.ma.masked_array(data, mask=data == 60000)
    rgb = to_rgb01(masked)
    assert rgb[7, 7].max() == 0  # masked pixels are shown as 0 ...
    assert rgb[15, 15, 0] == pytest.approx(1.0)  # ... and do not flatten the stretch
    assert to_rgb01(data)[15, 15, 0] < 0.01  # which they would have done unmasked
    assert image_key(masked) != image_key(data)
    assert validate_image(np.ma.masked_array(data)).dtype == np.uint16  # nothing masked


def test_an_integer_low_res_sized_mask_input_gets_one_consistent_message(tiny_predictor):
    tiny_predictor.set_image(np.zeros((96, 64), np.uint8))
    low = tiny_predictor.spec.low_res_size
    with pytest.raises(ValueError) as err:
        tiny_predictor.predict(box_xyxy=[5, 5, 30, 30], mask_input=np.ones((low, low), np.int64))
    message = str(err.value)
    assert "int64" in message and "(96, 64)" in message and "float" in message


def test_a_text_file_named_png_is_not_taken_for_a_missing_plugin(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    with pytest.raises(ValueError) as err:
        read_image(path)
    assert "not a readable PNG file" in str(err.value)
    assert "pip" not in str(err.value) and "pyav" not in str(err.value)
