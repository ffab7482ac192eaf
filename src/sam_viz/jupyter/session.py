"""The state of an interactive segmentation, without any widget: prompts, candidates,
the chosen candidate, committed objects and an exact undo history; and a "segment
everything" run in a background thread (:class:`EverythingRun`).

:class:`~sam_viz.jupyter.widget.SamWidget` is a view of one :class:`Session`; tests and
scripts can drive a session directly. Coordinates are ``(x, y)`` pixels of the original
image; boxes are ``(x0, y0, x1, y1)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sam_viz.automatic.results import Segmentation
from sam_viz.objects import ObjectLabels
from sam_viz.predictor import Cancelled, Candidates, ProgressCallback
from sam_viz.prompts import PromptSet


@dataclass(frozen=True)
class _Step:
    """One undoable action: the prompts and selection before it, and whether it committed."""

    prompts: PromptSet
    selected: int | None
    committed: bool = False


# Answers a prompt set with candidates (the widget binds its scaled image).
PredictFn = Callable[[PromptSet], Candidates]


class Session:
    """Prompts and candidates of the object being segmented, plus the committed objects.

    Every action is undoable with :meth:`undo`, in order: adding a point or a box, a clear,
    a commit (the label image goes back exactly). The prediction is recomputed on undo
    rather than stored, so the history costs a few numbers per step.
    """

    def __init__(self, predict: PredictFn, labels: ObjectLabels) -> None:
        """Args:
        predict: Returns the candidates for a (non-empty) prompt set; raises ValueError
            for an invalid one.
        labels: The committed objects.
        """
        self._predict = predict
        self.objects = labels
        self.prompts = PromptSet()
        self.prediction: Candidates | None = None
        self.selected_index: int | None = None
        self.objects_version = 0
        self._history: list[_Step] = []

    @property
    def can_undo(self) -> bool:
        """Whether there is an action to undo."""
        return bool(self._history)

    @property
    def selected(self) -> str | None:
        """Name of the chosen candidate, or None."""
        if self.prediction is None or self.selected_index is None:
            return None
        return self.prediction.names[self.selected_index]

    @property
    def mask(self) -> np.ndarray | None:
        """The chosen candidate mask (H, W) bool, or None."""
        if self.prediction is None or self.selected_index is None:
            return None
        return self.prediction.labels[self.selected_index] > 0

    def add_point(self, x: float, y: float, positive: bool = True) -> Candidates:
        """Add a point and predict; on an error nothing changes.

        Raises:
            ValueError: If the point is invalid (e.g. outside the image), or the model
                cannot answer the prompts (:func:`sam_viz.prompts.prompt_problem`).
        """
        return self._apply(self.prompts.add_point(x, y, positive))

    def add_box(self, x0: float, y0: float, x1: float, y1: float) -> Candidates:
        """Set the box (replacing the previous one: one object at a time) and predict; on an
        error nothing changes.

        Raises:
            ValueError: If the box is invalid (no area, outside the image).
        """
        return self._apply(self.prompts.add_box(x0, y0, x1, y1, replace_boxes=True))

    def select(self, name_or_index: str | int) -> int:
        """Choose candidate ``"subpart"``, ``"part"``, ``"whole"`` or index 0..K-1.

        Returns:
            The chosen index.

        Raises:
            ValueError: If there are no candidates or no such one.
        """
        prediction = self.prediction
        if prediction is None:
            raise ValueError("There are no candidates yet: add a box or a point first.")
        count = len(prediction.names)
        if isinstance(name_or_index, str):
            if name_or_index not in prediction.names:
                raise ValueError(
                    f"No candidate {name_or_index!r}; choose one of "
                    f"{prediction.names} or an index 0..{count - 1}."
                )
            index = prediction.names.index(name_or_index)
        else:
            index = int(name_or_index)
            if not 0 <= index < count:
                raise ValueError(f"Candidate index {name_or_index} is out of range 0..{count - 1}.")
        self.selected_index = index
        return index

    def commit(self) -> int:
        """Add the chosen candidate as a new object (keeping other objects' pixels) and
        start a new object.

        Returns:
            The new object's label id.

        Raises:
            ValueError: If there is no candidate or it would add no pixel.
        """
        mask = self.mask
        if mask is None:
            raise ValueError("Nothing to commit: add a box or a point first.")
        label = self.objects.commit(mask)
        self._history.append(_Step(self.prompts, self.selected_index, committed=True))
        self.objects_version += 1
        self._set(PromptSet(), None, None)
        return label

    def undo(self) -> bool:
        """Undo the last action exactly; returns False if there was none."""
        if not self._history:
            return False
        step = self._history.pop()
        if step.committed:
            self.objects.undo()
            self.objects_version += 1
        prediction = None if step.prompts.empty else self._predict(step.prompts)
        self._set(step.prompts, prediction, step.selected)
        return True

    def clear(self) -> bool:
        """Remove the current object's prompts (undoable); returns False if there were none."""
        if self.prompts.empty:
            return False
        self._history.append(_Step(self.prompts, self.selected_index))
        self._set(PromptSet(), None, None)
        return True

    def last_step_committed(self) -> bool:
        """Whether :meth:`undo` would undo a commit."""
        return bool(self._history) and self._history[-1].committed

    def _apply(self, new: PromptSet) -> Candidates:
        prediction = self._predict(new)
        self._history.append(_Step(self.prompts, self.selected_index))
        self._set(new, prediction, None)
        return prediction

    def _set(self, prompts: PromptSet, prediction: Candidates | None, selected: int | None) -> None:
        self.prompts = prompts
        self.prediction = prediction
        if prediction is None:
            self.selected_index = None
        elif selected is not None and 0 <= selected < len(prediction.names):
            self.selected_index = selected
        else:
            self.selected_index = prediction.best


# Segments the image: called as ``generate(progress, cancel)`` (see MaskGenerator.generate).
GenerateFn = Callable[[ProgressCallback, threading.Event], Segmentation]


class EverythingRun:
    """One "segment everything" run in a background thread, with progress and cancel.

    The callbacks are called from the run's thread; ``on_done`` once, when the run ended
    (with :attr:`result` set, or :attr:`error`, a :class:`~sam_viz.predictor.Cancelled`
    after :meth:`cancel`).
    """

    def __init__(
        self,
        generate: GenerateFn,
        on_progress: ProgressCallback,
        on_done: Callable[[EverythingRun], None],
    ) -> None:
        """Args:
        generate: Computes the segmentation (it may wait for the image embedding first).
        on_progress: Called as ``on_progress(done, total)``.
        on_done: Called with this run once it ended.
        """
        self._generate = generate
        self._on_progress = on_progress
        self._on_done = on_done
        self.result: Segmentation | None = None
        self.error: Exception | None = None
        self._cancel = threading.Event()
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sam-viz-everything", daemon=True)

    def start(self, background: bool = True) -> None:
        """Start the run in its thread (or run it here when ``background`` is False)."""
        if background:
            self._thread.start()
        else:
            self._run()

    def cancel(self) -> None:
        """Ask the run to stop; it ends with a ``Cancelled`` error and no result."""
        self._cancel.set()

    @property
    def running(self) -> bool:
        """Whether the run has not ended yet."""
        return not self._ended.is_set()

    @property
    def cancelled(self) -> bool:
        """Whether the run ended because it was cancelled."""
        return isinstance(self.error, Cancelled)

    def wait(self, timeout: float | None = None) -> Segmentation:
        """Block until the run ended; returns its result.

        Raises:
            TimeoutError: If it is still running after ``timeout`` seconds.
            Cancelled: If it was cancelled.
            Exception: The error that stopped it.
        """
        if not self._ended.wait(timeout):
            raise TimeoutError(f"Segment everything was still running after {timeout} s.")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def _run(self) -> None:
        try:
            result = self._generate(self._on_progress, self._cancel)
            if self._cancel.is_set():
                raise Cancelled("Segment everything was cancelled.")
            self.result = result
        except Exception as err:  # handed to on_done, shown by the widget
            self.error = err
        finally:
            try:
                self._on_done(self)
            finally:
                self._ended.set()
