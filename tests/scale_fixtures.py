"""A large generated nuclei field with small objects, shared by the object-scale tests of
every front end (Python API, command line, napari, Jupyter)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.measure import regionprops

from sam_viz.synthetic.microscopy import HELD_OUT_SEEDS, nuclei_field, tiled


@dataclass(frozen=True)
class SmallObject:
    """A 1536 x 1536 field of ~20-px nuclei and one nucleus in it (its mask and tight box)."""

    image: np.ndarray
    truth: np.ndarray
    box_xyxy: tuple[float, float, float, float]


def small_object_in_a_large_field() -> SmallObject:
    field = tiled(nuclei_field(HELD_OUT_SEEDS[0], (512, 512), diameter=20.0), (3, 3))
    regions = regionprops(field.labels)
    centre = np.array(field.labels.shape) / 2
    # A whole nucleus near the middle of the field, of about the typical size.
    region = min(
        (r for r in regions if 15 <= 2 * np.sqrt(r.area / np.pi) <= 26),
        key=lambda r: float(np.hypot(*(np.array(r.centroid) - centre))),
    )
    r0, c0, r1, c1 = region.bbox
    return SmallObject(field.image, field.labels == region.label, (c0, r0, c1, r1))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))
