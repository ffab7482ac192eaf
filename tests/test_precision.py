"""Precision choices: embeddings of each precision are cached apart, and int8 (opt-in)
quantises the encoder's linear layers and keeps coins' masks close to float32's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sam_viz import cli
from sam_viz.predictor import EmbeddingCache, Predictor


@pytest.mark.parametrize(
    "precision, suffix", [("float32", ""), ("bfloat16", "-bf16"), ("int8", "-int8")]
)
def test_each_precision_has_its_own_cache_key(tiny_model, tiny_spec, precision, suffix) -> None:
    predictor = Predictor(tiny_model, tiny_spec, device="cpu", precision=precision)
    assert predictor.model_key == f"{tiny_spec.name}{suffix}"


def test_a_shared_cache_never_mixes_precisions(tiny_model, tiny_spec, non_square_image) -> None:
    cache = EmbeddingCache(8)
    full = Predictor(tiny_model, tiny_spec, device="cpu", cache=cache)
    reduced = Predictor(copy.deepcopy(tiny_model), tiny_spec, device="cpu", cache=cache,
                        precision="bfloat16")  # fmt: skip
    a, b = full.embed(non_square_image), reduced.embed(non_square_image)
    assert a.model_key != b.model_key
    assert not torch.equal(a.features, b.features)


def test_int8_quantises_the_encoders_linear_layers(tiny_model, tiny_spec) -> None:
    predictor = Predictor(tiny_model, tiny_spec, device="cpu", precision="int8")
    kinds = {type(m) for m in predictor.model.image_encoder.modules()}
    assert torch.nn.Linear not in kinds
    assert torch.ao.nn.quantized.dynamic.Linear in kinds
    assert predictor.compute_dtype == torch.float32
    assert predictor.backend == "torch"


def test_the_cli_offers_int8() -> None:
    args = cli.build_parser().parse_args(
        ["embed", "sample:coins", "--cache-dir", "x", "--precision", "int8"]
    )
    assert args.precision == "int8"


@pytest.mark.slow
def test_int8_keeps_the_coins_close_to_float32(lite_predictor, coins, coins_reference) -> None:
    # Coins stay above 0.98 IoU with float32 (benchmarks/eval_precision.py); small
    # microscopy objects do not, which is why int8 is opt-in.
    int8 = Predictor(
        copy.deepcopy(lite_predictor.model),
        lite_predictor.spec,
        device="cpu",
        cache=EmbeddingCache(4),
        precision="int8",
    )
    float32 = Predictor(
        lite_predictor.model, lite_predictor.spec, device="cpu", cache=EmbeddingCache(4)
    )
    int8.set_image(coins)
    float32.set_image(coins)
    ious = []
    for label in range(1, int(coins_reference.max()) + 1):
        rows, cols = np.nonzero(coins_reference == label)
        box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], float)
        a, b = int8.predict(box_xyxy=box), float32.predict(box_xyxy=box)
        x, y = a.masks[a.best], b.masks[b.best]
        ious.append((x & y).sum() / (x | y).sum())
    assert min(ious) >= 0.98, sorted(ious)[:3]
