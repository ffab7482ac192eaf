"""The widget's "Everything" button: a background run with progress and Stop, and the label
image it finds drawn as an outlined overlay (no browser)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sam_viz.automatic.everything import EverythingSettings, MaskGenerator
from sam_viz.jupyter import widget as widget_module
from sam_viz.jupyter.canvas import EVERYTHING, OBJECTS
from sam_viz.jupyter.display import labels_overlay_rgba
from sam_viz.jupyter.widget import SamWidget
from sam_viz.predictor import Cancelled, Predictor

# Thresholds at zero: the tiny random model's masks are kept, so there is something to show.
LOOSE = EverythingSettings(prompts="points").with_overrides(
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    first_pass_iou_thresh=0.0,
    points_per_side=4,
    box_sizes=(64.0,),
)


class GatedGenerator(MaskGenerator):
    """A mask generator that waits for ``gate`` before it starts (a slow model)."""

    gate = threading.Event()
    started = threading.Event()

    def generate(self, image, **kwargs):
        GatedGenerator.started.set()
        assert GatedGenerator.gate.wait(30), "the test never opened the gate"
        return super().generate(image, **kwargs)


@pytest.fixture
def gated(monkeypatch):
    GatedGenerator.gate = threading.Event()
    GatedGenerator.started = threading.Event()
    monkeypatch.setattr(widget_module, "MaskGenerator", GatedGenerator)
    return GatedGenerator


def test_everything_runs_in_the_background_and_draws_the_labels(
    tiny_predictor, tiny_model, tiny_spec, non_square_image, canvas_log, mouse, gated
):
    reference = Predictor(tiny_model, tiny_spec, device="cpu")
    expected = MaskGenerator(reference, LOOSE).generate(non_square_image)
    assert expected.num_objects >= 1
    widget = SamWidget(
        non_square_image, tiny_predictor, background=False, everything_settings=LOOSE
    )
    canvas_log.clear()

    widget.everything_button.click()
    # The click has returned while the generator is still held at the gate: the run goes on
    # in the background (run in the kernel thread, it would have ended by now, failing).
    assert gated.started.wait(10)
    run = widget.everything_panel.run
    assert not gated.gate.is_set()
    assert run.running and widget.everything is None
    assert widget.everything_button.disabled
    # Shown by visibility, so nothing below them moves when they come and go.
    assert widget.everything_panel.progress.layout.visibility == "visible"
    assert widget.everything_panel.stop_button.layout.visibility == "visible"
    # The widget still answers prompts meanwhile.
    widget.add_box(5, 5, 40, 60)
    assert widget.candidates is not None

    gated.gate.set()
    found = run.wait(timeout=60)
    np.testing.assert_array_equal(found.labels, expected.labels)
    assert widget.everything is found
    assert widget.everything_panel.progress.value == 1.0
    assert widget.everything_panel.progress.layout.visibility == "hidden"
    assert not widget.everything_button.disabled
    count = expected.num_objects
    assert f"Found {count} object" in widget.status.value
    (overlay,) = canvas_log.pictures(widget.canvas[EVERYTHING])
    shown = np.repeat(np.repeat(expected.labels, 2, axis=0), 2, axis=1)  # canvas is 2x
    np.testing.assert_array_equal(overlay, labels_overlay_rgba(shown, alpha=0.45 * 0.6))
    assert canvas_log.on(widget.canvas[OBJECTS]) == []  # committed objects left alone
    assert not widget.labels.any()

    canvas_log.clear()  # a reconnected page gets the overlay back
    mouse.client_ready(widget.canvas[EVERYTHING])
    (again,) = canvas_log.pictures(widget.canvas[EVERYTHING])
    np.testing.assert_array_equal(again, overlay)
    widget.close()


def test_stop_cancels_and_draws_nothing(tiny_predictor, non_square_image, canvas_log, gated):
    widget = SamWidget(
        non_square_image, tiny_predictor, background=False, everything_settings=LOOSE
    )
    canvas_log.clear()
    run = widget.segment_everything()
    assert gated.started.wait(10)
    with pytest.raises(ValueError, match="running already"):
        widget.segment_everything()
    widget.everything_button.click()  # from the page: said, not raised
    assert "running already" in widget.status.value

    widget.everything_panel.stop_button.click()
    gated.gate.set()
    with pytest.raises(Cancelled):
        run.wait(timeout=60)
    assert widget.everything is None
    assert "stopped" in widget.status.value and "sam-viz-warning" in widget.status.value
    assert canvas_log.on(widget.canvas[EVERYTHING]) == []
    assert not widget.everything_button.disabled
    widget.close()


def test_errors_go_to_the_status_line(tiny_predictor, non_square_image, monkeypatch):
    def broken(self, image, **kwargs):
        raise ValueError("no objects for you")

    monkeypatch.setattr(MaskGenerator, "generate", broken)
    widget = SamWidget(non_square_image, tiny_predictor, background=False)
    run = widget.segment_everything(background=False)
    assert not run.running
    with pytest.raises(ValueError, match="no objects for you"):
        run.wait()
    assert "Could not segment everything: no objects for you" in widget.status.value
    assert "sam-viz-error" in widget.status.value and widget.everything is None
    widget.close()


def test_the_result_is_drawn_in_the_kernel_thread(tiny_predictor, non_square_image, monkeypatch):
    """In a kernel (a running event loop) the run's thread never draws on the canvas."""
    import asyncio

    from sam_viz.jupyter.canvas import PromptCanvas

    drawn_in: list[int] = []
    real = PromptCanvas.show_everything

    def recording(self, labels, **kwargs):
        drawn_in.append(threading.get_ident())
        real(self, labels, **kwargs)

    monkeypatch.setattr(PromptCanvas, "show_everything", recording)
    widget = SamWidget(
        non_square_image, tiny_predictor, background=False, everything_settings=LOOSE
    )

    async def kernel() -> None:
        run = widget.segment_everything()
        for _ in range(3000):
            if drawn_in:
                break
            await asyncio.sleep(0.01)
        assert run.wait(timeout=10) is widget.everything

    asyncio.run(kernel())
    assert drawn_in and set(drawn_in) == {threading.get_ident()}
    assert widget.everything is not None
    widget.close()


@pytest.fixture
def found_widget(tiny_predictor, non_square_image, monkeypatch):
    """A widget whose "Everything" found objects 1-3 on the 96 x 64 image (a known run)."""
    from sam_viz.automatic.results import Segmentation
    from sam_viz.masks import InstanceMask

    labels = np.zeros((96, 64), np.int32)
    labels[5:15, 5:15] = 1
    labels[30:50, 20:40] = 2
    labels[70:90, 40:60] = 3
    result = Segmentation(
        labels=labels,
        masks=tuple(InstanceMask.from_full(labels == i) for i in (1, 2, 3)),
        predicted_iou=np.full(3, 0.9, np.float32),
        stability_score=np.full(3, 0.95, np.float32),
        prompts=np.zeros((3, 4)),
        mask_labels=np.array([1, 2, 3]),
    )
    monkeypatch.setattr(MaskGenerator, "generate", lambda *args, **kwargs: result)
    widget = SamWidget(non_square_image, tiny_predictor, background=False)
    widget.segment_everything(background=False)
    assert widget.everything is result
    yield widget
    widget.close()


def test_found_objects_can_be_hidden_shown_and_cleared(found_widget, canvas_log):
    widget = found_widget
    panel = widget.everything_panel
    assert panel.found_row.layout.display is None  # the controls of a result are shown
    canvas_log.clear()
    panel.show_check.value = False  # what unticking "Show" does
    assert canvas_log.names(widget.canvas[EVERYTHING]) == ["clear"]  # nothing drawn
    assert widget.everything is not None  # hidden, not forgotten
    widget.show_everything(True)
    assert panel.show_check.value
    (overlay,) = canvas_log.pictures(widget.canvas[EVERYTHING])
    assert overlay[..., 3].any()

    canvas_log.clear()
    panel.clear_button.click()
    assert widget.everything is None and panel.found_row.layout.display == "none"
    assert canvas_log.names(widget.canvas[EVERYTHING]) == ["clear"]
    assert "cleared" in widget.status.value
    with pytest.raises(ValueError, match="run Everything"):
        widget.commit_everything()


def test_commit_all_found_objects_with_one_undo(found_widget, canvas_log):
    widget = found_widget
    found = widget.everything.labels
    widget.add_box(2, 2, 30, 30)  # the prompts and candidates stay through it
    candidates = widget.candidates
    widget.everything_panel.commit_button.click()  # "Commit all"
    assert "Committed 3 found objects as objects 1\u20133" in widget.status.value
    np.testing.assert_array_equal(widget.labels, found)
    assert widget.objects.object_count == 3
    assert widget.candidates is candidates
    # Committed objects are no longer painted over by the overlay: nothing is left of it.
    assert canvas_log.names(widget.canvas[EVERYTHING])[-1] == "clear"

    widget.undo()
    assert not widget.labels.any() and widget.candidates is candidates
    assert "Undid the commit of 3 found objects" in widget.status.value
    assert canvas_log.pictures(widget.canvas[EVERYTHING])[-1][..., 3].any()


def test_pick_found_objects_then_commit_only_those(found_widget, mouse, canvas_log):
    widget = found_widget
    panel = widget.everything_panel
    panel.pick_button.value = True
    canvas_log.clear()
    mouse.click(widget.canvas, 60, 80)  # canvas is 2x: image (30, 40), object 2
    mouse.click(widget.canvas, 100, 160)  # object 3
    mouse.click(widget.canvas, 2, 190)  # background: nothing picked
    assert "No found object there" in widget.status.value
    assert widget.prompts.empty, "a click while picking adds no point"
    assert widget.everything_picked == (2, 3)
    assert panel.commit_button.description == "Commit 2 picked"
    overlay = canvas_log.pictures(widget.canvas[EVERYTHING])[-1]
    assert overlay[80, 60, 3] > overlay[20, 20, 3] > 0  # picked: more opaque
    mouse.click(widget.canvas, 100, 160)  # again: dropped
    assert widget.everything_picked == (2,)

    panel.commit_button.click()
    assert set(np.unique(widget.labels)) == {0, 1}
    np.testing.assert_array_equal(widget.labels == 1, widget.everything.labels == 2)
    assert widget.everything_picked == () and panel.commit_button.description == "Commit all"
    # Commit all now adds the other two; object 2's pixels are committed already.
    assert widget.commit_everything() == (2, 3)
    assert widget.objects.object_count == 3
    with pytest.raises(ValueError, match="Overwrite"):
        widget.commit_everything([2])
    widget.undo()
    widget.undo()
    assert not widget.labels.any()


def test_the_overlay_leaves_committed_objects_uncovered(found_widget, canvas_log):
    widget = found_widget
    widget.add_box(0, 0, 64, 96)
    widget.select(widget.candidates.offered[-1])
    widget.commit()
    committed = np.repeat(np.repeat(widget.labels > 0, 2, axis=0), 2, axis=1)
    overlay = canvas_log.pictures(widget.canvas[EVERYTHING])[-1]
    assert not overlay[committed, 3].any(), "a committed object keeps its own colour"


def test_table_is_a_dataframe_where_pandas_is_installed(found_widget):
    pd = pytest.importorskip("pandas")
    table = found_widget.everything_table()
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == [1, 2, 3] and table.loc[2, "area"] == 400
