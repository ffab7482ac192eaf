"""How well estimate_diameter finds the typical object diameter, and how long it takes.

Accuracy: generated microscopy fields of every kind (``sam_viz.synthetic.microscopy``),
drawn from the held-out seed stream that tuning never used, at 512x512, 1024x1024 and a
few 2048x2048, each with the generator's own diameter draw (which spans the kind's range).
The truth is ``Field.diameter``, the median equivalent diameter of the labelled objects.
Prints per kind: how many fields are within 25 % of it, the median and worst relative
error, how often the polarity is the expected one, and the range of true diameters seen.

Timing: median wall time of estimate_diameter on a nuclei field of 512x512, 2048x2048 and
4096x4096 (the 4096 field is a 2048 field tiled 2x2; the estimator samples a central
region of large images, so repeated content does not make it faster). Timings are
wall-clock on a shared machine: run when it is quiet.

Usage::

    python benchmarks/eval_diameter.py                    # 30 + 10 + 2 fields per kind
    python benchmarks/eval_diameter.py --small 10 --medium 4 --large 0 --verbose
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sam_viz.synthetic.microscopy import (  # noqa: E402
    FIELD_KINDS,
    HELD_OUT_SEEDS,
    make_field,
    tiled,
)
from sam_viz.windows.diameter import estimate_diameter  # noqa: E402

EXPECTED_POLARITY = {
    "nuclei": "bright",
    "cells_fluorescence": "bright",
    "cells_phase": "dark",
    "cells_brightfield": "dark",
    "histology": "dark",
}


def field_plan(small: int, medium: int, large: int) -> list[tuple[int, tuple[int, int]]]:
    """(seed, shape) pairs: consecutive held-out seeds, the same for every kind."""
    shapes = [(512, 512)] * small + [(1024, 1024)] * medium + [(2048, 2048)] * large
    return [(HELD_OUT_SEEDS[i], shape) for i, shape in enumerate(shapes)]


def accuracy(plan: list[tuple[int, tuple[int, int]]], verbose: bool) -> None:
    header = (
        f"{'kind':20s} {'fields':>6s} {'within 25%':>10s} {'median err':>10s} "
        f"{'worst err':>9s} {'polarity':>8s} {'true diameters':>15s} {'s/field':>7s}"
    )
    print(header)
    print("-" * len(header))
    totals = []
    for kind in FIELD_KINDS:
        errors, polarity_ok, truths, seconds = [], [], [], []
        for seed, shape in plan:
            field = make_field(kind, seed, shape)
            start = time.perf_counter()
            estimate = estimate_diameter(field.image)
            seconds.append(time.perf_counter() - start)
            error = estimate.diameter / field.diameter - 1.0
            errors.append(error)
            polarity_ok.append(estimate.polarity == EXPECTED_POLARITY[kind])
            truths.append(field.diameter)
            if verbose:
                print(
                    f"  {kind} seed={seed} {shape[0]}x{shape[1]} true={field.diameter:.1f} "
                    f"estimate={estimate} error={error:+.2f}"
                )
        error_array = np.abs(np.array(errors))
        worst = errors[int(np.argmax(error_array))]
        within = float(np.mean(error_array < 0.25))
        totals.append(within)
        print(
            f"{kind:20s} {len(errors):6d} {within:10.0%} {np.median(error_array):10.1%} "
            f"{worst:+9.0%} {np.mean(polarity_ok):8.0%} "
            f"{min(truths):6.1f}-{max(truths):5.1f} px {np.mean(seconds):7.2f}"
        )
    print(f"{'all kinds':20s} {'':6s} {np.mean(totals):10.0%}")


def timing(repeat: int) -> None:
    base = make_field("nuclei", HELD_OUT_SEEDS[0], (2048, 2048))
    images = {
        "512x512": make_field("nuclei", HELD_OUT_SEEDS[1], (512, 512)).image,
        "2048x2048": base.image,
        "4096x4096": tiled(base, (2, 2)).image,
    }
    print(f"\nTime per field (nuclei, median of {repeat}):")
    for name, image in images.items():
        estimate_diameter(image)  # warm-up
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            estimate_diameter(image)
            times.append(time.perf_counter() - start)
        print(f"  {name:10s} {np.median(times):6.2f} s  ({image.dtype}, {image.nbytes >> 20} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=30, help="512x512 fields per kind")
    parser.add_argument("--medium", type=int, default=10, help="1024x1024 fields per kind")
    parser.add_argument("--large", type=int, default=2, help="2048x2048 fields per kind")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per image size")
    parser.add_argument("--verbose", action="store_true", help="print every field")
    parser.add_argument("--no-timing", action="store_true", help="accuracy only")
    args = parser.parse_args()
    plan = field_plan(args.small, args.medium, args.large)
    print(
        f"Held-out fields per kind: {args.small} of 512x512, {args.medium} of 1024x1024, "
        f"{args.large} of 2048x2048 (error = estimate / Field.diameter - 1)\n"
    )
    accuracy(plan, args.verbose)
    if not args.no_timing:
        timing(args.repeat)


if __name__ == "__main__":
    main()
