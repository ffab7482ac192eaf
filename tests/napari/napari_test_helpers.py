"""Small helpers shared by the napari plugin's tests."""

from __future__ import annotations

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
