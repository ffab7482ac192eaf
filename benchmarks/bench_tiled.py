"""Segment everything on a 20,000 x 20,000 uint16 slide in bounded memory.

Makes a lazily drawn slide (:mod:`sam_viz.synthetic.slide`: islands of nuclei on an empty
scan, never held whole) and writes it as an OME-Zarr image chunk by chunk. Then runs the
command line on it in a child process, ``sam-viz everything SLIDE.zarr``, which goes tile
by tile (the image is over 4096 x 4096 px) and writes ``SLIDE.zarr/labels/sam_viz``, and
prints:

* the child's peak resident memory (the goal: at most 4 GiB) and its time;
* the objects found against the truth, island by island (F1 at IoU 0.5);
* the true objects cut by a tile border: found once, split in two, or missed;
* the reference, in the same run: the usual whole-image path on a 2048 x 2048 crop of the
  same slide, its time per island against the tiled run's.

Usage::

    python benchmarks/bench_tiled.py                       # 20,000², 12 islands
    python benchmarks/bench_tiled.py --size 8000 --islands 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sam_viz.automatic.scoring import cut_objects, score_instances  # noqa: E402
from sam_viz.automatic.tiled import TILE_SIDE  # noqa: E402
from sam_viz.synthetic.slide import make_slide  # noqa: E402

CROP = 2048


def write_slide(slide, path: Path) -> None:
    """The slide as a one-level NGFF 0.5 image, written chunk by chunk."""
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    write_image(slide.image(), group, scale_factors=(), axes="yx", fmt=FormatV05())


# The child prints its own peak resident set (Linux: kB) as it exits.
CHILD = (
    "import resource, sys\n"
    "from sam_viz.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def run_child(argv: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in GiB, stdout) of ``sam-viz ARGV`` in a child process."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"sam-viz {' '.join(argv)} exited with {done.returncode}")
    lines = done.stdout.strip().splitlines()
    peak = int(lines[-1].split()[-1]) / 2**20
    return seconds, peak, "\n".join(lines[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=20_000, help="slide side in px (20000)")
    parser.add_argument("--islands", type=int, default=12, help="islands of nuclei (12)")
    parser.add_argument("--island-side", type=int, default=1024, help="island side (1024)")
    parser.add_argument("--diameter", type=float, default=24.0, help="nucleus diameter (24)")
    parser.add_argument("--no-reference", action="store_true", help="skip the crop run")
    args = parser.parse_args()

    slide = make_slide(
        (args.size, args.size),
        islands=args.islands,
        island_side=args.island_side,
        diameter=args.diameter,
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slide.zarr"
        start = time.perf_counter()
        write_slide(slide, path)
        print(
            f"slide: {args.size} x {args.size} uint16, {args.islands} islands of "
            f"{args.island_side} px, nuclei of {args.diameter:.0f} px; written as OME-Zarr "
            f"in {time.perf_counter() - start:.0f} s"
        )
        seconds, peak, out = run_child(["everything", str(path), "--device", "cpu"])
        print(out.strip())
        print(f"tiled run: {seconds:.0f} s, peak RSS {peak:.2f} GiB (goal <= 4 GiB)")
        report_accuracy(slide, path)
        if not args.no_reference:
            reference(slide, Path(folder), seconds)


def report_accuracy(slide, path: Path) -> None:
    """F1 against the truth and the cut objects, island by island (never the whole slide)."""
    import zarr

    group = zarr.open_group(str(path / "labels" / "sam_viz"), mode="r")
    labels = group[group.attrs["ome"]["multiscales"][0]["datasets"][0]["path"]]
    f1s, once, split, missed, found = [], 0, 0, 0, set()
    for island in slide.islands:
        x0, y0, x1, y1 = island.window
        predicted = np.asarray(labels[y0:y1, x0:x1])
        truth = slide.labels(island.window)
        f1s.append(score_instances(predicted, truth).f1(0.5))
        borders_x = [b - x0 for b in range(TILE_SIDE, slide.shape[1], TILE_SIDE) if x0 < b < x1]
        borders_y = [b - y0 for b in range(TILE_SIDE, slide.shape[0], TILE_SIDE) if y0 < b < y1]
        cut = cut_objects(truth, predicted, borders_x, borders_y)
        once, split, missed = once + cut.once, split + cut.split, missed + cut.missed
        found.update(np.unique(predicted[predicted > 0]).tolist())
    print(
        f"objects in the islands: {len(found)}; F1 at IoU 0.5 per island: median "
        f"{np.median(f1s):.3f}, min {min(f1s):.3f}"
    )
    print("  per island: " + ", ".join(f"{f:.2f}" for f in f1s))
    total = once + split + missed
    print(
        f"true objects cut by a tile border: {total}; found once {once}, split {split}, "
        f"missed {missed}"
    )


def reference(slide, folder: Path, tiled_seconds: float) -> None:
    """The whole-image path on the 2048² crop holding the most islands, in the same run."""
    import tifffile

    best, count = (0, 0), -1
    for island in slide.islands:
        x0, y0 = (
            max(0, min(v, s - CROP))
            for v, s in zip(island.window[:2], slide.shape[::-1], strict=True)
        )
        inside = sum(
            x0 <= i.x and i.x + i.side <= x0 + CROP and y0 <= i.y and i.y + i.side <= y0 + CROP
            for i in slide.islands
        )
        if inside > count:
            best, count = (x0, y0), inside
    x0, y0 = best
    crop = folder / "crop.tif"
    tifffile.imwrite(crop, slide.region((x0, y0, x0 + CROP, y0 + CROP)))
    seconds, peak, _ = run_child(
        [
            "everything",
            str(crop),
            "-o",
            str(folder / "crop_labels.tif"),
            "--tile",
            "off",
            "--device",
            "cpu",
        ]
    )
    ours = tiled_seconds / len(slide.islands)
    theirs = seconds / max(count, 1)
    print(
        f"reference: whole-image path on a {CROP}² crop with {count} islands: {seconds:.0f} s, "
        f"peak RSS {peak:.2f} GiB"
    )
    print(
        f"seconds per island: tiled {ours:.1f}, reference {theirs:.1f}; "
        f"ratio (tiled / reference) {ours / theirs:.2f}"
    )


if __name__ == "__main__":
    main()
