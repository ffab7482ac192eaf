"""Embedding the planes of one image in a napari worker, the plane on screen first.

One :class:`PlaneEmbedder` serves one (image, predictor) pair. When either changes, the
widget calls :meth:`PlaneEmbedder.discard` and makes a new one, so results of the old pair
can never reach the new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from functools import partial

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from sam_viz._napari._scheduling import PlaneQueue
from sam_viz._napari._slicing import Plane, plane_data
from sam_viz._napari._workers import Failed, call_safely
from sam_viz.predictor import Cancelled, Predictor
from sam_viz.predictor.cache import ImageEmbedding

ProgressReport = Callable[[Plane, int, int, int, int], None]


def _embed_one(
    predictor: Predictor,
    data: object,
    plane: Plane,
    progress: Callable[[int, int], None],
    cancel: threading.Event,
) -> ImageEmbedding:
    return predictor.set_image(plane_data(data, plane), progress=progress, cancel=cancel)


def embed_planes(
    predictor: Predictor,
    data: object,
    queue: PlaneQueue,
    cancel: threading.Event,
    report: ProgressReport,
) -> Iterator[tuple[Plane, ImageEmbedding | Failed]]:
    """Worker generator: embed the queued planes one by one.

    Yields:
        (plane, embedding), or, as the last value on failure or cancel, (plane, Failed).
    """
    while (plane := queue.pop()) is not None:
        done, total = queue.done, max(queue.total, 1)
        progress = partial(report, plane, done, total)
        result = call_safely(_embed_one, predictor, data, plane, progress, cancel)
        if isinstance(result, Failed):
            queue.worker_stopped()
            yield plane, result
            return
        queue.mark_done()
        yield plane, result  # type: ignore[misc]


class PlaneEmbedder(QObject):
    """Computes and keeps the embeddings of an image's planes off the UI thread.

    Signals:
        embedded(plane, embedding): a plane is ready.
        failed(error): the embedding stopped (a ``Cancelled`` error when the user cancelled).
        progress(value, text): value in 0..1000 for a progress bar, with a caption.
        idle(): the worker finished its queue.
    """

    embedded = Signal(object, object)
    failed = Signal(object)
    progress = Signal(int, str)
    idle = Signal()
    _reported = Signal(object, int, int, int, int)

    def __init__(self, predictor: Predictor, data: object, parent: QObject | None = None) -> None:
        """Args:
        predictor: The predictor to embed with.
        data: The image layer's data (read plane by plane in the worker).
        parent: Qt parent.
        """
        super().__init__(parent)
        self.predictor = predictor
        self.data = data
        self.embeddings: dict[Plane, ImageEmbedding] = {}
        self._queue = PlaneQueue()
        self._cancel = threading.Event()
        self._failed = False
        self._reported.connect(self._on_reported)

    def want(self, plane: Plane) -> None:
        """Embed ``plane`` next, unless it is ready."""
        if plane not in self.embeddings and self._queue.want(plane):
            self._start()

    def want_all(self, planes: Iterable[Plane], first: Plane | None = None) -> int:
        """Queue every plane not yet embedded (``first`` before the others).

        Returns:
            How many planes were queued.
        """
        missing = [plane for plane in planes if plane not in self.embeddings]
        start = self._queue.extend(missing)
        if first is not None and first in missing:
            start = self._queue.want(first) or start
        if start:
            self._start()
        return len(missing)

    @property
    def running(self) -> bool:
        """Whether a worker is embedding."""
        return self._queue.worker_running

    def cancel(self) -> None:
        """Stop the running embedding and drop the queued planes.

        ``failed`` is emitted with a ``Cancelled`` error at once (not when the worker
        notices), also if the worker had not taken its first plane yet.
        """
        if not self._queue.worker_running or self._cancel.is_set():
            return
        self._queue.clear()
        self._cancel.set()
        self._failed = True
        self.failed.emit(Cancelled("The image embedding was cancelled."))

    def discard(self) -> None:
        """Cancel and never emit again (the image or the model changed)."""
        self.blockSignals(True)
        self._queue.clear()
        self._cancel.set()

    def _start(self) -> None:
        self._cancel = threading.Event()
        self._failed = False
        worker = create_worker(
            embed_planes,
            self.predictor,
            self.data,
            self._queue,
            self._cancel,
            self._reported.emit,
            _start_thread=False,
        )
        worker.yielded.connect(self._on_yielded)
        worker.finished.connect(self._on_finished)
        self.progress.emit(0, "embedding...")
        worker.start()

    def _on_reported(self, plane: Plane, done: int, total: int, step: int, steps: int) -> None:
        fraction = (done + step / max(steps, 1)) / max(total, 1)
        where = f" plane {plane}" if plane else ""
        count = f" ({done + 1}/{total})" if total > 1 else ""
        self.progress.emit(int(1000 * fraction), f"embedding{where}{count}: %p%")

    def _on_yielded(self, item: tuple[Plane, object]) -> None:
        plane, result = item
        if isinstance(result, Failed):
            if not (isinstance(result.error, Cancelled) and self._cancel.is_set()):
                self._failed = True
                self.failed.emit(result.error)  # (a cancel was reported when asked for)
            return
        self.embeddings[plane] = result  # type: ignore[assignment]
        self.embedded.emit(plane, result)

    def _on_finished(self) -> None:
        if self._queue.worker_running:
            return  # a new worker took over the queue
        if self._failed:
            self.progress.emit(0, "embedding: not computed")
        else:
            count = len(self.embeddings)
            self.progress.emit(1000, f"embedding: ready ({count} plane{'s' * (count != 1)})")
        self.idle.emit()
