"""Click training's machinery: scenes, data, prompt sampling, the trainer and weight deltas.

These run on the tiny random model; the shipped weights' checks are in test_clicks_model.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sam_viz.models.deltas import apply_delta, compute_deltas, read_delta, save_delta
from sam_viz.synthetic.scenes import random_scene, scenes
from sam_viz.training.clicks import (
    ClickTrainer,
    TrainConfig,
    trainable_names,
    warm_start_multimask,
)
from sam_viz.training.data import encode, scene_images
from sam_viz.training.losses import dice_loss, focal_loss, mask_iou, matched_loss, pairwise_iou
from sam_viz.training.sampling import PromptSampler, click_levels, containing_masks, prompt_tensors


def test_scenes_are_reproducible_and_nested() -> None:
    first, again = scenes(7, 3), scenes(7, 3)
    other = scenes(8, 1)[0]
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(first[0].image, other.image)
    cells = random_scene(np.random.default_rng(1), "cells", (256, 256))
    assert {"cell", "nucleus"} <= set(cells.kinds)
    for index, parent in enumerate(cells.parents):
        if parent >= 0:  # every nested mask lies inside its parent
            assert not (cells.masks[index] & ~cells.masks[parent]).any()
            assert cells.chain(index)[1] == parent
    parts = random_scene(np.random.default_rng(2), "parts", (256, 256))
    wholes = [i for i, kind in enumerate(parts.kinds) if kind == "whole"]
    assert wholes
    children = [i for i, p in enumerate(parts.parents) if p == wholes[0]]
    assert len(children) == 2
    assert np.array_equal(
        parts.masks[children[0]] | parts.masks[children[1]], parts.masks[wholes[0]]
    )


@pytest.fixture(scope="module")
def thirty_scene_images() -> list[np.ndarray]:
    return [scene.image for scene in scenes(0, 30)]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_scenes_cover_the_dtypes_microscopes_write(dtype, thirty_scene_images) -> None:
    images = thirty_scene_images
    assert any(image.dtype == np.dtype(dtype) for image in images)
    assert any(image.ndim == 3 for image in images) and any(image.ndim == 2 for image in images)


def test_encode_puts_masks_on_the_low_res_grid(tiny_predictor) -> None:
    scene = random_scene(np.random.default_rng(3), "cells", (200, 150))
    item = encode(tiny_predictor, "scene", scene.image, scene.masks, scene.parents, generated=True)
    low = tiny_predictor.spec.low_res_size
    assert item is not None and item.masks.shape[1:] == (low, low)
    assert item.features.shape == (1, 256, low // 4, low // 4)
    # The image is 200 rows x 150 columns: the padded columns on the right hold no mask.
    width = round(150 * low / 200)
    assert not item.masks[:, :, width + 1 :].any()
    for index, parent in enumerate(item.parents):
        assert parent < len(item.masks)
        if parent >= 0:
            inside = item.masks[index] & ~item.masks[parent]
            assert inside.sum() <= 0.2 * item.masks[index].sum()  # resampling blurs edges
    assert encode(tiny_predictor, "empty", scene.image, [], np.zeros(0), generated=True) is None


def test_prompt_sampler_draws_from_the_mask() -> None:
    sampler = PromptSampler(np.random.default_rng(0))
    mask = np.zeros((64, 64), bool)
    mask[10:40, 20:50] = True
    for _ in range(20):
        x, y = sampler.click(mask, interior=False)
        assert mask[int(y), int(x)]
        x, y = sampler.click(mask, interior=True)
        assert 15 <= x < 45 and 15 <= y < 35  # the deeper half of the rectangle
        x0, y0, x1, y1 = sampler.box(mask)
        assert abs(x0 - 20) <= 5 and abs(y1 - 40) <= 5 and x1 > x0 and y1 > y0
    logits = np.where(mask, 5.0, -5.0)
    logits[10:40, 20:30] = -5.0  # missed a part: the correction is a positive click there
    point, label = sampler.correction(logits, mask)
    assert label == 1 and 20 <= point[0] < 30
    logits = np.where(mask, 5.0, -5.0)
    logits[50:60, 50:60] = 5.0  # took background: a negative click there
    point, label = sampler.correction(logits, mask)
    assert label == 0 and point[0] >= 50 and point[1] >= 50


def test_losses_reward_the_right_mask() -> None:
    target = torch.zeros(1, 16, 16)
    target[0, 4:12, 4:12] = 1
    good = torch.where(target > 0, 8.0, -8.0)
    assert focal_loss(good, target) < focal_loss(-good, target)
    assert dice_loss(good, target) < 0.01 < 0.99 < dice_loss(-good, target)


def test_warm_start_copies_the_single_mask_output(tiny_model) -> None:
    warm_start_multimask(tiny_model, torch.Generator().manual_seed(0))
    decoder = tiny_model.mask_decoder
    first = decoder.output_hypernetworks_mlps[0].state_dict()
    for index in (1, 2, 3):
        for name, value in decoder.output_hypernetworks_mlps[index].state_dict().items():
            assert torch.equal(value, first[name])
        difference = decoder.mask_tokens.weight[index] - decoder.mask_tokens.weight[0]
        assert 0 < difference.abs().max() < decoder.mask_tokens.weight[0].abs().max()


def _train(tiny_predictor, images, steps: int, seed: int = 0) -> ClickTrainer:
    config = TrainConfig(seed=seed, steps=steps, warmup=2, clicks=3, corrections=2, bf16=False)
    trainer = ClickTrainer(tiny_predictor.model, images, config)
    trainer.history = trainer.run()
    return trainer


def test_trainer_changes_only_the_prompt_side(tiny_predictor) -> None:
    images = scene_images(tiny_predictor, seed=0, count=2)
    before = {k: v.clone() for k, v in tiny_predictor.model.state_dict().items()}
    trainer = _train(tiny_predictor, images, steps=3)
    after = trainer.model.state_dict()
    trained = set(trainable_names(trainer.model))
    assert "prompt_encoder.point_embeddings.1.weight" in trained
    assert "prompt_encoder.point_embeddings.2.weight" not in trained  # box corners stay
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= trained
    assert any(k.startswith("mask_decoder.transformer.") for k in changed)
    assert not any(k.startswith("image_encoder.") for k in changed)
    assert len(trainer.history) == 3 and all(np.isfinite(s.total) for s in trainer.history)


def test_training_is_reproducible_from_its_seed(tiny_spec) -> None:
    from sam_viz.models.build import build_sam
    from sam_viz.predictor import Predictor

    def run(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        predictor = Predictor(build_sam(tiny_spec), tiny_spec, device="cpu")
        images = scene_images(predictor, seed=1, count=2)
        return _train(predictor, images, steps=3, seed=seed).model.state_dict()

    first, second, other = run(0), run(0), run(1)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


@pytest.mark.slow
def test_trainer_learns_a_scene(tiny_predictor) -> None:
    images = scene_images(tiny_predictor, seed=2, count=1)
    trainer = _train(tiny_predictor, images, steps=40)
    clicks = [s.clicks for s in trainer.history]
    assert np.mean(clicks[-10:]) < 0.8 * np.mean(clicks[:10])


def test_nested_levels_train_several_outputs_per_click(tiny_predictor, monkeypatch) -> None:
    import sam_viz.training.clicks as clicks_module

    levels: list[int] = []

    def recorded(losses: torch.Tensor) -> tuple[torch.Tensor, int]:
        levels.append(losses.shape[1])
        return matched_loss(losses)

    monkeypatch.setattr(clicks_module, "matched_loss", recorded)
    images = scene_images(tiny_predictor, seed=0, count=4)
    config = TrainConfig(steps=4, warmup=1, clicks=6, corrections=1, bf16=False)
    ClickTrainer(tiny_predictor.model, images, replace(config, nested_levels=True)).run()
    assert len(levels) == 4 * 6 and max(levels) > 1  # some clicks lie in nested masks
    levels.clear()
    ClickTrainer(tiny_predictor.model, images, config).run()
    assert not levels  # off by default: SAM's best of three against the drawn mask


def test_trainer_needs_images(tiny_model) -> None:
    with pytest.raises(ValueError, match="at least one training image"):
        ClickTrainer(tiny_model, [], TrainConfig())


def test_delta_round_trip_and_checks(tiny_model, tmp_path) -> None:
    base = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    names = trainable_names(tiny_model)
    with torch.no_grad():
        tiny_model.mask_decoder.iou_token.weight.add_(0.01)
        tiny_model.prompt_encoder.point_embeddings[1].weight.mul_(1.5)
    deltas = compute_deltas(tiny_model.state_dict(), base, names)
    path = save_delta(deltas, tmp_path / "d.pt", base_sha256="abc", config={})
    delta = read_delta(path)
    assert set(delta["deltas"]) == {
        "mask_decoder.iou_token.weight",
        "prompt_encoder.point_embeddings.1.weight",
    }
    state = apply_delta(base, delta, base_sha256="abc")
    for name, value in tiny_model.state_dict().items():
        assert torch.allclose(state[name], value, atol=1e-3), name
    assert not torch.equal(
        base["mask_decoder.iou_token.weight"], state["mask_decoder.iou_token.weight"]
    )
    with pytest.raises(ValueError, match="trained on the checkpoint with SHA-256 abc"):
        apply_delta(base, delta, base_sha256="def")
    smaller = {k: v for k, v in base.items() if k != "mask_decoder.iou_token.weight"}
    with pytest.raises(ValueError, match="lacks or has"):
        apply_delta(smaller, delta, base_sha256=None)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a sam_viz weights delta"):
        read_delta(tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a file torch reads")
    with pytest.raises(ValueError, match="could not be read"):
        read_delta(tmp_path / "broken.pt")


def _disc(radius: float, size: int = 32) -> torch.Tensor:
    rows, cols = np.mgrid[:size, :size]
    return torch.from_numpy((rows - 16) ** 2 + (cols - 16) ** 2 <= radius**2)


def test_click_levels_are_the_masks_around_the_click_nearest_in_area_first() -> None:
    # A nucleolus in a nucleus in a cell, a near-copy of the nucleus, and a mask elsewhere.
    elsewhere = torch.zeros(32, 32, dtype=torch.bool)
    elsewhere[:4, :4] = True
    masks = torch.stack([_disc(14), _disc(8), _disc(3), _disc(8.2), elsewhere, _disc(15)])
    inside = masks[:, 16, 16]
    assert inside.tolist() == [True, True, True, True, False, True]
    # Drawn from the nucleus: its near-copy is skipped; the cell and the larger disc (area
    # ratios about 3.1 and 3.5) are nearer in area than the nucleolus (about 7).
    assert click_levels(masks, inside, drawn=1) == [1, 0, 5]
    assert click_levels(masks, inside, drawn=2) == [2, 1, 0]
    assert click_levels(masks, inside, drawn=2, limit=2) == [2, 1]
    only = torch.tensor([False, False, False, False, True, False])
    assert click_levels(masks, only, drawn=4) == [4]


def test_matched_loss_takes_the_cheapest_one_to_one_matching() -> None:
    losses = torch.tensor([[0.1, 0.9], [0.2, 0.3], [0.8, 0.7]])  # (3 outputs, 2 levels)
    # Output 0 for level 0 and output 1 for level 1 (0.1 + 0.3) beats any other pairing.
    loss, output = matched_loss(losses)
    assert output == 0 and loss.item() == pytest.approx(0.2)
    loss, output = matched_loss(losses[:, :1])  # one level: SAM's best-of-three
    assert output == 0 and loss.item() == pytest.approx(0.1)
    losses = torch.tensor([[0.1, 0.2], [0.9, 0.9], [0.3, 0.9]])
    loss, output = matched_loss(losses)  # level 1 needs output 0, so level 0 takes output 2
    assert output == 2 and loss.item() == pytest.approx(0.25)


def test_calibration_trains_the_iou_head_alone(tiny_predictor) -> None:
    from sam_viz.training.calibration import HEAD_PREFIX, CalibrationConfig, IoUHeadCalibrator

    images = scene_images(tiny_predictor, seed=0, count=2)
    image = images[0]
    inside = np.argwhere(image.masks[0].numpy())[0]  # (row, col) of a pixel of mask 0
    held = containing_masks(image, np.array([[inside[1], inside[0]]]))
    assert held.shape == (1, len(image.masks)) and bool(held[0, 0])
    before = {k: v.clone() for k, v in tiny_predictor.model.state_dict().items()}
    calibrator = IoUHeadCalibrator(
        tiny_predictor.model, images, CalibrationConfig(steps=3, clicks=2, boxes=1), seed=0
    )
    losses = calibrator.run()
    assert len(losses) == 3 and all(np.isfinite(losses))
    after = tiny_predictor.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(HEAD_PREFIX) for k in changed)


def test_calibration_counts_ious_as_the_training_does() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 32, 32, generator=generator)
    logits[0, 0] = -1.0  # an empty prediction
    targets = torch.rand(5, 32, 32, generator=generator) > 0.6
    targets[2] = False  # an empty target: IoU 1 with the empty prediction, 0 with the rest
    expected = mask_iou(logits[:, :, None], targets[None, None].float())
    ious = pairwise_iou(logits, targets)
    assert ious.shape == (4, 3, 5) and torch.equal(ious, expected)
    assert ious[0, 0, 2] == 1 and ious[1, 0, 2] == 0


def test_calibration_sees_the_decoders_own_iou_token_and_masks(tiny_predictor) -> None:
    from sam_viz.training.calibration import CalibrationConfig, IoUHeadCalibrator

    model = tiny_predictor.model
    images = scene_images(tiny_predictor, seed=0, count=1)
    calibrator = IoUHeadCalibrator(model, images, CalibrationConfig(steps=1), seed=0)
    features = images[0].features
    prepared = calibrator.decoder.prepare(features, calibrator.dense_pe)
    clicks = np.array([[[10.0, 12.0]], [[30.0, 5.0]]], np.float32)
    labels = np.ones((2, 1), np.int64)
    logits, token = calibrator._decode(prepared, (clicks, labels), None, [1, 2, 3])
    point_tensors, _ = prompt_tensors((clicks, labels), None, calibrator.to_model)
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=point_tensors, boxes=None, masks=None)
        out = model.mask_decoder.predict_masks_with_tokens(
            features, calibrator.dense_pe, sparse, dense
        )
    torch.testing.assert_close(token, out.iou_token, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, out.masks[:, 1:], atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_the_pipeline_resumes_its_second_stage_exactly(tmp_path) -> None:
    """The real embedded model, a minimal recipe: stage 1 alone, then resumed, equals both."""
    from sam_viz.training.pipeline import train_clicks

    config = TrainConfig(scenes=2, samples=(), steps=2, warmup=1, clicks=2, corrections=1)
    quiet = {"threads": 1, "report": lambda line: None}
    threads = torch.get_num_threads()
    try:
        first, both, resumed = _three_runs(train_clicks, config, tmp_path, quiet)
    finally:
        torch.set_num_threads(threads)
    first_d, both_d, resumed_d = (read_delta(p)["deltas"] for p in (first, both, resumed))
    assert set(both_d) == set(resumed_d) and set(first_d) <= set(both_d)
    assert all(torch.equal(both_d[k], resumed_d[k]) for k in both_d)
    head = [k for k in both_d if k.startswith("mask_decoder.iou_prediction_head.")]
    assert head and any(not torch.equal(both_d[k], first_d[k]) for k in head)
    assert read_delta(both)["notes"]["threads"] == 1


def _three_runs(train_clicks, config, tmp_path, quiet):
    from sam_viz.training.calibration import CalibrationConfig

    stages: list[tuple[str, int, int]] = []
    first = train_clicks(  # the second stage is off
        tmp_path / "first.pt", config, progress=lambda *stage: stages.append(stage), **quiet
    )
    assert stages[-1] == ("training", config.steps, config.steps)  # the bar ends at 100%
    both = train_clicks(
        tmp_path / "both.pt", config, calibration=CalibrationConfig(steps=2, clicks=2), **quiet
    )
    resumed = train_clicks(
        tmp_path / "resumed.pt",
        config,
        calibration=CalibrationConfig(steps=2, clicks=2),
        resume_from=first,
        **quiet,
    )
    return first, both, resumed
