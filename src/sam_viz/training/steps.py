"""The step loop both training stages share, and what a click-training step reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol, TypeVar

import numpy as np
from torch import nn

Step = TypeVar("Step")


class Stage(Protocol):
    """A training stage: one optimiser step per :meth:`step` call on ``model``."""

    @property
    def model(self) -> nn.Module: ...

    @property
    def step_index(self) -> int: ...

    def step(self) -> Any: ...


def run_steps(
    stage: Stage,
    total: int,
    summarize: Callable[[list[Step]], object],
    log: Callable[[int, Any, float], None] | None,
    cancel: Callable[[], bool] | None,
    log_every: int,
) -> list[Step]:
    """Call ``stage.step()`` until ``stage.step_index`` reaches ``total`` (or ``cancel()``).

    Every ``log_every`` steps, ``log(step, summarize(the last steps' results), elapsed_s)``.
    The model is left in eval mode.
    """
    history: list[Step] = []
    start = time.perf_counter()
    while stage.step_index < total:
        if cancel is not None and cancel():
            break
        history.append(stage.step())
        if log is not None and (stage.step_index % log_every == 0 or stage.step_index == total):
            log(stage.step_index, summarize(history[-log_every:]), time.perf_counter() - start)
    stage.model.eval()
    return history


@dataclass
class StepLosses:
    """Losses of one click-training step (floats, for the log)."""

    clicks: float
    boxes: float
    corrections: float
    iou: float
    distill: float
    best_iou: float

    @property
    def total(self) -> float:
        return self.clicks + self.boxes + self.corrections + self.iou + self.distill

    @classmethod
    def mean(cls, recent: list[StepLosses]) -> StepLosses:
        """Each loss averaged over some steps."""
        return cls(*(float(np.mean([getattr(s, f.name) for s in recent])) for f in fields(cls)))
