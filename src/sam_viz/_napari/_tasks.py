"""Long tasks of the dock widget: segment everything on a plane, propagate an object through a
stack. One runs at a time, in a napari worker (listed in napari's activity dock), with its own
progress bar and Cancel button.

The widget hands each task a :class:`Target` (image, plane, predictor, context number) taken
when the user asked; a result is written only if the widget's context has not changed since
(same image data, model and device), and never after a cancel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QProgressBar, QPushButton

from sam_viz._napari import _layers
from sam_viz._napari._automatic import StackSlice, propagate_object, segment_plane
from sam_viz._napari._slicing import Plane, describe_plane, full_resolution
from sam_viz._napari._workers import Failed, WorkerPool, call_safely
from sam_viz.automatic.results import Segmentation
from sam_viz.automatic.stacks import Propagation
from sam_viz.predictor import Cancelled
from sam_viz.windows.scaled import ScaledImage

if TYPE_CHECKING:  # these import torch, which is imported when the model loads
    from sam_viz.automatic.everything import EverythingSettings
    from sam_viz.predictor import Predictor

Say = Callable[..., None]
"""Shows a message: ``say(text, level, notify=True)``, level info, warning or error."""


@dataclass(frozen=True)
class Target:
    """What a task works on, as it was when the user asked for it.

    Attributes:
        image: The image layer.
        plane: Leading indices of the plane on screen (``()`` for 2-D).
        predictor: The predictor to use.
        context: The widget's context number (see ``SamWidget``).
        diameter: The object diameter (the user's, or the estimate), or None if not known.
        scaled: The plane as prepared for prompts (its cached windows), if it is.
    """

    image: Image
    plane: Plane
    predictor: Predictor
    context: int
    diameter: float | None = None
    scaled: ScaledImage | None = None


@dataclass(frozen=True)
class _Job:
    title: str
    target: Target
    on_done: Callable[[Target, object], None]


class LongTasks(QObject):
    """Runs "segment everything" and "propagate" off the UI thread, one at a time.

    Args:
        viewer: The napari viewer (the everything layer is added to it).
        progress: The task progress bar (0..1000).
        cancel_button: The task Cancel button (enabled while a task runs).
        say: Shows a message (see :data:`Say`).
        context: Returns the widget's current context number.
        settings: Settings of the mask generator.
        parent: Qt parent.
        pool: The thread pool tasks run on (a pool of their own when None).
    """

    _reported = Signal(int, int)

    def __init__(
        self,
        viewer: object,
        progress: QProgressBar,
        cancel_button: QPushButton,
        say: Say,
        context: Callable[[], int],
        settings: EverythingSettings | None = None,
        parent: QObject | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        super().__init__(parent)
        self._pool = pool or WorkerPool(self)
        self._viewer = viewer
        self._progress = progress
        self._cancel_button = cancel_button
        self._say = say
        self._context = context
        # The default settings are made on first use: their module imports torch.
        self._settings: EverythingSettings | None = (
            None if settings is None else settings.validated()
        )
        self.everything_layer: Labels | None = None
        self._job: _Job | None = None
        self._cancel = threading.Event()
        self._reported.connect(self._on_reported)
        self._cancel_button.clicked.connect(self.cancel)

    @property
    def settings(self) -> EverythingSettings:
        """Settings of the mask generator (the generator's defaults unless given)."""
        if self._settings is None:
            # Imported here: it imports torch, which the dock does not wait for when it opens.
            from sam_viz.automatic.everything import EverythingSettings

            self._settings = EverythingSettings().validated()
        return self._settings

    @property
    def running(self) -> bool:
        """Whether a task is running (until its result is handled)."""
        return self._job is not None

    # --------------------------------------------------------------------------- tasks
    def segment_everything(self, target: Target) -> bool:
        """Segment every object on the target plane into the everything layer.

        Returns:
            False if another task is running (nothing started; the user is told).
        """
        # Imported here (the model is loaded, so torch is too): see ``settings``.
        from sam_viz.automatic.everything import MaskGenerator

        generator = MaskGenerator(target.predictor, self.settings, diameter=target.diameter)
        job = _Job("segment everything", target, self._on_segmented)
        return self._start(
            job,
            segment_plane,
            generator,
            full_resolution(target.image),
            target.plane,
            target.scaled,
        )

    def propagate(self, target: Target, objects: Labels | None) -> bool:
        """Propagate the object selected in ``objects`` (its ``selected_label``) from the
        target plane through the stack.

        Returns:
            False if nothing was started (the reason is shown).
        """
        try:
            where = StackSlice.of(target.plane)
        except ValueError as err:
            self._say(str(err), "warning")
            return False
        if objects is None:
            self._say(
                "Nothing to propagate: commit an object on this slice (C), then propagate it.",
                "warning",
            )
            return False
        label = int(objects.selected_label)
        mask = np.asarray(objects.data[target.plane]) == label
        if label == 0 or not mask.any():
            self._say(
                f"Object {label} (the label selected in {objects.name!r}) is not on this "
                "slice: select the label of an object on it, or commit one here (C).",
                "warning",
            )
            return False
        on_done = partial(self._on_propagated, objects, label)
        job = _Job(f"propagate object {label}", target, on_done)
        data = full_resolution(target.image)
        return self._start(
            job, propagate_object, target.predictor, data, where, mask, target.diameter
        )

    def cancel(self) -> None:
        """Stop the running task; nothing of it is written."""
        if self._job is not None and not self._cancel.is_set():
            self._cancel.set()
            self._cancel_button.setEnabled(False)
            self._progress.setFormat(f"{self._job.title}: cancelling...")

    def discard(self) -> None:
        """Cancel the running task and drop its result silently (the context changed)."""
        if self._job is not None:
            self._cancel.set()
            self._finish("")

    # ------------------------------------------------------------------------- running
    def _start(self, job: _Job, func: Callable[..., object], *args: object) -> bool:
        if self._job is not None:
            self._say(f"Wait for {self._job.title} to finish, or cancel it.", "warning")
            return False
        self._job = job
        self._cancel = cancel = threading.Event()
        worker = create_worker(
            call_safely, func, *args, self._reported.emit, cancel, _start_thread=False
        )
        worker.returned.connect(partial(self._on_returned, job, cancel))
        self._cancel_button.setEnabled(True)
        self._progress.setRange(0, 1000)
        self._progress.setValue(0)
        self._progress.setFormat(f"{job.title}...")
        self._say(f"Running {job.title}...", "info", notify=False)
        self._pool.start(worker)
        return True

    def _on_reported(self, done: int, total: int) -> None:
        if self._job is not None and not self._cancel.is_set():
            self._progress.setValue(int(1000 * done / max(total, 1)))
            self._progress.setFormat(f"{self._job.title}: %p%")

    def _on_returned(self, job: _Job, cancel: threading.Event, result: object) -> None:
        if job is not self._job:
            return  # discarded
        if cancel.is_set():
            self._finish(f"{job.title}: cancelled")
            self._say(f"{job.title.capitalize()} cancelled; nothing was written.", "warning")
            return
        self._finish(f"{job.title}: failed" if isinstance(result, Failed) else f"{job.title}: done")
        if job.target.context != self._context():
            self._say(f"The image or model changed: the result of {job.title} is dropped.", "info")
        elif isinstance(result, Failed):
            if isinstance(result.error, Cancelled):
                self._say(f"{job.title.capitalize()} cancelled.", "warning")
            else:
                self._say(f"Could not {job.title}: {result.error}", "error")
        else:
            job.on_done(job.target, result)

    def _finish(self, text: str) -> None:
        self._job = None
        self._cancel_button.setEnabled(False)
        self._progress.setValue(1000 if text.endswith("done") else 0)
        self._progress.setFormat(text or "no task running")

    # ------------------------------------------------------------------------- results
    def _on_segmented(self, target: Target, result: object) -> None:
        segmentation: Segmentation = result  # type: ignore[assignment]
        image = target.image
        if image not in self._viewer.layers:  # type: ignore[attr-defined]
            self._say(f"Image {image.name!r} was removed; the segmentation is dropped.", "info")
            return
        layer = _layers.objects_layer_for(
            self._viewer, image, self.everything_layer, _layers.EVERYTHING_NAME
        )
        assert layer is not None
        self.everything_layer = layer
        ids = _layers.show_everything(layer, target.plane, segmentation)
        leading = image.data.shape[: len(target.plane)]
        where = f" on {describe_plane(target.plane, leading)}" if target.plane else ""
        self._say(f"Found {len(ids)} objects{where}, shown in {layer.name!r}.", "info")

    def _on_propagated(self, objects: Labels, label: int, target: Target, result: object) -> None:
        propagation: Propagation = result  # type: ignore[assignment]
        if objects not in self._viewer.layers:  # type: ignore[attr-defined]
            self._say(f"{objects.name!r} was removed; the propagation is dropped.", "info")
            return
        where = StackSlice.of(target.plane)
        mask = np.asarray(objects.data[target.plane]) == label
        if not mask.any():
            self._say(f"Object {label} is no longer on the slice; nothing was written.", "warning")
            return
        written = _layers.write_propagation(
            objects, where.prefix, propagation.masks, label, where.index
        )
        # Where and why it stopped each way, and the slices other objects already covered.
        why = propagation.describe()
        found = sorted(index for run in propagation.runs for index in run.slices)
        covered = [index for index in found if index not in written]
        if covered:
            where_covered = ", ".join(map(str, covered))
            why += (
                f" On slice{'s' * (len(covered) != 1)} {where_covered} other objects already "
                "cover it, so nothing was written there."
            )
        if not written:
            self._say(f"Object {label} was not written on any other slice. {why}", "info")
            return
        self._say(
            f"Propagated object {label} to {len(written)} slice{'s' * (len(written) != 1)} "
            f"({min(written)}-{max(written)}); Undo (or Ctrl+Z in {objects.name!r}) "
            f"removes them. {why}",
            "info",
        )
