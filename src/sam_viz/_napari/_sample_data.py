"""Sample images for File > Open Sample: images that ship with scikit-image, and a generated
fluorescence nuclei field (no download)."""

from __future__ import annotations

from typing import Any

import numpy as np

LayerData = list[tuple[np.ndarray, dict[str, Any], str]]


def _sample(name: str, title: str) -> LayerData:
    import skimage.data

    image = getattr(skimage.data, name)()
    return [(image, {"name": title}, "image")]


def cell() -> LayerData:
    """Phase-contrast image of a cell (660 x 550, uint8)."""
    return _sample("cell", "cell")


def coins() -> LayerData:
    """Greek coins from Pompeii (303 x 384, uint8): 24 objects with clear edges."""
    return _sample("coins", "coins")


def immunohistochemistry() -> LayerData:
    """Immunohistochemistry (IHC) staining, RGB (512 x 512 x 3, uint8)."""
    return _sample("immunohistochemistry", "immunohistochemistry")


def nuclei() -> LayerData:
    """Generated fluorescence nuclei field (1024 x 1024, uint16): ~20-px nuclei, dim, noisy."""
    from sam_viz.io import generated_sample

    return [(generated_sample("nuclei"), {"name": "nuclei (generated)"}, "image")]
