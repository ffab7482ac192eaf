"""The layers' boundaries, checked in fresh interpreters: the core pulls in no GUI toolkit,
and the napari side and the Jupyter side never import each other's toolkits.

Each check imports every module of a part of the package (found by walking it, so a new
module is checked too) and then looks at ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys

QT_SIDE = ("napari", "qtpy", "PyQt5", "PySide2", "PySide6", "magicgui", "vispy")
JUPYTER_SIDE = ("ipywidgets", "ipycanvas")
UI_PACKAGES = ("sam_viz._napari", "sam_viz.jupyter")

# Runs in the fresh interpreter: import the modules of PARTS (skipping SKIP), then print the
# modules it imported and every module in sys.modules.
_WALK = """
import importlib, json, pkgutil, sys

def wanted(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)

def walk(name, imported):
    module = importlib.import_module(name)
    imported.append(name)
    for info in pkgutil.iter_modules(getattr(module, "__path__", []), name + "."):
        if not wanted(info.name, SKIP):
            walk(info.name, imported)

imported = []
for part in PARTS:
    walk(part, imported)
print(json.dumps({"imported": imported, "modules": sorted(sys.modules)}))
"""


def _import_all(parts: tuple[str, ...], skip: tuple[str, ...] = ()) -> tuple[list[str], set[str]]:
    """Import every module of ``parts`` in a fresh interpreter.

    Returns:
        The modules of ``parts`` it imported, and every module then in ``sys.modules``.
    """
    script = f"PARTS = {parts!r}\nSKIP = {skip!r}\n{_WALK}"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["imported"], set(result["modules"])


def _top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_the_core_imports_no_gui_toolkit() -> None:
    imported, modules = _import_all(("sam_viz",), skip=UI_PACKAGES)
    loaded = _top_level(modules)
    # The walk reached every layer below the UIs.
    for module in (
        "sam_viz.modeling.sam",
        "sam_viz.predictor.batch_decoder",
        "sam_viz.automatic.merging",
        "sam_viz.training.calibration",
        "sam_viz.render",
        "sam_viz.cli",
    ):
        assert module in imported
    assert not any(name.startswith(UI_PACKAGES) for name in imported)
    assert loaded.isdisjoint(QT_SIDE + JUPYTER_SIDE), loaded & set(QT_SIDE + JUPYTER_SIDE)


def test_the_jupyter_side_imports_no_qt() -> None:
    imported, modules = _import_all(("sam_viz.jupyter",))
    loaded = _top_level(modules)
    assert "sam_viz.jupyter.explorer" in imported and "sam_viz.jupyter.widget" in imported
    assert loaded.isdisjoint(QT_SIDE), loaded & set(QT_SIDE)


def test_the_napari_side_imports_no_jupyter_widgets() -> None:
    imported, modules = _import_all(("sam_viz._napari",))
    loaded = _top_level(modules)
    assert "sam_viz._napari._widget" in imported
    assert "napari" in loaded  # the walk did import the plugin
    assert loaded.isdisjoint(JUPYTER_SIDE), loaded & set(JUPYTER_SIDE)


def test_calibration_does_not_import_the_click_trainer() -> None:
    """The training stages share the lower modules (sampling, losses, steps); the second
    stage does not reach back into the first (no import circle)."""
    imported, modules = _import_all(("sam_viz.training.calibration",))
    assert imported == ["sam_viz.training.calibration"]
    assert "sam_viz.training.sampling" in modules
    assert "sam_viz.training.clicks" not in modules
