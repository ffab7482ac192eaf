"""The Jupyter side of sam_viz: an interactive SAM widget and views that teach SAM's prompt
encoder.

``from sam_viz.jupyter import SamWidget`` needs ipywidgets and ipycanvas (the ``jupyter``
extra). The computations behind the teaching views (:mod:`sam_viz.jupyter.anatomy`) and the
display helpers (:mod:`sam_viz.jupyter.display`) are plain NumPy/PyTorch and import no
widget library, so names are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SamWidget": "sam_viz.jupyter.widget",
    "PromptSet": "sam_viz.jupyter.session",
    "Session": "sam_viz.jupyter.session",
    "PromptEncoderExplorer": "sam_viz.jupyter.explorer",
    "DisplayFrame": "sam_viz.jupyter.display",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sam_viz.jupyter' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
