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
    assert widget.everything_panel.progress.layout.display != "none"
    assert widget.everything_panel.stop_button.layout.display != "none"
    # The widget still answers prompts meanwhile.
    widget.add_box(5, 5, 40, 60)
    assert widget.candidates is not None

    gated.gate.set()
    found = run.wait(timeout=60)
    np.testing.assert_array_equal(found.labels, expected.labels)
    assert widget.everything is found
    assert widget.everything_panel.progress.value == 1.0
    assert widget.everything_panel.progress.layout.display == "none"
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

    def recording(self, labels):
        drawn_in.append(threading.get_ident())
        real(self, labels)

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
    assert drawn_in == [threading.get_ident()]
    assert widget.everything is not None
    widget.close()
