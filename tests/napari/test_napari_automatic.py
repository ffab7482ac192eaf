"""Segment everything and propagation through a stack, from the dock widget (run under xvfb)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from napari.layers import Labels
from napari_test_helpers import wait_idle
from qtpy.QtCore import QTimer

from sam_viz.automatic.everything import EverythingSettings, MaskGenerator

pytestmark = pytest.mark.gui

# Thresholds at zero: the tiny random model's masks are kept, so there is something to show.
LOOSE = EverythingSettings(prompts="points").with_overrides(
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    first_pass_iou_thresh=0.0,
    points_per_side=4,
    box_sizes=(64.0,),
)


def _slow_encoder(predictor, seconds: float) -> tuple[list[float], list]:
    """Make the image encoder sleep ``seconds`` first; returns ([start, end, ...], handles)."""
    encoder = predictor.model.image_encoder
    span: list[float] = []

    def slow_start(*_: object) -> None:
        span.append(time.monotonic())
        time.sleep(seconds)

    def end(*_: object) -> None:
        span.append(time.monotonic())

    return span, [encoder.register_forward_pre_hook(slow_start), encoder.register_forward_hook(end)]


def _everything_layers(viewer) -> list[Labels]:
    return [layer for layer in viewer.layers if layer.name.startswith("SAM everything")]


def _press(viewer, key: str) -> None:
    handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key(key)
    handler.release_key(key)


def test_segment_everything_fills_a_labels_layer_off_the_ui_thread(
    make_widget, qtbot, tiny_predictor, tiny_model, tiny_spec, non_square_image
):
    from sam_viz.predictor import Predictor

    image = non_square_image
    reference = Predictor(tiny_model, tiny_spec, device="cpu")  # same model, its own cache
    expected = MaskGenerator(reference, LOOSE).generate(image)
    assert expected.num_objects >= 1
    span, _ = _slow_encoder(tiny_predictor, 1.0)
    viewer, widget = make_widget(
        image,
        tiny_predictor,
        layer_kwargs={"scale": (2.0, 0.5), "translate": (10.0, -5.0)},
        everything_settings=LOOSE,
    )
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)

    widget.controls.everything_button.click()
    assert widget.busy and widget.controls.task_cancel_button.isEnabled()
    wait_idle(qtbot, widget)
    timer.stop()

    start, end = span[:2]
    assert end - start >= 1.0
    during = np.array([t for t in ticks if start <= t <= end])
    assert len(during) >= (end - start) / 0.02 / 2  # the UI thread kept running
    assert np.diff(np.r_[start, during, end]).max() < 0.25

    (layer,) = _everything_layers(viewer)
    assert widget.everything_layer is layer and layer.name == "SAM everything"
    np.testing.assert_array_equal(layer.data, expected.labels)
    np.testing.assert_allclose(layer.scale, (2.0, 0.5))
    np.testing.assert_allclose(layer.translate, (10.0, -5.0))
    ids = sorted(set(np.unique(layer.data)) - {0})
    assert sorted(layer.features["index"]) == ids
    areas = [int((layer.data == i).sum()) for i in layer.features["index"]]
    assert list(layer.features["area"]) == areas
    assert widget.objects_layer is None  # the user's objects are left alone
    assert f"Found {len(ids)} objects" in widget.status
    assert widget.controls.task_progress.value() == 1000


def test_segment_everything_on_a_stack_fills_the_plane_on_screen(
    make_widget, qtbot, tiny_predictor, non_square_image
):
    stack = np.stack([non_square_image, non_square_image[::-1], non_square_image[:, ::-1]])
    viewer, widget = make_widget(stack, tiny_predictor, everything_settings=LOOSE)
    objects = viewer.add_labels(np.zeros(stack.shape, np.uint32), name="SAM objects")
    objects.data[0, :5, :5] = 3
    before = objects.data.copy()
    viewer.dims.set_current_step(0, 1)
    assert widget.segment_everything()
    wait_idle(qtbot, widget)
    layer = widget.everything_layer
    expected = MaskGenerator(tiny_predictor, LOOSE).generate(stack[1]).labels
    assert layer.data.shape == stack.shape
    np.testing.assert_array_equal(layer.data[1], expected)
    assert not layer.data[0].any() and not layer.data[2].any()

    viewer.dims.set_current_step(0, 2)  # the next plane: ids continue, plane 1 stays
    widget.controls.everything_button.click()
    wait_idle(qtbot, widget)
    assert _everything_layers(viewer) == [layer]
    np.testing.assert_array_equal(layer.data[1], expected)
    plane_2 = layer.data[2][layer.data[2] > 0]
    assert plane_2.size and plane_2.min() > expected.max()
    np.testing.assert_array_equal(objects.data, before)


def test_cancel_leaves_no_partial_layer(make_widget, qtbot, tiny_predictor, non_square_image):
    _, handles = _slow_encoder(tiny_predictor, 0.5)
    viewer, widget = make_widget(non_square_image, tiny_predictor, everything_settings=LOOSE)
    widget.controls.everything_button.click()
    assert widget.controls.task_cancel_button.isEnabled()
    widget.controls.task_cancel_button.click()
    wait_idle(qtbot, widget)
    assert "cancelled" in widget.status
    assert not _everything_layers(viewer) and widget.everything_layer is None
    assert not widget.controls.task_cancel_button.isEnabled()

    for handle in handles:  # it runs again afterwards
        handle.remove()
    widget.controls.everything_button.click()
    wait_idle(qtbot, widget)
    assert widget.everything_layer is not None and widget.everything_layer.data.any()


def test_errors_become_messages(make_widget, qtbot, tiny_predictor, monkeypatch):
    from sam_viz.automatic.everything import MaskGenerator as Generator

    def broken(self, *args, **kwargs):
        raise ValueError("no objects for you")

    monkeypatch.setattr(Generator, "generate", broken)
    viewer, widget = make_widget(np.zeros((40, 50), np.uint8), tiny_predictor)
    widget.segment_everything()
    wait_idle(qtbot, widget)
    assert "Could not segment everything: no objects for you" in widget.status
    assert not _everything_layers(viewer)

    _viewer, empty = make_widget(None, tiny_predictor)
    assert not empty.segment_everything() and "No image layer" in empty.status
    assert not empty.propagate()


def test_propagate_needs_a_stack_and_a_committed_object(
    make_widget, qtbot, tiny_predictor, non_square_image
):
    viewer, widget = make_widget(non_square_image, tiny_predictor)
    widget.controls.propagate_button.click()
    running = widget.controls.task_cancel_button.isEnabled
    assert "needs a stack" in widget.status and not running()

    stack = np.stack([non_square_image] * 3)
    viewer.layers.clear()
    viewer.add_image(stack, name="stack")
    assert not widget.propagate()
    assert "Nothing to propagate" in widget.status and not running()
    objects = viewer.add_labels(np.zeros(stack.shape, np.uint32), name="SAM objects")
    objects.data[0, 30:40, 20:30] = 1  # on another slice than the one on screen (1)
    viewer.dims.set_current_step(0, 1)
    assert not widget.propagate()
    assert "Object 1 (the label selected in 'SAM objects') is not on this slice" in widget.status
    assert not running()


def spheres(shape: tuple[int, int, int], balls: list[tuple[int, int, int, float, float]]):
    """Bright balls (z, y, x, radius in slices, radius in pixels) on a dark noisy background."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    truth = np.zeros(shape, np.int32)
    for index, (z, y, x, rz, rxy) in enumerate(balls, start=1):
        inside = ((zz - z) / rz) ** 2 + ((yy - y) / rxy) ** 2 + ((xx - x) / rxy) ** 2 <= 1
        truth[inside] = index
    volume = np.where(truth > 0, 180.0, 45.0) + rng.normal(0, 15, shape)
    return np.clip(volume, 0, 255).astype(np.uint8), truth


@pytest.mark.slow
def test_propagate_writes_the_object_on_neighbouring_slices_and_undo_restores(
    make_widget, qtbot, lite_predictor
):
    stack, truth = spheres((7, 96, 128), [(3, 48, 64, 2.5, 30.0)])
    ball = truth == 1
    viewer, widget = make_widget(stack, lite_predictor)
    viewer.dims.set_current_step(0, 3)
    objects = viewer.add_labels(np.zeros(stack.shape, np.uint32), name="SAM objects")
    objects.data[3][ball[3]] = 5  # the committed object
    other = np.zeros(stack.shape, bool)
    other[4, 40:56, 60:70] = True  # an earlier object across the ball on slice 4
    objects.data[other] = 9
    objects.selected_label = 5
    before = objects.data.copy()

    viewer.layers.selection.active = objects
    _press(viewer, "Shift-P")  # the key, in the objects layer
    assert widget.busy
    wait_idle(qtbot, widget, timeout=120_000)

    assert widget.objects_layer is objects
    data = objects.data
    np.testing.assert_array_equal(data[other], 9)  # never overwritten
    np.testing.assert_array_equal(data[3], before[3])
    written = [z for z in range(7) if z != 3 and (data[z] == 5).any()]
    assert {2, 4} <= set(written), written
    for z in (2, 4):
        mask = (data[z] == 5) | (other[z] & ball[z])
        iou = (mask & ball[z]).sum() / (mask | ball[z]).sum()
        assert iou >= 0.8, f"slice {z}: IoU {iou:.2f}"
    assert not (data[~ball.any(axis=(1, 2))] == 5).any()  # nothing past the ball's ends
    assert "Propagated object 5" in widget.status

    widget.controls.undo_button.click()  # one undo step removes it all
    np.testing.assert_array_equal(objects.data, before)
