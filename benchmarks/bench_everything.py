"""Segment everything: our generator against Meta's reference, plus large and small images.

1. ``compare``: Meta's ``SamAutomaticMaskGenerator`` (its point grid, three multimask
   outputs per point, batches of 64) and ours with the same point-grid settings
   (``prompts="points"``), both with the same weights (``--model``: the embedded default,
   the click-trained LiteMedSAM) and SAM's default thresholds (predicted IoU > 0.88,
   stability >= 0.95), end to end on one image (encoder included, no cached embedding).
   Prints both times, the ratio, and how well the masks match (each non-empty mask of one
   side against its best match on the other). The original LiteMedSAM (``--model
   lite_medsam``) was trained with boxes only: its multimask outputs for a click are
   logits near zero everywhere, so which pixels pass the threshold turns on float
   rounding and the two sides' masks cannot match; run it with ``--iou 0.15 --stability 0``
   to compare the machinery only.
2. ``seeds``: our default scheme (seeds from the image, outlined by the model) on the same
   image, with the coins quality check when the image is coins. No reference runs the same
   method, so no ratio; ``benchmarks/eval_everything.py`` compares it with a baseline.
3. ``large``: a 4096x4096 image (coins tiled 13 x 11 times, so about 3,400 coins) with our
   generator at its object scale; prints time, windows, objects found and peak memory.

The reference is loaded from the installed ``segment_anything`` under a private module name
(``tests/reference_models.py``); torchvision cannot be installed beside this torch, so the
few torchvision functions it imports are given plain stand-ins, below, while it is imported.
``sys.modules["segment_anything"]`` is restored afterwards.

Timings are wall-clock on a shared machine: run when it is quiet, or repeat (``--repeat``).

Usage::

    python benchmarks/bench_everything.py                 # compare + boxes + large
    python benchmarks/bench_everything.py --only compare --points-per-side 16
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import reference_models as refmods  # noqa: E402

from sam_viz.automatic.everything import MaskGenerator  # noqa: E402
from sam_viz.automatic.instances import mask_iou  # noqa: E402
from sam_viz.masks import InstanceMask  # noqa: E402
from sam_viz.models.checkpoints import registered_state_dict  # noqa: E402
from sam_viz.models.registry import DEFAULT_MODEL, MODELS  # noqa: E402
from sam_viz.predictor import Predictor  # noqa: E402
from sam_viz.predictor.cache import EmbeddingCache  # noqa: E402

_GENERATOR_MODULE = f"{refmods._SAM_PRIVATE_NAME}.automatic_mask_generator"


# ------------------------------------------------------------------ torchvision stand-ins
def _stand_in_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Stand-in for torchvision.ops.batched_nms: greedy NMS per category, plain torch."""
    order = torch.argsort(scores, descending=True, stable=True)
    boxes = boxes[order].double()
    same = idxs[order][:, None] == idxs[order][None, :]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    iou = inter / (area[:, None] + area[None, :] - inter)
    removed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in range(len(boxes)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= (iou[i] > iou_threshold) & same[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def _stand_in_box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Stand-in for torchvision.ops.boxes.box_area."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _torchvision_stand_ins() -> dict[str, types.ModuleType]:
    from PIL import Image

    torchvision = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.batched_nms = _stand_in_batched_nms
    boxes.box_area = _stand_in_box_area
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    # torchvision resizes a PIL image with PIL's bilinear filter, as here.
    functional.to_pil_image = lambda array: Image.fromarray(np.asarray(array))
    functional.resize = lambda image, size: image.resize((size[1], size[0]), Image.BILINEAR)
    return {
        "torchvision": torchvision,
        "torchvision.ops": ops,
        "torchvision.ops.boxes": boxes,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
    }


def reference_generator_module() -> types.ModuleType:
    """segment-anything's ``automatic_mask_generator`` module, loaded privately.

    Its ``predictor.py`` imports ``segment_anything.modeling`` by absolute name, so while it
    loads, ``sys.modules["segment_anything"]`` is a bare package whose ``modeling`` is the
    privately loaded one; the previous entries are restored afterwards.
    """
    cached = sys.modules.get(_GENERATOR_MODULE)
    if cached is not None:
        return cached
    modeling = refmods.sam_modeling()
    package = types.ModuleType("segment_anything")
    package.__path__ = []
    package.modeling = modeling
    stand_ins = _torchvision_stand_ins()
    stand_ins["segment_anything"] = package
    stand_ins["segment_anything.modeling"] = modeling
    with refmods.modules_replaced(stand_ins):
        return importlib.import_module(_GENERATOR_MODULE)


def reference_lite_medsam(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Meta's ``Sam`` with the vendored LiteMedSAM TinyViT, loaded strictly with ``state``."""
    spec = MODELS["lite_medsam"]
    sam = refmods.reference_sam(
        refmods.lite_medsam_tiny_vit(),
        spec.image_size,
        spec.embedding_size,
        spec.pixel_mean,
        spec.pixel_std,
    )
    sam.load_state_dict(state, strict=True)
    return sam.eval()


# ---------------------------------------------------------------------------- helpers
def use_embedding(generator: object, features: torch.Tensor, input_size: tuple[int, int]) -> None:
    """Make a reference generator decode on a given embedding instead of encoding.

    Used for the mask comparison only: it removes the difference between the two image
    pipelines (PIL's uint8 resize against our float one), which LiteMedSAM's near-zero
    click logits amplify, so that what is compared is the decoding and filtering.
    """
    predictor = generator.predictor  # type: ignore[attr-defined]

    def set_image(image: np.ndarray, image_format: str = "RGB") -> None:
        predictor.reset_image()
        predictor.original_size = image.shape[:2]
        predictor.input_size = tuple(input_size)
        predictor.features = features
        predictor.is_image_set = True

    predictor.set_image = set_image


def fresh_predictor(model: str = DEFAULT_MODEL) -> Predictor:
    """Our predictor with an empty embedding cache (so every run encodes the image)."""
    return Predictor.from_pretrained(model, device="cpu", cache=EmbeddingCache(), progress=False)


def match(ours: list[InstanceMask], theirs: list[InstanceMask]) -> np.ndarray:
    """Best IoU of each mask in ``ours`` against ``theirs`` (boxes prefilter candidates)."""
    boxes = np.array([m.box_xyxy for m in theirs]).reshape(-1, 4)
    best = np.zeros(len(ours))
    for i, mask in enumerate(ours):
        x0, y0, x1, y1 = mask.box_xyxy
        near = np.flatnonzero(
            (boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)
        )
        best[i] = max((mask_iou(mask, theirs[j]) for j in near), default=0.0)
    return best


def coins_rgb() -> np.ndarray:
    import skimage.data

    return np.repeat(skimage.data.coins()[..., None], 3, axis=-1)


def coins_quality(labels: np.ndarray) -> tuple[int, int]:
    """(coins found with IoU >= 0.8, objects covering two coins), as the slow test checks."""
    import conftest
    import skimage.data
    from test_everything import coin_scores

    reference = conftest.coins_reference.__wrapped__(skimage.data.coins())
    return coin_scores(labels, reference)


def peak_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ---------------------------------------------------------------------------- runs
def run_compare(args: argparse.Namespace, image: np.ndarray) -> None:
    state = registered_state_dict(MODELS[args.model], progress=False)
    reference = reference_generator_module().SamAutomaticMaskGenerator(
        reference_lite_medsam(state),
        points_per_side=args.points_per_side,
        points_per_batch=64,
        pred_iou_thresh=args.iou,
        stability_score_thresh=args.stability,
        box_nms_thresh=0.7,
        crop_n_layers=0,
    )
    settings = {
        "prompts": "points",
        "whole_image": True,
        "points_per_side": args.points_per_side,
        "multimask": True,
        "pred_iou_thresh": args.iou,
        "stability_score_thresh": args.stability,
        "box_nms_thresh": 0.7,
    }
    ours_times, ref_times = [], []
    for _ in range(args.repeat):
        generator = MaskGenerator(fresh_predictor(args.model), **settings)
        start = time.perf_counter()
        result = generator.generate(image)
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        records = reference.generate(image)
        ref_times.append(time.perf_counter() - start)
    t_ours, t_ref = min(ours_times), min(ref_times)
    print(
        f"compare ({image.shape[1]}x{image.shape[0]}, {args.points_per_side}^2 points, "
        f"3 outputs each, IoU > {args.iou}, stability >= {args.stability}, {args.model}):\n"
        f"  reference {t_ref:7.1f} s   ours {t_ours:7.1f} s   ratio {t_ref / t_ours:5.2f}x"
        f"   (runs: reference {[round(t, 1) for t in ref_times]}, "
        f"ours {[round(t, 1) for t in ours_times]})"
    )
    report_match("end to end", result.masks, records)
    # The same comparison with the reference decoding our embedding.
    scaled = generator.scaled(image)
    embedding = scaled.embedding(scaled.grid.windows[0])  # from the cache
    use_embedding(reference, embedding.features, embedding.frame.input_size)
    report_match("same embedding", result.masks, reference.generate(image))


def run_native_match(args: argparse.Namespace, image: np.ndarray) -> None:
    """End-to-end mask match on a 256x256 crop: no resizing, so both see the same pixels."""
    crop = np.ascontiguousarray(image[20:276, 64:320])
    state = registered_state_dict(MODELS[args.model], progress=False)
    side = max(8, args.points_per_side // 2)
    reference = reference_generator_module().SamAutomaticMaskGenerator(
        reference_lite_medsam(state),
        points_per_side=side,
        pred_iou_thresh=args.iou,
        stability_score_thresh=args.stability,
    )
    generator = MaskGenerator(
        fresh_predictor(args.model),
        prompts="points",
        points_per_side=side,
        multimask=True,
        pred_iou_thresh=args.iou,
        stability_score_thresh=args.stability,
        whole_image=True,
    )
    print(f"compare at the model's input size (coins crop 256x256, {side}^2 points):")
    report_match("end to end", generator.generate(crop).masks, reference.generate(crop))


def report_match(what: str, masks: tuple[InstanceMask, ...], records: list[dict]) -> None:
    ours = [m for m in masks if m.area]
    theirs = [InstanceMask.from_full(r["segmentation"]) for r in records if r["area"]]
    ours_best, theirs_best = match(ours, theirs), match(theirs, ours)
    print(
        f"  masks ({what}): reference {len(theirs)}, ours {len(ours)} (non-empty); "
        f"ours matched at IoU >= 0.95: {np.mean(ours_best >= 0.95):.1%} "
        f"(min IoU {ours_best.min(initial=1):.3f}); reference matched: "
        f"{np.mean(theirs_best >= 0.95):.1%} (min IoU {theirs_best.min(initial=1):.3f})"
    )


def run_seeds(image: np.ndarray, is_coins: bool) -> None:
    generator = MaskGenerator(fresh_predictor())
    start = time.perf_counter()
    result = generator.generate(image)
    elapsed = time.perf_counter() - start
    line = f"seeds (our default): {elapsed:6.1f} s, {result.num_objects} objects"
    if is_coins:
        found, merged = coins_quality(result.labels)
        line += f"; coins found at IoU >= 0.8: {found}/24, objects covering two coins: {merged}"
    print(line)


def run_large(side: int) -> None:
    tile = coins_rgb()[..., 0]
    reps = (-(-side // tile.shape[0]), -(-side // tile.shape[1]))
    image = np.tile(tile, reps)[:side, :side]
    generator = MaskGenerator(fresh_predictor())
    count = len(generator.scaled(image).grid)
    steps: list[tuple[int, int]] = []
    start = time.perf_counter()
    result = generator.generate(image, progress=lambda done, total: steps.append((done, total)))
    elapsed = time.perf_counter() - start
    print(
        f"large {side}x{side} (coins tiled, ~{24 * image.size // tile.size} coins): "
        f"{elapsed:6.1f} s, {count} windows, {result.num_objects} objects, "
        f"{elapsed / count:.2f} s per window, peak memory {peak_memory_gib():.1f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["compare", "seeds", "large"], action="append")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="weights for both generators in compare (lite_medsam: its untrained multimask "
        "outputs give near-zero logits, so masks flip on rounding; use --iou 0.15 "
        "--stability 0)",
    )
    parser.add_argument("--iou", type=float, default=0.88, help="pred_iou_thresh (compare)")
    parser.add_argument(
        "--stability", type=float, default=0.95, help="stability_score_thresh (compare)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--large-side", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    only = set(args.only or ["compare", "seeds", "large"])
    image = coins_rgb()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if "compare" in only:
        run_compare(args, image)
        run_native_match(args, image)
    if "seeds" in only:
        run_seeds(image, is_coins=True)
    if "large" in only:
        run_large(args.large_side)


if __name__ == "__main__":
    main()
