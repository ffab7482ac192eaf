"""Contact sheets of generated microscopy fields, for a person to judge their realism.

Usage:
    python benchmarks/show_fields.py OUT_DIR [--seeds 4] [--size 512] [--timing]

Writes OUT_DIR/<kind>.png for every field kind: one row per seed with the field (16-bit
images auto-contrasted between their 0.1 and 99.9 percentiles, as Fiji's "Auto" does), the
field with the labels' outlines, and a 4x zoom on its centre to show noise and texture.
With --timing it also times nuclei fields of 512, 2048 and 4096 px a side (wall and CPU
seconds, object counts).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

from sam_viz.synthetic.microscopy import (
    FIELD_KINDS,
    HELD_OUT_SEEDS,
    TUNING_SEEDS,
    Field,
    make_field,
    nuclei_field,
)

_ZOOM = 4


def display_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 for viewing: grey images stretched between percentiles."""
    if image.ndim == 3:
        return image.astype(np.uint8)
    low, high = np.percentile(image, [0.1, 99.9])
    grey = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1)
    return np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)


def outlined(rgb: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The image with each label's inner outline in its own colour."""
    colours = np.random.default_rng(seed).integers(80, 256, (int(labels.max()) + 1, 3))
    colours[:, np.arange(len(colours)) % 3] = 255  # one full channel: bright, varied
    edges = find_boundaries(labels, mode="inner") & (labels > 0)
    out = rgb.copy()
    out[edges] = colours[labels[edges]]
    return out


def row(field: Field, title: str) -> Image.Image:
    rgb = display_rgb(field.image)
    height, width = field.labels.shape
    crop = min(height, width) // _ZOOM
    top, left = (height - crop) // 2, (width - crop) // 2
    zoom = rgb[top : top + crop, left : left + crop].repeat(_ZOOM, 0).repeat(_ZOOM, 1)
    panels = [rgb, outlined(rgb, field.labels), zoom]
    strip = Image.new("RGB", (sum(p.shape[1] for p in panels) + 20, height + 18), "white")
    x = 0
    for panel in panels:
        strip.paste(Image.fromarray(panel), (x, 18))
        x += panel.shape[1] + 10
    ImageDraw.Draw(strip).text((4, 3), title, fill="black")
    return strip


def time_nuclei(seeds: int) -> None:
    """Print generation times and object counts of nuclei fields of three sizes."""
    nuclei_field(0, (256, 256))  # warm up imports and caches
    for side in (512, 2048, 4096):
        for seed in HELD_OUT_SEEDS[:seeds]:
            wall, cpu = time.perf_counter(), time.process_time()
            field = nuclei_field(seed, (side, side))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"nuclei {side}x{side} seed {seed}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
                f"{field.n_objects} objects, median diameter {field.diameter:.1f} px"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seeds", type=int, default=4, help="fields per kind")
    parser.add_argument("--size", type=int, default=512, help="field side, pixels")
    parser.add_argument("--first-seed", type=int, default=TUNING_SEEDS[0])
    parser.add_argument("--timing", action="store_true", help="also time nuclei fields")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for kind in FIELD_KINDS:
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            field = make_field(kind, seed, (args.size, args.size))
            image = field.image
            title = (
                f"{kind}  seed {seed}  {image.dtype} {image.min()}-{image.max()}  "
                f"{field.n_objects} objects  median diameter {field.diameter:.1f} px"
            )
            rows.append(row(field, title))
        sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
        y = 0
        for strip in rows:
            sheet.paste(strip, (0, y))
            y += strip.height
        path = args.out_dir / f"{kind}.png"
        sheet.save(path)
        print(path)
    if args.timing:
        time_nuclei(args.seeds)


if __name__ == "__main__":
    main()
