"""The objects layer the dock commits to: found or made for the image, written, undone.

Committed objects are the user's work: a commit never writes over another object unless
asked to (:func:`sam_viz._napari._layers.commit_objects`), and napari's own undo of the
layer restores it exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
from napari.layers import Image, Labels

from sam_viz._napari import _layers
from sam_viz._napari._slicing import Plane

Say = Callable[..., None]
"""Shows a message: ``say(text, level, notify=True)``, level info, warning or error."""

NOTHING_TO_COMMIT = "Nothing to commit: draw a box (or click) on an object first."
EMPTY_CANDIDATE = "The chosen candidate is empty; choose another or change the prompts."
ALL_COVERED = (
    "Nothing committed: the mask lies on other objects. Tick 'Overwrite other objects' to "
    "replace them."
)


class ObjectsLayer:
    """The "SAM objects" Labels layer of one image, once there is one.

    Args:
        viewer: The napari viewer.
        on_adopt: Called with a layer when it becomes the objects layer (to bind keys).
        selection_kept: A context manager that keeps the user's active layer while a layer
            is added.
    """

    def __init__(
        self,
        viewer: object,
        on_adopt: Callable[[Labels], None],
        selection_kept: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self.viewer = viewer
        self.layer: Labels | None = None
        self._on_adopt = on_adopt
        self._selection_kept = selection_kept

    def adopt(self, image: Image | None, layer: Labels | None = None) -> None:
        """Make ``layer`` (by default an existing objects layer fitting ``image``) the one."""
        if layer is None and image is not None and not _layers.image_problem(image):
            layer = _layers.objects_layer_for(self.viewer, image, self.layer, create=False)
        if layer is not None and layer is not self.layer:
            self._on_adopt(layer)
            self.layer = layer

    def ensure(self, image: Image) -> Labels:
        """The objects layer, made for ``image`` if there is none."""
        with self._selection_kept():
            layer = _layers.objects_layer_for(self.viewer, image, self.layer)
        assert layer is not None
        self.adopt(image, layer)
        return layer

    def commit(
        self,
        image: Image,
        plane: Plane,
        labels: np.ndarray | None,
        say: Say,
        *,
        label: int | None,
        overwrite: bool,
    ) -> list[int]:
        """Write a candidate's objects (``labels``: label image, 0 background) on ``plane``.

        Returns:
            The object ids written; empty when nothing was (``say`` was told why).
        """
        if labels is None:
            say(NOTHING_TO_COMMIT, "warning")
            return []
        if not labels.any():
            say(EMPTY_CANDIDATE, "warning")
            return []
        layer = self.ensure(image)
        try:
            written = _layers.commit_objects(layer, plane, labels, label=label, overwrite=overwrite)
        except ValueError as err:
            say(str(err), "warning")
            return []
        if not written:
            say(ALL_COVERED, "warning")
            return []
        layer.selected_label = written[-1]  # what Shift+P propagates
        ids = ", ".join(map(str, written))
        say(
            f"Committed object {ids} to {layer.name!r} (Undo, or Ctrl+Z in that layer).",
            notify=False,
        )
        return written

    def undo(self, say: Say) -> bool:
        """Undo the last change to the layer (a commit, or a paint stroke there).

        Returns:
            Whether there was a change to undo (``say`` tells the user either way).
        """
        layer = self.layer
        # napari keeps the layer's undo steps in a private deque; without it, assume one.
        steps = getattr(layer, "_undo_history", None)
        if layer is None or (steps is not None and not len(steps)):
            where = "" if layer is None else f" in {layer.name!r}"
            say(f"Nothing to undo{where}.", notify=False)
            return False
        layer.undo()
        say(f"Undid the last change to {layer.name!r}.", notify=False)
        return True
