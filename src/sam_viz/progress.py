"""Progress and cancellation of long work, shared by every layer and front end.

Long work (an image embedding, segment everything, a propagation) reports
``progress(done, total)`` and stops with :class:`Cancelled` once its ``cancel`` event is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]


class Cancelled(Exception):
    """Raised inside a long computation when its cancel event was set."""


def check_cancel(cancel: threading.Event | None, what: str) -> None:
    """Raise :class:`Cancelled` ("<what> was cancelled.") if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} was cancelled.")
