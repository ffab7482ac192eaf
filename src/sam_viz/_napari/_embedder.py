"""Preparing an image layer's planes and embedding their windows, in a napari worker.

A plane is *prepared* once: converted to model RGB with contrast limits shared by the whole
stack, its object diameter estimated (once for the whole stack, unless the user gave it),
and cut into windows (:class:`~sam_viz.windows.scaled.ScaledImage`). Windows are embedded on
demand, those the prompts on screen need first; "Embed all" queues every window of every
plane.

One :class:`WindowEmbedder` serves one (image, predictor, diameter) triple. When any of
them changes, the widget calls :meth:`WindowEmbedder.discard` and makes a new one, so
results of the old one can never reach the new one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, cast

import numpy as np
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from sam_viz._napari._scheduling import PlaneQueue
from sam_viz._napari._slicing import Plane, plane_data
from sam_viz._napari._workers import Failed, WorkerPool, call_safely
from sam_viz.image import contrast_limits
from sam_viz.predictor import Cancelled
from sam_viz.progress import check_cancel
from sam_viz.windows.geometry import Window
from sam_viz.windows.scaled import ScaledImage

if TYPE_CHECKING:  # imports torch, which is imported when the model loads
    from sam_viz.predictor import Predictor

Region = tuple[Window, int]
# A job: a plane and the regions to embed there (None: every window of its grid).
Job = tuple[Plane, tuple[Region, ...] | None]
ProgressReport = Callable[[str, int, int], None]
# Planes kept prepared (each holds the plane as float RGB).
PREPARED_PLANES = 4


class _Stack:
    """What every plane of one image shares: contrast limits and the object diameter."""

    def __init__(self, data: object, rgb: bool, diameter: float | None) -> None:
        self.data = data
        self.rgb = rgb
        self.diameter = diameter
        self.limits: tuple[float, float] | None = None
        self._limits_known = False
        self._lock = threading.Lock()

    def prepare(self, predictor: Predictor, plane: Plane) -> ScaledImage:
        """The plane as a :class:`ScaledImage` (worker thread)."""
        pixels = plane_data(self.data, plane)
        with self._lock:
            if not self._limits_known:
                stack = np.asarray(self.data) if plane else pixels
                values = stack[..., :3] if self.rgb else stack
                self.limits = contrast_limits(values)
                self._limits_known = True
            limits, diameter = self.limits, self.diameter
        if limits is None:
            image = ScaledImage(predictor, pixels, diameter=diameter, contrast="none")
        else:
            image = ScaledImage(predictor, pixels, diameter=diameter, limits=limits)
        with self._lock:
            if self.diameter is None:
                self.diameter = image.diameter  # one estimate for the whole stack
        return image


def embed_jobs(
    predictor: Predictor,
    stack: _Stack,
    images: dict[Plane, ScaledImage],
    queue: PlaneQueue,
    cancel: threading.Event,
    report: ProgressReport,
) -> Iterator[tuple[Plane, ScaledImage | Failed, bool]]:
    """Worker generator: prepare planes and embed their windows, job by job.

    Yields:
        (plane, its scaled image, False) once the plane is prepared, and (plane, image,
        True) once its windows are embedded; as the last value on failure or cancel,
        (plane, Failed, False).
    """
    while (job := queue.pop()) is not None:
        plane, regions = cast(Job, job)  # the queue holds the jobs put in it
        done, total = queue.done, max(queue.total, 1)
        where = f"plane {done + 1} of {total}: " if total > 1 else ""
        image = images.get(plane)
        if image is None:
            report(f"{where}estimating the object scale", 0, 1)
            prepared = call_safely(stack.prepare, predictor, plane)
            if isinstance(prepared, Failed):
                queue.worker_stopped()
                yield plane, prepared, False
                return
            image = images[plane] = cast(ScaledImage, prepared)
            yield plane, image, False
        if regions is None:
            todo = [(window, image.scale.side) for window in image.grid.windows]
        else:
            todo = list(regions)
        result = call_safely(_embed_regions, image, todo, where, report, cancel)
        if isinstance(result, Failed):
            queue.worker_stopped()
            yield plane, result, False
            return
        queue.mark_done()
        yield plane, image, bool(todo)


def _embed_regions(
    image: ScaledImage,
    regions: list[Region],
    where: str,
    report: ProgressReport,
    cancel: threading.Event,
) -> None:
    check_cancel(cancel, "The image embedding")
    if len(regions) == 1:  # one window: progress through the encoder's blocks
        window, side = regions[0]

        def blocks(done: int, total: int) -> None:
            report(f"{where}embedding window", done, total)

        image.embedding(window, side, progress=blocks, cancel=cancel)
        return

    def windows(done: int, total: int) -> None:
        report(f"{where}embedding window {min(done + 1, total)} of {total}", done, total)

    image.embed_windows(regions, progress=windows, cancel=cancel)


class WindowEmbedder(QObject):
    """Prepares planes and embeds their windows off the UI thread.

    Signals:
        ready(plane): a plane was prepared, or the windows asked for on it are embedded.
        failed(error): the work stopped (a ``Cancelled`` error when the user cancelled).
        progress(value, text): value in 0..1000 for a progress bar, with a caption.
        idle(): the worker finished its queue.
    """

    ready = Signal(object)
    failed = Signal(object)
    progress = Signal(int, str)
    idle = Signal()
    _reported = Signal(str, int, int)

    def __init__(
        self,
        predictor: Predictor,
        data: object,
        rgb: bool,
        diameter: float | None,
        pool: WorkerPool,
        parent: QObject | None = None,
    ) -> None:
        """Args:
        predictor: The predictor to embed with.
        data: The image layer's data (read plane by plane in the worker).
        rgb: Whether its last axis holds colour channels.
        diameter: The object diameter in image pixels, or None to estimate it.
        pool: The thread pool the worker runs on (joined when the widget closes).
        parent: Qt parent.
        """
        super().__init__(parent)
        self.predictor = predictor
        self._pool = pool
        self._stack = _Stack(data, rgb, diameter)
        self._images: OrderedDict[Plane, ScaledImage] = OrderedDict()
        self._queue = PlaneQueue()
        self._cancel = threading.Event()
        self._failed = False
        self._reported.connect(self._on_reported)

    @property
    def diameter(self) -> float | None:
        """The object diameter in use (given, or estimated once a plane was prepared)."""
        return self._stack.diameter

    def image(self, plane: Plane) -> ScaledImage | None:
        """The plane's scaled image, once prepared."""
        return self._images.get(plane)

    @property
    def embedded_planes(self) -> set[Plane]:
        """The prepared planes with at least one window embedded."""
        return {plane for plane, image in self._images.items() if image.embedded}

    def complete(self, plane: Plane) -> bool:
        """Whether every window of ``plane`` is embedded."""
        image = self._images.get(plane)
        return image is not None and not image.missing_windows()

    def want(self, plane: Plane, regions: Iterable[Region] = ()) -> None:
        """Prepare ``plane`` and embed ``regions`` of it next."""
        job: Job = (plane, tuple(regions))
        if self._queue.want(job):
            self._start()

    def want_all(self, planes: Iterable[Plane], first: Plane | None = None) -> int:
        """Queue every window of every plane (``first`` before the others).

        Returns:
            How many planes were queued.
        """
        jobs: list[Job] = [(plane, None) for plane in planes]
        start = self._queue.extend(jobs)
        if first is not None:
            start = self._queue.want((first, None)) or start
        if start:
            self._start()
        return len(jobs)

    @property
    def running(self) -> bool:
        """Whether a worker is preparing or embedding."""
        return self._queue.worker_running

    def cancel(self) -> None:
        """Stop the running work and drop the queued jobs.

        ``failed`` is emitted with a ``Cancelled`` error at once (not when the worker
        notices), also if the worker had not taken its first job yet.
        """
        if not self._queue.worker_running or self._cancel.is_set():
            return
        self._queue.clear()
        self._cancel.set()
        self._failed = True
        self.failed.emit(Cancelled("The image embedding was cancelled."))

    def discard(self) -> None:
        """Cancel and never emit again (the image, model or scale changed)."""
        self.blockSignals(True)
        self._queue.clear()
        self._cancel.set()

    def _start(self) -> None:
        self._cancel = threading.Event()
        self._failed = False
        worker = create_worker(
            embed_jobs,
            self.predictor,
            self._stack,
            dict(self._images),
            self._queue,
            self._cancel,
            self._reported.emit,
            _start_thread=False,
        )
        worker.yielded.connect(self._on_yielded)
        worker.finished.connect(self._on_finished)
        self.progress.emit(0, "embedding...")
        self._pool.start(worker)

    def _on_reported(self, text: str, done: int, total: int) -> None:
        self.progress.emit(int(1000 * done / max(total, 1)), f"{text}: %p%")

    def _on_yielded(self, item: tuple[Plane, object, bool]) -> None:
        plane, result, _ = item
        if isinstance(result, Failed):
            if not (isinstance(result.error, Cancelled) and self._cancel.is_set()):
                self._failed = True
                self.failed.emit(result.error)  # (a cancel was reported when asked for)
            return
        self._images[plane] = result  # type: ignore[assignment]
        self._images.move_to_end(plane)
        while len(self._images) > PREPARED_PLANES:
            self._images.popitem(last=False)
        self.ready.emit(plane)

    def _on_finished(self) -> None:
        if self._queue.worker_running:
            return  # a new worker took over the queue
        if self._failed:
            self.progress.emit(0, "embedding: not computed")
        else:
            self.progress.emit(1000, "embedding: ready")  # the scale: the diameter's tooltip
        self.idle.emit()
