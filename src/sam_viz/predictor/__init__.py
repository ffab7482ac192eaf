"""The shared predictor: image embeddings, prompts to masks, and the decoder's fast paths.

The classes that need torch (the predictor, the embedding cache) are imported on first use
(PEP 562), so that importing a light part of this package (the candidates, say) does not
import torch.
"""

import importlib
from typing import TYPE_CHECKING

from sam_viz.predictor.candidates import BoxesPrediction, Candidates, Prediction
from sam_viz.progress import Cancelled, ProgressCallback

if TYPE_CHECKING:
    from sam_viz.predictor.cache import EmbeddingCache, ImageEmbedding
    from sam_viz.predictor.predictor import Predictor

__all__ = [
    "BoxesPrediction",
    "Cancelled",
    "Candidates",
    "EmbeddingCache",
    "ImageEmbedding",
    "Prediction",
    "Predictor",
    "ProgressCallback",
]

# The names imported on first use (they import torch), and their modules.
_LAZY = {
    "EmbeddingCache": "sam_viz.predictor.cache",
    "ImageEmbedding": "sam_viz.predictor.cache",
    "Predictor": "sam_viz.predictor.predictor",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
