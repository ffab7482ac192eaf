"""The work behind "Segment everything" and "Propagate", run in workers (no Qt).

Both take one plane of an image layer's data (see :mod:`sam_viz._napari._slicing`). A
stack's slices run along the last leading axis, the one just before the image's rows and
columns (z in (Z, H, W), z again in (T, Z, H, W), where the other leading indices stay
those of the plane on screen).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sam_viz._napari._slicing import Plane
from sam_viz.automatic.results import Segmentation
from sam_viz.automatic.stacks import Propagation, StackImages, propagate
from sam_viz.automatic.tiled import segment_image
from sam_viz.predictor import ProgressCallback
from sam_viz.windows.scaled import ScaledImage

if TYPE_CHECKING:  # these import torch, which is imported when the model loads
    from sam_viz.automatic.everything import MaskGenerator
    from sam_viz.predictor import Predictor

NEEDS_STACK = (
    "Propagation needs a stack (an image with a z or time axis before its rows and columns); "
    "this image is a single plane."
)


def segment_plane(
    generator: MaskGenerator,
    data: object,
    plane: Plane,
    scaled: ScaledImage | None,
    progress: ProgressCallback,
    cancel: threading.Event,
) -> Segmentation:
    """Segment every object of one plane of an image layer's data.

    Args:
        generator: The mask generator (with the widget's predictor, settings and diameter).
        data: The image layer's data, (..., H, W) or (..., H, W, C).
        plane: Leading indices of the plane (``()`` for 2-D).
        scaled: The plane as the widget prepared it (its contrast, scale and cached
            windows), or None to prepare it here.
        progress: Called as ``progress(done, total)``.
        cancel: Set it to stop; :class:`~sam_viz.predictor.Cancelled` is raised.

    A large plane goes tile by tile, read a tile at a time from lazy data
    (:func:`~sam_viz.automatic.tiled.segment_image`).
    """
    pixels = data[plane] if plane else data  # type: ignore[index]
    return segment_image(generator, pixels, progress=progress, cancel=cancel, scaled=scaled)


@dataclass(frozen=True)
class StackSlice:
    """Where a plane lies in the stack it is propagated through.

    Attributes:
        prefix: Leading indices before the stack axis (``()`` for a (Z, H, W) image).
        index: The plane's index along the stack axis.
    """

    prefix: Plane
    index: int

    @classmethod
    def of(cls, plane: Plane) -> StackSlice:
        """The stack slice of ``plane``.

        Raises:
            ValueError: For the plane of a 2-D image (no stack to propagate through).
        """
        if not plane:
            raise ValueError(NEEDS_STACK)
        return cls(plane[:-1], plane[-1])

    def stack(self, data: object) -> np.ndarray:
        """The (Z, H, W[, C]) stack of an image layer's data (read into memory)."""
        return np.asarray(data[self.prefix] if self.prefix else data)  # type: ignore[index]


def propagate_object(
    predictor: Predictor,
    data: object,
    where: StackSlice,
    mask: np.ndarray,
    diameter: float | None,
    progress: ProgressCallback,
    cancel: threading.Event,
) -> Propagation:
    """Carry an object from its slice through the stack
    (see :func:`sam_viz.automatic.stacks.propagate`).

    Args:
        predictor: The widget's predictor.
        data: The image layer's data.
        where: The slice the object is on.
        mask: (H, W) bool, the object on that slice.
        diameter: The stack's object diameter (estimated when None).
        progress: Called as ``progress(done, total)``.
        cancel: Set it to stop; :class:`~sam_viz.predictor.Cancelled` is raised.
    """
    stack = StackImages(predictor, where.stack(data), diameter=diameter)
    return propagate(predictor, stack, where.index, mask, progress=progress, cancel=cancel)
