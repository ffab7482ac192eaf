"""The shared predictor: image embeddings, prompts to masks, and the decoder's fast paths.

The classes that need torch (the predictor, the embedding cache) are imported on first use
(PEP 562), so that importing a light part of this package (the candidates, say) does not
import torch.
"""

from typing import TYPE_CHECKING

from sam_viz._lazy import lazy_attributes
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


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
