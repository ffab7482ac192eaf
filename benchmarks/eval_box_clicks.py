"""What one corrective click after a box does, with the box-only default and the click model.

The front ends' guide must say what is true about clicks after a box. For each object: its
tight box is answered (the candidate shown first, as a user sees it); then one corrective
click is added where the answer is most wrong (the deepest pixel of the largest error region:
a positive click in a missed part, a negative click on a wrongly included part) and the box +
click is answered again. Objects: the 24 coins of scikit-image's coins image and nuclei and
cytoplasm-stained cells of held-out generated microscopy fields (512 x 512, windows at the
field's own diameter, as the front ends do).

Prints per model and object kind: mean IoU with the box alone, with the box + click, and the
share of objects the click improved or worsened by more than 0.02. It also checks the rule
that offers fewer candidates when they are near-duplicates (``Candidates.offered``): how many
box answers offer one, two or three candidates, and how often the best of the three was
not among those offered (it lost more than 0.02 IoU).

Usage::

    python benchmarks/eval_box_clicks.py                 # 4 fields per kind, 30 objects each
    python benchmarks/eval_box_clicks.py --fields 2 --objects 15
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sam_viz.io import read_image  # noqa: E402
from sam_viz.predictor import Predictor  # noqa: E402
from sam_viz.predictor.candidates import Candidates  # noqa: E402
from sam_viz.synthetic.microscopy import HELD_OUT_SEEDS, make_field  # noqa: E402
from sam_viz.training.evaluate import coins_reference, deepest_point  # noqa: E402
from sam_viz.windows.scaled import ScaledImage  # noqa: E402

MODELS = ("lite_medsam", "lite_medsam_clicks")
CHANGE = 0.02  # an IoU change smaller than this is no change


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def corrective_click(answer: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int]:
    """(x, y) and label of the click a careful user makes: inside the largest error region."""
    missed, extra = truth & ~answer, answer & ~truth
    best: tuple[int, np.ndarray, int] | None = None
    for region, label in ((missed, 1), (extra, 0)):
        parts, count = ndimage.label(region)
        if not count:
            continue
        sizes = ndimage.sum(region, parts, range(1, count + 1))
        largest = int(np.argmax(sizes)) + 1
        if best is None or sizes[largest - 1] > best[0]:
            best = (int(sizes[largest - 1]), parts == largest, label)
    assert best is not None
    return deepest_point(best[1]), best[2]


def object_results(scaled: ScaledImage, truths: list[np.ndarray]) -> np.ndarray:
    """(N, 4) IoU with the box alone and with the box + one corrective click; the number of
    candidates offered; the IoU lost by offering only those (best of three minus best offered)."""
    rows = []
    for truth in truths:
        ys, xs = np.nonzero(truth)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
        first = scaled.predict(box_xyxy=box)
        shown = first.masks[first.best]
        offered = Candidates.from_prediction(first).offered
        ious = [iou(mask, truth) for mask in first.masks]
        lost = max(ious) - max(ious[i] for i in offered)
        if iou(shown, truth) == 1.0:
            rows.append((1.0, 1.0, len(offered), lost))
            continue
        point, label = corrective_click(shown, truth)
        second = scaled.predict(points_xy=point[None], point_labels=[label], box_xyxy=box)
        rows.append((iou(shown, truth), iou(second.masks[second.best], truth), len(offered), lost))
    return np.array(rows)


def objects_of(labels: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    chosen = rng.choice(ids, size=min(count, len(ids)), replace=False)
    return [labels == i for i in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=4, help="generated fields per kind")
    parser.add_argument("--objects", type=int, default=30, help="objects sampled per field")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    coins = read_image("sample:coins")
    reference = coins_reference(coins)
    sets: list[tuple[str, np.ndarray, float | None, list[np.ndarray]]] = [
        ("coins", coins, float(coins.shape[1]), [reference == i for i in range(1, 25)])
    ]
    for kind in ("nuclei", "cells_fluorescence"):
        for seed in list(HELD_OUT_SEEDS)[: args.fields]:
            field = make_field(kind, seed, (512, 512))
            objects = objects_of(field.labels, args.objects, rng)
            sets.append((kind, field.image, field.diameter, objects))

    print(f"{'model':<20} {'objects':<20} {'n':>4} {'box':>6} {'+click':>7} {'better':>7} "
          f"{'worse':>6}   offered 1/2/3   best not offered")  # fmt: skip
    for name in MODELS:
        predictor = Predictor.from_pretrained(name, device="cpu", progress=False)
        by_kind: dict[str, list[np.ndarray]] = {}
        for kind, image, diameter, truths in sets:
            scaled = ScaledImage(predictor, image, diameter=diameter)
            by_kind.setdefault(kind, []).append(object_results(scaled, truths))
        for kind, parts in by_kind.items():
            rows = np.concatenate(parts)
            gain = rows[:, 1] - rows[:, 0]
            print(
                f"{name:<20} {kind:<20} {len(rows):>4} {rows[:, 0].mean():>6.3f} "
                f"{rows[:, 1].mean():>7.3f} {np.mean(gain > CHANGE):>7.0%} "
                f"{np.mean(gain < -CHANGE):>6.0%}   "
                + "/".join(f"{np.mean(rows[:, 2] == k):.0%}" for k in (1, 2, 3))
                + f"   {np.mean(rows[:, 3] > CHANGE):.0%}"
            )


if __name__ == "__main__":
    main()
