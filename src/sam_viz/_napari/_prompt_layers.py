"""The layers the user draws prompts in: the *SAM points* and *SAM boxes* layers of an
image, read into one :class:`~sam_viz.prompts.PromptSet` for a plane, and cleared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from napari.layers import Image, Layer, Points, Shapes

from sam_viz._napari import _layers
from sam_viz._napari._keys import KeyBindings
from sam_viz._napari._prompts import collect_prompts, to_image_coords
from sam_viz._napari._slicing import Plane, plane_geometry
from sam_viz.prompts import PromptSet

Callback = Callable[..., object]


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

    def ensure(self, image: Image, *, negative: bool) -> None:
        """Create the layers that are missing, placed like ``image``."""
        if self.points is None:
            self.points = _layers.make_points_layer(image)
            self.viewer.add_layer(self.points)  # type: ignore[attr-defined]
            self.points.events.data.connect(self._on_edit)
            self.points.events.features.connect(self._on_edit)
            self.points.mouse_drag_callbacks.insert(0, self._on_points_press)
            self._bindings.bind(self.points, self._keys)
            self.set_negative(negative)
        if self.shapes is None:
            self.shapes = _layers.make_shapes_layer(image)
            self.viewer.add_layer(self.shapes)  # type: ignore[attr-defined]
            self.shapes.events.data.connect(self._on_edit)
            self.shapes.events.set_data.connect(self._on_edit)  # live while drawing
            self._bindings.bind(self.shapes, self._keys)
            self.shapes.mode = "add_rectangle"

    def drop_mismatched(self, image: Image) -> None:
        """Remove layers whose dimensions do not fit ``image`` (they are made again)."""
        for layer in (self.points, self.shapes):
            if layer is not None and layer.ndim != image.ndim:
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
            self.points.data = np.zeros((0, self.points.ndim))
        if self.shapes is not None and self.shapes.nshapes:
            self.shapes.selected_data = set(range(self.shapes.nshapes))
            self.shapes.remove_selected()

    def release(self) -> None:
        """Stop listening to the layers and take the click callback off the points layer."""
        for layer in self.layers:
            layer.events.disconnect(self._on_edit)
        if self.points is not None and self._on_points_press in self.points.mouse_drag_callbacks:
            self.points.mouse_drag_callbacks.remove(self._on_points_press)
