"""Memory of `sam-viz segment` on a very large image: one small box on a 12,000^2 field.

A user reported a 58 x 65 box on a 12,000 x 12,000 image answered with a mask spanning
1,743 x 791 px, and 7-8 GB spent writing the outputs of a 144 MB image. This runs the real
command (embedded LiteMedSAM, in this process) on a generated field of that size with a
bright nucleus under the box, and prints:

* the mask's pixels and bounding box (the object is about 50 px across);
* the traced allocation peak while the outputs are written (label TIFFs, scores.json,
  overlay preview), against the image's size: the goal is at most 2x;
* the process's peak RSS, for the whole run.

Usage::

    python benchmarks/bench_outputs.py              # 12,000^2
    python benchmarks/bench_outputs.py --side 4000  # quicker
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sam_viz import cli  # noqa: E402


def field(side: int, seed: int = 0) -> tuple[np.ndarray, tuple[int, int]]:
    """A dim uint8 field with nuclei of about 50 px on a grid, and one nucleus's centre."""
    rng = np.random.default_rng(seed)
    image = rng.integers(10, 30, (side, side), dtype=np.uint8)
    yy, xx = np.mgrid[-30:31, -30:31]
    disc = (xx**2 / 27**2 + yy**2 / 24**2) <= 1
    for cy in range(200, side - 100, 400):
        for cx in range(200, side - 100, 400):
            region = image[cy - 30 : cy + 31, cx - 30 : cx + 31]
            region[disc] = 160
    centre = (200 + 400 * (side // 800), 200 + 400 * (side // 800))
    return image, centre


def traced(function):
    """Wrap ``function`` so the traced allocation peak of its calls is recorded."""
    peaks: list[int] = []

    def wrapper(*args, **kwargs):
        tracemalloc.start()
        try:
            return function(*args, **kwargs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    wrapper.peaks = peaks  # type: ignore[attr-defined]
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=12_000)
    args = parser.parse_args()

    import tifffile

    image, (cy, cx) = field(args.side)
    work = Path(tempfile.mkdtemp(prefix="bench_outputs_"))
    path = work / "field.tif"
    tifffile.imwrite(path, image)
    box = f"{cx - 29},{cy - 32},{cx + 29},{cy + 33}"  # 58 x 65 px, as reported
    cli._write_answer = traced(cli._write_answer)  # type: ignore[method-assign]
    cli._write_overlay = traced(cli._write_overlay)  # type: ignore[method-assign]
    start = time.perf_counter()
    code = cli.main(
        ["segment", str(path), "-o", str(work / "out"), "--box", box, "--diameter", "50"]
    )
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"segment failed with {code}")
    summary = json.loads((work / "out" / "scores.json").read_text())
    best = summary["objects"][0]["best"]
    mask = tifffile.imread(work / "out" / f"{best}.tif") > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    writing = max(cli._write_answer.peaks + cli._write_overlay.peaks)  # type: ignore[attr-defined]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    mb = 1e6
    print(f"image {args.side}^2 uint8: {image.nbytes / mb:.0f} MB; box {box}")
    print(
        f"best mask ({best}): {int(mask.sum())} px, spanning "
        f"{cols[-1] - cols[0] + 1} x {rows[-1] - rows[0] + 1} px"
    )
    print(
        f"writing the outputs: peak {writing / mb:.0f} MB traced = "
        f"{writing / image.nbytes:.2f}x the image (goal <= 2x)"
    )
    print(f"whole run: {elapsed:.1f} s, peak RSS {rss / mb:.0f} MB")


if __name__ == "__main__":
    main()
