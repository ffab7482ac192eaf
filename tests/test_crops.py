"""Small objects: a crop around the prompt, encoded at the model's input size."""

from __future__ import annotations

import numpy as np
import pytest

from sam_viz.models.registry import MODELS
from sam_viz.windows.crops import (
    CROP_BELOW_MODEL_PIXELS,
    box_model_side,
    crop_window,
    predict_auto,
    predict_with_crop,
    should_crop,
)
from sam_viz.windows.tiling import WindowedImage

LITE = MODELS["lite_medsam"]


@pytest.mark.parametrize(
    "box", [(500, 400, 515, 418), (0, 0, 12, 9), (1010, 1015, 1024, 1024), (3, 600, 40, 620)]
)
def test_crop_window_is_a_square_around_the_box_inside_the_image(box) -> None:
    x0, y0, x1, y1 = crop_window(box, (1024, 1024), context=3.0)
    assert x1 - x0 == y1 - y0 >= 3 * max(box[2] - box[0], box[3] - box[1])
    assert 0 <= x0 <= box[0] and 0 <= y0 <= box[1] and box[2] <= x1 <= 1024 and box[3] <= y1 <= 1024


def test_nearby_boxes_share_a_window() -> None:
    a = crop_window((500, 400, 515, 418), (1024, 1024))
    b = crop_window((503, 402, 517, 419), (1024, 1024))
    assert a == b


def test_crop_window_of_a_large_box_is_clipped_to_the_image() -> None:
    assert crop_window((10, 10, 90, 50), (60, 100)) == (0, 0, 100, 60)


def test_crop_window_is_at_least_the_model_input() -> None:
    x0, y0, x1, y1 = crop_window((500, 400, 515, 418), (1024, 1024), min_side=256)
    assert x1 - x0 == y1 - y0 == 256 and x0 % 64 == 0 and y0 % 64 == 0


@pytest.mark.parametrize(
    ("box", "context", "message"),
    [
        ((1, 2, 3), 3.0, "4 finite"),
        ((0, 0, np.nan, 5), 3.0, "4 finite"),
        ((0, 0, 5, 5), 0.5, "context"),
    ],
)
def test_crop_window_bad_input(box, context, message) -> None:
    with pytest.raises(ValueError, match=message):
        crop_window(box, (100, 100), context=context)


def test_should_crop_small_boxes_only() -> None:
    small = (500, 500, 515, 515)  # 15 px of 1024: about 4 model pixels
    assert box_model_side(LITE, (1024, 1024), small) == pytest.approx(3.75)
    assert should_crop(LITE, (1024, 1024), small)
    big = (100, 100, 400, 400)
    assert box_model_side(LITE, (1024, 1024), big) > CROP_BELOW_MODEL_PIXELS
    assert not should_crop(LITE, (1024, 1024), big)
    # In a small image the crop would not magnify.
    assert not should_crop(LITE, (64, 64), (10, 10, 20, 20))


def test_predict_with_crop_pastes_the_window_back(tiny_predictor) -> None:
    image = np.random.default_rng(0).integers(0, 255, (300, 200), dtype=np.uint8)
    source = WindowedImage(image)
    before = tiny_predictor.embedding
    box = np.array([120, 40, 135, 58])
    result = predict_with_crop(tiny_predictor, source, box, points_xy=[[127, 50]], point_labels=[1])
    assert result.masks.shape == (3, 300, 200)
    x0, y0, x1, y1 = crop_window(box, (300, 200), min_side=128)
    assert (x1 - x0, y1 - y0) == (128, 128)  # the tiny model's input size: native resolution
    outside = np.ones((300, 200), bool)
    outside[y0:y1, x0:x1] = False
    assert not result.masks[:, outside].any()
    assert tiny_predictor.embedding is before
    local = tiny_predictor.predict(
        points_xy=[[127 - x0, 50 - y0]],
        box_xyxy=box - [x0, y0, x0, y0],
        embedding=source.embed(tiny_predictor, (x0, y0, x1, y1)),
    )
    assert np.array_equal(result.masks[:, y0:y1, x0:x1], local.masks)
    np.testing.assert_allclose(result.iou_scores, local.iou_scores)


def test_predict_auto_uses_the_whole_image_for_large_boxes(tiny_predictor) -> None:
    image = np.random.default_rng(1).integers(0, 255, (128, 128), dtype=np.uint8)
    result = predict_auto(tiny_predictor, image, [10, 10, 110, 100])
    whole = tiny_predictor.predict(
        box_xyxy=[10, 10, 110, 100], embedding=WindowedImage(image).embed(tiny_predictor)
    )
    assert np.array_equal(result.masks, whole.masks)


def small_blobs(
    side: int, count: int, seed: int = 0, radii: tuple[float, float] = (5, 9)
) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus-like ellipses (semi-axes in ``radii``) on a noisy background, and their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    truth = np.zeros((side, side), np.int32)
    per_row = int(np.ceil(np.sqrt(count)))
    spacing = side // (per_row + 1)
    for index in range(1, count + 1):
        row, col = divmod(index - 1, per_row)
        cx, cy = (col + 1) * spacing, (row + 1) * spacing
        ax, ay, angle = rng.uniform(*radii), rng.uniform(*radii), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        truth[(u / ax) ** 2 + (v / ay) ** 2 <= 1] = index
    image = np.where(truth > 0, 170.0, 50.0) + rng.normal(0, 15, truth.shape)
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(image, 1.0), 0, 255).astype(np.uint8), truth


def boxes_of(truth: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return np.array(
        [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(truth)],
        dtype=np.float64,
    )


@pytest.mark.slow
def test_crops_segment_small_nuclei_better(lite_predictor) -> None:
    image, truth = small_blobs(1024, 4)
    source = WindowedImage(image)
    whole = source.embed(lite_predictor)
    iou_whole, iou_crop = [], []
    for index, box in enumerate(boxes_of(truth), start=1):
        assert should_crop(lite_predictor.spec, image.shape, box)
        target = truth == index
        plain = lite_predictor.predict(box_xyxy=box, multimask_output=False, embedding=whole)
        zoomed = predict_with_crop(lite_predictor, source, box, multimask_output=False)
        for mask, scores in ((plain.masks[0], iou_whole), (zoomed.masks[0], iou_crop)):
            scores.append((mask & target).sum() / max((mask | target).sum(), 1))
    assert np.mean(iou_crop) >= 0.7, iou_crop
    assert np.mean(iou_crop) >= np.mean(iou_whole) + 0.15, (iou_whole, iou_crop)
