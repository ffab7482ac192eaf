"""sam_viz: interactive Segment Anything for napari and Jupyter.

The package root imports only the UI-free core. The napari plugin is reached through
its manifest (``napari.yaml``) and the Jupyter widget through ``sam_viz.jupyter``.
"""

from sam_viz.models.registry import DEFAULT_MODEL, MODELS, ModelSpec
from sam_viz.predictor import Prediction, Predictor
from sam_viz.prompts import PromptSet
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
