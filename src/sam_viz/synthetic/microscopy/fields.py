"""The generated field record, the field kinds and seed streams, argument checks and tiling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIELD_KINDS = ("nuclei", "cells_fluorescence", "cells_phase", "cells_brightfield", "histology")
TUNING_SEEDS = range(0, 10_000)  # for choosing thresholds and defaults
HELD_OUT_SEEDS = range(1_000_000, 1_010_000)  # for benchmarks only, never for tuning


@dataclass(frozen=True)
class Field:
    """A generated field and its instance labels.

    Attributes:
        image: (H, W) uint16 for fluorescence and phase contrast; (H, W) uint8 or uint16 for
            bright field; (H, W, 3) uint8 RGB for histology.
        labels: (H, W) int32 instance labels: 0 background, objects 1..N, each one
            4-connected region.
        kind: One of :data:`FIELD_KINDS`.
        diameter: Median equivalent diameter (2 * sqrt(area / pi)) of the objects, pixels.
    """

    image: np.ndarray
    labels: np.ndarray
    kind: str
    diameter: float

    @property
    def n_objects(self) -> int:
        """The number of labelled objects."""
        return int(self.labels.max()) if self.labels.size else 0


def tiled(field: Field, reps: tuple[int, int]) -> Field:
    """The same field repeated ``reps`` = (rows, columns) times: the same objects in a larger
    field, each copy's labels renumbered after the previous copies'."""
    if len(reps) != 2 or min(reps) < 1:
        raise ValueError(f"reps must be two positive integers (rows, columns), got {reps!r}")
    rows, cols = int(reps[0]), int(reps[1])
    n = field.n_objects
    copy = np.arange(rows * cols, dtype=np.int32).reshape(rows, cols) * n
    offset = np.kron(copy, np.ones(field.labels.shape, np.int32))
    labels = np.tile(field.labels, (rows, cols))
    labels = np.where(labels > 0, labels + offset, 0).astype(np.int32)
    image_reps = (rows, cols) + (1,) * (field.image.ndim - 2)
    return Field(np.tile(field.image, image_reps), labels, field.kind, field.diameter)


def checked_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """``shape`` as (height, width) ints; raises ValueError unless both are at least 32."""
    if len(shape) != 2 or min(shape) < 32:
        raise ValueError(f"shape must be (height, width) with both at least 32, got {shape!r}")
    return int(shape[0]), int(shape[1])


def checked_positive(name: str, value: float | None) -> float | None:
    """``value`` unchanged; raises ValueError unless it is None or a positive finite number."""
    if value is not None and not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")
    return value
