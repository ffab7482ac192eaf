"""sam_viz: interactive Segment Anything for napari and Jupyter.

The package root imports only the UI-free core. The napari plugin is reached through
its manifest (``napari.yaml``) and the Jupyter widget through ``sam_viz.jupyter``.

The predictor and the scaled image are imported on first use (PEP 562): importing the
package does not import torch, so the napari dock opens fast.
"""

from typing import TYPE_CHECKING

from sam_viz._lazy import lazy_attributes
from sam_viz.models.registry import DEFAULT_MODEL, MODELS, ModelSpec
from sam_viz.prompts import PromptSet

if TYPE_CHECKING:
    from sam_viz.predictor import Prediction, Predictor
    from sam_viz.windows.scaled import ScaledImage

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ModelSpec",
    "Prediction",
    "Predictor",
    "PromptSet",
    "ScaledImage",
]
__version__ = "0.1.0"

# The names imported on first use, and their modules.
_LAZY = {
    "Prediction": "sam_viz.predictor",
    "Predictor": "sam_viz.predictor",
    "ScaledImage": "sam_viz.windows.scaled",
}


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
