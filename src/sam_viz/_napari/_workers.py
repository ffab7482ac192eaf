"""Running functions in worker threads without raising: errors come back as values.

A worker that raises (or returns an exception) makes napari show a traceback; the plugin
shows a message instead, so its workers hand errors back wrapped in :class:`Failed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sam_viz.predictor import Cancelled

logger = logging.getLogger(__name__)

# Errors with a message meant for the user; anything else is also logged with its traceback.
EXPECTED_ERRORS = (ValueError, TypeError, OSError, Cancelled)


@dataclass(frozen=True)
class Failed:
    """What a worker hands back instead of raising."""

    error: Exception


def call_safely(func: Callable[..., object], *args: object) -> object:
    """``func(*args)``, or :class:`Failed` with the exception it raised."""
    try:
        return func(*args)
    except Exception as err:
        if not isinstance(err, EXPECTED_ERRORS):
            logger.exception("sam_viz: %s failed", getattr(func, "__name__", func))
        return Failed(err)
