"""Reading images: files (PNG, JPEG, TIFF incl. 16-bit and pyramidal), OME-Zarr images
(:mod:`sam_viz.ome`), scikit-image's samples and generated microscopy fields; and expanding
folders and globs into the images they hold."""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sam_viz.files import ZARR_GROUP_FILES

if TYPE_CHECKING:
    import dask.array as da

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
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *TIFF_SUFFIXES)


def generated_sample(name: str) -> np.ndarray:
    """A generated microscopy field: ``"nuclei"`` (dim 16-bit fluorescence), ``"cells"``
    (cytoplasm stain), ``"phase"`` (phase contrast) or ``"histology"`` (H&E)."""
    from sam_viz.synthetic.microscopy import HELD_OUT_SEEDS, make_field

    field = make_field(GENERATED[name], HELD_OUT_SEEDS[0], (GENERATED_SIDE, GENERATED_SIDE))
    return field.image


def read_image(
    source: str | Path,
    *,
    level: int | str = 0,
    channel: int | None = None,
    plane: int | Sequence[int] | None = None,
    diameter: float | None = None,
    min_diameter: float | None = None,
) -> np.ndarray:
    """Read an image file, an OME-Zarr image (one plane of one resolution level), or
    ``sample:NAME``: one of scikit-image's bundled samples, or a generated microscopy field
    (``sample:nuclei``, ``sample:cells``, ``sample:phase``, ``sample:histology``).

    Args:
        source: The file, the ``IMAGE.zarr`` folder, or the sample.
        level: Resolution level of an OME-Zarr image or a pyramidal TIFF (0: full
            resolution); ``"auto"`` for OME-Zarr (see :func:`sam_viz.ome.choose_level`).
        channel, plane: Which plane of an OME-Zarr image (see
            :func:`sam_viz.ome.select_plane`).
        diameter, min_diameter: For ``level="auto"``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For an unknown sample name, an unreadable file, or a level, channel or
            plane the image does not have.
    """
    options = {"level": level, "channel": channel, "plane": plane}
    if is_ome_zarr(source):
        return np.asarray(_open_ome_zarr(source, options, diameter, min_diameter))
    text = str(source)
    if text.startswith(SAMPLE_PREFIX):
        _only_full_resolution(text, options)
        return read_sample(text[len(SAMPLE_PREFIX) :])
    path = _existing_file(text)
    tiff = path.suffix.lower() in TIFF_SUFFIXES
    _only_full_resolution(text, {**options, "level": 0} if tiff else options)
    if tiff:
        return _read_tiff(path, _level(level))
    with _readable(path):
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))


def open_image(
    source: str | Path,
    *,
    level: int | str = 0,
    channel: int | None = None,
    plane: int | Sequence[int] | None = None,
    diameter: float | None = None,
    min_diameter: float | None = None,
) -> np.ndarray | da.Array:
    """Like :func:`read_image`, but OME-Zarr images and TIFFs are opened lazily: a dask
    array that reads only the chunks (TIFF tiles) a computation touches. Needs the ``ome``
    extra for those; other images are read as NumPy arrays.
    """
    options = {"level": level, "channel": channel, "plane": plane}
    if is_ome_zarr(source):
        return _open_ome_zarr(source, options, diameter, min_diameter)
    path = Path(str(source))
    if path.suffix.lower() in TIFF_SUFFIXES and path.is_file():
        _only_full_resolution(str(path), {**options, "level": 0})
        chosen = _level(level)
        _check_tiff_level(path, chosen)
        with _readable(path):
            return open_tiff(path, level=chosen)
    return read_image(
        source,
        level=level,
        channel=channel,
        plane=plane,
        diameter=diameter,
        min_diameter=min_diameter,
    )


def open_tiff(path: str | Path, level: int = 0) -> da.Array:
    """A TIFF (its first series) as a dask array over tifffile's zarr store: tiles are read
    when used. ``level`` picks a level of a pyramidal TIFF (0: full resolution).

    Raises:
        ValueError: For a level the file does not have.
    """
    import dask.array as da
    import tifffile
    import zarr

    node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    if isinstance(node, zarr.Array):
        levels = [node]
    else:  # a pyramid: one array per level, named 0, 1, ...
        levels = [array for _, array in sorted(node.arrays(), key=lambda item: int(item[0]))]
    if not 0 <= level < len(levels):
        raise ValueError(f"{path} has levels 0 to {len(levels) - 1}; got level {level}.")
    return da.from_zarr(levels[level])


def _read_tiff(path: Path, level: int) -> np.ndarray:
    import tifffile

    _check_tiff_level(path, level)
    with _readable(path):
        return np.asarray(tifffile.imread(path, level=level))


def _check_tiff_level(path: Path, level: int) -> None:
    """Refuse a level a TIFF does not have (its first series' pyramid)."""
    import tifffile

    if level == 0:
        return
    with _readable(path), tifffile.TiffFile(path) as tiff:
        count = len(tiff.series[0].levels)
    if level >= count:
        raise ValueError(f"{path} has levels 0 to {count - 1} (0 is full resolution); got {level}.")


def read_sample(name: str) -> np.ndarray:
    """A scikit-image sample or a generated field by name (see :func:`read_image`)."""
    if name in GENERATED:
        return generated_sample(name)
    if name not in SAMPLES:
        known = ", ".join((*SAMPLES, *GENERATED))
        raise ValueError(f"Unknown sample {name!r}; choose one of {known}.")
    import skimage.data

    return np.asarray(getattr(skimage.data, name)())


def image_sources(arguments: Sequence[str]) -> list[str]:
    """Expand ``IMAGE...`` arguments into image sources, in order, without repeats.

    A file, an OME-Zarr folder or ``sample:NAME`` stands for itself; another folder for its
    images (PNG, JPEG, TIFF files and OME-Zarr folders, sorted by name, not recursive); a
    glob pattern (``*``, ``?``, ``[``) for the images it matches, sorted.

    Raises:
        ValueError: For a folder or pattern without images.
    """
    sources: list[str] = []
    for argument in arguments:
        expanded = _expand(argument)
        if not expanded:
            raise ValueError(
                f"No images in {argument!r} (PNG, JPEG, TIFF files or OME-Zarr folders)."
            )
        sources.extend(s for s in expanded if s not in sources)
    return sources


def _expand(argument: str) -> list[str]:
    if argument.startswith(SAMPLE_PREFIX) or is_ome_zarr(argument):
        return [argument]
    if glob.has_magic(argument):
        return sorted(p for p in glob.glob(argument) if _is_image(Path(p)))
    if Path(argument).is_dir():
        return sorted(str(p) for p in Path(argument).iterdir() if _is_image(p))
    return [argument]  # a file, or a missing one that reading reports


def _is_image(path: Path) -> bool:
    if is_ome_zarr(path):
        return True
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def is_ome_zarr(source: str | Path) -> bool:
    """Whether ``source`` is a zarr group folder, as an OME-Zarr image is."""
    path = Path(str(source))
    return path.is_dir() and any((path / name).is_file() for name in ZARR_GROUP_FILES)


def _open_ome_zarr(
    source: str | Path, options: dict, diameter: float | None, min_diameter: float | None
) -> da.Array:
    from sam_viz.ome import MIN_OBJECT_DIAMETER, open_ome_zarr

    smallest = MIN_OBJECT_DIAMETER if min_diameter is None else min_diameter
    return open_ome_zarr(source, **options, diameter=diameter, min_diameter=smallest)


def _only_full_resolution(source: str, options: dict) -> None:
    """Refuse a level, channel or plane for an image that has none to choose."""
    given = [n for n, value in options.items() if value is not None and (n, value) != ("level", 0)]
    if given:
        raise ValueError(
            f"{source} is a single image: {', '.join(given)} apply to OME-Zarr images "
            "(and level to pyramidal TIFFs)."
        )


def _level(level: int | str) -> int:
    if level == "auto" or isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ValueError(f"A TIFF's level is a number from 0 (full resolution); got {level!r}.")
    return level


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"Image file {path} does not exist.")
    return path


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn the readers' many errors for a damaged file into one clear ValueError."""
    try:
        yield
    except Exception as err:  # the readers raise many kinds
        raise _unreadable(path) from err


def _unreadable(path: Path) -> ValueError:
    # The readers' messages can suggest installing plugins, which would not help with a bad file.
    kind = path.suffix.lstrip(".").upper() or "image"
    return ValueError(
        f"Could not read {path}: it is not a readable {kind} file (damaged, or another "
        "format under this name). sam-viz reads PNG, JPEG and TIFF images and OME-Zarr."
    )


def to_numpy(array: object) -> np.ndarray:
    """An array read into memory; a dask array is computed by threads in this process (a
    distributed client made elsewhere in the process is not asked)."""
    if hasattr(array, "compute") and hasattr(array, "chunks"):
        return np.asarray(array.compute(scheduler="threads"))  # type: ignore[attr-defined]
    return np.asarray(array)


def image_loader(
    source: str,
    *,
    level: int | str = 0,
    channel: int | None = None,
    plane: int | Sequence[int] | None = None,
    diameter: float | None = None,
    min_diameter: float | None = None,
    lazy: bool = False,
) -> Callable[[], tuple[np.ndarray | da.Array, float]]:
    """Check ``source`` and the level, channel and plane asked for now; return what reads
    the pixels later, as ``(image, full-resolution pixels per image pixel)``.

    With ``lazy``, OME-Zarr images, and TIFFs too large to hold (over
    :data:`~sam_viz.image.TILED_ABOVE` pixels), come as dask arrays that read only
    the chunks used (:mod:`sam_viz.automatic.tiled`); other images, and every image without
    it, are read whole as NumPy arrays.

    Raises:
        ValueError: For a channel, plane or ``level="auto"`` asked of an image that is not
            OME-Zarr, or one the OME-Zarr image does not have.
    """
    if is_ome_zarr(source):
        from sam_viz.ome import open_ome_plane

        found = open_ome_plane(
            source,
            level=level,
            channel=channel,
            plane=plane,
            diameter=diameter,
            min_diameter=min_diameter,
        )
        return lambda: (found.data if lazy else to_numpy(found.data), found.downsampling)
    if channel is not None or plane is not None or level == "auto":
        raise ValueError(
            f"{source} is not an OME-Zarr image: --channel, --plane and --level auto apply "
            "to OME-Zarr images only."
        )
    if lazy and _large_tiff(source, level):
        return lambda: (open_image(source, level=level), 1.0)
    return lambda: (read_image(source, level=level), 1.0)


def _large_tiff(source: str, level: int | str) -> bool:
    """Whether ``source`` is a TIFF whose level is large enough to go tile by tile (read
    lazily then; smaller ones are read whole, without dask)."""
    from sam_viz.image import is_large

    path = Path(source)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            levels = tiff.series[0].levels
            shape = levels[min(_level(level), len(levels) - 1)].shape
    except Exception:  # an unreadable file is reported when it is read
        return False
    return len(shape) >= 2 and is_large(shape[-2:] if shape[-1] > 4 else shape[-3:-1])
