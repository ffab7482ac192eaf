"""Segment everything on a folder of fields: in-process against a local dask.distributed
cluster of two worker processes (``sam-viz everything FOLDER -o OUT [--workers 2]``).

Makes ``--fields`` generated 512x512 nuclei fields (TIFFs in a temporary folder), runs the
command line on them both ways, end to end (model loading and, for the cluster, starting
it included), and prints both times, their ratio and whether every label image is equal.
On a machine with few cores expect no speed-up: the workers share the cores the in-process
run uses; this shows the machinery (one task per image, each worker keeping its model).

Usage::

    python benchmarks/bench_cluster.py                 # 100 fields, 2 workers
    python benchmarks/bench_cluster.py --fields 10
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sam_viz.cli import main  # noqa: E402
from sam_viz.synthetic.microscopy import make_field  # noqa: E402


def make_fields(folder: Path, count: int, shape: tuple[int, int]) -> None:
    """``count`` nuclei fields, one seed each, as TIFFs."""
    for seed in range(count):
        tifffile.imwrite(folder / f"field{seed:03d}.tif", make_field("nuclei", seed, shape).image)


def run(folder: Path, out: Path, extra: list[str]) -> float:
    """Seconds the command line takes on ``folder`` (its per-image lines are not shown)."""
    argv = ["everything", str(folder), "-o", str(out), "--device", "cpu", *extra]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"sam-viz {' '.join(argv)} exited with {code}")
    return seconds


def equal_labels(first: Path, second: Path) -> tuple[int, int, list[str]]:
    """How many label images are equal, of how many, and a line for each that is not: the
    pixels and objects that differ, and the IoU of its objects matched one to one."""
    from sam_viz.automatic.scoring import score_instances

    names = sorted(p.name for p in first.glob("*.tif"))
    differences = []
    for name in names:
        a, b = tifffile.imread(first / name), tifffile.imread(second / name)
        if np.array_equal(a, b):
            continue
        scores = score_instances(b, a)
        differences.append(
            f"  {name}: {np.count_nonzero(a != b)} pixels differ; objects {a.max()} vs "
            f"{b.max()}; matched IoU min {scores.matched_ious.min():.3f}"
        )
    return len(names) - len(differences), len(names), differences


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=100, help="number of fields (100)")
    parser.add_argument("--size", type=int, default=512, help="field side in pixels (512)")
    parser.add_argument("--workers", type=int, default=2, help="local workers (2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fields"
        folder.mkdir()
        make_fields(folder, args.fields, (args.size, args.size))
        print(f"{args.fields} fields of {args.size}x{args.size}")
        alone = run(folder, Path(tmp) / "in_process", [])
        print(f"in-process:          {alone:7.1f} s")
        spread = run(folder, Path(tmp) / "cluster", ["--workers", str(args.workers)])
        print(f"--workers {args.workers}:         {spread:7.1f} s")
        print(f"ratio (cluster / in-process): {spread / alone:.2f}")
        same, total, differences = equal_labels(Path(tmp) / "in_process", Path(tmp) / "cluster")
        print(f"equal label images: {same} of {total}")
        # Workers run torch on 1 thread each, this process on all cores: a sum in another
        # order can flip a pixel at a mask's threshold.
        print("\n".join(differences))


if __name__ == "__main__":
    main_bench()
