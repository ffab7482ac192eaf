"""OME-Zarr in and out: one plane of a multiscale image read lazily at a chosen resolution
level, and label images written back beside it as NGFF ``labels/``.

The format is the libraries' business (zarr, ome-zarr); this module only chooses what to
read and where to write. Axes follow NGFF: up to (t, c, z, y, x). A resolution level is
counted from 0, the full resolution. Needs the ``ome`` extra (``pip install sam-viz[ome]``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sam_viz.files import (
    ZARR_GROUP_FILES,
    partial_path,
    remove_stale_partials,
    replace_directory,
    writable_directory,
)
from sam_viz.models.registry import ModelSpec
from sam_viz.windows.scale import MAX_ZOOM, OBJECT_FRACTION

if TYPE_CHECKING:
    import dask.array as da

# The label group ``sam-viz everything`` writes into ``IMAGE.zarr/labels/`` unless told.
DEFAULT_LABEL_NAME = "sam_viz"
# level="auto" without a model: keep objects at least this many pixels across.
MIN_OBJECT_DIAMETER = 16.0


@dataclass(frozen=True)
class Multiscale:
    """The resolution levels of one OME-Zarr image.

    Attributes:
        path: The image group.
        levels: Lazy arrays, full resolution first, axes as in :attr:`axes`.
        axes: Axis metadata (``name``, ``type``, maybe ``unit``), as the file has it.
        scale: The full-resolution level's pixel size per axis (1.0 where none is given).
    """

    path: Path
    levels: tuple[da.Array, ...]
    axes: tuple[dict, ...]
    scale: tuple[float, ...]

    @property
    def axis_names(self) -> tuple[str, ...]:
        """The axis names, e.g. ``("c", "y", "x")``."""
        return tuple(axis["name"] for axis in self.axes)

    @property
    def downsampling(self) -> tuple[float, ...]:
        """How many full-resolution pixels one pixel of each level spans (along x)."""
        width = self.levels[0].shape[-1]
        return tuple(width / level.shape[-1] for level in self.levels)


def open_multiscale(path: str | os.PathLike[str]) -> Multiscale:
    """The multiscale image at ``path`` (NGFF 0.4 or 0.5), nothing read yet.

    Raises:
        ValueError: If ``path`` holds no multiscale image (for example a plate).
    """
    import zarr
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader
    from ome_zarr.writer import check_format

    path = Path(path)
    try:  # the format its zarr version stands for (0.4 for zarr v2), so none is guessed
        fmt = check_format(zarr.open_group(str(path), mode="r"))
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"{path} is not a zarr group, so no OME-Zarr image.") from err
    location = parse_url(str(path), fmt=fmt)
    nodes = list(Reader(location)()) if location is not None else []
    images = [n for n in nodes if n.load(Multiscales) and not n.load(Label)]
    if not images:
        raise ValueError(
            f"{path} holds no OME-Zarr multiscale image (a plate or well? give the path of "
            "one of its fields, e.g. PLATE.zarr/A/1/0)."
        )
    node = images[0]
    axes = tuple(node.metadata["axes"])
    return Multiscale(path, tuple(node.data), axes, _level0_scale(node.metadata, len(axes)))


def _level0_scale(metadata: dict, ndim: int) -> tuple[float, ...]:
    transforms = (metadata.get("coordinateTransformations") or [None])[0] or []
    for transform in transforms:
        if transform.get("type") == "scale":
            return tuple(float(v) for v in transform["scale"])
    return (1.0,) * ndim


def smallest_diameter(spec: ModelSpec | None) -> float:
    """The smallest object diameter (pixels) the model's windows can still show at their
    preferred size: windows are magnified at most ``MAX_ZOOM`` times."""
    if spec is None:
        return MIN_OBJECT_DIAMETER
    return OBJECT_FRACTION * spec.image_size / MAX_ZOOM


def choose_level(
    image: Multiscale,
    level: int | str,
    diameter: float | None = None,
    min_diameter: float = MIN_OBJECT_DIAMETER,
) -> int:
    """The resolution level to read: ``level`` itself, or for ``"auto"`` the coarsest level
    at which objects of ``diameter`` full-resolution pixels are still ``min_diameter``
    pixels across (coarser levels are faster and need less memory).

    Raises:
        ValueError: For a level the image does not have, or ``"auto"`` without a diameter.
    """
    count = len(image.levels)
    if level == "auto":
        if diameter is None:
            raise ValueError(
                "--level auto needs --diameter (the typical object diameter in "
                "full-resolution pixels), or give the level as a number."
            )
        fitting = [i for i, f in enumerate(image.downsampling) if diameter / f >= min_diameter]
        return max(fitting, default=0)
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < count:
        raise ValueError(
            f"{image.path} has resolution levels 0 to {count - 1} (0 is full resolution); "
            f"got level {level!r}."
        )
    return level


def select_plane(
    array: da.Array,
    axis_names: Sequence[str],
    channel: int | None = None,
    plane: int | Sequence[int] | None = None,
) -> da.Array:
    """The (y, x) plane of an NGFF array for one channel and one (t, z) position.

    Args:
        array: Data with axes ``axis_names`` (some of t, c, z, then y, x).
        axis_names: The axis names.
        channel: Index along ``c``; needed when there are several channels.
        plane: Index along the non-channel axes (t, z) with more than one entry, in order:
            an int when only one has, else one int per such axis. Needed when there are
            several planes.

    Raises:
        ValueError: When a choice is needed and missing, or out of range (says what to pass).
    """
    sizes = dict(zip(axis_names, array.shape, strict=True))
    index: dict[str, int] = {name: 0 for name in axis_names if name not in ("y", "x")}
    if "c" in sizes:
        index["c"] = _checked("channel", channel, sizes["c"], "--channel N")
    elif channel is not None:
        raise ValueError(f"The image has no channel axis (axes {', '.join(axis_names)}).")
    stacked = [n for n in axis_names if n not in ("c", "y", "x") and sizes[n] > 1]
    if plane is not None and not stacked:
        raise ValueError(f"The image has one plane (axes {', '.join(axis_names)}); omit --plane.")
    if stacked:
        wanted = [plane] if isinstance(plane, int) else list(plane or [])
        if len(wanted) != len(stacked):
            shape = ", ".join(f"{n}={sizes[n]}" for n in stacked)
            raise ValueError(
                f"The image has several planes ({shape}); choose one with --plane "
                + ",".join(n.upper() for n in stacked)
                + " (plane= in Python), counted from 0."
            )
        for name, value in zip(stacked, wanted, strict=True):
            index[name] = _checked(f"plane along {name}", value, sizes[name], "--plane")
    return array[tuple(index.get(name, slice(None)) for name in axis_names)]


def _checked(what: str, value: int | None, size: int, option: str) -> int:
    if value is None and size == 1:
        return 0
    if value is None:
        raise ValueError(
            f"The image has {size} channels; choose one with {option} (0 to {size - 1}; "
            "channel= in Python)."
        )
    if not 0 <= value < size:
        raise ValueError(f"The {what} must be 0 to {size - 1}; got {value}.")
    return value


@dataclass(frozen=True)
class OmePlane:
    """One (H, W) plane of an OME-Zarr image at one resolution level, not read yet.

    Attributes:
        data: Lazy (H, W) array; ``np.asarray`` reads it.
        level: The resolution level it comes from (0: full resolution).
        downsampling: Full-resolution pixels one of its pixels spans.
    """

    data: da.Array
    level: int
    downsampling: float


def open_ome_plane(
    path: str | os.PathLike[str],
    *,
    level: int | str = 0,
    channel: int | None = None,
    plane: int | Sequence[int] | None = None,
    diameter: float | None = None,
    min_diameter: float = MIN_OBJECT_DIAMETER,
) -> OmePlane:
    """One plane of an OME-Zarr image at one resolution level, read lazily.

    Args:
        path: The image group (``IMAGE.zarr``).
        level: Resolution level (0: full resolution), or ``"auto"`` (see :func:`choose_level`).
        channel: Channel index, needed for a multichannel image.
        plane: Plane index along t and z (see :func:`select_plane`).
        diameter: Typical object diameter in full-resolution pixels, for ``level="auto"``.
        min_diameter: Smallest diameter ``"auto"`` keeps (see :func:`smallest_diameter`).
    """
    image = open_multiscale(path)
    chosen = choose_level(image, level, diameter, min_diameter)
    data = select_plane(image.levels[chosen], image.axis_names, channel, plane)
    return OmePlane(data, chosen, image.downsampling[chosen])


def open_ome_zarr(path: str | os.PathLike[str], **options: object) -> da.Array:
    """The (H, W) dask array of :func:`open_ome_plane` (same options)."""
    return open_ome_plane(path, **options).data  # type: ignore[arg-type]


def label_group_path(image_path: str | os.PathLike[str], name: str = DEFAULT_LABEL_NAME) -> Path:
    """Where the label image ``name`` of an OME-Zarr image lives: ``IMAGE.zarr/labels/NAME``."""
    return Path(image_path) / "labels" / name


def check_label_target(
    image_path: str | os.PathLike[str], name: str = DEFAULT_LABEL_NAME, overwrite: bool = False
) -> Path:
    """Refuse, before any work, a label group that exists (without ``overwrite``), a bad name
    or an image folder that cannot be written. Returns the label group's path.

    Raises:
        ValueError: For an existing group without ``overwrite``, or a name that is no
            plain folder name.
        PermissionError: If the image folder cannot be written.
    """
    if not name or name.startswith(".") or Path(name).name != name:
        raise ValueError(f"A label group name is a plain folder name; got {name!r}.")
    target = label_group_path(image_path, name)
    if target.exists() and not overwrite:
        raise ValueError(
            f"{target} exists; pass --overwrite to replace it (the new labels take its place "
            "only once complete), or choose another --label-name."
        )
    if not writable_directory(target.parent):
        raise PermissionError(13, "Cannot write labels into the image", str(target.parent))
    remove_stale_partials(target.parent, name=name)  # what a killed earlier run left
    return target


def write_labels(
    image_path: str | os.PathLike[str],
    labels: np.ndarray,
    name: str = DEFAULT_LABEL_NAME,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a label image into an OME-Zarr image as ``labels/NAME`` (NGFF image-label), with
    one level per resolution level of the image, and list it in ``labels/``'s ``labels``.

    The group is written beside its final place and moved there once complete, so a reader
    sees the old labels or the new ones, never a mix.

    Args:
        image_path: The image group (``IMAGE.zarr``).
        labels: Integer labels, 0 for background, on the grid of any resolution level of the
            image (upsampled to full resolution, nearest): either (H, W), when the image has
            one plane, or the image's shape without its channel axis. A zarr or dask array
            is copied chunk by chunk, never held whole (labels of a tiled run).
        name: The label group's name.
        overwrite: Replace an existing label group of that name.

    Returns:
        The label group's path.

    Raises:
        ValueError: For labels that fit no level of the image, or an existing group without
            ``overwrite``.
    """
    import zarr
    from ome_zarr.writer import check_format, write_multiscale_labels

    target = check_label_target(image_path, name, overwrite)
    image = open_multiscale(image_path)
    keep = [i for i, axis in enumerate(image.axis_names) if axis != "c"]
    pyramid = _label_pyramid(image, keep, _array(labels))
    fmt = check_format(zarr.open_group(str(image.path), mode="r"))
    staging = partial_path(target)
    try:
        root = zarr.open_group(str(staging), mode="w", zarr_format=fmt.zarr_format)
        write_multiscale_labels(
            pyramid,
            root,
            name,
            fmt=fmt,
            axes=[image.axes[i] for i in keep],
            scale={image.axis_names[i]: image.scale[i] for i in keep},
            label_metadata={"source": {"image": "../../"}},
        )
        _ensure_labels_group(target.parent, fmt)
        replace_directory(staging / "labels" / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _list_label(target.parent, name, fmt)
    return target


def _array(labels: object) -> np.ndarray | da.Array:
    """NumPy labels as they are; a zarr array as a dask array over its chunks."""
    import zarr

    if isinstance(labels, zarr.Array):
        import dask.array as da

        return da.from_zarr(labels)
    return (
        labels if hasattr(labels, "chunks") and hasattr(labels, "compute") else np.asarray(labels)
    )


def _label_pyramid(image: Multiscale, keep: list[int], labels: np.ndarray) -> list[np.ndarray]:
    """The labels at every level of the image, nearest-neighbour resampled."""
    shapes = [tuple(level.shape[i] for i in keep) for level in image.levels]
    if labels.ndim == 2 and all(n == 1 for shape in shapes for n in shape[:-2]):
        labels = labels.reshape((1,) * (len(keep) - 2) + labels.shape)
    if labels.dtype.kind not in "iub":
        raise TypeError(f"Labels must be integers; got {labels.dtype}.")
    if tuple(labels.shape) not in shapes:
        levels = ", ".join(str(s) for s in shapes)
        raise ValueError(
            f"Labels of shape {labels.shape} fit no resolution level of {image.path} "
            f"(the levels have {levels}; the labels of one plane of a stack go to a TIFF)."
        )
    if labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)  # NGFF label images are integers
    return [_nearest(labels, shape) for shape in shapes]


def _nearest(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``array`` resampled to ``shape`` by nearest neighbour (pixel centres)."""
    for axis, (old, n) in enumerate(zip(array.shape, shape, strict=True)):
        if old != n:  # one axis at a time: dask arrays take one index array per call
            index = np.minimum(((np.arange(n) + 0.5) * (old / n)).astype(np.int64), old - 1)
            array = np.take(array, index, axis=axis)
    return array


def _ensure_labels_group(labels_dir: Path, fmt) -> None:
    import zarr

    if not any((labels_dir / name).is_file() for name in ZARR_GROUP_FILES):
        zarr.open_group(str(labels_dir), mode="a", zarr_format=fmt.zarr_format)


def _list_label(labels_dir: Path, name: str, fmt) -> None:
    """Add ``name`` to the ``labels`` attribute of ``IMAGE.zarr/labels`` (once)."""
    import zarr
    from ome_zarr.writer import add_metadata, get_metadata

    group = zarr.open_group(str(labels_dir), mode="r+")
    names = list(get_metadata(group).get("labels", []))
    metadata: dict = {"labels": names if name in names else [*names, name]}
    if fmt.zarr_format == 3:  # NGFF 0.5 puts the version in every group's "ome" attribute
        metadata["version"] = fmt.version
    add_metadata(group, metadata, fmt=fmt)
