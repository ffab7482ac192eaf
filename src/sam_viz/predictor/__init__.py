"""The shared predictor: image embeddings, prompts to masks, and the decoder's fast paths."""

from sam_viz.predictor.cache import EmbeddingCache, ImageEmbedding
from sam_viz.predictor.candidates import BoxesPrediction, Candidates, Prediction
from sam_viz.predictor.predictor import Predictor
from sam_viz.progress import Cancelled, ProgressCallback

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
