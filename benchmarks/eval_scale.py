"""Object scale: how big an object should be in the model's input, and what windows give.

Two parts, on generated microscopy fields with exact labels (``sam_viz.synthetic``):

* ``--sweep``: for objects of many sizes, a tight box answered in a window centred on it
  whose side makes the object span a given fraction of the model input. Prints mean IoU per
  fraction and kind: the table behind ``sam_viz.windows.scale`` (README, "Object scale").
* default: the acceptance table of the object-scale work, each figure beside the whole-image
  answer measured in the same run: tight boxes on nuclei fields (512^2, and the same objects
  tiled into 2048^2), on coins and coins tiled 4x4, one click per nucleus with the
  click-trained model, the estimated diameter, and the time to the first mask in an
  unembedded region against one window's encode + decode.

    python benchmarks/eval_scale.py --sweep --fields 12
    python benchmarks/eval_scale.py --fields 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from skimage.measure import regionprops

from sam_viz.predictor import Predictor
from sam_viz.prompts import PromptSet
from sam_viz.synthetic.microscopy import HELD_OUT_SEEDS, TUNING_SEEDS, make_field, tiled
from sam_viz.windows.diameter import estimate_diameter
from sam_viz.windows.geometry import place_window
from sam_viz.windows.scaled import ScaledImage

# Objects of a 2048^2 field answered (of about 6,000): each box may need its own window.
LARGE_SAMPLE = 400
FRACTIONS = (0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.35, 0.5)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def objects(labels: np.ndarray, count: int, rng: np.random.Generator, margin: int = 2):
    """Up to ``count`` objects away from the image edge: (tight box, mask crop box, label)."""
    height, width = labels.shape
    regions = [
        r
        for r in regionprops(labels)
        if r.bbox[0] >= margin
        and r.bbox[1] >= margin
        and r.bbox[2] <= height - margin
        and r.bbox[3] <= width - margin
    ]
    picked = rng.choice(len(regions), size=min(count, len(regions)), replace=False)
    for index in picked:
        region = regions[int(index)]
        r0, c0, r1, c1 = region.bbox
        yield np.array([c0, r0, c1, r1], float), region.label


def sweep(predictor: Predictor, kinds: list[str], fields: int, per_field: int) -> None:
    """Mean tight-box IoU against the object's fraction of the model input."""
    rng = np.random.default_rng(0)
    print(f"{'kind':<20} {'fraction':>8} {'mean IoU':>9} {'objects':>8}")
    for kind in kinds:
        scores: dict[float, list[float]] = {f: [] for f in (*FRACTIONS, 1.0)}
        for seed in TUNING_SEEDS[:fields]:
            field = make_field(kind, seed)
            scaled = ScaledImage(predictor, field.image, diameter=field.diameter)
            height, width = field.labels.shape
            for box, label in objects(field.labels, per_field, rng):
                side = float(max(box[2] - box[0], box[3] - box[1]))
                truth = field.labels == label
                centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
                for fraction in (*FRACTIONS, 1.0):
                    if fraction == 1.0:  # the whole image (SAM's usual frame)
                        window, wside = (0, 0, width, height), max(height, width)
                    else:
                        wside = round(side / fraction)
                        if wside >= max(height, width):
                            continue
                        window = place_window(centre, wside, (height, width))
                    x0, y0, x1, y1 = window
                    embedding = scaled.embedding(window, wside)
                    local = predictor.predict_boxes(
                        box[None] - np.array([x0, y0, x0, y0]), embedding=embedding
                    )
                    mask = np.zeros_like(truth)
                    mask[y0:y1, x0:x1] = local.masks[0]
                    scores[fraction].append(iou(mask, truth))
            predictor.cache._items.clear()  # windows are not shared between objects here
        for fraction, values in scores.items():
            if values:
                name = "whole image" if fraction == 1.0 else f"{fraction:.3f}"
                print(f"{kind:<20} {name:>8} {np.mean(values):9.3f} {len(values):8d}")


def box_ious(scaled: ScaledImage, labels: np.ndarray, sample: int | None = None) -> np.ndarray:
    """IoU of the mask each object's tight box gets, through the product path (window by
    window: thousands of whole-image masks of a large field would not fit in memory); for
    ``sample`` objects drawn at random when given (each box may need its own window)."""
    regions = regionprops(labels)
    if sample is not None and sample < len(regions):
        picked = np.random.default_rng(0).choice(len(regions), sample, replace=False)
        regions = [regions[int(i)] for i in np.sort(picked)]
    boxes = np.array([[r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]] for r in regions], float)
    areas = np.array([r.area for r in regions])
    ious = np.zeros(len(regions))
    for (x0, y0, x1, y1), members, local in scaled.boxes_by_window(boxes):
        crop = labels[y0:y1, x0:x1]
        for mask, index in zip(local.masks, members, strict=True):
            inter = np.count_nonzero(mask & (crop == regions[index].label))
            ious[index] = inter / (np.count_nonzero(mask) + areas[index] - inter)
    return ious


def whole_image_ious(predictor: Predictor, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The same, answered on the whole image at SAM's usual frame (the reference)."""
    scaled = ScaledImage(predictor, image, diameter=max(image.shape[:2]))
    return box_ious(scaled, labels)


def acceptance(predictor: Predictor, clicks: Predictor | None, fields: int) -> None:
    seeds = HELD_OUT_SEEDS[:fields]
    rows = []

    # Tight boxes on nuclei fields, 512^2, and the same objects tiled 4x4 into 2048^2.
    small, large, whole = [], [], []
    for seed in seeds:
        field = make_field("nuclei", seed)
        scaled = ScaledImage(predictor, field.image)
        small.append(box_ious(scaled, field.labels).mean())
        whole.append(whole_image_ious(predictor, field.image, field.labels).mean())
        if len(large) < max(2, fields // 5):
            big = tiled(field, (4, 4))
            scaled_big = ScaledImage(predictor, big.image)
            large.append(box_ious(scaled_big, big.labels, sample=LARGE_SAMPLE).mean())
    rows.append(("tight box per nucleus, 512^2 fields", np.mean(small), np.mean(whole), ">= 0.88"))
    rows.append(
        (
            f"the same objects tiled into 2048^2 ({LARGE_SAMPLE} a field)",
            np.mean(large),
            np.nan,
            "within 0.02 of 512^2",
        )
    )

    # Coins and coins tiled 4x4.
    import skimage.data

    from sam_viz.training.evaluate import coins_reference

    coins = skimage.data.coins()
    reference = coins_reference(coins)
    coin_fields = [(coins, reference)]
    big = np.tile(coins, (4, 4))
    big_labels = np.zeros_like(big, dtype=np.int32)
    count = int(reference.max())
    for i in range(4):
        for j in range(4):
            block = np.where(reference > 0, reference + count * (4 * i + j), 0)
            big_labels[i * 303 : (i + 1) * 303, j * 384 : (j + 1) * 384] = block
    coin_fields.append((big, big_labels))
    for name, (image, labels) in zip(("coins", "coins tiled 4x4"), coin_fields, strict=True):
        ours = box_ious(ScaledImage(predictor, image), labels).mean()
        ref = whole_image_ious(predictor, image, labels).mean()
        rows.append((f"tight box per coin, {name}", ours, ref, ">= 0.95"))

    # One click per nucleus (its deepest pixel), click-trained model, 2048^2.
    if clicks is not None:
        from sam_viz.training.evaluate import deepest_point

        field = tiled(make_field("nuclei", seeds[0]), (4, 4))
        scaled = ScaledImage(clicks, field.image)
        best = []
        for region in regionprops(field.labels)[:: max(1, field.n_objects // 120)]:
            truth = field.labels == region.label
            x, y = deepest_point(truth)
            answer = scaled.answer(PromptSet().add_point(x, y))
            best.append(max(iou(m, truth) for m in answer.masks))
        rows.append(("one click per nucleus, best of 3, 2048^2", np.mean(best), np.nan, ">= 0.80"))

    # Estimated diameter within 25 %.
    within = []
    for kind in ("nuclei", "cells_fluorescence", "cells_phase", "cells_brightfield", "histology"):
        for seed in seeds:
            field = make_field(kind, seed)
            estimate = estimate_diameter(field.image).diameter
            within.append(abs(estimate / field.diameter - 1) <= 0.25)
    rows.append(("estimated diameter within 25 % (all kinds)", np.mean(within), np.nan, "all"))

    # Time to the first mask in an unembedded region of a 2048^2 field.
    field = tiled(make_field("nuclei", seeds[0]), (4, 4))
    scaled = ScaledImage(predictor, field.image)
    region = regionprops(field.labels)[len(regionprops(field.labels)) // 2]
    box = np.array([region.bbox[1], region.bbox[0], region.bbox[3], region.bbox[2]], float)
    prompts = PromptSet(boxes_xyxy=box[None])
    _window, side = scaled.route(prompts)
    start = time.perf_counter()
    scaled.answer(prompts)
    first = time.perf_counter() - start
    other = place_window((100.0, 100.0), side, scaled.shape)
    start = time.perf_counter()
    embedding = scaled.embedding(other, side)
    predictor.predict(box_xyxy=[10, 10, 30, 30], embedding=embedding)
    reference = time.perf_counter() - start
    rows.append(("first mask, unembedded region (s)", first, reference, "<= 1.5 x reference"))

    print(f"{'check':<48} {'ours':>8} {'reference':>10}  target")
    for name, ours, ref, target in rows:
        ref_text = "" if np.isnan(ref) else f"{ref:10.3f}"
        print(f"{name:<48} {ours:8.3f} {ref_text:>10}  {target}")
    print(
        "reference: boxes answered on the whole image at SAM's usual frame; time: one "
        "window's encode + decode, measured in the same run"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="IoU against object fraction")
    parser.add_argument("--fields", type=int, default=12, help="fields per kind")
    parser.add_argument("--per-field", type=int, default=4, help="objects per field (sweep)")
    parser.add_argument(
        "--kinds", default="nuclei,cells_fluorescence", help="field kinds for the sweep"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    predictor = Predictor.from_pretrained(device="cpu", progress=False)
    if args.sweep:
        sweep(predictor, args.kinds.split(","), args.fields, args.per_field)
        return
    clicks = Predictor.from_pretrained("lite_medsam_clicks", device="cpu", progress=False)
    acceptance(predictor, clicks, args.fields)


if __name__ == "__main__":
    main()
