"""The layers the user draws prompts in: the *SAM points* and *SAM boxes* layers of an
image, read into one :class:`~sam_viz.prompts.PromptSet` for a plane, and cleared.

Prompts belong to an image: the two layers show the prompts of the image being segmented.
Choosing another image puts the current prompts aside and shows those of the other image
(none at first); the prompts of an image that was removed are dropped. A widget opened again
adopts the layers an earlier one left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Layer, Points, Shapes

from sam_viz._napari import _layers
from sam_viz._napari._keys import KeyBindings
from sam_viz._napari._prompts import collect_prompts, to_image_coords
from sam_viz._napari._slicing import Plane, plane_geometry
from sam_viz.prompts import PromptSet

Callback = Callable[..., object]


@dataclass(frozen=True)
class Drawn:
    """The prompts drawn over one image, in the prompt layers' data coordinates.

    Attributes:
        points: (N, D) point positions.
        point_labels: N values of the points' ``label`` feature.
        shapes: One (K, D) vertex array per shape.
        shape_types: napari's type of each shape.
    """

    points: np.ndarray
    point_labels: tuple[str, ...]
    shapes: tuple[np.ndarray, ...]
    shape_types: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """Whether nothing is drawn."""
        return not len(self.points) and not self.shapes


class PromptLayers:
    """The Points and Shapes layers prompts are drawn in, for one viewer.

    Args:
        viewer: The napari viewer.
        on_edit: Called with napari's event whenever a prompt changes.
        on_points_press: A mouse-drag callback put first on the points layer (it sets a
            new point's label before napari adds it).
        bindings: The plugin's key bindings.
        keys: The keys bound on both layers.
    """

    def __init__(
        self,
        viewer: object,
        on_edit: Callback,
        on_points_press: Callback,
        bindings: KeyBindings,
        keys: Sequence[str],
    ) -> None:
        self.viewer = viewer
        self.points: Points | None = None
        self.shapes: Shapes | None = None
        self._on_edit = on_edit
        self._on_points_press = on_points_press
        self._bindings = bindings
        self._keys = tuple(keys)
        self._aside: dict[int, Drawn] = {}  # by id() of image layers in the viewer

    def ensure(self, image: Image, *, negative: bool) -> None:
        """Create the layers that are missing, placed like ``image`` (layers of those names
        an earlier widget left are adopted)."""
        if self.points is None:
            adopted = self._find(Points, _layers.POINTS_NAME, image.ndim)
            self.points = adopted or _layers.make_points_layer(image)
            if adopted is None:
                self.viewer.add_layer(self.points)  # type: ignore[attr-defined]
            self.points.events.data.connect(self._on_edit)
            self.points.events.features.connect(self._on_edit)
            self.points.mouse_drag_callbacks.insert(0, self._on_points_press)
            self._bindings.bind(self.points, self._keys)
            self.set_negative(negative)
        if self.shapes is None:
            adopted = self._find(Shapes, _layers.SHAPES_NAME, image.ndim)
            self.shapes = adopted or _layers.make_shapes_layer(image)
            if adopted is None:
                self.viewer.add_layer(self.shapes)  # type: ignore[attr-defined]
                self.shapes.mode = "add_rectangle"
            self.shapes.events.data.connect(self._on_edit)
            self.shapes.events.set_data.connect(self._on_edit)  # live while drawing
            self._bindings.bind(self.shapes, self._keys)

    def _find(self, kind: type, name: str, ndim: int) -> Layer | None:
        """A layer ``name`` of ``kind`` and ``ndim`` in the viewer, left by an earlier widget."""
        for layer in self.viewer.layers:  # type: ignore[attr-defined]
            ours = type(layer) is kind and layer.name == name and layer.ndim == ndim
            if ours and (kind is not Points or "label" in layer.features):
                return layer
        return None

    def put_aside(self, image: Image | None) -> None:
        """Keep the prompts drawn over ``image`` for when it is chosen again (drop them if it
        is no longer in the viewer), and empty the layers."""
        if image is not None and image in self.viewer.layers:  # type: ignore[attr-defined]
            drawn = self.drawn()
            if not drawn.empty:
                self._aside[id(image)] = drawn
        self.clear()

    def show_image(self, image: Image, *, negative: bool) -> None:
        """Place the (empty) layers over ``image``, made again if they do not fit it, and
        show the prompts put aside for it."""
        for layer in self.layers:
            if not _layers.refit(layer, image, image.ndim):
                self._drop(layer)
        self.ensure(image, negative=negative)
        assert self.points is not None
        self.points.selected_data = set()  # else napari resizes the selected points too
        self.points.current_size = _layers.marker_size(image, self.points)
        drawn = self._aside.pop(id(image), None)
        if drawn is not None:
            self._restore(drawn)

    def forget_image(self, image_ids: set[int]) -> None:
        """Drop the prompts put aside for images no longer in the viewer (``image_ids``:
        the ids of those that are)."""
        for key in set(self._aside) - image_ids:
            del self._aside[key]

    def drawn(self) -> Drawn:
        """What the layers hold now."""
        points, labels = np.zeros((0, 2)), ()
        if self.points is not None and len(self.points.data):
            points = np.array(self.points.data, dtype=np.float64)
            labels = tuple(str(v) for v in self.points.features["label"])
        shapes, types = (), ()
        if self.shapes is not None and self.shapes.nshapes:
            shapes = tuple(np.array(v, dtype=np.float64) for v in self.shapes.data)
            types = tuple(str(t) for t in self.shapes.shape_type)
        return Drawn(points, labels, shapes, types)

    def _restore(self, drawn: Drawn) -> None:
        import pandas as pd

        if self.points is not None and len(drawn.points):
            categories = list(_layers.POINT_COLORS)
            self.points.data = drawn.points
            self.points.features = pd.DataFrame(
                {"label": pd.Categorical(drawn.point_labels, categories=categories)}
            )
            self.points.refresh_colors()
        if self.shapes is not None and drawn.shapes:
            self.shapes.add(list(drawn.shapes), shape_type=list(drawn.shape_types))

    def _drop(self, layer: Layer) -> None:
        """Stop using ``layer`` and remove it (it does not fit the image)."""
        self._disconnect(layer)
        self.viewer.layers.remove(layer)  # type: ignore[attr-defined]
        self.forget(layer)

    def forget(self, layer: Layer) -> None:
        """The user deleted ``layer``: stop using it."""
        if layer is self.points:
            self.points = None
        if layer is self.shapes:
            self.shapes = None

    @property
    def layers(self) -> list[Layer]:
        """The layers that exist."""
        return [layer for layer in (self.points, self.shapes) if layer is not None]

    def set_negative(self, negative: bool) -> None:
        """New points mark background (``negative``) or the object."""
        if self.points is not None:
            self.points.feature_defaults["label"] = "negative" if negative else "positive"

    def collect(self, image: Image, plane: Plane) -> PromptSet:
        """The prompts on ``plane`` in the image's pixels (see :func:`collect_prompts`).

        Raises:
            ValueError: With a message for the user (a point outside the image, ...).
        """
        _, image_hw = plane_geometry(image.data.shape, image.rgb)
        points = None
        if self.points is not None and len(self.points.data):
            coords = to_image_coords(self.points.data, self.points, image)
            points = (coords, list(self.points.features["label"]))
        shapes = []
        if self.shapes is not None and self.shapes.nshapes:
            for vertices, kind in zip(self.shapes.data, self.shapes.shape_type, strict=True):
                shapes.append((to_image_coords(vertices, self.shapes, image), str(kind)))
        return collect_prompts(image_hw, plane, points, shapes)

    def clear(self) -> None:
        """Remove every prompt."""
        if self.points is not None and len(self.points.data):
            self.points.selected_data = set()  # napari keeps a selection of removed points
            self.points.data = np.zeros((0, self.points.ndim))
        if self.shapes is not None and self.shapes.nshapes:
            self.shapes.selected_data = set(range(self.shapes.nshapes))
            self.shapes.remove_selected()

    def release(self) -> None:
        """Stop listening to the layers and take the click callback off the points layer."""
        for layer in self.layers:
            self._disconnect(layer)

    def _disconnect(self, layer: Layer) -> None:
        """Stop listening to ``layer`` (napari's ``events.disconnect`` leaves sub-emitters)."""
        for name in ("data", "features", "set_data"):
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                emitter.disconnect(self._on_edit)
        if isinstance(layer, Points) and self._on_points_press in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.remove(self._on_points_press)
