"""Reading images from disk (PNG, JPEG, TIFF incl. 16-bit) and scikit-image's samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_PREFIX = "sample:"
SAMPLES = ("coins", "cell", "camera", "human_mitosis", "immunohistochemistry", "astronaut")


def read_image(source: str | Path) -> np.ndarray:
    """Read an image file, or ``sample:NAME`` for one of scikit-image's bundled samples.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For an unknown sample name or an unreadable file.
    """
    text = str(source)
    if text.startswith(SAMPLE_PREFIX):
        name = text[len(SAMPLE_PREFIX) :]
        if name not in SAMPLES:
            raise ValueError(f"Unknown sample {name!r}; choose one of {', '.join(SAMPLES)}.")
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
        raise ValueError(f"Could not read {path} as an image: {err}") from err
