"""What the dock shows after the user's edits: clearing, committing, switching images,
slices and candidates (issue 19: bugs 1 and 4, honest candidates, stale status)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from napari_test_helpers import click, drag_box, press, wait_idle

from sam_viz._napari._objects import NOTHING_TO_COMMIT
from sam_viz.predictor import Candidates
from sam_viz.prompts import CANDIDATE_NAMES
from sam_viz.windows.scaled import ScaledImage

pytestmark = pytest.mark.gui


def _answered(widget) -> bool:
    return widget.session.candidates is not None


def _discs(radii):
    """A stand-in for the model: three candidates, discs of ``radii`` at the centre of the
    first box (or the first point), on the image's plane."""

    def answer(image, prompts, **_):
        height, width = image.shape
        if len(prompts.boxes_xyxy):
            x0, y0, x1, y1 = prompts.boxes_xyxy[0]
            x, y = (x0 + x1) / 2, (y0 + y1) / 2
        else:
            x, y = prompts.points_xy[0]
        rows, cols = np.mgrid[:height, :width]
        distance = np.hypot(cols + 0.5 - x, rows + 0.5 - y)
        labels = np.stack([(distance <= r).astype(np.uint8) for r in radii])
        return Candidates(
            labels=labels,
            iou_scores=np.array([0.6, 0.8, 0.7], np.float32),
            stability_scores=np.ones(3, np.float32),
            names=CANDIDATE_NAMES,
            n_objects=1,
        )

    return answer


def _buttons(widget) -> list[str]:
    return [button.text() for button in widget.controls.candidate_buttons]


def _nothing_shown(widget) -> bool:
    controls = widget.controls
    return (
        widget.session.candidates is None
        and not any(layer.data.any() for layer in widget.candidate_layers)
        and not any("IoU" in text for text in _buttons(widget))
        and not any(button.isChecked() for button in controls.candidate_buttons)
    )


def test_clear_and_commit_leave_no_mask_behind(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    monkeypatch.setattr(ScaledImage, "answer", _discs((4, 8, 12)))
    viewer, widget = make_widget(non_square_image, tiny_predictor)
    shapes, points = widget.shapes_layer, widget.points_layer

    def box_and_point() -> None:
        widget.start_box()
        drag_box(qtbot, shapes, (30, 12), (70, 40))
        wait_idle(qtbot, widget, lambda: _answered(widget))
        widget.start_points()
        click(points, (50, 26))
        wait_idle(qtbot, widget, lambda: _answered(widget))
        qtbot.wait(200)  # a quiet spell: the next edit is predicted at once

    # Clear prompts with a box and a point: nothing is left, and C commits nothing.
    box_and_point()
    widget.controls.clear_button.click()
    qtbot.wait(300)
    wait_idle(qtbot, widget)
    assert shapes.nshapes == 0 and not len(points.data)
    assert widget.session.candidates is None  # no mask came back from the box alone
    assert _nothing_shown(widget) and widget.status.startswith("No candidates")
    viewer.layers.selection.active = shapes
    press(viewer, "c")
    assert widget.objects_layer is None and widget.status == NOTHING_TO_COMMIT

    # Commit (C) with a box and a point: one object, then nothing more to commit.
    box_and_point()
    viewer.layers.selection.active = shapes
    press(viewer, "c")
    qtbot.wait(300)
    wait_idle(qtbot, widget)
    objects = widget.objects_layer
    assert objects is not None and set(np.unique(objects.data)) == {0, 1}
    press(viewer, "c")  # again: no second object from a mask that came back
    assert set(np.unique(objects.data)) == {0, 1} and widget.status == NOTHING_TO_COMMIT
    assert _nothing_shown(widget)


def _box_corners(shapes) -> list[np.ndarray]:
    return [np.asarray(vertices)[[0, 2]] for vertices in shapes.data]


def test_each_image_keeps_its_own_prompts(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    viewer, widget = make_widget(non_square_image, tiny_predictor)
    first = viewer.layers["image"]
    viewer.add_image(np.full((80, 120), 90, np.uint8), name="other")
    combo = widget.controls.image_combo
    shapes = widget.shapes_layer
    assert combo.currentText() == "image"

    drag_box(qtbot, shapes, (30, 12), (70, 40))
    wait_idle(qtbot, widget, lambda: _answered(widget))
    combo.setCurrentIndex(combo.findText("other"))  # the user picks the other image
    wait_idle(qtbot, widget)
    assert shapes.nshapes == 0 and not _answered(widget)  # the box stays with its image
    drag_box(qtbot, shapes, (10, 20), (40, 60))
    wait_idle(qtbot, widget, lambda: _answered(widget))
    combo.setCurrentIndex(combo.findText("image"))
    wait_idle(qtbot, widget, lambda: _answered(widget))
    np.testing.assert_allclose(_box_corners(shapes), [[[30, 12], [70, 40]]])

    # Removing the image while it embeds never moves its box onto the other image.
    started = []
    embed = ScaledImage.embedding

    def slow_embedding(*args, **kwargs):
        started.append(1)
        time.sleep(0.5)
        return embed(*args, **kwargs)

    monkeypatch.setattr(ScaledImage, "embedding", slow_embedding)
    widget.set_diameter(25.0)  # a new scale: the image is embedded again
    qtbot.waitUntil(lambda: bool(started), timeout=10_000)
    viewer.layers.remove(first)
    wait_idle(qtbot, widget)
    assert combo.currentText() == "other"
    np.testing.assert_allclose(_box_corners(shapes), [[[10, 20], [40, 60]]])


def test_keys_switch_candidates_and_the_status_follows(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    monkeypatch.setattr(ScaledImage, "answer", _discs((4, 8, 14)))  # three distinct ones
    viewer, widget = make_widget(non_square_image, tiny_predictor)
    drag_box(qtbot, widget.shapes_layer, (30, 12), (70, 40))
    wait_idle(qtbot, widget, lambda: _answered(widget))
    assert widget.session.candidates.offered == (0, 1, 2)
    assert widget.status.startswith("part shown") and "1/2/3 to switch" in widget.status
    for key, name in (("1", "subpart"), ("3", "whole"), ("2", "part")):
        press(viewer, key)
        index = CANDIDATE_NAMES.index(name)
        assert widget.status.startswith(f"{name} shown")
        assert widget.controls.candidate_buttons[index].isChecked()
        assert [layer.visible for layer in widget.candidate_layers] == [
            i == index for i in range(3)
        ]


def test_near_identical_candidates_are_one_offer(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    monkeypatch.setattr(ScaledImage, "answer", _discs((10, 10, 10.4)))
    viewer, widget = make_widget(non_square_image, tiny_predictor)
    drag_box(qtbot, widget.shapes_layer, (30, 12), (70, 40))
    wait_idle(qtbot, widget, lambda: _answered(widget))
    offered = widget.session.candidates.offered
    assert len(offered) == 1 and "near-identical" in widget.status
    assert "to switch" not in widget.status
    buttons = widget.controls.candidate_buttons
    assert [button.isEnabled() for button in buttons] == [i in offered for i in range(3)]
    other = next(i for i in range(3) if i not in offered)
    shown = [layer.visible for layer in widget.candidate_layers]
    press(viewer, str(other + 1))
    assert "not offered" in widget.status
    assert [layer.visible for layer in widget.candidate_layers] == shown


def test_empty_candidates_say_no_object_was_found(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    monkeypatch.setattr(ScaledImage, "answer", _discs((-1, -1, -1)))
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    drag_box(qtbot, widget.shapes_layer, (30, 12), (70, 40))
    wait_idle(qtbot, widget, lambda: _answered(widget))
    assert widget.status.startswith("No object found") and "IoU" not in widget.status
    assert "C to commit" not in widget.status


def test_several_boxes_offer_no_choice_of_candidate(
    make_widget, qtbot, tiny_predictor, non_square_image
):
    viewer, widget = make_widget(non_square_image, tiny_predictor)
    shapes = widget.shapes_layer
    drag_box(qtbot, shapes, (30, 12), (70, 40))
    drag_box(qtbot, shapes, (5, 5), (25, 30))
    wait_idle(qtbot, widget, lambda: _answered(widget) and widget.session.candidates.n_objects == 2)
    buttons = widget.controls.candidate_buttons
    assert sum(button.isEnabled() for button in buttons) == 1
    other = next(i for i, button in enumerate(buttons) if not button.isEnabled())
    press(viewer, str(other + 1))
    assert "each box has one mask" in widget.status


def test_buttons_forget_scores_after_commit_clear_and_slice_change(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    monkeypatch.setattr(ScaledImage, "answer", _discs((4, 8, 14)))
    stack = np.stack([non_square_image, non_square_image[::-1]])
    viewer, widget = make_widget(stack, tiny_predictor)
    shapes = widget.shapes_layer

    def draw() -> None:
        drag_box(qtbot, shapes, (30, 12), (70, 40))
        wait_idle(qtbot, widget, lambda: _answered(widget))
        assert all("IoU" in text for text in _buttons(widget))

    draw()
    viewer.dims.set_current_step(0, 1)  # a slice without prompts
    wait_idle(qtbot, widget)
    assert _nothing_shown(widget)
    viewer.dims.set_current_step(0, 0)
    wait_idle(qtbot, widget, lambda: _answered(widget))
    widget.controls.commit_button.click()
    wait_idle(qtbot, widget)
    assert _nothing_shown(widget)
    draw()
    widget.controls.clear_button.click()
    wait_idle(qtbot, widget)
    assert _nothing_shown(widget)


def test_undo_says_when_there_is_nothing_to_undo(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    monkeypatch.setattr(ScaledImage, "answer", _discs((4, 8, 14)))
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    undo = widget.controls.undo_button
    undo.click()
    assert widget.status.startswith("Nothing to undo")
    drag_box(qtbot, widget.shapes_layer, (30, 12), (70, 40))
    wait_idle(qtbot, widget, lambda: _answered(widget))
    widget.controls.commit_button.click()
    assert widget.objects_layer.data.any()
    undo.click()
    assert widget.status.startswith("Undid") and not widget.objects_layer.data.any()
    undo.click()
    assert widget.status == "Nothing to undo in 'SAM objects'."


def test_progress_and_messages_count_planes_from_one(
    make_widget, qtbot, tiny_predictor, non_square_image, monkeypatch
):
    from sam_viz.automatic.everything import EverythingSettings

    stack = np.stack([non_square_image, non_square_image[::-1], non_square_image[:, ::-1]])
    loose = EverythingSettings(prompts="points").with_overrides(points_per_side=2)
    viewer, widget = make_widget(stack, tiny_predictor, everything_settings=loose)
    texts: list[str] = []
    real = widget._embedding.set_progress
    monkeypatch.setattr(
        widget._embedding, "set_progress", lambda v, t, b=False: texts.append(t) or real(v, t, b)
    )
    widget.controls.embed_all_button.click()
    wait_idle(qtbot, widget, lambda: len(widget.embedded_planes) == 3, timeout=120_000)
    assert any(text.startswith("plane 1 of 3") for text in texts), texts
    assert not any("(0,)" in text for text in texts)
    viewer.dims.set_current_step(0, 1)
    widget.controls.everything_button.click()
    wait_idle(qtbot, widget, timeout=120_000)
    assert "on plane 2 of 3" in widget.status and "(1,)" not in widget.status
