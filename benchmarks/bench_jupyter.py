"""Mouse-up to overlay in a real browser: how long after releasing a box drag does the page
show the candidate mask?

Starts JupyterLab on 127.0.0.1 (temporary config and data, the same harness as the browser
test), runs a small notebook that shows ``SamWidget`` on scikit-image's coins with the
embedded default model (embedding computed once, before timing), then drags boxes around
coins with the real mouse in headless Chromium. In the page, the mouse-up time and the time
the displayed canvas first shows changed pixels at the coin's centre are taken with
``performance.now()``; the difference is the latency (kernel round trip, decoder, PNG
encoding, transfer, decoding and compositing).

    .venv/bin/python benchmarks/bench_jupyter.py [--boxes 20] [--torch-threads N]

Also prints the predictor's own time for the same boxes in this process, for comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "jupyter"))

import jupyter_lab_harness as harness  # noqa: E402

TARGET_MS = 250.0
NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": "import skimage.data\nfrom sam_viz import Predictor\n"
            "from sam_viz.jupyter import SamWidget\n"
            "widget = SamWidget(skimage.data.coins(), Predictor.from_pretrained())\n"
            "widget.wait()\nwidget",
        },
    ],
    "metadata": {
        "kernelspec": {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        }
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}

# In the page: note the mouse-up time, and the first repaint of the widget's canvas that
# changes the watched patch.
INSTRUMENT = """canvas => {
  const ctx = canvas.getContext('2d');
  const draw = ctx.drawImage.bind(ctx);
  const state = {up: null, changed: null, patch: null, baseline: null};
  window.__samViz = state;
  ctx.drawImage = (...args) => {
    draw(...args);
    if (state.patch && state.changed === null && state.up !== null) {
      const now = ctx.getImageData(...state.patch).data;
      if (now.some((v, i) => v !== state.baseline[i])) state.changed = performance.now();
    }
  };
  canvas.addEventListener('mouseup', () => { state.up = performance.now(); }, true);
}"""
ARM = """(canvas, patch) => {
  const state = window.__samViz;
  state.patch = patch;
  state.baseline = canvas.getContext('2d').getImageData(...patch).data;
  state.up = null; state.changed = null;
}"""


def coin_boxes(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) around the coins, from a classical segmentation."""
    from scipy import ndimage as ndi
    from skimage.filters import sobel
    from skimage.measure import label, regionprops
    from skimage.segmentation import watershed

    markers = np.zeros(image.shape, np.int32)
    markers[image < 30], markers[image > 150] = 1, 2
    coins = ndi.binary_fill_holes(watershed(sobel(image), markers) == 2)
    regions = [r for r in regionprops(label(coins)) if r.area > 500]
    return [(r.bbox[1] - 3, r.bbox[0] - 3, r.bbox[3] + 3, r.bbox[2] + 3) for r in regions]


def predictor_times(image: np.ndarray, boxes: list, threads: int | None) -> list[float]:
    """Milliseconds of ``Predictor.predict`` per box in this process (embedding cached)."""
    import torch

    from sam_viz import Predictor

    if threads:
        torch.set_num_threads(threads)

    predictor = Predictor.from_pretrained(progress=False)
    predictor.set_image(image)
    predictor.predict(box_xyxy=boxes[0])
    times = []
    for box in boxes:
        start = time.perf_counter()
        predictor.predict(box_xyxy=box)
        times.append(1000 * (time.perf_counter() - start))
    return times


def browser_times(boxes: list, threads: int | None) -> list[float]:
    notebook = json.loads(json.dumps(NOTEBOOK))
    if threads:
        notebook["cells"][0]["source"] = (
            f"import torch\ntorch.set_num_threads({threads})\n" + notebook["cells"][0]["source"]
        )
    with tempfile.TemporaryDirectory(prefix="sam_viz_bench_") as tmp:
        root, state = Path(tmp) / "root", Path(tmp) / "state"
        root.mkdir()
        (root / "bench.ipynb").write_text(json.dumps(notebook))
        with harness.jupyter_lab(root, state) as lab, harness.chromium_page() as page:
            harness.open_and_run_notebook(page, lab, "bench.ipynb")
            canvas = page.locator(harness.CANVAS).first
            canvas.evaluate(INSTRUMENT)
            times = []
            for x0, y0, x1, y1 in boxes:
                cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
                canvas.evaluate(ARM, [cx - 3, cy - 3, 6, 6])
                harness.drag(page, (x0, y0), (x1, y1), steps=5)
                page.wait_for_function("() => window.__samViz.changed !== null", timeout=20_000)
                up, changed = page.evaluate("() => [window.__samViz.up, window.__samViz.changed]")
                times.append(changed - up)
                time.sleep(0.3)  # let the kernel finish the status/legend updates
            return times


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (
        f"{name:34s} median {statistics.median(times):7.1f} ms   p90 {p90:7.1f} ms   "
        f"min {ordered[0]:6.1f}   max {ordered[-1]:6.1f}   (n={len(times)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=20)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads in the kernel (default: torch's choice)",
    )
    args = parser.parse_args()
    import skimage.data

    image = skimage.data.coins()
    boxes = coin_boxes(image)
    boxes = (boxes * (1 + args.boxes // max(len(boxes), 1)))[: args.boxes]
    browser = browser_times(boxes, args.torch_threads)
    model = predictor_times(image, boxes, args.torch_threads)
    median = statistics.median(browser)
    import os

    import torch

    print(
        "sam_viz Jupyter widget, embedded LiteMedSAM on CPU, coins 303x384, embedding cached; "
        f"torch threads {args.torch_threads or torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(summary("mouse-up -> overlay on the page", browser))
    print(summary("Predictor.predict alone (here)", model))
    print(
        f"target <= {TARGET_MS:.0f} ms: median / target = {median / TARGET_MS:.2f} "
        f"({'met' if median <= TARGET_MS else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
