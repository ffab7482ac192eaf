"""The dock widget's life: closing its dock with napari's X, opening it again, quitting napari
while a worker runs (issue 19, bugs 2 and 3)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from napari_test_helpers import drag_box, press, wait_idle

pytestmark = pytest.mark.gui


def test_closing_the_dock_with_its_x_ends_the_widget_and_reopening_adopts_its_layers(
    make_widget, qtbot, tiny_predictor, non_square_image
):
    from sam_viz._napari._widget import SamWidget

    viewer, widget = make_widget(non_square_image, tiny_predictor)
    names = sorted(layer.name for layer in viewer.layers)
    shapes = widget.shapes_layer
    dock = widget.parent()
    dock.title.hide_button.click()  # hiding the dock is not closing it
    dock.show()
    assert not widget._released
    dock.title.close_button.click()  # napari's X on the dock
    qtbot.wait(100)

    # The closed widget no longer acts: a box drawn now is not predicted, C commits nothing.
    viewer.layers.selection.active = shapes
    drag_box(qtbot, shapes, (30, 12), (70, 40))
    qtbot.wait(500)
    press(viewer, "c")
    qtbot.wait(100)
    assert widget.session.candidates is None and widget.session.requested is None
    assert not widget.embedded_planes
    assert sorted(layer.name for layer in viewer.layers) == names  # nothing made, no objects
    assert not any(str(key) == "C" for key in shapes.keymap)  # its keys are released

    # Opened again, the widget adopts the layers (and the box drawn meanwhile).
    again = SamWidget(viewer, predictor=tiny_predictor)
    viewer.window.add_dock_widget(again, name="Segment Anything")
    wait_idle(qtbot, again, lambda: again.session.candidates is not None)
    assert sorted(layer.name.split(" (IoU")[0] for layer in viewer.layers) == names
    assert again.shapes_layer is shapes and shapes.nshapes == 1
    viewer.layers.selection.active = shapes
    press(viewer, "c")  # the new widget's key
    assert again.status.startswith(("Committed", "The chosen candidate is empty"))


# A viewer with the widget, a worker that is slow to finish, then the viewer is closed and
# the script ends at once, as when napari quits.
QUIT_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    import napari
    import torch
    from qtpy.QtWidgets import QApplication
    from sam_viz._napari._widget import SamWidget
    from sam_viz.models.build import build_sam
    from sam_viz.models.registry import ModelSpec, ViTConfig
    from sam_viz.predictor import Predictor

    SPEC = ModelSpec(
        name="tiny_test", title="Tiny", image_size=128,
        encoder=ViTConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,),
                          window_size=4),
        pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375),
        url=None, sha256=None, filename="tiny_test.pth",
    )

    running = threading.Event()  # the slow part of the worker has started

    def slow(*_):
        running.set()
        time.sleep(2)

    def tiny():
        torch.manual_seed(0)
        predictor = Predictor(build_sam(SPEC), SPEC, device="cpu")
        predictor.model.image_encoder.register_forward_pre_hook(slow)
        return predictor

    def slow_load(source, device):
        slow()
        return tiny()

    worker = sys.argv[1]
    viewer = napari.Viewer(show=True)
    image = np.zeros((96, 64), np.uint8)
    image[30:70, 12:40] = 200
    viewer.add_image(image, name="image")
    if worker == "load":
        widget = SamWidget(viewer, predictor_factory=slow_load)
    else:
        widget = SamWidget(viewer, predictor=tiny())
    viewer.window.add_dock_widget(widget)
    if worker == "everything":
        widget.segment_everything()
    else:
        widget.shapes_layer.add_rectangles(
            np.array([[30, 12], [30, 40], [70, 40], [70, 12.0]])
        )
    start = time.monotonic()
    while not running.is_set() and time.monotonic() - start < 30:
        QApplication.processEvents()
    assert running.is_set() and widget.busy, "the worker should still run"
    viewer.close()
    print("closed", flush=True)
    """
)


@pytest.mark.parametrize("worker", ["load", "embedding", "everything"])
def test_quitting_napari_while_a_worker_runs_exits_cleanly(worker, tmp_path):
    script = tmp_path / "quit.py"
    script.write_text(QUIT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), worker], capture_output=True, text=True, timeout=180
    )
    assert "closed" in done.stdout, done.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "has been deleted" not in done.stderr and "Traceback" not in done.stderr
