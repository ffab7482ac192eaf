"""The SAM widget driven the way the page drives it: ipycanvas mouse messages, button
clicks and client_ready events, with a spy on the predictor."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from sam_viz.jupyter.canvas import CANDIDATE, IMAGE, OBJECTS, PROMPTS
from sam_viz.jupyter.display import overlay_rgba, with_alpha
from sam_viz.jupyter.widget import SamWidget
from sam_viz.predictor import Candidates
from sam_viz.prompts import prompt_guide
from sam_viz.render import CANDIDATE_COLORS, labels_to_rgba


@pytest.fixture
def widget(tiny_predictor, non_square_image):
    """A widget on a 96 x 64 image (shown magnified 2x: canvas 192 x 128)."""
    w = SamWidget(non_square_image, tiny_predictor, background=False)
    yield w
    w.close()


def test_import_sam_viz_pulls_no_widget_library():
    code = (
        "import sys, sam_viz, sam_viz.jupyter, sam_viz.jupyter.anatomy, "
        "sam_viz.jupyter.session, sam_viz.jupyter.display; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('ipywidgets', 'ipycanvas')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_canvas_geometry_and_lossless_image_layer(tiny_predictor, non_square_image, canvas_log):
    widget = SamWidget(non_square_image, tiny_predictor, background=False)
    assert (widget.canvas.height, widget.canvas.width) == (192, 128)
    (picture,) = canvas_log.pictures(widget.canvas[IMAGE])
    expected = np.repeat(np.repeat(non_square_image, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(picture, with_alpha(np.stack([expected] * 3, axis=-1)))
    assert "ready" in widget.status.value.lower()


def test_drag_predicts_on_mouse_up_only(widget, spy, mouse, canvas_log):
    calls = spy(widget.predictor)
    mouse.send(widget.canvas, "mouse_down", 20, 30)
    for x, y in ((30, 40), (50, 70), (80, 140)):
        mouse.send(widget.canvas, "mouse_move", x, y)
    assert calls.count == 0, "mouse-move must never predict"
    # The rubber band is drawn on the prompts layer only, dashed, once per move.
    prompts = canvas_log.names(widget.canvas[PROMPTS])
    assert prompts.count("strokeRect") == 3 and "setLineDash" in prompts
    assert canvas_log.on(widget.canvas[CANDIDATE]) == []
    assert canvas_log.on(widget.canvas[IMAGE]) == []

    mouse.send(widget.canvas, "mouse_up", 90, 150)
    assert calls.count == 1
    # Canvas pixels (magnified 2x) become image pixels.
    np.testing.assert_allclose(calls.calls[0]["box_xyxy"], (10, 15, 45, 75))
    assert widget.prompts.box == (10, 15, 45, 75)
    assert widget.candidates is not None and widget.candidates.masks.shape == (3, 96, 64)
    assert widget.candidates.names == ("subpart", "part", "whole")
    (overlay,) = canvas_log.pictures(widget.canvas[CANDIDATE])
    np.testing.assert_array_equal(overlay, widget.candidate_rgba())


def test_click_adds_points_with_the_mode_toggle(widget, spy, mouse):
    calls = spy(widget.predictor)
    mouse.click(widget.canvas, 40, 60)
    widget.point_mode.value = 0
    mouse.send(widget.canvas, "mouse_down", 100, 100)
    mouse.send(widget.canvas, "mouse_up", 101, 101)  # within the click tolerance
    assert calls.count == 2
    np.testing.assert_allclose(calls.calls[-1]["points_xy"], [[20, 30], [50.5, 50.5]])
    np.testing.assert_array_equal(calls.calls[-1]["point_labels"], [1, 0])
    assert calls.calls[-1]["box_xyxy"] is None
    assert [p[2] for p in widget.prompts.points] == [1, 0]


def test_candidate_switch_redraws_the_overlay(widget, mouse, canvas_log):
    mouse.drag(widget.canvas, (10, 10), (120, 180))
    prediction = widget.candidates
    assert widget.selected == prediction.names[prediction.best]
    assert widget.candidate_buttons.value == prediction.best
    labels = [label for label, _ in widget.candidate_buttons.options]
    assert [label.split()[0] for label in labels] == ["subpart", "part", "whole"]
    assert labels[0].endswith(f"{prediction.iou_scores[0]:.2f}")

    best = prediction.best
    for index in [*(i for i in (0, 1, 2) if i != best), best]:
        canvas_log.clear()
        widget.candidate_buttons.value = index  # what a click on a toggle button does
        assert widget.selected == prediction.names[index]
        (overlay,) = canvas_log.pictures(widget.canvas[CANDIDATE])
        mask = prediction.masks[index]
        color = CANDIDATE_COLORS[prediction.names[index]]
        shown = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)
        np.testing.assert_array_equal(overlay, overlay_rgba(shown, color, 0.45))
        assert canvas_log.on(widget.canvas[PROMPTS]) == []  # nothing else is redrawn
    widget.select("subpart")
    assert widget.candidate_buttons.value == 0
    with pytest.raises(ValueError, match="No candidate 'huge'"):
        widget.select("huge")


def test_undo_commit_and_labels(widget, mouse, canvas_log):
    mouse.drag(widget.canvas, (10, 10), (120, 180))
    mouse.click(widget.canvas, 60, 90)
    assert len(widget.prompts.points) == 1
    first = widget.candidates
    widget.select(2)
    chosen = widget.mask.copy()
    assert chosen.any(), "the random model gives a non-empty 'whole' here"

    canvas_log.clear()
    widget.commit_button.click()
    assert widget.labels.dtype == np.uint32 and set(np.unique(widget.labels)) == {0, 1}
    np.testing.assert_array_equal(widget.labels == 1, chosen)
    assert widget.prompts.empty and widget.candidates is None
    (objects,) = canvas_log.pictures(widget.canvas[OBJECTS])
    shown = np.repeat(np.repeat(widget.labels, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(objects, labels_to_rgba(shown, alpha=0.45 * 0.8))
    assert "1 object committed" in widget.objects_info.value

    # A second object never overwrites the first.
    widget.add_box(0, 0, 64, 96)
    widget.select("whole")
    second = widget.mask.copy()
    assert widget.commit() == 2
    np.testing.assert_array_equal(widget.labels == 1, chosen)
    np.testing.assert_array_equal(widget.labels == 2, second & ~chosen)

    # Undo walks back exactly: commit 2, box, commit 1 (prompts and choice come back), point.
    widget.undo_button.click()
    np.testing.assert_array_equal(widget.labels == 2, np.zeros_like(chosen))
    assert widget.prompts.box == (0, 0, 64, 96)
    widget.undo()
    assert widget.prompts.empty
    assert widget.undo() is True
    assert not widget.labels.any()
    assert widget.selected == "whole" and len(widget.prompts.points) == 1
    np.testing.assert_array_equal(widget.candidates.masks, first.masks)
    widget.undo()
    assert widget.prompts.points == () and widget.prompts.box is not None
    widget.clear_button.click()
    assert widget.prompts.empty and widget.candidates is None
    widget.undo()
    assert widget.prompts.box is not None


def test_reconnect_redraws_every_layer_from_python_state(widget, mouse, canvas_log):
    mouse.drag(widget.canvas, (10, 10), (120, 180))
    widget.select("whole")
    widget.commit()
    mouse.drag(widget.canvas, (20, 20), (100, 160))
    mouse.click(widget.canvas, 50, 80)
    manager = widget.canvas[PROMPTS]._canvas_manager

    for layer in (IMAGE, OBJECTS, CANDIDATE, PROMPTS):
        canvas = widget.canvas[layer]
        canvas_log.clear()
        manager._current_canvas = canvas  # Python thinks this canvas is still current ...
        mouse.client_ready(canvas)
        # ... but a new page has no current canvas: the batch must name it again.
        assert canvas_log.switched_to(canvas)
        assert canvas_log.messages == 1, "one batched message per layer"
        drawn = canvas_log.on(canvas)
        assert drawn and drawn[0].name == "clear"
        others = {c.canvas for c in canvas_log.commands} - {f"IPY_MODEL_{canvas.model_id}"}
        assert not others

    def replay(layer):
        canvas_log.clear()
        mouse.client_ready(widget.canvas[layer])
        return canvas_log.pictures(widget.canvas[layer])

    image = np.repeat(np.repeat(widget.image, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(replay(IMAGE)[0], with_alpha(np.stack([image] * 3, -1)))
    shown = np.repeat(np.repeat(widget.labels, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(replay(OBJECTS)[0], labels_to_rgba(shown, alpha=0.45 * 0.8))
    np.testing.assert_array_equal(replay(CANDIDATE)[0], widget.candidate_rgba())
    canvas_log.clear()
    mouse.client_ready(widget.canvas[PROMPTS])
    names = canvas_log.names(widget.canvas[PROMPTS])
    assert names.count("strokeRect") == 2 and names.count("fillCircle") == 1


def test_prompt_errors_go_to_the_status_line(widget, mouse, spy):
    with pytest.raises(ValueError, match="outside the image"):
        widget.add_point(500, 10)
    assert "outside the image" in widget.status.value and "sam-viz-error" in widget.status.value
    assert widget.prompts.empty and widget.undo_button.disabled

    # From the page, nothing raises: the commit button with nothing to commit ...
    widget.commit_button.click()
    assert "Nothing to commit" in widget.status.value
    # ... and a drag released past the canvas edge is clamped to the image.
    calls = spy(widget.predictor)
    mouse.send(widget.canvas, "mouse_down", 100, 150)
    mouse.send(widget.canvas, "mouse_up", 140, 200)
    np.testing.assert_allclose(calls.calls[-1]["box_xyxy"], (50, 75, 64, 96))
    assert widget.prompts.box == (50, 75, 64, 96)
    assert "sam-viz-error" not in widget.status.value


def test_a_drag_leaving_the_canvas_stays_open(widget, spy, mouse, canvas_log):
    """Bug 8: the page sends nothing from outside the canvas, so leaving it must not end the
    drag where the pointer crossed the edge (a sliver box)."""
    calls = spy(widget.predictor)
    mouse.send(widget.canvas, "mouse_down", 30, 60)
    mouse.send(widget.canvas, "mouse_move", 5, 100)
    canvas_log.clear()
    mouse.send(widget.canvas, "mouse_out", -3, 110)  # leaves through the left edge
    assert calls.count == 0 and widget.prompts.empty, "no sliver box at the edge"
    band = [c for c in canvas_log.on(widget.canvas[PROMPTS]) if c.name == "strokeRect"]
    assert band[-1].args == [30.0, 60.0, -30.0, 50.0]  # clamped to x = 0
    assert "release the button over the image" in widget.status.value
    # Released outside: the drag goes on when the pointer is back, and a click ends it.
    mouse.send(widget.canvas, "mouse_move", 4, 170)
    mouse.send(widget.canvas, "mouse_down", 2, 176)
    mouse.send(widget.canvas, "mouse_up", 2, 176)
    assert calls.count == 1
    np.testing.assert_allclose(_ordered(calls.calls[0]["box_xyxy"]), (1, 30, 15, 88))
    # Held outside and released back over the canvas: the drag ends there.
    mouse.send(widget.canvas, "mouse_down", 20, 20)
    mouse.send(widget.canvas, "mouse_out", 60, -8)
    mouse.send(widget.canvas, "mouse_move", 100, 4)
    mouse.send(widget.canvas, "mouse_up", 110, 2)
    np.testing.assert_allclose(_ordered(calls.calls[-1]["box_xyxy"]), (10, 1, 55, 10))
    # Escape drops an open drag: nothing is predicted on the next release.
    mouse.send(widget.canvas, "mouse_down", 20, 20)
    mouse.send(widget.canvas, "mouse_out", 200, 30)
    widget.canvas._handle_custom_msg(
        {
            "event": "key_down",
            "key": "Escape",
            "shift_key": False,
            "ctrl_key": False,
            "meta_key": False,
        },
        [],
    )
    mouse.send(widget.canvas, "mouse_up", 100, 100)
    assert calls.count == 2
    # So does an action from the controls (the user went on without coming back).
    mouse.send(widget.canvas, "mouse_down", 20, 20)
    mouse.send(widget.canvas, "mouse_out", 200, 30)
    widget.clear_button.click()
    canvas_log.clear()
    mouse.send(widget.canvas, "mouse_move", 100, 100)
    mouse.send(widget.canvas, "mouse_up", 100, 100)
    assert calls.count == 2 and canvas_log.on(widget.canvas[PROMPTS]) == []


def _ordered(box):
    """A box (x0, y0, x1, y1) with its corners in order."""
    x0, y0, x1, y1 = box
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def test_missing_weights_are_reported_in_the_widget(monkeypatch, non_square_image, mouse):
    from sam_viz.models.checkpoints import CheckpointError
    from sam_viz.predictor import Predictor

    def no_weights(*args, **kwargs):
        raise CheckpointError("The embedded model is not installed: pip install --no-deps x")

    monkeypatch.setattr(Predictor, "from_pretrained", classmethod(no_weights))
    widget = SamWidget(non_square_image, background=False)  # no exception here
    assert "not installed" in widget.status.value and "sam-viz-error" in widget.status.value
    assert not widget.ready
    mouse.drag(widget.canvas, (10, 10), (100, 100))  # nothing raises from the page
    assert "not installed" in widget.status.value
    with pytest.raises(RuntimeError, match="not installed"):
        widget.add_box(1, 1, 30, 30)


def test_box_trained_model_guides_to_a_box(tiny_model, tiny_spec, non_square_image, mouse):
    from sam_viz.predictor import Predictor

    spec = dataclasses.replace(tiny_spec, prompt_kinds=frozenset({"box", "mask"}))
    widget = SamWidget(
        non_square_image, Predictor(tiny_model, spec, device="cpu"), background=False
    )
    # The model's own guide (prompt_guide) is shown, and nothing claims clicks refine.
    assert "trained with boxes only" in widget.guide.value
    assert prompt_guide(spec).split(":")[0] in widget.guide.value
    assert "refine" not in widget.guide.value + widget.status.value
    assert "drag a box" in widget.status.value.lower()
    mouse.click(widget.canvas, 40, 40)
    assert "sam-viz-warning" in widget.status.value and "draw a box" in widget.status.value
    assert widget.candidates is None and widget.prompts.empty  # refused: nothing changed
    mouse.drag(widget.canvas, (10, 10), (100, 100))
    assert "sam-viz-warning" not in widget.status.value and widget.candidates is not None


def test_large_image_is_shown_downscaled(tiny_predictor, spy, mouse):
    image = np.random.default_rng(0).integers(0, 4000, (1500, 1000), dtype=np.uint16)
    widget = SamWidget(image, tiny_predictor, background=False)
    assert (widget.canvas.height, widget.canvas.width) == (640, 427)
    calls = spy(tiny_predictor)
    mouse.send(widget.canvas, "mouse_down", 42.7, 64)
    mouse.send(widget.canvas, "mouse_up", 213.5, 320)
    x0, y0, x1, y1 = calls.calls[0]["box_xyxy"]
    np.testing.assert_allclose((x0, y0, x1, y1), (100, 150, 500, 750), rtol=1e-3)
    assert widget.candidates.masks.shape == (3, 1500, 1000)


def test_close_releases_every_widget(widget):
    parts = [
        widget.canvas,
        *(widget.canvas[i] for i in range(4)),
        widget.status,
        widget.candidate_buttons,
        widget,
    ]
    widget.close()
    assert all(part.comm is None for part in parts)


def test_background_embedding(tiny_predictor, non_square_image):
    widget = SamWidget(non_square_image, tiny_predictor)
    widget.wait(timeout=60)
    assert widget.ready and widget.progress.value == 1.0
    assert widget.scale.embedded  # a small image's windows are embedded at the start
    prediction = widget.add_box(5, 5, 40, 60)
    assert prediction.masks.shape == (3, 96, 64)


@pytest.mark.slow
def test_real_model_box_on_a_coin(lite_predictor, coins, coins_reference, mouse):
    from skimage.measure import regionprops

    widget = SamWidget(coins, lite_predictor, background=False)
    assert (widget.canvas.height, widget.canvas.width) == coins.shape  # shown 1:1
    coin = max(regionprops(coins_reference), key=lambda r: r.area)
    r0, c0, r1, c1 = coin.bbox
    # Bug 6: a lone click with the box-only default showed an empty "best" candidate. It is
    # refused: nothing is shown or offered, and the status says what to do instead.
    mouse.click(widget.canvas, *coin.centroid[::-1])
    assert widget.candidates is None and widget.candidate_rgba() is None
    assert widget.commit_button.disabled and widget.candidate_buttons.disabled
    assert "sam-viz-warning" in widget.status.value and "box" in widget.status.value
    mouse.drag(widget.canvas, (c0 - 3, r0 - 3), (c1 + 3, r1 + 3))
    reference = coins_reference == coin.label
    # LiteMedSAM's candidates include its single-mask output (token 0), the one it was
    # trained for; it scores highest on a coin.
    assert 0 in widget.candidates.token_indices
    assert widget.candidates.token_indices[widget.candidates.best] == 0
    mask = widget.mask
    iou = (mask & reference).sum() / (mask | reference).sum()
    assert iou >= 0.9, f"IoU {iou:.3f} of the shown candidate ({widget.selected})"
    assert widget.commit() == 1
    np.testing.assert_array_equal(widget.labels == 1, mask)


@pytest.mark.slow
def test_small_object_in_a_large_image_gets_the_magnified_answer(lite_predictor):
    from scale_fixtures import iou, small_object_in_a_large_field

    small = small_object_in_a_large_field()
    widget = SamWidget(small.image, lite_predictor, background=False)
    scale = widget.scale
    assert scale is not None and not scale.scale.whole_image
    assert widget.diameter_slider.value == pytest.approx(scale.diameter)
    assert "windows of" in widget.scale_info.value
    widget.add_box(*small.box_xyxy)
    assert iou(widget.mask, small.truth) >= 0.75
    # Bug 6 for a small object: neither the shown candidate nor an offered one is empty.
    prediction = widget.candidates
    assert all(prediction.areas[i] > 0 for i in prediction.offered)
    assert f"{widget.selected} shown" in widget.status.value
    assert " 0 px" not in widget.legend.value
    # The slider (or set_diameter) changes the scale later prompts are answered at.
    widget.diameter_slider.value = 60.0
    assert widget.scale.diameter == pytest.approx(60.0)
    assert widget.scale.scale.side > scale.scale.side
    widget.close()


# ---------------------------------------------------------------- candidates and status
def _candidates(areas, iou_scores, stability_scores, shape=(96, 64)) -> Candidates:
    """Three nested square-ish candidates of the given areas (0: empty), smallest first."""
    labels = np.zeros((len(areas), *shape), np.uint8)
    for layer, area in zip(labels, areas, strict=True):
        layer.reshape(-1)[:area] = 1  # the first rows: nested, and exactly `area` px
    return Candidates(
        labels=labels,
        iou_scores=np.asarray(iou_scores, np.float32),
        stability_scores=np.asarray(stability_scores, np.float32),
        names=("subpart", "part", "whole"),
        n_objects=1,
    )


@pytest.fixture
def answer_with(monkeypatch):
    """``answer_with(candidates)`` makes every prompt answered with ``candidates``."""
    from sam_viz.windows.scaled import ScaledImage

    def make(candidates: Candidates) -> None:
        monkeypatch.setattr(ScaledImage, "answer", lambda *args, **kwargs: candidates)

    return make


def test_an_empty_candidate_is_never_shown_or_offered(widget, mouse, answer_with):
    """Bug 6: with every stability 0 the ranking's argmax fell on an empty candidate, and
    the legend offered it: "subpart: IoU -0.066, 0 px (shown)"."""
    answer_with(_candidates([0, 192, 329], [-0.066, 0.31, 0.12], [0, 0, 0]))
    mouse.drag(widget.canvas, (10, 10), (120, 180))
    assert widget.selected == "part" and widget.mask.sum() == 192
    assert [value for _, value in widget.candidate_buttons.options] == [1, 2]
    entries = widget.legend.value.split("sam-viz-note")[0]
    assert "subpart" not in entries and " 0 px" not in entries
    assert "subpart candidate is empty" in widget.legend.value  # the offer note
    assert "part shown" in widget.status.value and "192 px" in widget.status.value
    assert not widget.commit_button.disabled
    with pytest.raises(ValueError, match="not offered"):
        widget.select("subpart")
    assert widget.selected == "part"


def test_three_empty_candidates_are_reported_as_nothing_found(widget, mouse, answer_with):
    answer_with(_candidates([0, 0, 0], [0.07, 0.05, 0.02], [0, 0, 0]))
    mouse.drag(widget.canvas, (10, 10), (120, 180))
    assert "No object found" in widget.status.value
    assert "shown" not in widget.status.value and "0.07" not in widget.status.value
    assert widget.commit_button.disabled
    widget.commit_button.click()  # from the page: said, not raised
    assert "Nothing to commit" in widget.status.value
    assert not widget.labels.any()


def test_near_duplicates_are_offered_once_with_a_note(widget, mouse, answer_with):
    answer_with(_candidates([1000, 1010, 1020], [0.26, 0.95, 0.28], [0.9, 0.9, 0.9]))
    mouse.drag(widget.canvas, (10, 10), (120, 180))
    assert widget.selected == "part"
    assert [value for _, value in widget.candidate_buttons.options] == [1]
    assert (
        "near-identical" in widget.legend.value and "one answer is offered" in widget.legend.value
    )
    assert "whole" not in widget.legend.value


def test_status_follows_the_candidate_commit_clear_and_undo(widget, mouse, answer_with):
    assert "Nothing to undo" not in widget.status.value
    assert widget.undo() is False
    assert "Nothing to undo" in widget.status.value and "Undid" not in widget.status.value

    answer_with(_candidates([100, 600, 2000], [0.5, 0.9, 0.4], [0.9, 0.9, 0.9]))
    mouse.drag(widget.canvas, (10, 10), (120, 180))
    assert "part shown" in widget.status.value
    widget.candidate_buttons.value = 2  # what pressing "whole" does
    assert "whole shown" in widget.status.value and "2000 px" in widget.status.value
    assert "<b>whole" in widget.legend.value

    widget.commit_button.click()
    assert "Committed object 1 (2000 px)" in widget.status.value
    assert widget.candidate_buttons.options == (("none yet", -1),)
    assert widget.candidate_buttons.disabled and widget.legend.value == ""
    assert widget.undo_button.tooltip == "Undo the commit of object 1"
    widget.undo_button.click()
    assert "Undid the commit of object 1" in widget.status.value
    assert "whole shown" in widget.status.value and widget.selected == "whole"
    assert not widget.labels.any()

    widget.clear_button.click()
    assert "cleared" in widget.status.value
    assert widget.candidate_buttons.options == (("none yet", -1),)
    assert widget.legend.value == "" and widget.commit_button.disabled
    widget.undo()
    assert "Undid the clear" in widget.status.value and widget.candidates is not None
    widget.undo()
    assert "Undid the last prompt" in widget.status.value and widget.prompts.empty
    widget.undo_button.click()
    assert "Nothing to undo" in widget.status.value and "Undid" not in widget.status.value


def test_overwrite_replaces_other_objects_and_undo_restores_them(
    tiny_predictor, non_square_image, answer_with
):
    """Bug 9: the error offered "commit with overwrite", which did not exist."""
    before = np.zeros((96, 64), np.uint16)
    before[:10] = 7  # an object covering the first 640 pixels
    before[20:30, 10:20] = 3
    widget = SamWidget(non_square_image, tiny_predictor, labels=before.copy(), background=False)
    answer_with(_candidates([300, 600, 900], [0.5, 0.9, 0.4], [0.9, 0.9, 0.9]))
    widget.add_box(1, 1, 60, 8)
    widget.select("subpart")  # its 300 px lie on object 7
    with pytest.raises(ValueError, match="Overwrite"):
        widget.commit()
    widget.commit_button.click()
    assert "tick Overwrite" in widget.status.value
    np.testing.assert_array_equal(widget.labels, before)

    widget.overwrite_check.value = True
    widget.commit_button.click()
    assert "Committed object 8 (300 px)" in widget.status.value
    expected = before.copy()
    expected.reshape(-1)[:300] = 8
    np.testing.assert_array_equal(widget.labels, expected)
    widget.undo()
    np.testing.assert_array_equal(widget.labels, before)  # exactly, object 7 whole again

    widget.select("whole")  # 900 px: 640 on object 7, 260 on background
    assert widget.commit(overwrite=True) == 8
    assert np.count_nonzero(widget.labels == 8) == 900
    widget.undo()
    assert widget.commit() == 8  # without overwrite only the background part
    assert np.count_nonzero(widget.labels == 8) == 260
    np.testing.assert_array_equal(widget.labels == 7, before == 7)
    widget.close()


def test_layout_fits_the_output_and_maps_the_mouse_exactly(widget, spy, mouse):
    """The canvas is scaled by the page (CSS) to the output's width and the window's height;
    ipycanvas reports canvas pixels whatever the scale, so the mapping stays exact."""
    layout = widget.canvas.layout
    assert layout.width.startswith("min(100%") and "100vh" in layout.width
    assert layout.height == "auto"
    aspect = f"{64 / 96:.6f}"
    assert aspect in layout.width  # the image's aspect ratio
    # The canvas comes first: nothing above it can change height and move it.
    main = [child for child in widget.children if child.layout.display != "none"]
    assert len(main) == 1 and main[0].children[0].children == (widget.canvas,)
    assert widget.status.layout.height == widget.status.layout.min_height
    calls = spy(widget.predictor)
    mouse.drag(widget.canvas, (12.5, 25.5), (101, 151))
    np.testing.assert_allclose(calls.calls[0]["box_xyxy"], (6.25, 12.75, 50.5, 75.5))
