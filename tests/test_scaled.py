"""Object scale: windows, routing prompts to them, and answers in whole-image pixels."""

from __future__ import annotations

import numpy as np
import pytest

from sam_viz.predictor.cache import EmbeddingCache
from sam_viz.prompts import PromptSet
from sam_viz.windows.geometry import WindowGrid, place_window, touches_inner_edge
from sam_viz.windows.scale import GOOD_FRACTIONS, OBJECT_FRACTION, ladder_side, scale_for
from sam_viz.windows.scaled import ScaledImage


def _box(x0, y0, x1, y1) -> PromptSet:
    return PromptSet(boxes_xyxy=np.array([[x0, y0, x1, y1]], float))


@pytest.mark.parametrize("shape", [(700, 500), (96, 64), (513, 1030), (40, 2000)])
def test_grid_inner_regions_tile_the_image_and_windows_hold_them_with_the_halo(shape):
    grid = WindowGrid.create(shape, side=100, halo=20)
    owner = np.zeros(shape, int)
    for (x0, y0, x1, y1), (ix0, iy0, ix1, iy1) in zip(grid.windows, grid.inners, strict=True):
        owner[iy0:iy1, ix0:ix1] += 1
        assert x0 <= ix0 and y0 <= iy0 and x1 >= ix1 and y1 >= iy1
        # Room of at least the halo around the inner region, except at image edges.
        assert ix0 == 0 or ix0 - x0 >= 20
        assert iy0 == 0 or iy0 - y0 >= 20
        assert ix1 == shape[1] or x1 - ix1 >= 20
        assert iy1 == shape[0] or y1 - iy1 >= 20
        assert x1 - x0 == min(100, shape[1]) and y1 - y0 == min(100, shape[0])
    assert (owner == 1).all()


def test_grid_refuses_bad_sides():
    with pytest.raises(ValueError, match="at least 8"):
        WindowGrid.create((100, 100), side=4, halo=0)
    with pytest.raises(ValueError, match="quarter"):
        WindowGrid.create((100, 100), side=40, halo=20)


def test_place_window_stays_inside_and_spans_short_sides():
    assert place_window((5, 5), 64, (300, 400)) == (0, 0, 64, 64)
    assert place_window((395, 295), 64, (300, 400)) == (336, 236, 400, 300)
    assert place_window((200, 20), 64, (30, 400)) == (168, 0, 232, 30)
    # Snapping moves a window by at most a quarter of its side.
    x0, _y0, x1, _y1 = place_window((201, 150), 64, (300, 400), snap=16)
    assert x0 % 16 == 0 and abs((x0 + x1) / 2 - 201) <= 16


def test_scale_magnifies_small_objects_and_keeps_large_ones_whole(tiny_spec):
    small = scale_for(tiny_spec, (2048, 2048), 20.0)
    assert not small.whole_image and small.side == ladder_side(20 / OBJECT_FRACTION)
    assert small.zoom == pytest.approx(tiny_spec.image_size / small.side)
    assert small.halo >= 20
    large = scale_for(tiny_spec, (300, 400), 90.0)  # 90 / 0.2 = 450 px: the whole image
    assert large.whole_image and large.side == 400
    coarse = scale_for(tiny_spec, (2048, 2048), 20.0, fraction=OBJECT_FRACTION / 2)
    assert coarse.side >= 2 * small.side - 16  # coarser windows for everything
    with pytest.raises(ValueError, match="positive"):
        scale_for(tiny_spec, (300, 400), -1.0)


@pytest.fixture
def big_image() -> np.ndarray:
    """A 700 x 500 (rows x cols) dim 16-bit image with small bright squares."""
    image = np.full((700, 500), 100, np.uint16)
    for y, x in ((100, 200), (600, 50), (350, 480), (10, 10)):
        image[y : y + 20, x : x + 20] = 400
    return image


def test_a_box_goes_to_a_grid_window_holding_it_with_context(tiny_predictor, big_image):
    scaled = ScaledImage(tiny_predictor, big_image, diameter=20)
    window, side = scaled.route(_box(198, 98, 222, 122))
    assert side == scaled.scale.side and window in scaled.grid.windows
    x0, y0, x1, y1 = window
    room = min(198 - x0 if x0 else 99, 98 - y0 if y0 else 99, x1 - 222, y1 - 122)
    assert room >= 0.5 * 24


def test_a_box_across_two_tiles_gets_a_window_centred_on_it(tiny_predictor, big_image):
    scaled = ScaledImage(tiny_predictor, big_image, diameter=20)
    cut = scaled.grid.inners[0][2]  # the first vertical cut between tiles
    box = (cut - 20, 300, cut + 20, 340)  # no grid window has half its side as room
    assert all(scaled.grid.holding(np.array(box, float), 20) != w for w in scaled.grid.windows)
    window, side = scaled.route(_box(*box))
    assert window not in scaled.grid.windows
    x0, y0, x1, y1 = window
    assert x0 <= box[0] - 20 and x1 >= box[2] + 20 and y0 <= box[1] - 20 and y1 >= box[3] + 20
    assert abs((x0 + x1) / 2 - cut) <= side / 4 + 1


def test_a_large_box_gets_a_window_sized_for_it(tiny_predictor, big_image):
    scaled = ScaledImage(tiny_predictor, big_image, diameter=20)
    window, side = scaled.route(_box(10, 10, 300, 290))
    assert side > scaled.scale.side
    low, high = GOOD_FRACTIONS
    assert low <= 290 / side <= high or window == (0, 0, 500, 700)


def test_answers_have_the_whole_image_shape_and_the_object_in_place(
    tiny_predictor, big_image, monkeypatch
):
    from sam_viz.windows import scaled as scaled_module

    monkeypatch.setattr(scaled_module, "MAX_REROUTES", 0)  # the random model's masks are cut
    scaled = ScaledImage(tiny_predictor, big_image, diameter=20)
    answer = scaled.answer(_box(198, 98, 222, 122))
    assert answer.labels.shape == (3, 700, 500)
    window, _ = scaled.route(_box(198, 98, 222, 122))
    x0, y0, x1, y1 = window
    outside = answer.masks.copy()
    outside[:, y0:y1, x0:x1] = False
    assert not outside.any()  # masks are pasted where the window is


def test_several_boxes_are_answered_one_mask_each_in_their_windows(tiny_predictor, big_image):
    scaled = ScaledImage(tiny_predictor, big_image, diameter=20)
    boxes = np.array([[198, 98, 222, 122], [48, 598, 72, 622], [470, 345, 500, 375]], float)
    answer = scaled.answer(PromptSet(boxes_xyxy=boxes).add_point(210, 110))
    assert answer.n_objects == 3 and answer.labels.shape == (3, 700, 500)
    assert any("unused" in note for note in answer.notes)
    prediction = scaled.predict_boxes(boxes)
    for index, box in enumerate(boxes):
        window, _ = scaled.route(PromptSet(boxes_xyxy=box[None]))
        x0, y0, x1, y1 = window
        mask = prediction.masks[index].copy()
        mask[y0:y1, x0:x1] = False
        assert not mask.any()


def test_non_square_windows_at_the_image_edge_keep_the_zoom(tiny_predictor):
    image = np.zeros((60, 2000), np.uint8)
    image[20:40, 990:1010] = 255
    scaled = ScaledImage(tiny_predictor, image, diameter=20)
    window, side = scaled.route(_box(985, 15, 1015, 45))
    embedding = scaled.embedding(window, side)
    assert embedding.frame.original_size == (60, window[2] - window[0])
    assert embedding.frame.scale == pytest.approx(tiny_predictor.spec.image_size / side)
    assert scaled.answer(_box(985, 15, 1015, 45)).labels.shape == (3, 60, 2000)


def test_the_diameter_override_and_with_diameter(tiny_predictor, big_image):
    scaled = ScaledImage(tiny_predictor, big_image, diameter=20)
    assert scaled.diameter == 20 and str(scaled.diameter_source) == "given"
    larger = scaled.with_diameter(80)
    assert larger.diameter == 80 and larger.scale.side > scaled.scale.side
    assert larger.rgb01 is scaled.rgb01  # the converted pixels are shared
    estimated = ScaledImage(tiny_predictor, big_image)
    assert estimated.diameter_source.kind in ("estimated", "default")


def test_contrast_comes_from_the_whole_image_not_the_window(tiny_predictor):
    image = np.full((400, 400), 100, np.uint16)
    image[:, 200:] = 1000  # the right half is bright
    image[50:70, 50:70] = 200  # a dim object on the dark left half
    scaled = ScaledImage(tiny_predictor, image, diameter=20)
    window, _side = scaled.route(_box(45, 45, 75, 75))
    x0, y0, x1, y1 = window
    assert x1 <= 200  # the window sees only the dark half
    pixels = scaled.rgb01[y0:y1, x0:x1]
    # Stretched with the whole image's limits: the dim object stays dim, not full white.
    assert pixels.max() < 0.5
    limits = ScaledImage(tiny_predictor, image, diameter=20, limits=(0.0, 2000.0))
    assert limits.rgb01.max() == pytest.approx(0.5)


def test_cache_keys_name_the_window_and_zoom(tiny_predictor, big_image, tmp_path):
    tiny_predictor.cache = EmbeddingCache(directory=tmp_path)
    scaled = ScaledImage(tiny_predictor, big_image, diameter=20)
    first, second = scaled.grid.windows[:2]
    side = scaled.scale.side
    assert scaled.window_key(first, side) != scaled.window_key(second, side)
    assert scaled.window_key(first, side) != scaled.window_key(first, 2 * side)
    assert scaled.window_key(first, side).startswith(scaled.key)
    scaled.embedding(first, side)
    assert scaled.is_embedded(first, side) and not scaled.is_embedded(second, side)
    files = list(tmp_path.rglob("*.pt"))
    assert len(files) == 1 and scaled.window_key(first, side) in files[0].name
    # Another zoom of the same window is another embedding.
    other = scaled.with_diameter(40)
    assert not other.is_embedded(first, other.scale.side)


def test_an_object_cut_by_its_window_is_answered_again_in_a_larger_window(
    tiny_predictor, monkeypatch
):
    image = np.zeros((600, 600), np.uint8)
    scaled = ScaledImage(tiny_predictor, image, diameter=20)
    calls = []
    real = tiny_predictor.predict

    def predict(*args, embedding, **kwargs):
        calls.append(embedding.frame.original_size)
        result = real(*args, embedding=embedding, **kwargs)
        if len(calls) == 1:  # the first window's mask reaches its edge
            result.masks[:, :, 0] = True
        return result

    monkeypatch.setattr(tiny_predictor, "predict", predict)
    scaled.answer(_box(290, 290, 310, 310))
    assert len(calls) == 2 and calls[1][0] > calls[0][0]


def test_touches_inner_edge_ignores_the_image_edge():
    assert touches_inner_edge((10, 50, 20, 60), (10, 0, 100, 100), (200, 200))
    assert not touches_inner_edge((0, 50, 20, 60), (0, 0, 100, 100), (200, 200))
    assert not touches_inner_edge((40, 40, 60, 60), (10, 10, 100, 100), (200, 200))


def test_prompts_outside_the_image_are_clear_errors(tiny_predictor, big_image):
    scaled = ScaledImage(tiny_predictor, big_image, diameter=20)
    with pytest.raises(ValueError, match="outside the image"):
        scaled.answer(PromptSet().add_point(600, 10))
    with pytest.raises(ValueError, match="empty"):
        scaled.answer(PromptSet())
