"""Running functions in worker threads without raising: errors come back as values.

:class:`SerialWorker` is the plugin's prediction (and model loading) thread: one long-lived
thread whose results come back on the UI thread. :class:`WorkerPool` runs a widget's napari
workers on a thread pool of its own, so that closing the widget (or quitting napari) can
wait for exactly those workers.

A worker that raises (or returns an exception) makes napari show a traceback; the plugin
shows a message instead, so its workers hand errors back wrapped in :class:`Failed`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from qtpy.QtCore import QObject, QRunnable, QThreadPool, Signal

from sam_viz.progress import Cancelled

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


class SerialWorker(QObject):
    """One long-lived thread that runs short jobs in order, for the UI thread.

    Predictions are short and frequent: starting a thread for each costs milliseconds that
    the user waits for, so they share one thread, started on the first job. A job's result
    (or :class:`Failed`) is handed to its callback on the UI thread. Jobs never raise.

    Args:
        name: The thread's name (shown in debuggers and profilers).
        parent: The Qt object whose deletion ends the deliveries (the widget).
    """

    _done = Signal(object, object)  # (callback, result), queued to the UI thread

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._closed = False
        self._done.connect(self._deliver)

    def submit(
        self, func: Callable[..., object], *args: object, on_done: Callable[[object], object]
    ) -> None:
        """Run ``func(*args)`` after the jobs before it; ``on_done(result)`` on this thread."""
        if self._closed:
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._pending += 1
        self._jobs.put(_Job(func, args, on_done))

    @property
    def pending(self) -> int:
        """Jobs submitted whose callback has not run yet."""
        return self._pending

    def close(self) -> None:
        """Let the thread end after the jobs already submitted (a later job starts another)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def shutdown(self, wait_s: float = 0.0) -> bool:
        """Take no more jobs, drop the results still to come, and let the thread end.

        Args:
            wait_s: How long to wait for the thread to end. A job still running then (e.g.
                a model download) ends on its own: its result is dropped, and the daemon
                thread never keeps the process alive.

        Returns:
            Whether the thread has ended.
        """
        self._closed = True
        thread = self._thread
        self.close()
        if thread is None:
            return True
        thread.join(wait_s)
        return not thread.is_alive()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            result = call_safely(job.func, *job.args)
            try:
                self._done.emit(job.on_done, result)
            except RuntimeError:  # the Qt object (and its widget) was deleted
                return

    def _deliver(self, on_done: Callable[[object], object], result: object) -> None:
        self._pending -= 1
        if not self._closed:
            on_done(result)


class WorkerPool:
    """A thread pool for one widget's napari workers (embedding, segment everything,
    propagation).

    napari's ``worker.start()`` uses Qt's global pool, which nothing can wait for selectively;
    a worker still running when Python exits emits on signals already deleted, which aborts
    the process. Workers started here are cancelled by their owners and then joined.

    Args:
        parent: The Qt object the pool belongs to.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        self._pool = QThreadPool(parent)

    def start(self, worker: QRunnable) -> None:
        """Run a napari worker (made with ``_start_thread=False``) on this pool."""
        self._pool.start(worker)

    def join(self, wait_s: float) -> bool:
        """Wait up to ``wait_s`` seconds for the workers to end; returns whether they did."""
        return self._pool.waitForDone(max(0, round(wait_s * 1000)))


@dataclass(frozen=True)
class _Job:
    func: Callable[..., object]
    args: tuple[object, ...]
    on_done: Callable[[object], object]
