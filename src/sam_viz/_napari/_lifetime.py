"""When the dock widget's life ends, although napari never calls its ``closeEvent``.

* The dock's close button (X) calls ``setParent(None)`` on the widget and deletes the dock;
  the widget lives on, hidden, as long as anything refers to it.
* Closing the viewer (or quitting napari) closes and hides the main window; the widget is
  deleted later, if the event loop still runs by then, and worker threads still running
  when Python exits abort the process.

:class:`EndWatch` sees both, through an event filter on the widget and its ancestors.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget


class EndWatch(QObject):
    """Calls ``on_end()`` once: when ``widget`` is taken out of the dock it was put in, or
    when the window it is docked in closes.

    Args:
        widget: The dock widget.
        on_end: What to do (release everything the widget bound, stop its workers).
    """

    def __init__(self, widget: QWidget, on_end: Callable[[], None]) -> None:
        super().__init__(widget)
        self._widget = widget
        self._on_end: Callable[[], None] | None = on_end
        self._watched: list[QObject] = []
        self._docked = False
        self._closing = False
        self._watch()

    def _watch(self) -> None:
        """Filter the events of the widget and of each of its ancestors (once docked, the
        dock and the main window)."""
        for obj in self._watched:
            obj.removeEventFilter(self)
        chain: list[QObject] = []
        obj: QObject | None = self._widget
        while obj is not None:
            chain.append(obj)
            obj = obj.parent()
        for obj in chain:
            obj.installEventFilter(self)
        self._watched = chain
        self._docked = self._docked or len(chain) > 1

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.ParentChange:
            if obj is self._widget and self._widget.parent() is None and self._docked:
                self._end()  # napari's close button on the dock
            else:
                self._watch()  # put in a dock, or the dock put in a window
        elif obj is self._watched[-1] and obj is not self._widget:  # the top window
            if kind == QEvent.Type.Close:
                # A visible window hides once the close is accepted (it may be refused).
                self._closing = True
                if not obj.isVisible():  # type: ignore[attr-defined]
                    self._end()
            elif kind == QEvent.Type.Hide and self._closing and not event.spontaneous():
                self._end()
            elif kind == QEvent.Type.Show:
                self._closing = False
        return False

    def _end(self) -> None:
        on_end, self._on_end = self._on_end, None
        for obj in self._watched:
            obj.removeEventFilter(self)
        self._watched = [self._widget]
        if on_end is not None:
            on_end()
