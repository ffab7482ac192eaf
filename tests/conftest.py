"""Shared fixtures: a tiny random-weight model for speed, the real embedded model where
behaviour matters, and scikit-image's coins with a classical reference segmentation."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sam_viz.models.build import build_sam
from sam_viz.models.registry import ModelSpec, ViTConfig

# The suite runs the PyTorch encoder (the reference) unless a test names a backend: an
# automatic export would land in the user's cache and time itself during the tests.
os.environ.setdefault("SAM_VIZ_BACKEND", "torch")

TINY_SPEC = ModelSpec(
    name="tiny_test",
    title="Tiny random ViT (tests only)",
    encoder=ViTConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4),
    image_size=128,
    pixel_mean=(123.675, 116.28, 103.53),
    pixel_std=(58.395, 57.12, 57.375),
    url=None,
    sha256=None,
    filename="tiny_test.pth",
)


@pytest.fixture(scope="session")
def tiny_spec() -> ModelSpec:
    return TINY_SPEC


@pytest.fixture
def tiny_model():
    """A small ViT SAM with seeded random weights (fresh per test: tests may change it)."""
    torch.manual_seed(0)
    return build_sam(TINY_SPEC)


@pytest.fixture
def tiny_predictor(tiny_model):
    from sam_viz.predictor import Predictor

    return Predictor(tiny_model, TINY_SPEC, device="cpu")


@pytest.fixture
def non_square_image() -> np.ndarray:
    """A 96 x 64 (rows x cols) grayscale image with a bright rectangle."""
    image = np.zeros((96, 64), np.uint8)
    image[30:70, 12:40] = 200
    return image


@pytest.fixture(scope="session")
def lite_predictor():
    """The real embedded default model (LiteMedSAM) on the CPU, shared by the session."""
    from sam_viz.predictor import Predictor

    return Predictor.from_pretrained(device="cpu", progress=False)


@pytest.fixture(scope="session")
def coins() -> np.ndarray:
    import skimage.data

    return skimage.data.coins()


@pytest.fixture(scope="session")
def coins_reference(coins) -> np.ndarray:
    """Careful classical segmentation of the coins (scikit-image's tutorial watershed)."""
    from sam_viz.training.evaluate import coins_reference

    return coins_reference(coins)
