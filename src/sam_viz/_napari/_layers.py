"""The plugin's napari layers: prompt layers, candidate layers, the objects layer and the
"segment everything" layer.

Prompt layers share the image layer's number of dimensions, scale and translate, so a point
drawn over a pixel lands on that pixel. Candidate layers are 2-D (one plane); the objects
layer has the image's full (non-channel) shape and records every commit (and every
propagation through a stack) in napari's undo history, so Ctrl+Z on it (or the widget's
Undo) restores it exactly. The everything layer has the same shape as the objects layer and
holds the automatic segmentation of the planes it was run on; it never touches the objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from napari.layers import Image, Labels, Layer, Points, Shapes
from napari.utils.colormaps import DirectLabelColormap

from sam_viz._napari._slicing import Plane, plane_geometry
from sam_viz.automatic.results import Segmentation
from sam_viz.objects import commit_pixels, next_label
from sam_viz.render import CANDIDATE_COLORS

POINTS_NAME = "SAM points"
SHAPES_NAME = "SAM boxes"
OBJECTS_NAME = "SAM objects"
EVERYTHING_NAME = "SAM everything"
POINT_COLORS = {"positive": "lime", "negative": "red"}
OBJECTS_DTYPE = np.uint32
# Point markers: a fraction of the image's smaller side, clamped, so a click does not hide
# a small object (a fixed 12 px marker covered a 20 px nucleus) yet stays visible; napari
# keeps them at least MARKER_CANVAS_PX wide on screen when zoomed out.
MARKER_FRACTION = 1 / 200
MARKER_SIZE_PX = (2.0, 8.0)
MARKER_CANVAS_PX = (4, 10_000)


def _placement(image: Image, ndim: int) -> dict:
    """scale/translate (and, for 2-D images, the affine) that put a layer of ``ndim``
    dimensions over the image's last ``ndim`` axes."""
    kwargs = {"scale": tuple(image.scale[-ndim:]), "translate": tuple(image.translate[-ndim:])}
    if image.ndim == ndim:
        kwargs["affine"] = image.affine
        kwargs["rotate"] = image.rotate
        kwargs["shear"] = image.shear
    return kwargs


def refit(layer: Layer, image: Image, ndim: int) -> bool:
    """Place an existing layer of ``ndim`` dimensions over ``image`` as a new one would be.

    Returns:
        False (nothing changed) when that takes more than a new scale and translate:
        another number of dimensions, or another rotation, shear or affine; make a new layer.
    """
    if layer.ndim != ndim:
        return False
    target = _placement(image, ndim)
    want = [np.eye(ndim), np.zeros_like(layer.shear), np.eye(ndim + 1)]
    if "affine" in target:
        want = [image.rotate, image.shear, image.affine.affine_matrix]
    have = [layer.rotate, layer.shear, layer.affine.affine_matrix]
    pairs = zip(have, want, strict=True)
    if not all(np.shape(a) == np.shape(b) and np.allclose(a, b) for a, b in pairs):
        return False
    layer.scale = target["scale"]
    layer.translate = target["translate"]
    return True


def marker_size(image: Image, points: Layer | None = None) -> float:
    """The diameter of a point marker over ``image``, in the data pixels of ``points``
    (the image's pixels when None): see :data:`MARKER_FRACTION`."""
    _, image_hw = plane_geometry(image.data.shape, image.rgb)
    low, high = MARKER_SIZE_PX
    size = float(np.clip(min(image_hw) * MARKER_FRACTION, low, high))
    if points is not None:  # image pixels to the points layer's (they share a scale by default)
        size *= float(np.mean(image.scale[-2:]) / np.mean(points.scale[-2:]))
    return size


def make_points_layer(image: Image) -> Points:
    """A Points layer for positive (green) and negative (red) clicks over ``image``.

    Each point's ``label`` feature is ``"positive"`` or ``"negative"``; new points take
    ``layer.feature_defaults["label"]``.
    """
    import pandas as pd  # napari's Points imports it too, once a layer is made

    features = pd.DataFrame({"label": pd.Categorical([], categories=list(POINT_COLORS))})
    layer = Points(
        ndim=image.ndim,
        name=POINTS_NAME,
        features=features,
        face_color="label",
        face_color_cycle=POINT_COLORS,
        border_color="white",
        size=marker_size(image),
        canvas_size_limits=MARKER_CANVAS_PX,
        **_placement(image, image.ndim),
    )
    layer.feature_defaults["label"] = "positive"
    return layer


def make_shapes_layer(image: Image) -> Shapes:
    """A Shapes layer over ``image``: rectangles are boxes, polygons and ellipses masks."""
    return Shapes(
        ndim=image.ndim,
        name=SHAPES_NAME,
        edge_color="yellow",
        face_color="transparent",
        edge_width=2,
        **_placement(image, image.ndim),
    )


def candidate_colormap(name: str) -> DirectLabelColormap:
    """Every object of a candidate in the candidate's colour (see ``render``), 0 clear."""
    rgb = np.asarray(CANDIDATE_COLORS[name], dtype=np.float32) / 255.0
    return DirectLabelColormap(color_dict={None: (*rgb, 1.0), 0: (0.0, 0.0, 0.0, 0.0)})


def make_candidate_layer(image: Image, name: str) -> Labels:
    """An empty 2-D Labels layer for candidate ``name`` over ``image``'s planes."""
    _, image_hw = plane_geometry(image.data.shape, image.rgb)
    return Labels(
        np.zeros(image_hw, dtype=np.uint8),
        name=f"SAM {name}",
        colormap=candidate_colormap(name),
        opacity=0.55,
        visible=False,
        **_placement(image, 2),
    )


def make_objects_layer(image: Image, name: str = OBJECTS_NAME) -> Labels:
    """An empty Labels layer named ``name`` with the image's shape (channels excluded)."""
    leading, image_hw = plane_geometry(image.data.shape, image.rgb)
    return Labels(
        np.zeros((*leading, *image_hw), dtype=OBJECTS_DTYPE),
        name=name,
        opacity=0.6,
        **_placement(image, image.ndim),
    )


def image_problem(layer: object) -> str | None:
    """Why ``layer`` cannot be segmented, or None if it can."""
    if not isinstance(layer, Image):
        return f"Layer {getattr(layer, 'name', layer)!r} is not an image layer; choose an image."
    dtype = np.dtype(getattr(layer.data, "dtype", np.float64))
    if dtype.kind not in "biuf":
        return f"Image {layer.name!r} has dtype {dtype}; SAM needs a bool, integer or float image."
    try:
        _, image_hw = plane_geometry(layer.data.shape, layer.rgb)
    except ValueError as err:
        return str(err)
    if min(image_hw) < 2:
        return f"Image {layer.name!r} is too small to segment ({image_hw[0]} x {image_hw[1]})."
    return None


def fits_image(layer: Labels, image: Image) -> bool:
    """Whether an existing objects layer has ``image``'s shape."""
    leading, image_hw = plane_geometry(image.data.shape, image.rgb)
    return tuple(layer.data.shape) == (*leading, *image_hw)


def objects_layer_for(
    viewer: object,
    image: Image,
    current: Labels | None,
    name: str = OBJECTS_NAME,
    *,
    create: bool = True,
) -> Labels | None:
    """The objects layer (or, with another ``name``, the everything layer) for ``image``:
    ``current`` if it fits, else an existing layer named like one, else a new one inserted
    just above the image (None instead when ``create`` is False)."""
    if current is not None and current in viewer.layers and fits_image(current, image):  # type: ignore[attr-defined]
        return current
    for layer in viewer.layers:  # type: ignore[attr-defined]
        if isinstance(layer, Labels) and layer.name.startswith(name) and fits_image(layer, image):
            return layer
    if not create:
        return None
    layer = make_objects_layer(image, name)
    viewer.layers.insert(viewer.layers.index(image) + 1, layer)  # type: ignore[attr-defined]
    return layer


def commit_objects(
    objects: Labels,
    plane: Plane,
    candidate: np.ndarray,
    *,
    label: int | None = None,
    overwrite: bool = False,
) -> list[int]:
    """Write each object of a candidate label image into ``plane`` of the objects layer.

    All writes form one undo step of the layer (``objects.undo()`` or Ctrl+Z).

    Args:
        objects: The objects Labels layer.
        plane: Leading indices of the plane (``()`` for 2-D).
        candidate: (H, W) label image; object i is label i.
        label: Object id for a single object; new ids (unique over the whole layer) when
            None or when there are several objects.
        overwrite: Also write over other objects' pixels.

    Returns:
        The ids written (empty if nothing could be written).

    Raises:
        ValueError: For a label that is not positive or does not fit the layer's dtype.
    """
    data = objects.data
    plane_labels = np.asarray(data[plane] if plane else data)
    object_ids = [int(i) for i in np.unique(candidate) if i != 0]
    fresh = next_label(np.asarray(data))
    written: list[int] = []
    with objects.block_history():
        for object_id in object_ids:
            wanted = label if label is not None and len(object_ids) == 1 else None
            if wanted is None:
                wanted, fresh = fresh, fresh + 1
            flat, used = commit_pixels(
                plane_labels, candidate == object_id, wanted, overwrite=overwrite
            )
            if not flat.size:
                continue
            rows_cols = np.unravel_index(flat, plane_labels.shape)
            index = tuple(np.full(flat.size, i, dtype=np.intp) for i in plane) + rows_cols
            objects.data_setitem(index, used, refresh=False)
            written.append(used)
    objects.refresh()
    return written


def show_everything(layer: Labels, plane: Plane, segmentation: Segmentation) -> list[int]:
    """Put an automatic segmentation of one plane into the everything layer.

    The plane's previous content is replaced; on a stack, the new ids follow the largest id
    in the layer, so objects of different planes never share an id. Each object's row of
    :meth:`Segmentation.table` becomes a row of ``layer.features`` (its ``index`` column is
    the object's id in the layer, ``plane`` the plane it was found on).

    Args:
        layer: The everything layer (the image's shape, channels excluded).
        plane: Leading indices of the plane (``()`` for 2-D).
        segmentation: What :class:`~sam_viz.automatic.everything.MaskGenerator` found on that plane.

    Returns:
        The ids of the objects written.
    """
    found = np.asarray(segmentation.labels)
    offset = int(layer.data.max()) if plane else 0
    ids = np.where(found > 0, found.astype(np.int64) + offset, 0)
    if plane:
        layer.data[plane] = ids
    else:
        layer.data[...] = ids
    present = set(np.unique(layer.data).tolist())
    import pandas as pd

    rows = [
        {**row, "index": int(row["label"]) + offset, "plane": str(plane)}
        for row in segmentation.table()
    ]
    old = layer.features
    if "index" in old and "plane" in old:
        old = old[old["index"].isin(present) & (old["plane"] != str(plane))]
    else:
        old = pd.DataFrame()
    layer.features = pd.concat([old, pd.DataFrame(rows)], ignore_index=True)
    layer.refresh()
    return [int(row["index"]) for row in rows]


def write_propagation(
    objects: Labels, prefix: Plane, masks: np.ndarray, label: int, start: int
) -> list[int]:
    """Write an object propagated through a stack into the objects layer, as one undo step.

    Only background pixels (and the object's own) are written: other objects are never
    overwritten. The start slice, where the object was committed, is left as it is; pixels
    the object already had on other slices are kept.

    Args:
        objects: The objects Labels layer.
        prefix: Leading indices before the stack axis (``()`` for a (Z, H, W) image).
        masks: (Z, H, W) bool, the object on each slice of the stack.
        label: The object's id.
        start: The slice the object was propagated from.

    Returns:
        The slices on which pixels were written.
    """
    written: list[int] = []
    with objects.block_history():
        for index in np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1)):
            if index == start:
                continue
            plane = (*prefix, int(index))
            flat, used = commit_pixels(np.asarray(objects.data[plane]), masks[index], label)
            if not flat.size:
                continue
            rows_cols = np.unravel_index(flat, masks.shape[1:])
            where = tuple(np.full(flat.size, i, dtype=np.intp) for i in plane) + rows_cols
            objects.data_setitem(where, used, refresh=False)
            written.append(int(index))
    objects.refresh()
    return written


def bind_keys(layer: object, bindings: dict[str, Callable[..., object]]) -> None:
    """Bind keys on one layer instance; they take precedence over the layer type's keys."""
    for key, callback in bindings.items():
        layer.bind_key(key, callback, overwrite=True)  # type: ignore[attr-defined]


def unbind_keys(layer: object, keys: Sequence[str]) -> None:
    """Remove the keys bound by :func:`bind_keys` from a layer instance."""
    for key in keys:
        layer.bind_key(key, None)  # type: ignore[attr-defined]
