"""Image intake: shapes, dtypes, contrast, NaN and constant images."""

import numpy as np
import pytest

from sam_viz.image import image_key, to_rgb01, validate_image


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((96, 64), np.uint8),
        ((96, 64), np.uint16),
        ((96, 64, 3), np.uint8),
        ((96, 64, 4), np.uint8),
        ((96, 64, 1), np.float32),
        ((96, 64), np.int32),
        ((96, 64), np.bool_),
        ((96, 64), np.float64),
    ],
)
def test_accepted_images_become_rgb01(shape, dtype):
    rng = np.random.default_rng(0)
    image = (rng.random(shape) * (1000 if dtype != np.bool_ else 1)).astype(dtype)
    rgb = to_rgb01(image)
    assert rgb.shape == (96, 64, 3)
    assert rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0


def test_uint8_is_taken_as_is():
    image = np.array([[0, 128], [255, 64]], dtype=np.uint8)
    rgb = to_rgb01(image)
    np.testing.assert_allclose(rgb[..., 0], image / 255.0, atol=1e-6)


def test_uint16_is_stretched_by_percentiles_ignoring_hot_pixels():
    rng = np.random.default_rng(1)
    image = rng.integers(1000, 2000, size=(100, 100)).astype(np.uint16)
    image[0, 0] = 65535  # a hot pixel must not flatten the contrast
    rgb = to_rgb01(image)[..., 0]
    assert rgb[1:, 1:].max() > 0.95 and rgb.min() == 0.0
    assert np.median(rgb) == pytest.approx(0.5, abs=0.1)


def test_nan_pixels_become_zero_and_stats_ignore_them():
    image = np.linspace(0, 10, 64 * 96, dtype=np.float32).reshape(96, 64)
    image[10, 10] = np.nan
    image[20, 20] = np.inf
    rgb = to_rgb01(image)
    assert np.isfinite(rgb).all()
    assert rgb[10, 10, 0] == 0.0
    assert rgb[-1, -1, 0] == pytest.approx(1.0)


def test_constant_image_is_valid_and_zero():
    rgb = to_rgb01(np.full((40, 30), 7.5))
    assert rgb.shape == (40, 30, 3) and not rgb.any()


def test_rgba_alpha_is_dropped():
    image = np.zeros((8, 8, 4), np.uint8)
    image[..., 3] = 255
    image[..., 0] = 255
    rgb = to_rgb01(image)
    assert rgb[..., 0].min() == 1.0 and rgb[..., 1:].max() == 0.0


@pytest.mark.parametrize(
    ("image", "error", "words"),
    [
        (np.zeros((3, 40, 50)), ValueError, "moveaxis"),
        (np.zeros((5, 40, 50, 2)), ValueError, "accepted shapes"),
        (np.zeros((40,)), ValueError, "accepted shapes"),
        (np.zeros((40, 50, 2)), ValueError, "accepted shapes"),
        (np.zeros((1, 50)), ValueError, "too small"),
        (np.full((10, 10), np.nan), ValueError, "no finite pixel"),
        (np.zeros((10, 10), dtype=complex), TypeError, "dtype"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "dtype"),
    ],
)
def test_bad_images_name_what_is_accepted(image, error, words):
    with pytest.raises(error, match=words):
        validate_image(image)


def test_bad_contrast_settings():
    with pytest.raises(ValueError, match="contrast"):
        to_rgb01(np.zeros((4, 4)), contrast="gamma")
    with pytest.raises(ValueError, match="percentiles"):
        to_rgb01(np.zeros((4, 4)), percentiles=(90, 10))


def test_image_key_depends_on_content_and_settings():
    a = np.zeros((10, 12), np.uint8)
    b = a.copy()
    b[3, 4] = 1
    assert image_key(a) == image_key(a.copy())
    assert image_key(a) != image_key(b)
    assert image_key(a) != image_key(a, contrast="minmax")
    assert image_key(a) != image_key(a.astype(np.uint16))
    assert image_key(a) != image_key(a.reshape(12, 10))
