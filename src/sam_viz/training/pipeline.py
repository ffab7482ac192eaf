"""One command from nothing to the shipped click weights: data, training, delta file.

``sam-viz train-clicks -o FILE`` (and :func:`train_clicks`) runs, from one seed:

1. the data: generated scenes plus the data engine's masks on scikit-image's samples, each
   image encoded once by the frozen LiteMedSAM encoder (:mod:`sam_viz.training.data`);
2. the training (:class:`~sam_viz.training.clicks.ClickTrainer`), then the IoU head's
   calibration (:class:`~sam_viz.training.calibration.IoUHeadCalibrator`), which starts from
   the first stage's weights as a delta file holds them, so ``--resume-from`` a first-stage
   delta continues exactly;
3. the delta file (:func:`sam_viz.models.deltas.save_delta`) with the settings and timings.

The same seed, machine and thread count give the same file: every random draw comes from the
seed, and the CPU kernels used are deterministic.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import cast

import torch

from sam_viz.modeling.sam import Sam
from sam_viz.models.checkpoints import EMBEDDED_MODEL, embedded_checkpoint_path, read_state_dict
from sam_viz.models.deltas import compute_deltas, read_delta, save_delta
from sam_viz.models.registry import MODELS
from sam_viz.predictor import Predictor
from sam_viz.training.calibration import HEAD_PREFIX, CalibrationConfig, IoUHeadCalibrator
from sam_viz.training.clicks import ClickTrainer, TrainConfig, trainable_names
from sam_viz.training.data import TrainingImage, natural_images, scene_images
from sam_viz.training.steps import StepLosses

Report = Callable[[str], None]
Progress = Callable[[str, int, int], None]


def train_clicks(
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    calibration: CalibrationConfig | None = None,
    resume_from: str | Path | None = None,
    threads: int | None = None,
    report: Report = print,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Build the click-trained LiteMedSAM delta.

    Args:
        out: Where to write the delta file.
        config: The recipe (its ``seed`` drives every random choice); the defaults when None.
        calibration: The IoU-head stage's settings; the defaults when None.
        resume_from: A delta written by the first stage: skip it and run the second.
        threads: torch CPU threads (the result depends on it); torch's default when None.
        report: Receives one line per stage and per logged step.
        progress: Called with (stage, done, total) while the data is made, and with
            ("training", step, steps) at each logged step.
        cancel: Set it to stop; the delta is then not written.

    Returns:
        The path written.

    Raises:
        RuntimeError: If cancelled.
    """
    config = config or TrainConfig()
    calibration = calibration or CalibrationConfig()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    base_path = embedded_checkpoint_path()
    predictor = Predictor.from_pretrained(EMBEDDED_MODEL, device="cpu", progress=False)

    # The data: generated scenes and the scikit-image samples, encoded once.
    images = _training_images(predictor, config, started, report, progress)
    data_s = time.perf_counter() - started
    masks = sum(len(image.masks) for image in images)
    report(f"{len(images)} training images, {masks} masks ({data_s:.0f} s)")

    # The first stage: click training, or its delta read back.
    model = predictor.model
    base_state = read_state_dict(base_path)
    names = trainable_names(model)
    is_cancelled = cancel.is_set if cancel is not None else None
    first_s = 0.0
    if resume_from is None:
        log = _step_logger(config, report, progress)
        _train_first_stage(model, images, config, log, is_cancelled)
        first_s = time.perf_counter() - started - data_s
        first_stage = compute_deltas(model.state_dict(), base_state, names)
    else:
        delta = read_delta(resume_from)
        report(f"first stage from {resume_from}")
        first_stage = cast(dict[str, torch.Tensor], delta["deltas"])

    # The second stage: the IoU head's calibration.
    _load_deltas(model, base_state, first_stage)
    _calibrate(model, images, config, calibration, report, is_cancelled)
    total_s = time.perf_counter() - started

    # The delta file.
    deltas = _all_deltas(model, base_state, names, first_stage, calibration)
    path = save_delta(
        deltas,
        out,
        base_sha256=MODELS[EMBEDDED_MODEL].sha256 or "",
        config={**asdict(config), "calibration": asdict(calibration)},
        notes=_notes((data_s, first_s, total_s), resume_from, len(images), masks),
    )
    report(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) after {total_s / 60:.1f} min")
    return path


def _training_images(
    predictor: Predictor,
    config: TrainConfig,
    started: float,
    report: Report,
    progress: Progress | None,
) -> list[TrainingImage]:
    """The generated scenes, then the data engine's masks on the scikit-image samples."""
    images = scene_images(predictor, config.seed, config.scenes, progress)
    report(f"{len(images)} generated scenes encoded ({time.perf_counter() - started:.0f} s)")
    images += natural_images(
        predictor, config.seed, config.augmentations, config.samples, progress=progress
    )
    return images


def _step_logger(
    config: TrainConfig, report: Report, progress: Progress | None
) -> Callable[[int, StepLosses, float], None]:
    """The first stage's ``log``: a line of losses and the ``("training", step, steps)``
    progress."""

    def log(step: int, losses: StepLosses, elapsed: float) -> None:
        if progress is not None:
            progress("training", step, config.steps)
        eta = elapsed / step * (config.steps - step)
        report(
            f"step {step}/{config.steps}  loss {losses.total:.3f} (clicks {losses.clicks:.3f}, "
            f"boxes {losses.boxes:.3f}, corrections {losses.corrections:.3f}, "
            f"iou {losses.iou:.4f}, distill {losses.distill:.4f})  "
            f"best-of-3 IoU {losses.best_iou:.3f}  {elapsed:.0f} s, about {eta:.0f} s left"
        )

    return log


def _train_first_stage(
    model: Sam,
    images: list[TrainingImage],
    config: TrainConfig,
    log: Callable[[int, StepLosses, float], None],
    is_cancelled: Callable[[], bool] | None,
) -> None:
    """Click training, on ``model`` in place."""
    trainer = ClickTrainer(model, images, config)
    trainer.run(log=log, cancel=is_cancelled)
    if trainer.step_index < config.steps:
        raise RuntimeError(f"Training cancelled after {trainer.step_index} steps.")


def _load_deltas(
    model: Sam, base_state: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor]
) -> None:
    """Set the model's weights to the base plus ``deltas``.

    The second stage starts from the first stage's weights as a delta file holds them.
    """
    with torch.no_grad():
        parameters = dict(model.named_parameters())
        for name, diff in deltas.items():
            parameters[name].copy_(base_state[name].float() + diff.float())


def _calibrate(
    model: Sam,
    images: list[TrainingImage],
    config: TrainConfig,
    calibration: CalibrationConfig,
    report: Report,
    is_cancelled: Callable[[], bool] | None,
) -> None:
    """Train the IoU head alone (nothing when ``calibration.steps`` is 0)."""

    def log_head(step: int, loss: float, elapsed: float) -> None:
        report(f"IoU head step {step}/{calibration.steps}  loss {loss:.4f}  {elapsed:.0f} s")

    calibrator = IoUHeadCalibrator(
        model, images, calibration, seed=config.seed, scene_fraction=config.scene_fraction
    )
    calibrator.run(log=log_head, cancel=is_cancelled)
    if calibrator.step_index < calibration.steps:
        raise RuntimeError(f"Calibration cancelled after {calibrator.step_index} steps.")


def _all_deltas(
    model: Sam,
    base_state: dict[str, torch.Tensor],
    names: list[str],
    first_stage: dict[str, torch.Tensor],
    calibration: CalibrationConfig,
) -> dict[str, torch.Tensor]:
    """The first stage's deltas, with the IoU head's from the second stage.

    The second stage changes the IoU head alone: the other differences stay as they were.
    """
    deltas = dict(first_stage)
    if calibration.steps:
        head = [name for name in names if name.startswith(HEAD_PREFIX)]
        deltas.update(compute_deltas(model.state_dict(), base_state, head))
    return deltas


def _notes(
    seconds: tuple[float, float, float],
    resume_from: str | Path | None,
    images: int,
    masks: int,
) -> dict[str, object]:
    """What the delta file records of its making: (data, first stage, total) seconds, the
    machine and the data's size."""
    data_s, first_s, total_s = seconds
    return {
        "data_seconds": round(data_s, 1),
        "first_stage_seconds": round(first_s, 1),
        "resumed_from": None if resume_from is None else Path(resume_from).name,
        "total_seconds": round(total_s, 1),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "machine": platform.machine(),
        "training_images": images,
        "masks": masks,
    }
