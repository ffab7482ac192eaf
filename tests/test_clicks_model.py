"""The shipped click-trained LiteMedSAM (``lite_medsam_clicks``) on held-out data.

The full evaluation, on more scenes, is ``benchmarks/eval_clicks.py``; these are its checks
on a small held-out set: generated scenes from a seed stream training never uses, and
scikit-image's coins, which the data engine leaves out.
"""

from __future__ import annotations

import numpy as np
import pytest

from sam_viz.models.checkpoints import load_model, read_state_dict, resolve_checkpoint
from sam_viz.models.deltas import read_delta
from sam_viz.models.registry import MODELS
from sam_viz.predictor import Predictor
from sam_viz.synthetic.scenes import random_scene
from sam_viz.training.data import held_out_scenes
from sam_viz.training.evaluate import (
    ClickScores,
    box_ious,
    click_scores,
    coin_click_scores,
    label_masks,
    nested_click,
)

pytestmark = pytest.mark.slow  # every test loads the shipped model or its delta

SPEC = MODELS["lite_medsam_clicks"]


@pytest.fixture(scope="module")
def clicks_predictor() -> Predictor:
    return Predictor.from_pretrained("lite_medsam_clicks", device="cpu", progress=False)


@pytest.fixture(scope="module")
def original_predictor() -> Predictor:
    return Predictor.from_pretrained("lite_medsam", device="cpu", progress=False)


def test_shipped_delta_is_small_and_changes_only_the_prompt_side() -> None:
    from sam_viz.models.checkpoints import shipped_delta_path

    path = shipped_delta_path(SPEC)
    assert path.stat().st_size <= 10_000_000
    delta = read_delta(path)
    assert delta["base_sha256"] == MODELS["lite_medsam"].sha256
    names = set(delta["deltas"])
    assert "prompt_encoder.point_embeddings.1.weight" in names
    assert all(n.startswith(("mask_decoder.", "prompt_encoder.")) for n in names)
    loaded = load_model("lite_medsam_clicks").model.state_dict()
    base = read_state_dict(resolve_checkpoint(SPEC))
    for name, value in loaded.items():
        if name.startswith("image_encoder.") and name in base:
            assert np.array_equal(value.numpy(), base[name].numpy()), name


def test_the_clicks_model_shares_the_base_embeddings(clicks_predictor, original_predictor) -> None:
    assert clicks_predictor.model_key == original_predictor.model_key


def test_single_clicks_on_held_out_scenes(clicks_predictor, original_predictor) -> None:
    """Regression floors below what benchmarks/eval_clicks.py measures, not the targets
    (0.85 and 70%), which the model does not reach yet (docs/decisions.md)."""
    scenes = held_out_scenes(seed=0, count=6)
    trained = ClickScores.merge(
        click_scores(clicks_predictor, scene.image, scene.masks) for scene in scenes
    )
    original = ClickScores.merge(
        click_scores(original_predictor, scene.image, scene.masks) for scene in scenes[:2]
    )
    assert len(trained.best_iou) >= 40
    assert trained.mean_best_iou >= 0.65
    assert original.mean_best_iou < 0.2
    assert trained.ranking_accuracy >= 0.4  # of unambiguous clicks; three candidates
    # The candidate shown first (IoU head times stability) is the best more often than the
    # one the IoU head alone ranks first.
    assert trained.shown_accuracy >= trained.ranking_accuracy + 0.05


def test_single_clicks_on_coins(
    clicks_predictor, original_predictor, coins, coins_reference
) -> None:
    trained = coin_click_scores(clicks_predictor, coins, coins_reference)
    assert len(trained.best_iou) == 24
    assert trained.mean_best_iou >= 0.85
    assert trained.shown_accuracy >= 0.75  # a floor below the measured figure
    # The original answers a lone click with (nearly) nothing: training made the difference.
    original = coin_click_scores(original_predictor, coins, coins_reference)
    assert original.mean_best_iou < 0.5


def test_boxes_on_coins_keep_their_quality(
    clicks_predictor, original_predictor, coins, coins_reference
) -> None:
    trained = box_ious(clicks_predictor, coins, label_masks(coins_reference)).mean()
    original = box_ious(original_predictor, coins, label_masks(coins_reference)).mean()
    assert trained >= original - 0.01


def test_a_click_on_a_nucleus_gives_candidates_of_different_sizes(clicks_predictor) -> None:
    rng = np.random.default_rng(5)
    checked = 0
    while checked < 6:
        scene = random_scene(rng, "cells", (256, 256))
        for index, kind in enumerate(scene.kinds):
            if kind != "nucleus" or checked >= 6:
                continue
            checked += 1
            result = nested_click(clicks_predictor, scene, index)
            assert np.all(np.diff(result.areas) >= 0)  # ordered by size
            assert result.areas[0] < 0.8 * result.areas[-1]  # subpart and whole differ
