"""The three candidate Labels layers (subpart, part, whole): one shown at a time.

Adding a layer to napari costs about 0.3 s of the UI thread (its visual is built), so the
layers are made once per viewer, one per turn of the event loop as soon as there is an image
(:meth:`CandidateLayers.prepare`), not when the first mask is waited for; another image
re-places them, and a widget opened again adopts them.

The candidate on show is filled first, since it is what the user waits for; the two hidden
ones are filled on the next turn of the event loop (or at once when chosen), so napari can
draw the shown one without waiting for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import QTimer

from sam_viz._napari._layers import make_candidate_layer, refit
from sam_viz._napari._slicing import plane_geometry
from sam_viz.prompts import CANDIDATE_NAMES

if TYPE_CHECKING:
    from sam_viz.predictor import Candidates


def layer_name(name: str, iou: float | None = None) -> str:
    """A candidate layer's name, with its predicted IoU once there is a prediction."""
    return f"SAM {name}" if iou is None else f"SAM {name} (IoU {iou:.2f})"


def is_candidate_layer(layer: Layer, name: str) -> bool:
    """Whether ``layer`` is the candidate layer called ``name`` (made by a widget before)."""
    return isinstance(layer, Labels) and (
        layer.name == layer_name(name) or layer.name.startswith(f"{layer_name(name)} (IoU ")
    )


class CandidateLayers:
    """Creates, fills, shows and clears the candidate layers of one image.

    Args:
        viewer: The napari viewer.
        on_new_layer: Called with each layer made or adopted (e.g. to bind keys on it).
    """

    def __init__(self, viewer: object, on_new_layer: Callable[[Labels], None]) -> None:
        self.viewer = viewer
        self._on_new_layer = on_new_layer
        self._layers: dict[str, Labels] = {}
        self._image: Image | None = None
        self._below: Callable[[], Sequence[Layer]] = tuple
        self._building = False
        self._shown: Candidates | None = None
        self._unfilled: set[int] = set()

    @property
    def layers(self) -> list[Labels]:
        """The existing layers, smallest candidate first."""
        return [self._layers[name] for name in CANDIDATE_NAMES if name in self._layers]

    @property
    def pending(self) -> bool:
        """Whether layers are still to be made, or hidden ones to be filled."""
        return bool(self._unfilled) or self._building

    def prepare(self, image: Image, below: Callable[[], Sequence[Layer]]) -> None:
        """Get the layers ready for ``image`` without blocking the UI for long: existing ones
        are re-placed (or adopted), missing ones made one per turn of the event loop.

        Args:
            image: The image segmented.
            below: Gives the layers the candidate layers go under (the prompt layers).
        """
        self._below = below
        self._fit(image)
        self._schedule()

    def ensure(self, image: Image, below: Sequence[Layer]) -> None:
        """Make the layers for ``image`` now, inserted under the ``below`` layers."""
        self._fit(image)
        for name in CANDIDATE_NAMES:
            if name not in self._layers:
                self._make(image, name, below)

    def stop(self) -> None:
        """Make no more layers (the widget closed)."""
        self._image = None

    def _schedule(self) -> None:
        if not self._building and len(self._layers) < len(CANDIDATE_NAMES):
            self._building = True
            QTimer.singleShot(0, self._make_next)

    def _make_next(self) -> None:
        self._building = False
        missing = [name for name in CANDIDATE_NAMES if name not in self._layers]
        if self._image is None or not missing or self._image not in self.viewer.layers:  # type: ignore[attr-defined]
            return
        self._make(self._image, missing[0], self._below())
        self._schedule()

    def _make(self, image: Image, name: str, below: Sequence[Layer]) -> None:
        layers = self.viewer.layers  # type: ignore[attr-defined]
        positions = [layers.index(layer) for layer in below if layer in layers]
        layer = make_candidate_layer(image, name)
        layer.editable = False
        active = layers.selection.active  # napari makes an added layer the active one
        layers.insert(min(positions) if positions else len(layers), layer)
        if active is not None and active in layers:
            layers.selection.active = active
        self._layers[name] = layer
        self._on_new_layer(layer)

    def _fit(self, image: Image) -> None:
        """Adopt candidate layers left by an earlier widget; re-place all for ``image``."""
        for layer in self.viewer.layers:  # type: ignore[attr-defined]
            for name in CANDIDATE_NAMES:
                if name not in self._layers and is_candidate_layer(layer, name):
                    layer.editable = False
                    self._layers[name] = layer
                    self._on_new_layer(layer)
        if image is self._image:
            return
        self._image = image
        self.clear()
        _, image_hw = plane_geometry(image.data.shape, image.rgb)
        for name, layer in list(self._layers.items()):
            if not refit(layer, image, 2):
                self.viewer.layers.remove(layer)  # type: ignore[attr-defined]
                del self._layers[name]
            elif layer.data.shape != image_hw:
                layer.data = np.zeros(image_hw, dtype=np.uint8)

    def show(self, candidates: Candidates, chosen: int) -> None:
        """Put ``candidates`` in the layers and show candidate ``chosen``."""
        self._shown = candidates
        self._unfilled = set(range(len(CANDIDATE_NAMES))) - {chosen}
        self._fill(chosen)
        self.choose(chosen)
        QTimer.singleShot(0, self._fill_hidden)

    def choose(self, index: int) -> None:
        """Make candidate ``index`` the only visible one."""
        if index in self._unfilled:
            self._fill(index)
        for i, name in enumerate(CANDIDATE_NAMES):
            layer = self._layers.get(name)
            if layer is not None and layer.visible != (i == index):
                layer.visible = i == index

    def clear(self) -> None:
        """Empty every layer (they stay, with their visibility)."""
        self._shown = None
        self._unfilled.clear()
        for name, layer in self._layers.items():
            if layer.data.any():
                layer.data = np.zeros_like(layer.data)
            if layer.name != layer_name(name):
                layer.name = layer_name(name)

    def forget(self, layer: Layer) -> None:
        """The user deleted ``layer``: stop using it (it is created again when needed)."""
        for name, ours in list(self._layers.items()):
            if ours is layer:
                del self._layers[name]

    def _fill(self, index: int) -> None:
        self._unfilled.discard(index)
        candidates = self._shown
        layer = self._layers.get(CANDIDATE_NAMES[index])
        if candidates is None or layer is None:
            return
        layer.data = candidates.labels[index]
        name = layer_name(candidates.names[index], float(candidates.iou_scores[index]))
        if layer.name != name:
            layer.name = name

    def _fill_hidden(self) -> None:
        for index in sorted(self._unfilled):
            self._fill(index)
