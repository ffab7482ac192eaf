"""Committing chosen masks into an objects label image, with undo, as plain NumPy.

Committed objects are the user's work: a commit never overwrites another object unless asked
to, and every commit can be undone exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Change:
    """What one commit changed: the flat pixel indices and their previous values."""

    indices: np.ndarray
    previous: np.ndarray
    label: int


def next_label(labels: np.ndarray) -> int:
    """The smallest label greater than every label in use (1 for an empty image)."""
    return int(labels.max()) + 1 if labels.size else 1


def commit_pixels(
    labels: np.ndarray, mask: np.ndarray, label: int | None = None, *, overwrite: bool = False
) -> tuple[np.ndarray, int]:
    """Which pixels of ``labels`` a commit of ``mask`` writes, and with which label.

    Args:
        labels: (H, W) objects label image.
        mask: (H, W) bool mask of the new object.
        label: Object id to write; a new id (:func:`next_label`) when None.
        overwrite: Also write over pixels of other objects. By default only background
            (0) pixels and pixels already of ``label`` are written.

    Returns:
        (flat indices to write, label).

    Raises:
        ValueError: If shapes differ, the label is not positive, or the label does not fit
            the label image's dtype.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != labels.shape:
        raise ValueError(f"Mask shape {mask.shape} does not match the labels' {labels.shape}.")
    if label is None:
        label = next_label(labels)
    if label < 1:
        raise ValueError(f"Object labels must be >= 1, got {label}.")
    if np.issubdtype(labels.dtype, np.integer) and label > np.iinfo(labels.dtype).max:
        raise ValueError(f"Label {label} does not fit the labels' dtype {labels.dtype}.")
    writable = mask if overwrite else mask & ((labels == 0) | (labels == label))
    return np.flatnonzero(writable), int(label)


class ObjectLabels:
    """An objects label image with commit, undo and redo.

    Attributes:
        labels: (H, W) integer label image; 0 is background.
    """

    def __init__(self, labels_or_shape: np.ndarray | tuple[int, int], dtype: type = np.uint32):
        """Args:
        labels_or_shape: An existing label image (kept, not copied) or a (H, W) shape.
        dtype: dtype of a new label image.
        """
        if isinstance(labels_or_shape, tuple):
            self.labels: np.ndarray = np.zeros(labels_or_shape, dtype=dtype)
        else:
            self.labels = np.asarray(labels_or_shape)
            if self.labels.ndim != 2 or not np.issubdtype(self.labels.dtype, np.integer):
                raise ValueError("labels must be a 2-D integer array.")
        self._undo: list[Change] = []
        self._redo: list[Change] = []

    def commit(self, mask: np.ndarray, label: int | None = None, *, overwrite: bool = False) -> int:
        """Write ``mask`` as object ``label`` (a new id by default); returns the id used.

        Raises:
            ValueError: If nothing would be written (empty mask, or all of it covered by
                other objects while ``overwrite`` is False), or for the reasons of
                :func:`commit_pixels`.
        """
        indices, label = commit_pixels(self.labels, mask, label, overwrite=overwrite)
        if indices.size == 0:
            raise ValueError(
                "Nothing to commit: the mask is empty or lies entirely on other objects "
                "(commit with overwrite to replace them)."
            )
        flat = self.labels.reshape(-1)
        change = Change(indices, flat[indices].copy(), label)
        flat[indices] = label
        self._undo.append(change)
        self._redo.clear()
        return label

    def undo(self) -> bool:
        """Undo the last commit exactly; returns False if there was none."""
        if not self._undo:
            return False
        change = self._undo.pop()
        flat = self.labels.reshape(-1)
        flat[change.indices] = change.previous
        self._redo.append(change)
        return True

    def redo(self) -> bool:
        """Redo the last undone commit; returns False if there was none."""
        if not self._redo:
            return False
        change = self._redo.pop()
        self.labels.reshape(-1)[change.indices] = change.label
        self._undo.append(change)
        return True

    @property
    def can_undo(self) -> bool:
        """Whether there is a commit to undo."""
        return bool(self._undo)

    @property
    def object_count(self) -> int:
        """Number of distinct objects in the label image."""
        return int(np.count_nonzero(np.unique(self.labels)))
