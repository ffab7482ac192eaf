"""Full evaluation of click training: the click-trained LiteMedSAM against the original.

Prints, for held-out generated scenes (a seed stream training never draws from) and for
scikit-image's coins (held out of the data engine):

* single positive click at each object's interior (its deepest pixel; a coin's centre):
  mean best-of-three IoU, and how often the IoU head ranks the best candidate first (and
  how often the candidate shown first, by IoU head times stability, is the best);
* the same per scene kind (cells, nuclei, nucleoli, parts, wholes, blobs);
* box prompts on the coins: mean IoU of the original and of the trained model;
* tight boxes on every held-out scene object, per kind: what each model makes of the most
  informative prompt, a reference for the single clicks;
* clicks on nuclei inside cells: how often the candidates differ from nucleus to cell.

The tests check the same figures on a few scenes (tests/test_clicks_model.py).

Usage::

    python benchmarks/eval_clicks.py                       # the shipped delta
    python benchmarks/eval_clicks.py --delta lite_medsam_clicks.pt --scenes 60
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sam_viz.models.build import build_sam  # noqa: E402
from sam_viz.models.checkpoints import load_weights, registered_state_dict  # noqa: E402
from sam_viz.models.registry import MODELS  # noqa: E402
from sam_viz.predictor import Predictor  # noqa: E402
from sam_viz.training.data import held_out_scenes  # noqa: E402
from sam_viz.training.evaluate import (  # noqa: E402
    ClickScores,
    box_ious,
    click_scores,
    coin_click_scores,
    coins_reference,
    label_masks,
    nested_click,
)


def clicks_predictor(delta: Path | None) -> Predictor:
    """The click-trained model from the shipped delta, or from another delta file."""
    spec = MODELS["lite_medsam_clicks"]
    state = registered_state_dict(spec, progress=False, delta_path=delta)
    model = build_sam(spec)
    load_weights(model, spec, state, delta or Path(spec.delta_file or ""))
    return Predictor(model.eval(), spec, device="cpu", model_key=spec.encoder_name)


def line(name: str, scores: ClickScores) -> str:
    return (
        f"{name:<28} clicks {len(scores.best_iou):4d}  best-of-3 IoU {scores.mean_best_iou:.3f}  "
        f"(median {np.median(scores.best_iou):.3f})  IoU head picks the best: unambiguous "
        f"clicks {100 * scores.ranking_accuracy:.0f}% of {int(scores.unambiguous.sum())}, "
        f"all {100 * scores.ranking_accuracy_all:.0f}%; shown first (IoU head x stability) "
        f"is the best: {100 * scores.shown_accuracy:.0f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delta", type=Path, default=None, help="delta file (default: shipped)")
    parser.add_argument("--scenes", type=int, default=40, help="held-out scenes")
    parser.add_argument("--seed", type=int, default=0, help="training seed the scenes avoid")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    import skimage.data

    original = Predictor.from_pretrained("lite_medsam", device="cpu", progress=False)
    trained = clicks_predictor(args.delta)
    coins = skimage.data.coins()
    reference = coins_reference(coins)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    scenes = held_out_scenes(args.seed, args.scenes)
    for title, predictor in (("original LiteMedSAM", original), ("click-trained", trained)):
        print(f"\n== {title}")
        by_kind: dict[str, list[ClickScores]] = defaultdict(list)
        for scene in scenes:
            scores = click_scores(predictor, scene.image, scene.masks)
            for index, kind in enumerate(scene.kinds):
                by_kind[kind].append(scores.subset(np.arange(index, index + 1)))
        everything = ClickScores.merge(s for parts in by_kind.values() for s in parts)
        print(line(f"held-out scenes ({len(scenes)})", everything))
        for kind, parts in sorted(by_kind.items()):
            print(line(f"  {kind}", ClickScores.merge(parts)))
        print(line("coins, centre clicks", coin_click_scores(predictor, coins, reference)))
        boxes: dict[str, list[float]] = defaultdict(list)
        for scene in scenes:
            ious = box_ious(predictor, scene.image, scene.masks)
            for kind, value in zip(scene.kinds, ious, strict=True):
                boxes[kind].append(value)
        every = np.concatenate(list(boxes.values()))
        kinds = ", ".join(f"{kind} {np.mean(values):.3f}" for kind, values in sorted(boxes.items()))
        print(f"tight boxes on the held-out scenes: mean IoU {every.mean():.3f} ({kinds})")

    base_boxes = box_ious(original, coins, label_masks(reference))
    new_boxes = box_ious(trained, coins, label_masks(reference))
    print(
        f"\nboxes on coins: original mean IoU {base_boxes.mean():.4f}, click-trained "
        f"{new_boxes.mean():.4f} (change {new_boxes.mean() - base_boxes.mean():+.4f})"
    )

    differ = ordered = total = 0
    for scene in scenes:
        for index, kind in enumerate(scene.kinds):
            if kind != "nucleus":
                continue
            result = nested_click(trained, scene, index)
            total += 1
            nucleus_ok = result.nucleus_iou[0] >= 0.7
            cell_ok = result.cell_iou[0] >= 0.7
            differ += nucleus_ok and cell_ok and result.nucleus_iou[1] != result.cell_iou[1]
            ordered += nucleus_ok and cell_ok and result.nucleus_iou[1] < result.cell_iou[1]
    print(
        f"nucleus clicks: {total}; nucleus and cell both among the candidates (IoU >= 0.7) in "
        f"{differ} ({100 * differ / max(total, 1):.0f}%), smaller first in {ordered}"
    )
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
