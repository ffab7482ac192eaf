"""Propagation through a stack: our path against the pre-fix one, and where objects end.

1. ``time``: a 20-slice stack of one generated nuclei field (16-bit, dim, noisy) with fresh
   noise on every slice, so every nucleus is on every slice, as in the report of issue 19
   ("43 s for 20 slices with every plane embedded"). Every plane's grid windows are
   embedded first (what the napari plugin's "Embed all" does). Then, for each of a few
   nuclei, from the middle slice through every other slice:

   * ``pre-fix``: the per-slice work propagation did before: each slice answered by
     :meth:`ScaledImage.predict` (which routes a box to a window sized for it unless a grid
     window holds it with half its side as room) from the previous mask's box loosened by
     one pixel a side; and the pre-fix stop rules (predicted IoU >= 0.7 and stability >=
     0.8, absolute) applied afterwards to say where it would have stopped;
   * ``ours``: :func:`sam_viz.automatic.stacks.propagate`.

   Both start each repetition from a cache holding only the grid embeddings, in the same
   process, alternating; prints times, their ratio, encoder runs, slices reached and the
   masks' mean IoU with the truth.
2. ``ends``: generated nuclei through z (each an ellipsoid, ending somewhere in the stack),
   each committed on its largest slice as the model's answer to its box: predicted IoU
   and stability of masks of the object and of masks past its end, each relative to the
   object's own answer on its start slice, how often each rule stops on the first slice
   although the object goes on, and where each rule stops against the true ends.

Timings are wall-clock on a shared machine: compare the ratio, run when it is quiet, or
repeat (``--repeat``).

Usage::

    python benchmarks/bench_propagation.py                 # time
    python benchmarks/bench_propagation.py --only ends --seeds 3 11
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sam_viz.automatic import stacks  # noqa: E402
from sam_viz.automatic.stacks import StackImages, embed_stack, propagate  # noqa: E402
from sam_viz.predictor import Predictor  # noqa: E402
from sam_viz.predictor.cache import EmbeddingCache, ImageEmbedding  # noqa: E402
from sam_viz.synthetic.microscopy import make_field  # noqa: E402

PRE_FIX_MIN_SCORE, PRE_FIX_MIN_STABILITY = 0.7, 0.8


def _box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=float)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


class EncoderRuns:
    """Counts the image encoder's runs (a forward hook)."""

    def __init__(self, predictor: Predictor) -> None:
        self.count = 0
        predictor.model.image_encoder.register_forward_hook(self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1


def pre_fix_run(images: StackImages, start: int, mask: np.ndarray) -> dict[int, tuple]:
    """The pre-fix per-slice work, through every slice: {slice: (mask, IoU, stability)}."""
    steps: dict[int, tuple] = {}
    for run in (range(start + 1, len(images)), range(start - 1, -1, -1)):
        previous = mask
        for index in run:
            box = _box(previous) + np.array([-1.0, -1.0, 1.0, 1.0])  # its 1-px minimum margin
            box = np.clip(box, 0, np.tile(previous.shape[::-1], 2))
            answer = images.slice(index).predict(box_xyxy=box, multimask_output=False)
            found = answer.masks[0]
            steps[index] = (found, float(answer.iou_scores[0]), float(answer.stability_scores[0]))
            if not found.any():
                break
            previous = found
    return steps


def pre_fix_reach(
    steps: dict[int, tuple], start: int, mask: np.ndarray, depth: int
) -> tuple[int, int]:
    """(first, last) slice the pre-fix stop rules would have carried the object to."""
    first = last = start
    for run in (range(start + 1, depth), range(start - 1, -1, -1)):
        previous = mask
        for index in run:
            found, score, stability = steps.get(index, (np.zeros_like(mask), 0.0, 0.0))
            area = int(found.sum())
            if (
                area < 4
                or score < PRE_FIX_MIN_SCORE
                or stability < PRE_FIX_MIN_STABILITY
                or (found & previous).sum() < 0.5 * area
                or area > 2.0 * previous.sum()
            ):
                break
            first, last = min(first, index), max(last, index)
            previous = found
    return first, last


def nuclei_on_every_slice(depth: int, seed: int, shape: tuple[int, int], diameter: float):
    """A nuclei field on every slice with fresh noise; (stack, labels of one slice)."""
    field = make_field("nuclei", seed, shape, diameter=diameter)
    image = field.image.astype(np.float64)
    noise = np.random.default_rng(seed).normal(0, 0.05 * field.image.std(), (depth, *shape))
    stack = np.clip(image + noise, 0, 65535).astype(np.uint16)
    return stack, field.labels


def bench_time(args: argparse.Namespace, predictor: Predictor) -> None:
    stack, labels = nuclei_on_every_slice(args.depth, args.seed, (192, 256), args.diameter)
    start = args.depth // 2
    images = StackImages(predictor, stack, diameter=args.diameter)  # as the user gave it
    print(f"stack {stack.shape} {stack.dtype}; {images.slice(0).scale}; ", end="")
    print(f"{len(images.slice(0).grid)} windows per slice")
    began = time.perf_counter()
    embed_stack(predictor, images)
    print(f"every plane embedded in {time.perf_counter() - began:.1f} s (not timed below)")
    grid: list[ImageEmbedding] = [
        images.slice(z).embedding(window)
        for z in range(len(images))
        for window in images.slice(z).grid.windows
    ]

    def fresh_cache() -> None:
        # Only the grid embeddings, as after "Embed all".
        predictor.cache = EmbeddingCache(max_items=len(grid) + 4 * args.depth)
        for embedding in grid:
            predictor.cache.put(embedding)

    encoder = EncoderRuns(predictor)
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    inside = [i for i, a in zip(ids, areas, strict=True) if a >= 60 and _inside(labels == i)]
    chosen = inside[:: max(1, len(inside) // args.objects)][: args.objects]
    ratios = []
    totals = {"pre-fix": 0.0, "ours": 0.0}
    print(
        f"{'nucleus':>7} {'px':>4} | {'pre-fix s':>9} {'enc':>4} {'reach':>6} {'IoU':>5} | ", end=""
    )
    print(f"{'ours s':>7} {'enc':>4} {'reach':>6} {'IoU':>5} | ours / pre-fix")
    for label in chosen:
        nucleus = labels == label
        times: dict[str, list[float]] = {"pre-fix": [], "ours": []}
        runs: dict[str, int] = {}
        for _ in range(args.repeat):
            for name in ("pre-fix", "ours"):
                fresh_cache()
                images = StackImages(predictor, stack, diameter=images.diameter)
                before, began = encoder.count, time.perf_counter()
                if name == "pre-fix":
                    steps = pre_fix_run(images, start, nucleus)
                else:
                    result = propagate(predictor, images, start, nucleus)
                times[name].append(time.perf_counter() - began)
                runs[name] = encoder.count - before
        old_first, old_last = pre_fix_reach(steps, start, nucleus, args.depth)
        old_iou = np.mean([_iou(steps[z][0], nucleus) for z in steps])
        ours_iou = np.mean(
            [_iou(result.masks[z], nucleus) for z in range(args.depth) if z != start]
        )
        old_s, ours_s = np.median(times["pre-fix"]), np.median(times["ours"])
        ratios.append(ours_s / old_s)
        totals["pre-fix"] += old_s
        totals["ours"] += ours_s
        print(
            f"{label:>7} {nucleus.sum():>4} | {old_s:>9.2f} {runs['pre-fix']:>4} "
            f"{old_first:>2}-{old_last:<3} {old_iou:>5.2f} | {ours_s:>7.2f} {runs['ours']:>4} "
            f"{result.first:>2}-{result.last:<3} {ours_iou:>5.2f} | {ours_s / old_s:.2f}"
        )
        if result.first or result.last < args.depth - 1:
            print(f"        ours stopped: {result.describe()}")
    print(
        f"ours / pre-fix: median {np.median(ratios):.2f} per nucleus, "
        f"{totals['ours'] / totals['pre-fix']:.2f} in total ({len(ratios)} nuclei)"
    )


def _inside(mask: np.ndarray, border: int = 2) -> bool:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return bool(
        rows[0] >= border
        and cols[0] >= border
        and rows[-1] < height - border
        and cols[-1] < width - border
    )


def nuclei_through_z(seed: int, depth: int, shape: tuple[int, int] = (256, 256)):
    """Generated nuclei as ellipsoids through z: (stack, truth labels per slice).

    The field's nuclei, each given a centre slice and a half-height of 3-7 slices; on a
    slice a nucleus keeps the part of its outline within its radius there, and the field
    is rendered again (the same brightness, texture and optics), with fresh noise.
    """
    from sam_viz.synthetic.microscopy import nuclei as generator
    from sam_viz.synthetic.microscopy.geometry import fit_diameter
    from sam_viz.synthetic.microscopy.noise import loguniform

    rng = np.random.default_rng(seed)
    nominal = float(loguniform(rng, 10, 40))
    crowded = rng.random() < 0.5
    density = rng.uniform(0.25, 0.5) if crowded else float(loguniform(rng, 0.02, 0.25))
    options = {
        "clustering": rng.uniform(0.0, 2.5),
        "spacing": rng.uniform(0.7, 0.95),
        "mitotic_rate": rng.uniform(0.0, 0.05),
        "micronuclei_rate": rng.uniform(0.0, 0.03),
    }
    geometry_seed, render_seed = rng.integers(2**63, size=2)

    def build(geo_rng, size):
        nuclei = generator._nuclei_geometry(
            geo_rng, shape, size * (1 + 0.12 * density), density, **options
        )
        return nuclei.labels, nuclei

    _, nuclei = fit_diameter(build, int(geometry_seed), nominal, None)
    count = int(nuclei.labels.max())
    z_rng = np.random.default_rng(seed + 1)
    centre, half = z_rng.uniform(0, depth - 1, count + 1), z_rng.uniform(3, 7, count + 1)
    planes, truth = [], []
    for z in range(depth):
        radius = np.sqrt(np.clip(1 - ((z - centre) / half) ** 2, 0, 1))
        radius[[0, count]] = 1.0  # the last label stays: the renderer draws per label
        at = radius[nuclei.labels]
        keep = (nuclei.labels > 0) & (at > 0) & (nuclei.depth <= at)
        labels = np.where(keep, nuclei.labels, 0)
        depth_z = np.where(keep, nuclei.depth / np.maximum(at, 1e-6), 1.0).astype(np.float32)
        sliced = generator._Nuclei(labels, depth_z, nuclei.mitotic, nuclei.roughness)
        planes.append(
            generator._render_nuclei(np.random.default_rng(int(render_seed)), sliced, nominal)
        )
        truth.append(labels)
    volume = np.stack(planes).astype(np.float64)
    volume += np.random.default_rng(seed + 2).normal(0, 0.04 * volume.std(), volume.shape)
    return np.clip(volume, 0, 65535).astype(np.uint16), np.stack(truth)


def bench_ends(args: argparse.Namespace, predictor: Predictor) -> None:
    inside_score, inside_stab, past_score, past_stab = [], [], [], []
    rules = ["pre-fix", *(f"ours, tolerance {t:g}" for t in args.tolerances)]
    ends: dict[str, list[str]] = {rule: [] for rule in rules}
    stuck: dict[str, list[bool]] = {rule: [] for rule in rules}
    for seed in args.seeds:
        stack, truth = nuclei_through_z(seed, args.depth)
        images = StackImages(predictor, stack)
        print(f"seed {seed}: {images.slice(0).scale}", flush=True)
        for label in range(1, int(truth.max())):
            areas = (truth == label).sum(axis=(1, 2))
            present = np.flatnonzero(areas)
            if areas.max() < 30 or (present[0] == 0 and present[-1] == args.depth - 1):
                continue
            start = int(np.argmax(areas))
            # The object as a user commits it: the model's answer to its box.
            committed = images.slice(start).predict(
                box_xyxy=_box(truth[start] == label), multimask_output=False
            )
            mask = committed.masks[0]
            if not mask.any():
                continue
            own = stacks._next_slice(images.slice(start), mask, 0.0, False, None)
            steps = pre_fix_run(images, start, mask)
            for index, (found, score, stability) in steps.items():
                here = truth[index] == label
                if here.sum() >= 0.25 * areas.max() and _iou(found, here) >= 0.5:
                    inside_score.append(score - own.score)
                    inside_stab.append(stability - own.stability)
                elif not here.any():
                    past_score.append(score - own.score)
                    past_stab.append(stability - own.stability)
            reach = {"pre-fix": pre_fix_reach(steps, start, mask, args.depth)}
            for tolerance, rule in zip(args.tolerances, rules[1:], strict=True):
                result = propagate(predictor, images, start, mask, tolerance=tolerance)
                reach[rule] = (result.first, result.last)
            for rule, (first, last) in reach.items():
                ends[rule] += _ends(first, last, areas)
                # Stopped on the first slice of a direction where the object goes on.
                for reached, step in ((first, start - 1), (last, start + 1)):
                    if 0 <= step < args.depth and areas[step] >= 0.5 * areas.max():
                        stuck[rule].append(reached == start)
    for name, inside, past in (
        ("predicted IoU", inside_score, past_score),
        ("stability", inside_stab, past_stab),
    ):
        print(
            f"{name} - own: object {_spread(inside)} ({len(inside)} masks); "
            f"past its end {_spread(past)} ({len(past)} masks)"
        )
    print("Where each rule stopped, per end of an object: short of its last slice with a")
    print("quarter of its largest area, in its cap (beyond that, where it still has pixels),")
    print("or past it; and how often it stopped on the first slice where the object goes on.")
    for rule in rules:
        found = np.array(ends[rule])
        print(
            f"{rule:>20}: short {np.mean(found == 'short'):4.0%}, in the cap "
            f"{np.mean(found == 'cap'):4.0%}, past {np.mean(found == 'past'):4.0%} "
            f"({len(found)} ends); stopped on the first slice {sum(stuck[rule])} of "
            f"{len(stuck[rule])} times"
        )


def _ends(first: int, last: int, areas: np.ndarray) -> list[str]:
    """Each end of a propagated object: ``short`` of the object's last slice with a quarter
    of its largest area, in its ``cap`` (up to its last slice with pixels), or ``past``."""
    large = np.flatnonzero(areas >= 0.25 * areas.max())
    present = np.flatnonzero(areas)
    found = []
    for short, past in (
        (first > large[0], first < present[0]),
        (last < large[-1], last > present[-1]),
    ):
        found.append("short" if short else "past" if past else "cap")
    return found


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return f"{p5:+.2f} / {p50:+.2f} / {p95:+.2f} (5th / 50th / 95th percentile)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("time", "ends"), default="time")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--diameter", type=float, default=24.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 11])
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tolerances", type=float, nargs="+", default=[stacks.TOLERANCE])
    args = parser.parse_args()
    loaded = Predictor.from_pretrained(device="cpu", progress=False)
    predictor = Predictor(loaded.model, loaded.spec, device="cpu", cache=EmbeddingCache(256))
    if args.only == "time":
        bench_time(args, predictor)
    else:
        bench_ends(args, predictor)


if __name__ == "__main__":
    main()
