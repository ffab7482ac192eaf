"""Opening the dock does not import torch (issue 19: the imports blocked the UI for seconds).

torch is imported when the model loads, on the loading thread; the package root and the
dock's modules reach the predictor only lazily. Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui


def _run(script: str) -> dict:
    """Run ``script`` in a fresh interpreter; it prints one JSON object last."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_opening_the_dock_does_not_import_torch() -> None:
    result = _run(
        """
        import json, sys
        import napari, qtpy
        import sam_viz._napari._widget
        from sam_viz._napari._widget import SamWidget

        after_import = "torch" in sys.modules
        viewer = napari.Viewer(show=False)
        widget = SamWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Segment Anything")
        combo = widget.controls.device_combo
        devices = [combo.itemText(i) for i in range(combo.count())]
        after_open = "torch" in sys.modules
        widget.release()
        viewer.close()
        print(json.dumps({"import": after_import, "open": after_open, "devices": devices}))
        """
    )
    assert result["import"] is False
    assert result["open"] is False
    # Before torch is loaded the device list offers the automatic choice and the CPU.
    assert result["devices"][0] == "auto" and result["devices"][-1] == "cpu"


def test_the_device_list_is_filled_when_torch_is_loaded() -> None:
    """Opening the device list (or loading the model) lists the GPUs torch sees."""
    result = _run(
        """
        import json, sys
        import napari
        from sam_viz._napari._widget import SamWidget

        viewer = napari.Viewer(show=False)
        widget = SamWidget(viewer)
        combo = widget.controls.device_combo
        combo.showPopup()
        combo.hidePopup()
        devices = [combo.itemText(i) for i in range(combo.count())]
        from sam_viz.device import available_devices

        print(json.dumps({
            "devices": devices,
            "expected": ["auto", *available_devices()],
            "current": combo.currentText(),
        }))
        widget.release()
        viewer.close()
        """
    )
    assert result["devices"] == result["expected"]
    assert result["current"] == "auto"


def test_the_model_loads_on_auto_and_then_the_device_list_is_filled() -> None:
    """The first prompt loads the model on "auto" (torch is imported on the loading thread);
    the device list then shows the devices torch sees, the choice unchanged."""
    result = _run(
        """
        import json, sys, time
        import numpy as np
        import napari
        from qtpy.QtWidgets import QApplication
        from sam_viz._napari._widget import SamWidget

        calls = []

        def tiny_load(source, device):
            import torch
            from sam_viz.models.build import build_sam
            from sam_viz.models.registry import ModelSpec, ViTConfig
            from sam_viz.predictor import Predictor

            calls.append([source, device])
            spec = ModelSpec(
                name="tiny_test", title="Tiny", image_size=128,
                encoder=ViTConfig(embed_dim=32, depth=2, num_heads=2,
                                  global_attn_indexes=(1,), window_size=4),
                pixel_mean=(123.675, 116.28, 103.53), pixel_std=(58.395, 57.12, 57.375),
                url=None, sha256=None, filename="tiny_test.pth",
            )
            torch.manual_seed(0)
            return Predictor(build_sam(spec), spec, device="cpu")

        viewer = napari.Viewer(show=False)
        image = np.zeros((96, 64), np.uint8)
        image[30:70, 12:40] = 200
        viewer.add_image(image, name="image")
        widget = SamWidget(viewer, predictor_factory=tiny_load)
        viewer.window.add_dock_widget(widget)
        combo = widget.controls.device_combo
        before = [combo.itemText(i) for i in range(combo.count())]
        opened = "torch" in sys.modules
        widget.shapes_layer.add_rectangles(
            np.array([[30, 12], [30, 40], [70, 40], [70, 12.0]])
        )
        start = time.monotonic()
        while widget._model.predictor is None and time.monotonic() - start < 120:
            QApplication.processEvents()
            time.sleep(0.01)
        from sam_viz.device import available_devices

        print(json.dumps({
            "opened": opened,
            "before": before,
            "calls": calls,
            "after": [combo.itemText(i) for i in range(combo.count())],
            "expected": ["auto", *available_devices()],
            "current": combo.currentText(),
            "loaded": widget._model.predictor is not None,
        }))
        widget.release()
        viewer.close()
        """
    )
    assert result["opened"] is False
    assert result["before"] == ["auto", "cpu"]
    assert result["loaded"] is True
    assert result["calls"] == [["lite_medsam", "auto"]]
    assert result["after"] == result["expected"]
    assert result["current"] == "auto"


def test_a_given_predictor_then_a_registry_model_lists_every_device(
    make_widget, tiny_predictor, non_square_image
) -> None:
    from sam_viz.device import available_devices

    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    devices, models = widget.controls.device_combo, widget.controls.model_combo
    assert not devices.isEnabled() and devices.currentText() == "cpu"
    models.setCurrentIndex(models.findData("lite_medsam"))
    assert devices.isEnabled()
    assert [devices.itemText(i) for i in range(devices.count())] == [
        "auto",
        *available_devices(),
    ]
    assert devices.currentText() == "auto"


def test_importing_the_package_does_not_import_torch() -> None:
    result = _run(
        """
        import json, sys
        import sam_viz
        import sam_viz.predictor
        lazy = "torch" not in sys.modules
        names = dir(sam_viz)
        from sam_viz import Predictor, Prediction, ScaledImage
        from sam_viz.predictor import EmbeddingCache
        import sam_viz.predictor.predictor as module
        print(json.dumps({
            "lazy": lazy,
            "listed": all(name in names for name in sam_viz.__all__),
            "predictor": Predictor is module.Predictor is sam_viz.predictor.Predictor,
            "cache": EmbeddingCache.__module__,
            "loaded": "torch" in sys.modules,
        }))
        """
    )
    assert result["lazy"] is True
    assert result["listed"] is True
    assert result["predictor"] is True
    assert result["cache"] == "sam_viz.predictor.cache"
    assert result["loaded"] is True


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    import sam_viz
    import sam_viz.predictor

    with pytest.raises(AttributeError):
        _ = sam_viz.NoSuchThing  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = sam_viz.predictor.NoSuchThing  # type: ignore[attr-defined]
