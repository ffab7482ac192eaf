"""How far reduced precision moves the embedded default's masks from float32's.

For each precision (bfloat16 autocast, int8 dynamic quantisation of the encoder's linear
layers) the same boxes are answered as with float32: the 24 coins of scikit-image's coins
image and objects of held-out generated microscopy fields (nuclei, cytoplasm-stained cells,
histology; 512 x 512, windows at the field's own diameter, as the front ends do). Prints
per precision and object kind: how many masks, the lowest and median mask IoU against the
float32 mask, how many fall below 0.98 (the bar a default precision must clear), the
largest embedding difference, and the encoder time per window as a ratio against float32
measured in the same run.

bfloat16 on a CPU without native support is emulated: its masks are what a native CPU or
GPU computes up to rounding, its time is not.

Usage::

    python benchmarks/eval_precision.py               # 3 fields per kind, 25 objects each
    python benchmarks/eval_precision.py --fields 1 --objects 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sam_viz.device import cpu_has_native_bf16  # noqa: E402
from sam_viz.io import read_image  # noqa: E402
from sam_viz.predictor import EmbeddingCache, Predictor  # noqa: E402
from sam_viz.synthetic.microscopy import HELD_OUT_SEEDS, make_field  # noqa: E402
from sam_viz.training.evaluate import coins_reference  # noqa: E402
from sam_viz.windows.scaled import ScaledImage  # noqa: E402

PRECISIONS = ("bfloat16", "int8")
BAR = 0.98  # the lowest IoU against float32 a default precision may give any mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def boxes_of(labels: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    boxes = []
    for i in rng.choice(ids, size=min(count, len(ids)), replace=False):
        ys, xs = np.nonzero(labels == i)
        boxes.append(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float))
    return boxes


def answers(predictor: Predictor, image: np.ndarray, diameter: float, boxes) -> tuple:
    """The shown mask per box, and the embeddings of the windows used (in order)."""
    scaled = ScaledImage(predictor, image, diameter=diameter)
    masks = []
    for box in boxes:
        answer = scaled.predict(box_xyxy=box)
        masks.append(answer.masks[answer.best])
    return masks, scaled


def encoder_ms(predictor: Predictor, repeats: int = 3) -> float:
    x = torch.randn(1, 3, predictor.spec.image_size, predictor.spec.image_size)
    times = []
    with torch.inference_mode(), predictor._autocast():
        predictor.model.image_encoder(x)
        for _ in range(repeats):
            start = time.perf_counter()
            predictor.model.image_encoder(x)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=3, help="generated fields per kind")
    parser.add_argument("--objects", type=int, default=25, help="objects sampled per field")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    coins = read_image("sample:coins")
    reference = coins_reference(coins)
    sets = [("coins", coins, float(coins.shape[1]), boxes_of(reference, 24, rng))]
    for kind in ("nuclei", "cells_fluorescence", "histology"):
        for seed in list(HELD_OUT_SEEDS)[: args.fields]:
            field = make_field(kind, seed, (512, 512))
            sets.append(
                (kind, field.image, field.diameter, boxes_of(field.labels, args.objects, rng))
            )

    loaded = Predictor.from_pretrained(device="cpu", progress=False)

    def predictor(precision: str) -> Predictor:
        import copy

        model = copy.deepcopy(loaded.model)  # int8 replaces the encoder's layers
        return Predictor(
            model, loaded.spec, device="cpu", cache=EmbeddingCache(128), precision=precision
        )

    base = predictor("float32")
    others = {precision: predictor(precision) for precision in PRECISIONS}
    base_ms = encoder_ms(base)
    ratios = {precision: encoder_ms(other) / base_ms for precision, other in others.items()}
    ious: dict[tuple[str, str], list[float]] = {}
    diffs: dict[tuple[str, str], float] = {}
    for kind, image, diameter, boxes in sets:
        masks, scaled = answers(base, image, diameter, boxes)
        for precision, other in others.items():
            theirs, _ = answers(other, image, diameter, boxes)
            ious.setdefault((precision, kind), []).extend(
                iou(a, b) for a, b in zip(masks, theirs, strict=True)
            )
            for window, side in scaled.embedded:
                key = scaled.window_key(window, side)
                a, b = base.cache.get(base.model_key, key), other.cache.get(other.model_key, key)
                if a is not None and b is not None:
                    diff = (a.features - b.features).abs().max().item()
                    diffs[precision, kind] = max(diffs.get((precision, kind), 0.0), diff)
    print(f"native bf16 on this CPU: {cpu_has_native_bf16()}; float32 encoder {base_ms:.0f} ms")
    print(f"{'precision':<10} {'objects':<20} {'n':>4} {'min IoU':>8} {'median':>7} "
          f"{'< 0.98':>7} {'max|emb diff|':>14} {'time vs f32':>12}")  # fmt: skip
    for (precision, kind), values in ious.items():
        v = np.array(values)
        print(
            f"{precision:<10} {kind:<20} {len(v):>4} {v.min():>8.3f} {np.median(v):>7.3f} "
            f"{np.sum(v < BAR):>7} {diffs.get((precision, kind), float('nan')):>14.3g} "
            f"{ratios[precision]:>11.2f}x"
        )


if __name__ == "__main__":
    main()
