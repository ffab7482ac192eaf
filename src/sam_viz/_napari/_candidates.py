"""The three candidate Labels layers (subpart, part, whole): one shown at a time.

The candidate on show is filled first, since it is what the user waits for; the two hidden
ones are filled on the next turn of the event loop (or at once when chosen), so napari can
draw the shown one without waiting for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import QTimer

from sam_viz._napari._layers import make_candidate_layer
from sam_viz.predictor import Candidates
from sam_viz.prompts import CANDIDATE_NAMES


def layer_name(name: str, iou: float | None = None) -> str:
    """A candidate layer's name, with its predicted IoU once there is a prediction."""
    return f"SAM {name}" if iou is None else f"SAM {name} (IoU {iou:.2f})"


class CandidateLayers:
    """Creates, fills, shows and clears the candidate layers of one image.

    Args:
        viewer: The napari viewer.
        on_new_layer: Called with each layer created (e.g. to bind keys on it).
    """

    def __init__(self, viewer: object, on_new_layer: Callable[[Labels], None]) -> None:
        self.viewer = viewer
        self._on_new_layer = on_new_layer
        self._layers: dict[str, Labels] = {}
        self._shown: Candidates | None = None
        self._unfilled: set[int] = set()

    @property
    def layers(self) -> list[Labels]:
        """The existing layers, smallest candidate first."""
        return [self._layers[name] for name in CANDIDATE_NAMES if name in self._layers]

    @property
    def pending(self) -> bool:
        """Whether hidden layers still wait for the current candidates."""
        return bool(self._unfilled)

    def ensure(self, image: Image, below: Sequence[Layer]) -> None:
        """Create missing layers for ``image``, inserted under the ``below`` layers."""
        missing = [name for name in CANDIDATE_NAMES if name not in self._layers]
        if not missing:
            return
        layers = self.viewer.layers  # type: ignore[attr-defined]
        positions = [layers.index(layer) for layer in below if layer in layers]
        index = min(positions) if positions else len(layers)
        for name in missing:
            layer = make_candidate_layer(image, name)
            layer.editable = False
            layers.insert(index, layer)
            index += 1
            self._layers[name] = layer
            self._on_new_layer(layer)

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
        for i, layer in enumerate(self.layers):
            if layer.visible != (i == index):
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

    def remove(self) -> None:
        """Remove the layers from the viewer (e.g. for another image)."""
        layers = self.viewer.layers  # type: ignore[attr-defined]
        for layer in list(self._layers.values()):
            if layer in layers:
                layers.remove(layer)
        self._layers.clear()
        self._unfilled.clear()
        self._shown = None

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
