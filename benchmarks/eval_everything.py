"""Segment everything on microscopy: the acceptance table, and the thresholds' statistics.

Default: on held-out generated fields (``sam_viz.synthetic.microscopy.HELD_OUT_SEEDS``),
our segment everything (embedded default model, diameter estimated, as the CLI runs it)
beside the Otsu + watershed baseline measured in the same run: F1 at IoU 0.5 and the mean
segmentation accuracy (mSA, IoU 0.50 to 0.95) on nuclei fields of 512^2 and 2048^2, cell
fields, the coins (objects at IoU >= 0.8), and the time and peak memory per field.

``--tune``: on tuning fields (never the held-out ones), every seed's outline and region
with the model's scores, then the thresholds of ``SeededThresholds`` that maximise the mean
mSA, and how the score depends on each: what ``sam_viz.models.registry`` holds.

``--ome-zarr``: each field is also written as an OME-Zarr image and segmented from it, read
lazily as the command line reads it; the table is scored on those labels, and the count of
label images equal to the in-memory run's is printed (``--no-large`` skips the 2048^2 case).

    python benchmarks/eval_everything.py --fields 10
    python benchmarks/eval_everything.py --tune --fields 8
    python benchmarks/eval_everything.py --ome-zarr --no-large --fields 3
"""

from __future__ import annotations

import argparse
import itertools
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from sam_viz.automatic.everything import MaskGenerator
from sam_viz.automatic.instances import mask_iou
from sam_viz.automatic.results import Proposals, to_segmentation
from sam_viz.automatic.scoring import otsu_watershed, score_instances
from sam_viz.automatic.seeds import find_seeds
from sam_viz.masks import InstanceMask
from sam_viz.models.registry import SeededThresholds
from sam_viz.predictor import Predictor
from sam_viz.synthetic.microscopy import HELD_OUT_SEEDS, TUNING_SEEDS, make_field, tiled

BRIGHT = {"nuclei": True, "cells_fluorescence": True}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(predictor: Predictor, image: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    labels = MaskGenerator(predictor).generate(image).labels
    return labels, time.perf_counter() - start


class ZarrCopies:
    """Segments each field from an OME-Zarr copy too, and counts equal label images."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp())
        self.equal = self.total = self.rgb = 0

    def run(self, predictor: Predictor, image: np.ndarray) -> tuple[np.ndarray, float]:
        import zarr
        from ome_zarr.format import FormatV05
        from ome_zarr.writer import write_image

        from sam_viz.automatic.tiled import segment_image
        from sam_viz.io import open_image

        expected, elapsed = run(predictor, image)
        if image.ndim == 3:  # RGB (H&E): an OME-Zarr image holds it as three channels
            self.rgb += 1
            return expected, elapsed
        path = self.folder / f"field{self.total}.zarr"
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        write_image(image, group, scale_factors=(2,), axes="yx", fmt=FormatV05())
        predictor.cache._items.clear()  # the copy is embedded again, not read from memory
        start = time.perf_counter()
        labels = segment_image(MaskGenerator(predictor), open_image(path)).labels
        elapsed = time.perf_counter() - start
        self.total += 1
        self.equal += bool(np.array_equal(labels, expected))
        return labels, elapsed


def row(name: str, ours: list, base: list, seconds: list[float], target: str) -> str:
    f1 = np.mean([s.f1() for s in ours])
    msa = np.mean([s.msa for s in ours])
    bf1 = np.mean([s.f1() for s in base])
    bmsa = np.mean([s.msa for s in base])
    return (
        f"{name:<34} {f1:6.3f} {msa:6.3f} | {bf1:6.3f} {bmsa:6.3f} | "
        f"{np.mean(seconds):6.1f} s  {target}"
    )


def acceptance(
    predictor: Predictor, count: int, copies: ZarrCopies | None = None, large: bool = True
) -> None:
    segment = run if copies is None else copies.run
    print(f"{'fields':<34} {'F1':>6} {'mSA':>6} | {'base F1':>7} {'mSA':>6} | time   target")
    cases = [
        ("nuclei 512^2", "nuclei", 1, count, "F1 >= 0.90, mSA >= 0.60"),
        ("nuclei 2048^2 (4x4 tiled)", "nuclei", 4, max(2, count // 5), "F1 >= 0.90, mSA >= 0.60"),
        ("cells, cytoplasm stain 512^2", "cells_fluorescence", 1, count, "F1 >= 0.80"),
        ("cells, phase contrast 512^2", "cells_phase", 1, count, ""),
        ("cells, bright field 512^2", "cells_brightfield", 1, count, ""),
        ("H&E nuclei 512^2", "histology", 1, count, ""),
    ]
    if not large:
        cases = [case for case in cases if case[2] == 1]
    for name, kind, reps, fields, target in cases:
        ours, base, seconds = [], [], []
        for seed in HELD_OUT_SEEDS[:fields]:
            field = make_field(kind, seed)
            if reps > 1:
                field = tiled(field, (reps, reps))
            labels, elapsed = segment(predictor, field.image)
            seconds.append(elapsed)
            ours.append(score_instances(labels, field.labels))
            baseline = otsu_watershed(field.image, bright=BRIGHT.get(kind, False))
            base.append(score_instances(baseline, field.labels))
            predictor.cache._items.clear()
        print(row(name, ours, base, seconds, target), flush=True)

    import skimage.data

    from sam_viz.training.evaluate import coins_reference

    coins = skimage.data.coins()
    labels, elapsed = segment(predictor, coins)
    scores = score_instances(labels, coins_reference(coins))
    found = int(np.count_nonzero(scores.matched_ious >= 0.8))
    print(f"{'coins: objects at IoU >= 0.8':<34} {found:>6} of {scores.n_true}  {elapsed:.1f} s")
    if copies is not None:
        print(
            f"OME-Zarr copies: {copies.equal} of {copies.total} label images equal to the "
            "in-memory run's"
        )
        return

    field = tiled(make_field("nuclei", HELD_OUT_SEEDS[0]), (8, 8))
    before = peak_rss_gib()
    _, elapsed = run(predictor, field.image)
    print(
        f"{'nuclei 4096^2: peak RSS (GiB)':<34} {peak_rss_gib():6.2f} "
        f"(before {before:.2f})  {elapsed:.1f} s  target <= 4 GiB"
    )


def tune(predictor: Predictor, count: int) -> None:
    """Collect every seed's outline and region on tuning fields, then search thresholds."""
    kinds = ["nuclei", "cells_fluorescence", "cells_phase", "histology"]
    collected = []  # per field: (truth, seeds, outlines, iou, stability)
    for kind in kinds:
        for seed in TUNING_SEEDS[400 : 400 + count]:
            field = make_field(kind, seed)
            generator = MaskGenerator(predictor, diameter=field.diameter)
            scaled = generator.scaled(field.image)
            seeds = find_seeds(field.image, field.diameter, polarity=scaled.polarity)
            boxes = seeds.boxes_xyxy.astype(np.float64)
            outlines = [None] * len(seeds)
            iou = np.zeros(len(seeds))
            stability = np.zeros(len(seeds))
            for window, members, local in scaled.boxes_by_window(boxes, grid_only=True):
                for row_index, index in enumerate(members):
                    mask = InstanceMask.from_full(local.masks[row_index])
                    outlines[index] = mask.shifted(*window[:2]) if mask.area else None
                    iou[index] = local.iou_scores[row_index]
                    stability[index] = local.stability_scores[row_index]
            regions = [
                InstanceMask(
                    tuple(int(v) for v in box),
                    seeds.regions[box[1] : box[3], box[0] : box[2]] == i + 1,
                )
                for i, box in enumerate(seeds.boxes_xyxy.astype(int))
            ]
            agreement = np.array(
                [
                    mask_iou(o, r) if o is not None else 0.0
                    for o, r in zip(outlines, regions, strict=True)
                ]
            )
            collected.append((kind, field.labels, outlines, regions, iou, stability, agreement))
            predictor.cache._items.clear()
        print(f"collected {kind}", flush=True)

    def score(thresholds: SeededThresholds) -> dict[str, float]:
        per_kind: dict[str, list[float]] = {}
        for kind, truth, outlines, regions, iou, stability, agreement in collected:
            kept = []
            for o, r, i, s, a in zip(outlines, regions, iou, stability, agreement, strict=True):
                ok = (
                    o is not None
                    and i >= thresholds.min_predicted_iou
                    and s >= thresholds.min_stability
                    and a >= thresholds.min_agreement
                )
                if ok:
                    kept.append(o)
                elif thresholds.keep_regions:
                    kept.append(r)
            proposals = Proposals(
                tuple(kept),
                np.zeros(len(kept)),
                np.zeros(len(kept)),
                np.zeros((len(kept), 4)),
                np.zeros(len(kept)),
            )
            labels = to_segmentation(proposals, truth.shape).labels
            per_kind.setdefault(kind, []).append(score_instances(labels, truth).msa)
        return {kind: float(np.mean(v)) for kind, v in per_kind.items()}

    grid = itertools.product(
        (0.0, 0.5, 0.7, 0.85), (0.0, 0.5, 0.7, 0.8, 0.9), (0.0, 0.2, 0.3, 0.5), (True, False)
    )
    results = []
    for iou_t, stab_t, agree_t, keep in grid:
        thresholds = SeededThresholds(iou_t, stab_t, agree_t, keep)
        by_kind = score(thresholds)
        results.append((float(np.mean(list(by_kind.values()))), thresholds, by_kind))
    results.sort(key=lambda r: -r[0])
    print("best mean mSA over kinds, and the runners-up:")
    for mean, thresholds, by_kind in results[:8]:
        kinds_text = " ".join(f"{k} {v:.3f}" for k, v in by_kind.items())
        print(f"  {mean:.3f}  {thresholds}  ({kinds_text})")
    current = SeededThresholds()
    print(f"current defaults {current}: {score(current)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=10, help="fields per kind")
    parser.add_argument("--tune", action="store_true", help="thresholds' statistics")
    parser.add_argument("--ome-zarr", action="store_true", help="segment OME-Zarr copies")
    parser.add_argument("--no-large", action="store_true", help="skip the 2048^2 fields")
    args = parser.parse_args()
    predictor = Predictor.from_pretrained(device="cpu", progress=False)
    if args.tune:
        tune(predictor, args.fields)
    else:
        copies = ZarrCopies() if args.ome_zarr else None
        acceptance(predictor, args.fields, copies, large=not args.no_large)


if __name__ == "__main__":
    main()
