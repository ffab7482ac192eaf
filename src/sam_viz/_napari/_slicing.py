"""Which 2-D plane of an image layer is segmented (plain NumPy, no Qt).

An image layer's last two data axes (before an RGB(A) channel axis) are the image SAM sees;
any leading axes (z, t, ...) select a plane. A plane is named by the tuple of its leading
indices, ``()`` for a 2-D image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

Plane = tuple[int, ...]


class WorldToData(Protocol):
    """What :func:`current_plane` needs of a napari layer."""

    def world_to_data(self, position: Sequence[float]) -> np.ndarray: ...


def plane_geometry(data_shape: Sequence[int], rgb: bool) -> tuple[tuple[int, ...], tuple[int, int]]:
    """Split an image layer's data shape into (leading shape, (height, width)).

    Args:
        data_shape: Shape of the layer's data, e.g. ``(Z, H, W)`` or ``(H, W, 3)``.
        rgb: Whether the last axis is an RGB(A) channel axis (napari's ``layer.rgb``).

    Raises:
        ValueError: If there are fewer than two spatial axes.
    """
    spatial = tuple(int(n) for n in (data_shape[:-1] if rgb else data_shape))
    if len(spatial) < 2:
        raise ValueError(
            f"An image needs at least two spatial axes (rows, columns); this layer's data has "
            f"shape {tuple(data_shape)}."
        )
    return spatial[:-2], (spatial[-2], spatial[-1])


def plane_from_data_point(
    data_point: Sequence[float] | np.ndarray, leading_shape: Sequence[int]
) -> Plane:
    """The plane containing a point given in the layer's data coordinates.

    Args:
        data_point: Position in data coordinates, one value per spatial axis.
        leading_shape: Shape of the leading (plane-selecting) axes.

    Returns:
        The leading indices, rounded and clipped to the data.
    """
    leading = np.asarray(data_point, dtype=np.float64)[: len(leading_shape)]
    return tuple(
        int(np.clip(np.round(value), 0, size - 1))
        for value, size in zip(leading, leading_shape, strict=True)
    )


def current_plane(
    layer: WorldToData, world_point: Sequence[float], leading_shape: Sequence[int]
) -> Plane:
    """The plane of ``layer`` shown at the viewer's world position ``world_point``
    (``viewer.dims.point``), using the layer's scale, translate and other transforms."""
    if not len(leading_shape):
        return ()
    return plane_from_data_point(layer.world_to_data(world_point), leading_shape)


def display_problem(ndisplay: int, displayed: Sequence[int], world_ndim: int) -> str | None:
    """Why the viewer's current view cannot be segmented, or None if it can.

    SAM works on the image's last two axes shown in 2-D: the viewer must display the last
    two world axes (napari puts a layer's axes last in world order).
    """
    if ndisplay != 2:
        return "Switch the viewer to 2-D (Ctrl+Y) to segment: SAM works on one plane at a time."
    if tuple(displayed) != (world_ndim - 2, world_ndim - 1):
        return (
            "The viewer shows other axes than the image's rows and columns; reset the axis "
            "order (View > Axes, or the dims roll/transpose buttons) to segment."
        )
    return None


def describe_plane(plane: Plane, leading_shape: Sequence[int]) -> str:
    """A plane in the user's words, counted from 1: "plane 4 of 20" ("plane 2 of 3, 4 of 20"
    for a (T, Z) stack); "the image" for a 2-D image."""
    if not plane:
        return "the image"
    counts = [f"{index + 1} of {size}" for index, size in zip(plane, leading_shape, strict=True)]
    return "plane " + ", ".join(counts)


def all_planes(leading_shape: Sequence[int]) -> Iterator[Plane]:
    """Every plane of a stack in C order (a single ``()`` for a 2-D image)."""
    yield from (tuple(int(i) for i in index) for index in np.ndindex(*leading_shape))


def full_resolution(layer: object) -> object:
    """An image layer's data at full resolution, nothing read: level 0 of a multiscale layer
    (napari-ome-zarr opens OME-Zarr images so), else its data. Prompts, masks and objects
    live on this grid, as napari's data coordinates of a multiscale layer do."""
    data = layer.data  # type: ignore[attr-defined]
    return data[0] if getattr(layer, "multiscale", False) else data


def plane_data(data: object, plane: Plane) -> np.ndarray:
    """The (H, W) or (H, W, C) array of ``plane`` as NumPy (reads lazy arrays, e.g. dask,
    for that plane only)."""
    return np.asarray(data[plane] if plane else data)  # type: ignore[index]
