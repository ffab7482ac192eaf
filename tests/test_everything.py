"""Segment everything: batched decoding, prompt grids, mask operations, the generator."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from sam_viz.automatic.everything import EverythingSettings, MaskGenerator
from sam_viz.automatic.grids import box_grid, point_grid
from sam_viz.automatic.instances import (
    InstanceMask,
    box_iou,
    mask_iou,
    masks_to_boxes,
    nms,
    remove_small_regions,
    touches_window_edge,
)
from sam_viz.automatic.merging import merge_tiles
from sam_viz.automatic.results import Proposals, to_segmentation
from sam_viz.modeling.common import LayerNorm2d
from sam_viz.predictor import Cancelled
from sam_viz.predictor.batch_decoder import BatchDecoder
from sam_viz.predictor.stability import stability_scores


def coin_scores(labels: np.ndarray, reference: np.ndarray) -> tuple[int, int]:
    """(reference objects matched at IoU >= 0.8 by one label, labels covering >= 2 of them).

    A label "covers" a reference object when it holds more than half of its pixels.
    """
    found = 0
    for index in range(1, int(reference.max()) + 1):
        ref = reference == index
        ids, counts = np.unique(labels[ref], return_counts=True)
        best = max(
            (
                c / np.count_nonzero(ref | (labels == j))
                for j, c in zip(ids, counts, strict=True)
                if j
            ),
            default=0.0,
        )
        found += best >= 0.8
    ref_areas = np.bincount(reference.ravel())
    merged = 0
    for label in range(1, int(labels.max()) + 1):
        ids, counts = np.unique(reference[labels == label], return_counts=True)
        covered = [i for i, c in zip(ids, counts, strict=True) if i and c > 0.5 * ref_areas[i]]
        merged += len(covered) >= 2
    return found, merged


# --------------------------------------------------------------------------- batch decoder
@pytest.mark.parametrize("kind", ["points", "boxes", "both"])
def test_batch_decoder_equals_model_decoder(tiny_predictor, kind) -> None:
    model = tiny_predictor.model
    torch.manual_seed(1)
    grid = model.prompt_encoder.image_embedding_size
    features = torch.randn(1, 256, *grid)
    batch = 7
    points = boxes = None
    if kind in ("points", "both"):
        points = (torch.rand(batch, 2, 2) * 128, torch.tensor([[1, 0]] * batch))
    if kind in ("boxes", "both"):
        corner = torch.rand(batch, 2) * 64
        boxes = torch.cat([corner, corner + 20 + torch.rand(batch, 2) * 40], dim=1)
    decoder = BatchDecoder(model)
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
        expected_masks, expected_iou = model.mask_decoder.predict_masks(
            features, tiny_predictor.dense_pe, sparse, dense
        )
        prepared = decoder.prepare(features, tiny_predictor.dense_pe)
        decoded = decoder.transformer(prepared, sparse, chunk=3)
        masks = decoder.masks(decoded, [0, 1, 2, 3], chunk=2)
        some = decoder.masks(decoded, [2, 0], rows=torch.tensor([5, 1]))
    torch.testing.assert_close(decoded.iou_scores, expected_iou, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(masks, expected_masks, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(some, expected_masks[[5, 1]][:, [2, 0]], atol=1e-3, rtol=1e-4)


def test_batch_decoder_sizes_its_chunks_by_their_memory(tiny_predictor, monkeypatch) -> None:
    """By default the prompt sets are split so that each chunk's (sets, M, C) image tokens
    stay within the budget; the result does not depend on the split."""
    import sam_viz.predictor.batch_decoder as batch_decoder

    model = tiny_predictor.model
    features = torch.randn(1, 256, *model.prompt_encoder.image_embedding_size)
    points = (torch.rand(5, 1, 2) * 128, torch.ones(5, 1, dtype=torch.int))
    decoder = BatchDecoder(model)
    with torch.inference_mode():
        sparse, _ = model.prompt_encoder(points=points, boxes=None, masks=None)
        prepared = decoder.prepare(features, tiny_predictor.dense_pe)
        whole = decoder.transformer(prepared, sparse, chunk=5)
        per_set = prepared.src.numel() * prepared.src.element_size()
        monkeypatch.setattr(batch_decoder, "_CHUNK_BYTES", 2 * per_set + 1)
        split = decoder.transformer(prepared, sparse)
        monkeypatch.setattr(batch_decoder, "_CHUNK_BYTES", 1)  # less than one set: one each
        single = decoder.transformer(prepared, sparse)
    assert [len(d.upscale_chunks) for d in (whole, split, single)] == [1, 3, 5]
    for decoded in (split, single):
        torch.testing.assert_close(decoded.iou_scores, whole.iou_scores, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(decoded.tokens, whole.tokens, atol=1e-5, rtol=1e-5)


def test_batch_decoder_equals_model_decoder_with_trained_layer_norms(tiny_predictor) -> None:
    """The factored upscaling carries the first product back through every block's layer
    norm: with norms that are not the identity (as in real checkpoints), it still equals
    the model's decoder."""
    model = copy.deepcopy(tiny_predictor.model)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.mask_decoder.modules():
            if isinstance(module, (torch.nn.LayerNorm, LayerNorm2d)):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=generator))
    features = torch.randn(1, 256, *model.prompt_encoder.image_embedding_size, generator=generator)
    points = (torch.rand(5, 2, 2, generator=generator) * 128, torch.tensor([[1, 0]] * 5))
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=points, boxes=None, masks=None)
        expected_masks, expected_iou = model.mask_decoder.predict_masks(
            features, tiny_predictor.dense_pe, sparse, dense
        )
        decoder = BatchDecoder(model)
        decoded = decoder.transformer(decoder.prepare(features, tiny_predictor.dense_pe), sparse)
        masks = decoder.masks(decoded, [0, 1, 2, 3])
    torch.testing.assert_close(decoded.iou_scores, expected_iou, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(masks, expected_masks, atol=1e-3, rtol=1e-4)


def test_batch_decoder_rejects_a_batch_of_embeddings(tiny_predictor) -> None:
    decoder = BatchDecoder(tiny_predictor.model)
    with pytest.raises(ValueError, match=r"\(1, C, h, w\)"):
        decoder.prepare(torch.zeros(2, 256, 8, 8), tiny_predictor.dense_pe)


# ---------------------------------------------------------------------------- prompt grids
def test_point_grid_is_cell_centres_row_major() -> None:
    grid = point_grid(4)
    assert grid.shape == (16, 2)
    np.testing.assert_allclose(grid[:4, 0], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(grid[:4, 1], 0.125)  # first row: y constant
    with pytest.raises(ValueError, match="n_per_side"):
        point_grid(0)


def test_box_grid_covers_a_non_square_window() -> None:
    boxes = box_grid((60, 100), [20.0], stride=0.5)
    assert boxes.shape[1] == 4
    assert (boxes[:, 2] - boxes[:, 0] == 20).all() and (boxes[:, 3] - boxes[:, 1] == 20).all()
    assert boxes[:, 0].min() == 0 and boxes[:, 2].max() == 100
    assert boxes[:, 1].min() == 0 and boxes[:, 3].max() == 60
    cx = np.unique((boxes[:, 0] + boxes[:, 2]) / 2)
    assert np.diff(cx).max() <= 10 + 1e-9  # stride 0.5 * side
    several = box_grid((60, 100), [40.0, 20.0])
    assert len(several) > len(boxes)
    assert (several[: len(boxes)] == boxes).all()  # smallest side first


def test_masks_to_boxes_exclusive_ends_and_empty() -> None:
    masks = torch.zeros(2, 6, 9, dtype=torch.bool)
    masks[0, 1:3, 4:7] = True
    boxes = masks_to_boxes(masks)
    assert boxes.tolist() == [[4, 1, 7, 3], [0, 0, 0, 0]]
    mask = InstanceMask.from_full(masks[0].numpy())
    assert mask.box_xyxy == (4, 1, 7, 3) and mask.area == 6
    assert (mask.full((6, 9)) == masks[0].numpy()).all()


def test_nms_keeps_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]])
    scores = np.array([0.5, 0.9, 0.3, 0.5])
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == [1, 2]
    assert nms(boxes, scores, 1.0).tolist() == [1, 0, 3, 2]  # ties keep their order
    np.testing.assert_allclose(box_iou(boxes[:1], boxes[1:2]), [[81 / 119]])
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, scores[:2], 0.5)


def test_stability_score_is_iou_of_shifted_cutoffs() -> None:
    logits = torch.full((2, 4, 4), -5.0)
    logits[0, :2] = 5.0  # sharp: 8 pixels at both cut-offs
    logits[1, :2] = 5.0
    logits[1, 2:] = 0.5  # 8 more pixels between the cut-offs
    np.testing.assert_allclose(stability_scores(logits).numpy(), [1.0, 0.5])
    assert stability_scores(torch.full((1, 3, 3), -9.0)).item() == 0.0


def test_remove_small_regions_fills_holes_and_drops_islands() -> None:
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True
    mask[6, 6] = False  # a hole
    mask[17, 17] = True  # an island
    cleaned, changed = remove_small_regions(mask, 5)
    assert changed and cleaned[6, 6] and not cleaned[17, 17]
    assert cleaned.sum() == 100
    same, changed = remove_small_regions(cleaned, 5)
    assert not changed and (same == cleaned).all()


def test_touches_window_edge_ignores_image_edges() -> None:
    boxes = np.array([[0, 10, 20, 30], [95, 10, 100, 30], [40, 40, 60, 60]])
    near = touches_window_edge(boxes, (0, 0, 100, 100), (200, 100), tolerance=2)
    assert near.tolist() == [False, False, False]  # x edges are the image's; y1=100 not hit
    near = touches_window_edge(boxes, (0, 0, 100, 61), (200, 100), tolerance=2)
    assert near.tolist() == [False, False, True]


def _candidates(masks: list[np.ndarray], iou: list[float]) -> Proposals:
    compact = [InstanceMask.from_full(m) for m in masks]
    return Proposals.empty().extend(
        (compact, np.ones(len(masks), np.float32)), np.asarray(iou), np.zeros((len(masks), 4))
    )


def _rectangle(shape: tuple[int, int], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_merge_tiles_keeps_the_owners_copy_and_joins_fragments() -> None:
    shape = (60, 100)
    left = ((0, 0, 70, 60), (0, 0, 50, 60))  # (window, inner region it owns)
    right = ((30, 0, 100, 60), (50, 0, 100, 60))
    coin = _rectangle(shape, 40, 20, 48, 28)  # centre x = 44: the left tile owns it
    blob = _rectangle(shape, 55, 2, 80, 12)  # centre x = 67.5: the right tile owns it
    bar = _rectangle(shape, 10, 40, 90, 50)  # longer than the halo: each tile sees a piece

    def found(masks: list[np.ndarray], iou: list[float], stability: list[float]) -> Proposals:
        compact = [InstanceMask.from_full(m) for m in masks]
        return Proposals.empty().extend(
            (compact, np.asarray(stability)), np.asarray(iou), np.zeros((len(masks), 4))
        )

    in_left = _rectangle(shape, *left[0])
    in_right = _rectangle(shape, *right[0])
    per_tile = [
        # The coin, the blob's piece cut by the window (covered by the right tile's whole
        # blob: dropped) and the bar's piece.
        (*left, found([coin, blob & in_left, bar & in_left], [0.8, 0.9, 0.9], [0.9, 1, 0.95])),
        # A better-scored copy of the coin one pixel wider, loses to the owner's copy.
        (
            *right,
            found(
                [_rectangle(shape, 39, 20, 48, 28), blob, bar & in_right],
                [0.99, 0.9, 0.7],
                [1.0, 1.0, 0.85],
            ),
        ),
    ]
    merged = merge_tiles(per_tile, shape, nms_thresh=0.7)
    boxes = sorted(tuple(int(v) for v in box) for box in merged.boxes)
    assert boxes == [(10, 40, 90, 50), (40, 20, 48, 28), (55, 2, 80, 12)]
    (joined,) = [i for i, m in enumerate(merged.masks) if m.box_xyxy == (10, 40, 90, 50)]
    assert np.array_equal(merged.masks[joined].full(shape), bar)
    assert merged.iou[joined] == pytest.approx(0.8)  # the pieces' mean
    assert merged.stability[joined] == pytest.approx(0.85)  # the weakest piece's


def test_label_image_puts_small_objects_on_top_and_drops_hidden_ones() -> None:
    shape = (40, 60)
    big = np.zeros(shape, bool)
    big[5:35, 5:55] = True
    left, right = np.zeros(shape, bool), np.zeros(shape, bool)
    left[8:32, 6:30] = True
    right[8:32, 31:54] = True
    lone = np.zeros(shape, bool)
    lone[0:3, 0:3] = True
    seg = to_segmentation(_candidates([left, big, right, lone], [0.9, 0.95, 0.9, 0.9]), shape)
    # "big" is mostly covered by the two halves: it is left out of the label image.
    assert seg.num_objects == 3
    assert seg.mask_labels.tolist()[1] == 0
    assert set(np.unique(seg.labels)) == {0, 1, 2, 3}
    assert (seg.labels[left] == seg.mask_labels[0]).all()
    table = seg.table()
    assert [row["label"] for row in table] == [1, 2, 3]
    row = table[seg.mask_labels[0] - 1]
    assert row["area"] == left.sum() and (row["x0"], row["y0"], row["x1"], row["y1"]) == (
        6,
        8,
        30,
        32,
    )
    assert mask_iou(seg.masks[0], InstanceMask.from_full(left)) == 1.0


def test_table_files(tmp_path) -> None:
    shape = (10, 12)
    mask = np.zeros(shape, bool)
    mask[2:5, 3:9] = True
    seg = to_segmentation(_candidates([mask], [0.9]), shape)
    csv_text = seg.write_table(tmp_path / "objects.csv").read_text().splitlines()
    assert csv_text[0].startswith("label,area,x0,y0,x1,y1")
    assert csv_text[1].startswith("1,18,3,2,9,5")
    import json

    rows = json.loads(seg.write_table(tmp_path / "objects.json").read_text())
    assert rows[0]["area"] == 18 and rows[0]["predicted_iou"] == pytest.approx(0.9)


# ------------------------------------------------------------------------------ generator
def test_generator_settings_are_checked(tiny_predictor) -> None:
    with pytest.raises(ValueError, match="Unknown setting"):
        MaskGenerator(tiny_predictor, points_per_sid=8)
    with pytest.raises(ValueError, match="pred_iou_thresh"):
        MaskGenerator(tiny_predictor, pred_iou_thresh=1.5)
    with pytest.raises(ValueError, match="prompts"):
        MaskGenerator(tiny_predictor, prompts="clicks")
    with pytest.raises(ValueError, match="box_sizes"):
        MaskGenerator(tiny_predictor, box_sizes=())
    with pytest.raises(ValueError, match="diameter"):
        MaskGenerator(tiny_predictor, diameter=-3)
    assert EverythingSettings().validated() == EverythingSettings()
    generator = MaskGenerator(tiny_predictor, pred_iou_thresh=0.5, diameter=20)
    assert generator.settings.grid.pred_iou_thresh == 0.5 and generator.settings.diameter == 20
    with pytest.raises(ValueError, match="accepted shapes"):
        MaskGenerator(tiny_predictor).generate(np.zeros((2, 3, 8, 8)))


def test_generator_schemes_and_thresholds_from_the_registry(tiny_predictor) -> None:
    import dataclasses

    from sam_viz.automatic.grid_prompts import GridPrompts, GridSettings
    from sam_viz.models.registry import MODELS, SeededThresholds

    assert MaskGenerator(tiny_predictor).scheme == "seeds"
    assert MaskGenerator(tiny_predictor, prompts="boxes").scheme == "boxes"
    assert GridPrompts(tiny_predictor, "points", GridSettings()).token_indices == [1, 2, 3]
    assert GridPrompts(tiny_predictor, "boxes", GridSettings()).token_indices == [0]
    # The seeds scheme's thresholds live with the model, and settings can override them.
    assert MaskGenerator(tiny_predictor).thresholds == tiny_predictor.spec.seeded
    assert MaskGenerator(tiny_predictor).thresholds is not None
    mine = SeededThresholds(min_agreement=0.9)
    assert MaskGenerator(tiny_predictor, seeded=mine).thresholds == mine
    tiny_predictor.spec = dataclasses.replace(tiny_predictor.spec, seeded=mine)
    assert MaskGenerator(tiny_predictor).thresholds == mine
    assert MODELS["lite_medsam"].seeded is not None


def _loose(predictor, **overrides) -> MaskGenerator:
    """A generator that keeps the random tiny model's masks."""
    settings = {
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "first_pass_iou_thresh": 0.0,
        "first_pass_stability_thresh": 0.0,
        "points_per_side": 4,
        "box_sizes": (64.0,),
    }
    settings.update(overrides)
    return MaskGenerator(predictor, **settings)


@pytest.mark.parametrize("scheme", ["points", "boxes"])
def test_generator_runs_with_progress_on_a_non_square_image(tiny_predictor, scheme) -> None:
    image = np.random.default_rng(0).integers(0, 255, (96, 64), dtype=np.uint8)
    with torch.no_grad():  # the random IoU head scores box answers below 0: lift it
        tiny_predictor.model.mask_decoder.iou_prediction_head.layers[-1].bias += 1.0
    generator = _loose(tiny_predictor, prompts=scheme, whole_image=True)
    calls: list[tuple[int, int]] = []
    before = tiny_predictor.embedding
    result = generator.generate(image, progress=lambda d, t: calls.append((d, t)))
    assert result.labels.shape == (96, 64) and result.labels.dtype == np.int32
    assert len(result.masks) == len(result.predicted_iou) == len(result.mask_labels)
    assert calls and calls[-1][0] == calls[-1][1]
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert tiny_predictor.embedding is before  # the front end's image is left alone
    assert len(result.masks) > 0 and result.num_objects > 0  # loose thresholds keep some
    for mask, label in zip(result.masks, result.mask_labels, strict=True):
        x0, y0, x1, y1 = mask.box_xyxy
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 96
        if label:
            assert (result.labels == label).sum() <= mask.area


def test_generator_cancel(tiny_predictor) -> None:
    cancel = threading.Event()
    generator = _loose(tiny_predictor)
    image = np.zeros((64, 64), np.uint8)

    def progress(done: int, total: int) -> None:
        cancel.set()

    with pytest.raises(Cancelled):
        generator.generate(image, progress=progress, cancel=cancel)


def test_generator_grid_runs_per_window_and_joins_them(tiny_predictor) -> None:
    image = np.random.default_rng(1).integers(0, 255, (80, 300), dtype=np.uint8)
    steps: list[tuple[int, int]] = []
    generator = _loose(tiny_predictor, prompts="points", diameter=12)
    scaled = generator.scaled(image)
    assert len(scaled.grid) > 1  # small objects: several windows
    result = generator.generate(image, progress=lambda d, t: steps.append((d, t)), scaled=scaled)
    assert result.labels.shape == (80, 300)
    # Each window: 1 embedding + its batches of points (only those near its inner region).
    assert steps[-1][0] == steps[-1][1] >= 2 * len(scaled.grid)


# ---------------------------------------------------------------------------- real model
@pytest.mark.slow
def test_coins_are_found_one_by_one(lite_predictor, coins, coins_reference) -> None:
    result = MaskGenerator(lite_predictor).generate(coins)
    found, merged = coin_scores(result.labels, coins_reference)
    assert found >= 20, f"only {found} of 24 coins found at IoU >= 0.8"
    assert merged == 0, f"{merged} objects cover two coins"
    assert result.num_objects <= 30


# ---------------------------------------------------------------------------- command line
def test_cli_everything_writes_labels_and_table(
    tmp_path, tiny_model, tiny_spec, monkeypatch, capsys
):
    import tifffile

    from sam_viz import cli
    from sam_viz.predictor import Predictor

    monkeypatch.setattr(
        cli, "_load_predictor", lambda args: Predictor(tiny_model, tiny_spec, device="cpu")
    )
    image = np.random.default_rng(0).integers(0, 60000, (96, 64), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    code = cli.main(
        [
            "everything",
            str(tmp_path / "cells.tif"),
            "-o",
            str(tmp_path / "out" / "labels.tif"),
            "--prompts",
            "points",
            "--diameter",
            "60",
        ]
    )
    assert code == 0
    labels = tifffile.imread(tmp_path / "out" / "labels.tif")
    assert labels.shape == (96, 64) and labels.dtype == np.int32
    header = (tmp_path / "out" / "labels.csv").read_text().splitlines()[0]
    assert header.startswith("label,area") or header == "label,area"
    assert "objects (points prompts, tiny_test)" in capsys.readouterr().out


def test_cli_everything_bad_diameter_is_refused(capsys):
    from sam_viz import cli

    with pytest.raises(SystemExit):
        cli.main(["everything", "sample:coins", "-o", "l.tif", "--diameter", "-4"])
    assert "--diameter must be a positive number" in capsys.readouterr().err
