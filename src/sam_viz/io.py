"""Reading images from disk (PNG, JPEG, TIFF incl. 16-bit), scikit-image's samples and
generated microscopy fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_PREFIX = "sample:"
SAMPLES = ("coins", "cell", "camera", "human_mitosis", "immunohistochemistry", "astronaut")
# Generated fields (sam_viz.synthetic.microscopy), 1024 x 1024, from the held-out stream.
GENERATED = {
    "nuclei": "nuclei",
    "cells": "cells_fluorescence",
    "phase": "cells_phase",
    "histology": "histology",
}
GENERATED_SIDE = 1024


def generated_sample(name: str) -> np.ndarray:
    """A generated microscopy field: ``"nuclei"`` (dim 16-bit fluorescence), ``"cells"``
    (cytoplasm stain), ``"phase"`` (phase contrast) or ``"histology"`` (H&E)."""
    from sam_viz.synthetic.microscopy import HELD_OUT_SEEDS, make_field

    field = make_field(GENERATED[name], HELD_OUT_SEEDS[0], (GENERATED_SIDE, GENERATED_SIDE))
    return field.image


def read_image(source: str | Path) -> np.ndarray:
    """Read an image file, or ``sample:NAME``: one of scikit-image's bundled samples, or a
    generated microscopy field (``sample:nuclei``, ``sample:cells``, ``sample:phase``,
    ``sample:histology``).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For an unknown sample name or an unreadable file.
    """
    text = str(source)
    if text.startswith(SAMPLE_PREFIX):
        name = text[len(SAMPLE_PREFIX) :]
        if name in GENERATED:
            return generated_sample(name)
        if name not in SAMPLES:
            known = ", ".join((*SAMPLES, *GENERATED))
            raise ValueError(f"Unknown sample {name!r}; choose one of {known}.")
        import skimage.data

        return np.asarray(getattr(skimage.data, name)())
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"Image file {path} does not exist.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    except Exception as err:  # the readers raise many kinds
        # Their messages can suggest installing plugins, which would not help with a bad file.
        kind = path.suffix.lstrip(".").upper() or "image"
        raise ValueError(
            f"Could not read {path}: it is not a readable {kind} file (damaged, or another "
            "format under this name). sam-viz reads PNG, JPEG and TIFF images."
        ) from err
