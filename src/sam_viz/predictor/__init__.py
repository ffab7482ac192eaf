"""The shared predictor: image embeddings, prompts to masks, and the decoder's fast paths."""

from sam_viz.predictor.predictor import (
    BoxesPrediction,
    Cancelled,
    Prediction,
    Predictor,
    ProgressCallback,
)

__all__ = ["BoxesPrediction", "Cancelled", "Prediction", "Predictor", "ProgressCallback"]
