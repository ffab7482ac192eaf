"""Small helpers shared by the napari plugin's tests: the user's keys and mouse, as napari
delivers them."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np


def rectangle(r0: float, c0: float, r1: float, c1: float, z: float | None = None) -> np.ndarray:
    """A napari rectangle's four (row, col) corners, with a leading z if given."""
    corners = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], dtype=float)
    if z is None:
        return corners
    return np.column_stack([np.full(4, z), corners])


def wait_idle(qtbot, widget, condition=lambda: True, timeout: int = 30_000) -> None:
    """Wait until the widget has no work running or scheduled and ``condition()`` holds."""
    qtbot.waitUntil(lambda: not widget.busy and condition(), timeout=timeout)


def press(viewer, key: str) -> None:
    """Press and release ``key`` as the canvas would (active layer's keymap first)."""
    handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key(key)
    handler.release_key(key)


@dataclass
class Mouse:
    """A vispy-like mouse event, as napari's own tests build them."""

    type: str
    position: tuple[float, ...]
    modifiers: list[str] = field(default_factory=list)
    is_dragging: bool = False
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    view_direction: list[float] | None = None
    up_direction: list[float] | None = None
    dims_displayed: list[int] = field(default_factory=lambda: [0, 1])


def _wrap(event: Mouse):
    from napari.utils._proxies import ReadOnlyWrapper

    return partial(ReadOnlyWrapper, exceptions=("handled",))(event)


def click(layer, position, modifiers=()) -> None:
    """Press and release the mouse at ``position`` (the layer's data coordinates)."""
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    for kind, callbacks in (
        ("mouse_press", mouse_press_callbacks),
        ("mouse_release", mouse_release_callbacks),
    ):
        callbacks(layer, _wrap(Mouse(kind, tuple(position), list(modifiers))))


def drag_box(qtbot, shapes, start, end, steps: int = 3) -> None:
    """Draw a rectangle with the mouse in ``shapes`` (rectangle mode), from ``start`` to
    ``end`` (row, col), as a user drags it."""
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    shapes.mode = "add_rectangle"
    mouse_press_callbacks(shapes, _wrap(Mouse("mouse_press", tuple(map(float, start)))))
    for t in np.linspace(0, 1, steps + 1)[1:]:
        row, col = (1 - t) * np.asarray(start, float) + t * np.asarray(end, float)
        move = Mouse("mouse_move", (row, col), is_dragging=True, pos=np.array([col, row]))
        mouse_move_callbacks(shapes, _wrap(move))
        qtbot.wait(20)
    row, col = map(float, end)
    release = Mouse("mouse_release", (row, col), pos=np.array([col, row]))
    mouse_release_callbacks(shapes, _wrap(release))
