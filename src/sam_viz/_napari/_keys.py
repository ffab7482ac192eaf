"""The plugin's keys in its layers, and Shift+click for a negative point.

The handlers hold the widget and call its public actions; once the widget's Qt side is gone
they release the keys from the layer and let napari's own handling go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from napari.layers import Layer, Points
from qtpy.QtWidgets import QWidget

from sam_viz._napari import _layers

CHOOSE_KEYS = ("1", "2", "3")
COMMIT_KEY = "c"
NEGATIVE_KEY = "n"
PROPAGATE_KEY = "Shift-P"  # plain P is napari's paint / add / polygon mode in these layers
PLUGIN_KEYS = (*CHOOSE_KEYS, COMMIT_KEY, NEGATIVE_KEY, PROPAGATE_KEY)

Callback = Callable[..., object]


class KeyBindings:
    """The plugin's keys on layers, bound through one callback factory and released at once.

    Args:
        handler: ``handler(key)`` gives the callback napari calls for ``key``.
    """

    def __init__(self, handler: Callable[[str], Callback]) -> None:
        self._handler = handler
        self._bound: list[tuple[Layer, tuple[str, ...]]] = []

    def bind(self, layer: Layer, keys: Sequence[str]) -> None:
        """Bind ``keys`` on ``layer`` (they take precedence over the layer type's keys)."""
        _layers.bind_keys(layer, {key: self._handler(key) for key in keys})
        self._bound.append((layer, tuple(keys)))

    def release(self) -> None:
        """Unbind every key bound so far."""
        for layer, keys in self._bound:
            _layers.unbind_keys(layer, keys)
        self._bound.clear()


def alive(widget: QWidget) -> bool:
    """Whether the Qt side of ``widget`` still exists (it is gone once the dock is deleted)."""
    try:
        widget.objectName()
    except RuntimeError:
        return False
    return True


def on_key(widget: Any, key: str, layer: Layer) -> None:
    """A plugin key pressed in one of its layers; once the widget is gone, the keys are
    released from that layer."""
    if not alive(widget):
        _layers.unbind_keys(layer, PLUGIN_KEYS)
        return
    if key in CHOOSE_KEYS:
        widget.choose(CHOOSE_KEYS.index(key))
    elif key == COMMIT_KEY:
        widget.commit()
    elif key == NEGATIVE_KEY:
        widget.toggle_negative()
    elif key == PROPAGATE_KEY:
        widget.propagate()


def on_points_press(widget: Any, layer: Points, event: object) -> Iterator[None]:
    """Runs before napari's add-point callback: Shift+click adds a negative point."""
    if not alive(widget):
        return  # the widget is gone: napari's own click handling goes on as usual
    if layer.mode == "add":
        shift = "Shift" in event.modifiers  # type: ignore[attr-defined]
        negative = shift or widget.controls.negative_check.isChecked()
        layer.feature_defaults["label"] = "negative" if negative else "positive"
    yield
