"""The state of an interactive segmentation, without any widget: prompts, candidates,
the chosen candidate, committed objects and an exact undo history; and a "segment
everything" run in a background thread (:class:`EverythingRun`).

:class:`~sam_viz.jupyter.widget.SamWidget` is a view of one :class:`Session`; tests and
scripts can drive a session directly. Coordinates are ``(x, y)`` pixels of the original
image; boxes are ``(x0, y0, x1, y1)``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from sam_viz.automatic.results import Segmentation
from sam_viz.objects import ObjectLabels
from sam_viz.predictor import Cancelled, Candidates, ProgressCallback
from sam_viz.prompts import PromptSet


@dataclass(frozen=True)
class _Step:
    """One undoable action: the prompts and selection before it, and the objects it committed.

    Attributes:
        kind: ``"prompt"``, ``"clear"``, ``"commit"`` (the shown candidate) or ``"objects"``
            (objects of a label image, e.g. what "segment everything" found).
        prompts: The prompts before the action.
        selected: The chosen candidate before the action.
        committed: Labels of the objects the action committed (undone together).
    """

    kind: str
    prompts: PromptSet
    selected: int | None
    committed: tuple[int, ...] = ()


# Answers a prompt set with candidates (the widget binds its scaled image).
PredictFn = Callable[[PromptSet], Candidates]

OVERWRITE_HINT = (
    "tick Overwrite (or call commit(overwrite=True)) to give their pixels to the new object"
)


class Session:
    """Prompts and candidates of the object being segmented, plus the committed objects.

    Every action is undoable with :meth:`undo`, in order: adding a point or a box, a clear,
    a commit (the label image goes back exactly), committing found objects. The prediction
    is recomputed on undo rather than stored, so the history costs a few numbers per step.

    Only the candidates :attr:`Candidates.offered <sam_viz.predictor.Candidates.offered>`
    can be chosen: an empty candidate or a near-duplicate of a better one is never shown.
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

    @property
    def can_commit(self) -> bool:
        """Whether a non-empty candidate is chosen."""
        return (
            self.prediction is not None
            and self.selected_index is not None
            and self.prediction.areas[self.selected_index] > 0
        )

    def describe(self) -> str | None:
        """What is shown, in one honest sentence (None without candidates)."""
        if self.prediction is None or self.selected_index is None:
            return None
        return self.prediction.describe(self.selected_index)

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
        """Choose an offered candidate by name (``"subpart"``, ``"part"``, ``"whole"``) or
        index 0..K-1.

        Returns:
            The chosen index.

        Raises:
            ValueError: If there are no candidates, no such one, or it is not offered
                (empty, or a near-duplicate of a better one).
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
        if index not in prediction.offered:
            offered = ", ".join(prediction.names[i] for i in prediction.offered)
            why = prediction.offer_note or prediction.describe(index)
            raise ValueError(
                f"Candidate {prediction.names[index]!r} is not offered ({why}); choose {offered}."
            )
        self.selected_index = index
        return index

    def commit(self, overwrite: bool = False) -> int:
        """Add the chosen candidate as a new object and start a new object.

        Args:
            overwrite: Also take the pixels of objects committed earlier; by default they
                are kept and the new object fills the rest. Undo gives them back exactly.

        Returns:
            The new object's label id.

        Raises:
            ValueError: If there is no candidate, it is empty, or it would add no pixel.
        """
        mask = self.mask
        if mask is None:
            raise ValueError("Nothing to commit: add a box or a point first.")
        if not self.can_commit:
            raise ValueError(f"Nothing to commit: {self.describe()}")
        if not overwrite and not (mask & (self.objects.labels == 0)).any():
            raise ValueError(
                "Nothing to commit: the shown candidate lies entirely on committed objects; "
                f"{OVERWRITE_HINT}."
            )
        label = self.objects.commit(mask, overwrite=overwrite)
        self._history.append(_Step("commit", self.prompts, self.selected_index, (label,)))
        self.objects_version += 1
        self._set(PromptSet(), None, None)
        return label

    def commit_objects(
        self, labels: np.ndarray, ids: Iterable[int], overwrite: bool = False
    ) -> tuple[int, ...]:
        """Commit objects of a label image (e.g. what "segment everything" found) as new
        objects, in one undoable step; the prompts and candidates stay.

        Args:
            labels: (H, W) label image the objects come from.
            ids: Labels in ``labels`` of the objects to commit.
            overwrite: Also take the pixels of objects committed earlier.

        Returns:
            The new objects' label ids (objects that would add no pixel are left out).

        Raises:
            ValueError: If no object would add a pixel, or ``labels`` has the wrong shape.
        """
        labels = np.asarray(labels)
        if labels.shape != self.objects.labels.shape:
            raise ValueError(
                f"labels have shape {labels.shape}; the objects' is {self.objects.labels.shape}."
            )
        committed: list[int] = []
        try:
            for object_id in ids:
                mask = labels == object_id
                if not overwrite:
                    mask &= self.objects.labels == 0
                if mask.any():
                    committed.append(self.objects.commit(mask, overwrite=overwrite))
        except Exception:
            for _ in committed:  # all or nothing
                self.objects.undo()
            raise
        if not committed:
            raise ValueError(
                "Nothing to commit: the objects are empty or lie entirely on committed "
                f"objects; {OVERWRITE_HINT}."
            )
        self._history.append(_Step("objects", self.prompts, self.selected_index, tuple(committed)))
        self.objects_version += 1
        return tuple(committed)

    def undo(self) -> bool:
        """Undo the last action exactly; returns False if there was none."""
        if not self._history:
            return False
        step = self._history.pop()
        for _ in step.committed:
            self.objects.undo()
        if step.committed:
            self.objects_version += 1
        if step.kind == "objects":
            return True  # the prompts did not change
        prediction = None if step.prompts.empty else self._predict(step.prompts)
        self._set(step.prompts, prediction, step.selected)
        return True

    def undo_description(self) -> str | None:
        """What :meth:`undo` would undo, in words ("the commit of object 3"), or None."""
        if not self._history:
            return None
        step = self._history[-1]
        if step.kind == "commit":
            return f"the commit of object {step.committed[0]}"
        if step.kind == "objects":
            count = len(step.committed)
            return f"the commit of {count} found object{'s' * (count != 1)}"
        if step.kind == "clear":
            return "the clear (the prompts come back)"
        return "the last prompt"

    def clear(self) -> bool:
        """Remove the current object's prompts (undoable); returns False if there were none."""
        if self.prompts.empty:
            return False
        self._history.append(_Step("clear", self.prompts, self.selected_index))
        self._set(PromptSet(), None, None)
        return True

    def last_step_committed(self) -> bool:
        """Whether :meth:`undo` would undo a commit."""
        return bool(self._history) and bool(self._history[-1].committed)

    def _apply(self, new: PromptSet) -> Candidates:
        prediction = self._predict(new)
        self._history.append(_Step("prompt", self.prompts, self.selected_index))
        self._set(new, prediction, None)
        return prediction

    def _set(self, prompts: PromptSet, prediction: Candidates | None, selected: int | None) -> None:
        self.prompts = prompts
        self.prediction = prediction
        if prediction is None:
            self.selected_index = None
        elif selected is not None and selected in prediction.offered:
            self.selected_index = selected
        else:
            self.selected_index = prediction.best


@dataclass
class FoundObjects:
    """What "segment everything" found, as the widget shows it.

    Attributes:
        segmentation: The result (``labels`` (H, W), ``table()``).
        visible: Whether the overlay is shown.
        picked: Labels of the objects the user picked (to commit only those).
    """

    segmentation: Segmentation
    visible: bool = True
    picked: set[int] = field(default_factory=set)

    @property
    def labels(self) -> np.ndarray:
        """(H, W) label image of the objects found."""
        return self.segmentation.labels

    @property
    def ids(self) -> tuple[int, ...]:
        """Labels of every object found, in order."""
        return tuple(int(v) for v in np.unique(self.labels) if v)

    def pick(self, x: float, y: float) -> int | None:
        """Pick the object under image pixel (x, y), or drop it if it was picked.

        Returns:
            Its label, or None where there is no object.
        """
        height, width = self.labels.shape
        col, row = int(np.floor(x)), int(np.floor(y))
        if not (0 <= row < height and 0 <= col < width):
            return None
        label = int(self.labels[row, col])
        if label == 0:
            return None
        self.picked ^= {label}
        return label


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
