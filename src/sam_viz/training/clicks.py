"""Teach a box-trained SAM (LiteMedSAM) to answer clicks: SAM's promptable-training recipe.

The image encoder is frozen (its embeddings are computed once, :mod:`sam_viz.training.data`);
the point embeddings, the not-a-point embedding, the mask-prompt downscaling and the whole
mask decoder are trained. Each step takes one image and decodes, in a few batched calls:

* single clicks (uniform in a mask, half of them in its interior) with the three multimask
  outputs: only the best output's mask loss is back-propagated (SAM's ambiguity-aware loss).
  Optionally (``TrainConfig.nested_levels``), where the click also lies in other masks (a
  nucleus inside its cell, a part inside its whole), up to three of those levels are
  matched to distinct outputs, the matching with the least loss, and each matched pair is
  trained, so that the three outputs cover the levels of a click;
* boxes (the mask's box with noise) and box + click, with the single-mask output; box answers
  are also distilled from the frozen original decoder so box quality is kept;
* a correction round: a second click sampled from the error region of the first answer
  (positive where the object was missed, negative where background was taken), with the
  first answer's logits as the mask prompt, as in SAM's interactive training.

The IoU head regresses the real IoU of every output it scores. Losses are SAM's: focal
(weight 20) plus dice per mask, and mean squared error for the IoU head.

The result is a *delta*: the changed tensors minus the original ones, in float16, written with
the base checkpoint's SHA-256 (:mod:`sam_viz.models.deltas`).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from sam_viz.modeling.sam import Sam
from sam_viz.training.data import NATURAL_IMAGES, TrainingImage

if TYPE_CHECKING:
    from sam_viz.training.calibration import IoUHeadCalibrator as IoUHeadStage

# Prompt-encoder tensors the clicks need; the box-corner embeddings and no_mask_embed stay.
_PROMPT_ENCODER_TRAINED = (
    "prompt_encoder.point_embeddings.0.",
    "prompt_encoder.point_embeddings.1.",
    "prompt_encoder.not_a_point_embed.",
    "prompt_encoder.mask_downscaling.",
)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (all of them go into the delta file).

    Attributes:
        seed: Seed of the scenes, augmentations, prompt sampling and initial order.
        scenes: Generated scenes in the training set.
        samples: scikit-image samples the data engine segments (its own masks).
        augmentations: Augmented versions of each scikit-image sample.
        steps: Optimiser steps (one image each).
        clicks: Single-click prompts per step (multimask outputs, best one trained).
        boxes: Box prompts per step.
        box_clicks: Box + click prompts per step.
        corrections: Single clicks per step that get a second, corrective click.
        scene_fraction: Share of steps that draw a generated scene (else a sample image).
        lr: Learning rate of the mask decoder.
        embedding_lr: Learning rate of the point embeddings and mask-prompt downscaling.
        warmup: Steps of linear learning-rate warm-up (then cosine decay to 10%).
        focal_weight: Weight of the focal loss against the dice loss (SAM: 20).
        distill_weight: Weight of matching the original decoder on box prompts.
        bf16: Decode under bfloat16 autocast on the CPU (weights and optimiser stay float32).
        warm_start_multimask: Start the three multimask outputs from the single-mask output
            (:func:`warm_start_multimask`).
        nested_levels: Train a single click's outputs on every level of mask that contains
            it (:func:`click_levels`), not only on the mask it was drawn from. Off in the
            shipped weights: with 2,200 steps it moved the held-out figures
            (``benchmarks/eval_clicks.py``) by about as much as a different seed would:
            best-of-three on scenes 0.746 to 0.749 (cells 0.74 to 0.78, nucleoli 0.50 to
            0.46), ranking of unambiguous clicks 60% to 55% on scenes and 58% to 79% on
            coins, nucleus and cell both among the candidates 26% to 29%.
    """

    seed: int = 0
    scenes: int = 300
    samples: tuple[str, ...] = NATURAL_IMAGES
    augmentations: int = 5
    steps: int = 2200
    clicks: int = 6
    boxes: int = 2
    box_clicks: int = 1
    corrections: int = 3
    scene_fraction: float = 0.75
    lr: float = 2e-4
    embedding_lr: float = 1e-3
    warmup: int = 50
    focal_weight: float = 20.0
    distill_weight: float = 1.0
    bf16: bool = True
    warm_start_multimask: bool = True
    nested_levels: bool = False


def trainable_names(model: Sam) -> list[str]:
    """Names of the parameters click training changes."""
    return [
        name
        for name, _ in model.named_parameters()
        if name.startswith("mask_decoder.") or name.startswith(_PROMPT_ENCODER_TRAINED)
    ]


def warm_start_multimask(model: Sam, generator: torch.Generator, noise: float = 0.05) -> None:
    """Copy the single-mask output's token, hypernetwork and IoU row to the multimask outputs.

    LiteMedSAM's multimask outputs were never in its loss, and weight decay has worn them
    down: they answer every prompt with logits near zero. Its single-mask output already
    draws good boundaries, so the multimask outputs start from it; a little noise on the
    tokens (``noise`` times their spread) lets the best-of-three loss pull them apart.
    """
    decoder = model.mask_decoder
    with torch.no_grad():
        tokens = decoder.mask_tokens.weight
        spread = float(tokens[0].std())
        for index in range(1, decoder.num_mask_tokens):
            tokens[index] = tokens[0] + noise * spread * torch.randn(
                tokens.shape[1], generator=generator
            )
            decoder.output_hypernetworks_mlps[index].load_state_dict(
                decoder.output_hypernetworks_mlps[0].state_dict()
            )
        last = cast(nn.Linear, decoder.iou_prediction_head.layers[-1])
        last.weight[1:] = last.weight[0]
        last.bias[1:] = last.bias[0]


# ------------------------------------------------------------------------------ losses
def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25) -> torch.Tensor:
    """Per-mask sigmoid focal loss (gamma 2), averaged over pixels: (..., L, L) -> (...)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    weight = alpha * target + (1 - alpha) * (1 - target)
    return (weight * ce * (1 - p_t) ** 2).mean(dim=(-2, -1))


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask soft dice loss: (..., L, L) -> (...)."""
    prob = logits.sigmoid().flatten(-2)
    target = target.flatten(-2)
    overlap = (prob * target).sum(-1)
    return 1 - (2 * overlap + 1) / (prob.sum(-1) + target.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded logits with the target: (..., L, L) -> (...), no gradient."""
    with torch.no_grad():
        pred = logits > 0
        target = target > 0.5
        inter = (pred & target).flatten(-2).sum(-1).float()
        union = (pred | target).flatten(-2).sum(-1).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def containing_masks(image: TrainingImage, points_xy: np.ndarray) -> torch.Tensor:
    """(B, M) which of the image's masks contain each (x, y) low-res pixel."""
    cols = torch.as_tensor(points_xy[:, 0], dtype=torch.long)
    rows = torch.as_tensor(points_xy[:, 1], dtype=torch.long)
    return image.masks[:, rows, cols].T


def click_levels(
    masks: torch.Tensor, inside: torch.Tensor, drawn: int, limit: int = 3, same: float = 0.9
) -> list[int]:
    """The masks a click can mean: the one it was drawn from, then up to ``limit - 1`` more
    of those containing it, closest in area first, skipping near-copies (IoU > ``same``) of
    a mask already taken.

    Args:
        masks: (M, L, L) bool masks of the image.
        inside: (M,) which masks contain the click.
        drawn: The mask the click was drawn from.
    """
    areas = masks.flatten(1).sum(1).float()
    others = [int(i) for i in torch.nonzero(inside).flatten() if int(i) != drawn]
    others.sort(key=lambda i: abs(math.log(float(areas[i]) / float(areas[drawn]))))
    levels = [drawn]
    for index in others:
        if len(levels) == limit:
            break
        overlap = (masks[levels] & masks[index]).flatten(1).sum(1).float()
        union = areas[levels] + areas[index] - overlap
        if bool((overlap / union <= same).all()):
            levels.append(index)
    return levels


def matched_loss(losses: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean loss of the best one-to-one matching of K levels to the outputs.

    Args:
        losses: (outputs, K) loss of each output against each level, level 0 the drawn one.

    Returns:
        The mean over the K matched pairs, and the output matched to level 0.
    """
    outputs, count = losses.shape
    columns = torch.arange(count)
    best: tuple[torch.Tensor, int] | None = None
    for rows in itertools.permutations(range(outputs), count):
        total = losses[list(rows), columns].mean()
        if best is None or bool(total < best[0]):
            best = (total, rows[0])
    assert best is not None
    return best


# ------------------------------------------------------------------------------ prompts
class PromptSampler:
    """Draws clicks and boxes from masks on the low-res grid (pixel units of that grid)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def click(self, mask: np.ndarray, interior: bool) -> np.ndarray:
        """(x, y) of a pixel in the mask, uniform over it or over its deeper half."""
        if interior:
            depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
            mask = depth >= 0.5 * depth.max()
        rows, cols = np.nonzero(mask)
        pick = self.rng.integers(len(rows))
        return np.array([cols[pick], rows[pick]], np.float32)

    def box(self, mask: np.ndarray) -> np.ndarray:
        """The mask's box (x0, y0, x1, y1) with SAM's noise: 10% of each side, at most 5 px."""
        rows, cols = np.nonzero(mask)
        box: np.ndarray = np.array(
            [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32
        )
        side = np.array([box[2] - box[0], box[3] - box[1]] * 2, np.float32)
        noise = np.clip(self.rng.normal(0, 0.1, 4) * side, -5, 5)
        box = box + noise  # float64 from here (noise is float64)
        limit = mask.shape[1], mask.shape[0]
        x0, x1 = sorted(np.clip(box[[0, 2]], 0, limit[0]))
        y0, y1 = sorted(np.clip(box[[1, 3]], 0, limit[1]))
        return np.array([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)], np.float32)

    def correction(self, logits: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, int]:
        """A click in the error region: positive on a missed pixel, negative on a false one."""
        error = (logits > 0) != mask
        if not error.any():
            return self.click(mask, interior=True), 1
        rows, cols = np.nonzero(error)
        pick = self.rng.integers(len(rows))
        row, col = rows[pick], cols[pick]
        return np.array([col, row], np.float32), int(mask[row, col])


# ------------------------------------------------------------------------------ training
class ImagePool:
    """Draws a training image: a generated scene with probability ``scene_fraction``.

    Args:
        images: The encoded training images.
        rng: The random generator (shared with the rest of the stage's draws).
        scene_fraction: Share of draws that are generated scenes (when both kinds exist).
    """

    def __init__(
        self, images: list[TrainingImage], rng: np.random.Generator, scene_fraction: float
    ) -> None:
        self.images = images
        self.rng = rng
        self.scene_fraction = scene_fraction
        self.scenes = [i for i, image in enumerate(images) if image.generated]
        self.others = [i for i, image in enumerate(images) if not image.generated]

    def draw(self) -> TrainingImage:
        use_scene = self.scenes and (not self.others or self.rng.random() < self.scene_fraction)
        pool = self.scenes if use_scene else self.others
        return self.images[pool[self.rng.integers(len(pool))]]


def prompt_tensors(
    points: tuple[np.ndarray, np.ndarray] | None, boxes: np.ndarray | None, scale: float
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None]:
    """Low-res-grid clicks (BxNx2, labels BxN) and boxes (Bx4) as model-input tensors."""
    point_tensors = None
    if points is not None:
        point_tensors = (torch.from_numpy(points[0] * scale), torch.from_numpy(points[1]))
    box_tensor = None if boxes is None else torch.from_numpy(boxes * scale)
    return point_tensors, box_tensor


Step = TypeVar("Step")


def run_steps(
    stage: ClickTrainer | IoUHeadStage,
    total: int,
    summarize: Callable[[list[Step]], object],
    log: Callable[[int, Any, float], None] | None,
    cancel: Callable[[], bool] | None,
    log_every: int,
) -> list[Step]:
    """Call ``stage.step()`` until ``stage.step_index`` reaches ``total`` (or ``cancel()``).

    Every ``log_every`` steps, ``log(step, summarize(the last steps' results), elapsed_s)``.
    """
    history: list[Step] = []
    start = time.perf_counter()
    while stage.step_index < total:
        if cancel is not None and cancel():
            break
        history.append(cast(Step, stage.step()))
        if log is not None and (stage.step_index % log_every == 0 or stage.step_index == total):
            log(stage.step_index, summarize(history[-log_every:]), time.perf_counter() - start)
    stage.model.eval()
    return history


@dataclass
class StepLosses:
    """Losses of one step (floats, for the log)."""

    clicks: float
    boxes: float
    corrections: float
    iou: float
    distill: float
    best_iou: float

    @property
    def total(self) -> float:
        return self.clicks + self.boxes + self.corrections + self.iou + self.distill


class ClickTrainer:
    """Runs :class:`TrainConfig`'s recipe on a model and a list of training images.

    Args:
        model: The model to fine-tune (changed in place); a frozen copy is the box teacher.
        images: Encoded training images.
        config: The recipe.
    """

    def __init__(self, model: Sam, images: list[TrainingImage], config: TrainConfig) -> None:
        if not images:
            raise ValueError("Click training needs at least one training image with masks.")
        self.model = model
        self.images = images
        self.config = config
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.rng = np.random.default_rng(config.seed)
        if config.warm_start_multimask:
            warm_start_multimask(model, torch.Generator().manual_seed(config.seed))
        self.sampler = PromptSampler(self.rng)
        trained = set(trainable_names(model))
        decoder: list[nn.Parameter] = []
        embeddings: list[nn.Parameter] = []
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name in trained)
            if name in trained:
                (decoder if name.startswith("mask_decoder.") else embeddings).append(parameter)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decoder, "lr": config.lr},
                {"params": embeddings, "lr": config.embedding_lr},
            ],
            weight_decay=0.0,
        )
        self._base_lrs = [config.lr, config.embedding_lr]
        self.pool = ImagePool(images, self.rng, config.scene_fraction)
        self.dense_pe = model.prompt_encoder.get_dense_pe().detach()
        low = images[0].masks.shape[-1]
        self.to_model = model.image_size / low  # low-res grid pixels to model-input pixels
        self.step_index = 0

    # ---------------------------------------------------------------------------- helpers
    def _lr_factor(self, step: int) -> float:
        config = self.config
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def _autocast(self) -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.bf16)

    def _decode(
        self,
        model: Sam,
        features: torch.Tensor,
        points: tuple[np.ndarray, np.ndarray] | None,
        boxes: np.ndarray | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All four tokens' low-res logits (B, 4, L, L) float32 and IoUs (B, 4)."""
        point_tensors, box_tensor = prompt_tensors(points, boxes, self.to_model)
        with self._autocast():
            sparse, dense = model.prompt_encoder(
                points=point_tensors, boxes=box_tensor, masks=masks
            )
            logits, iou = model.mask_decoder.predict_masks(features, self.dense_pe, sparse, dense)
        return logits.float(), iou.float()

    def _pick_masks(self, image: TrainingImage, count: int) -> np.ndarray:
        return self.rng.integers(len(image.masks), size=count)

    def _mask_losses(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.config.focal_weight * focal_loss(logits, target) + dice_loss(logits, target)

    # ---------------------------------------------------------------------------- one step
    def step(self) -> StepLosses:
        """One optimiser step on one randomly drawn image."""
        config = self.config
        factor = self._lr_factor(self.step_index)
        for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base * factor
        image = self.pool.draw()
        features = image.features
        masks_np = image.masks.numpy()
        targets = image.masks.float()
        model = self.model.train()
        losses: dict[str, torch.Tensor] = {}
        zero = torch.zeros(())

        # Single clicks: best of the three multimask outputs.
        pick = self._pick_masks(image, config.clicks)
        clicks = np.stack(
            [self.sampler.click(masks_np[i], interior=self.rng.random() < 0.5) for i in pick]
        )[:, None]
        labels = np.ones((len(pick), 1), np.int64)
        logits, iou_pred = self._decode(model, features, (clicks, labels), None, None)
        target = targets[torch.from_numpy(pick)]
        multi = logits[:, 1:]
        if config.nested_levels:
            inside = containing_masks(image, clicks[:, 0])
            matched, chosen_outputs = [], []
            for row, drawn in enumerate(pick):
                levels = click_levels(image.masks, inside[row], int(drawn))
                level_targets = targets[levels][None].expand(multi.shape[1], -1, -1, -1)
                level_losses = self._mask_losses(
                    multi[row][:, None].expand_as(level_targets), level_targets
                )  # (3, K)
                loss, output = matched_loss(level_losses)
                matched.append(loss)
                chosen_outputs.append(output)
            best = torch.tensor(chosen_outputs)
            losses["clicks"] = torch.stack(matched).mean()
        else:
            per_output = self._mask_losses(multi, target[:, None].expand_as(multi))  # (B, 3)
            best = per_output.argmin(dim=1)
            losses["clicks"] = per_output.gather(1, best[:, None]).mean()
        real_iou = mask_iou(multi, target[:, None].expand_as(multi))
        iou_terms = [F.mse_loss(iou_pred[:, 1:], real_iou)]
        best_iou = real_iou.max(dim=1).values.mean()

        # Corrections: a click in the first answer's error region, its logits as mask prompt.
        if config.corrections:
            first = np.arange(min(config.corrections, len(pick)))
            chosen = multi[first, best[first]].detach()
            second, second_labels = zip(
                *(
                    self.sampler.correction(chosen[i].numpy(), masks_np[pick[i]])
                    for i in range(len(first))
                ),
                strict=True,
            )
            points = np.concatenate([clicks[first], np.stack(second)[:, None]], axis=1)
            point_labels = np.concatenate(
                [labels[first], np.asarray(second_labels, np.int64)[:, None]], axis=1
            )
            logits2, iou2 = self._decode(
                model, features, (points, point_labels), None, chosen[:, None]
            )
            target2 = target[first]
            losses["corrections"] = self._mask_losses(logits2[:, 0], target2).mean()
            iou_terms.append(F.mse_loss(iou2[:, 0], mask_iou(logits2[:, 0], target2)))

        # Boxes and box + click: single-mask output, distilled from the original decoder.
        box_losses, distill_terms = [], []
        for count, with_click in ((config.boxes, False), (config.box_clicks, True)):
            if not count:
                continue
            pick_b = self._pick_masks(image, count)
            boxes = np.stack([self.sampler.box(masks_np[i]) for i in pick_b])
            box_points = None
            if with_click:
                extra = np.stack([self.sampler.click(masks_np[i], False) for i in pick_b])
                box_points = (extra[:, None], np.ones((count, 1), np.int64))
            logits_b, iou_b = self._decode(model, features, box_points, boxes, None)
            with torch.no_grad():
                teacher, _ = self._decode(self.teacher, features, box_points, boxes, None)
            target_b = targets[torch.from_numpy(pick_b)]
            box_losses.append(self._mask_losses(logits_b[:, 0], target_b).mean())
            iou_terms.append(F.mse_loss(iou_b[:, 0], mask_iou(logits_b[:, 0], target_b)))
            distill_terms.append(
                F.binary_cross_entropy_with_logits(logits_b[:, 0], teacher[:, 0].sigmoid())
            )
        losses["boxes"] = torch.stack(box_losses).mean() if box_losses else zero
        losses["distill"] = (
            config.distill_weight * torch.stack(distill_terms).mean() if distill_terms else zero
        )
        losses["iou"] = torch.stack(iou_terms).mean()
        losses.setdefault("corrections", zero)

        total = cast(torch.Tensor, sum(losses.values()))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], max_norm=1.0
        )
        self.optimizer.step()
        self.step_index += 1
        return StepLosses(
            **{name: float(value.detach()) for name, value in losses.items()},
            best_iou=float(best_iou),
        )

    def run(
        self,
        log: Callable[[int, StepLosses, float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        log_every: int = 25,
    ) -> list[StepLosses]:
        """Run all steps; ``log(step, mean losses of the last steps, elapsed_s)`` reports."""

        def mean(recent: list[StepLosses]) -> StepLosses:
            return StepLosses(*(float(np.mean([getattr(s, f) for s in recent])) for f in _FIELDS))

        return run_steps(self, self.config.steps, mean, log, cancel, log_every)


_FIELDS = ("clicks", "boxes", "corrections", "iou", "distill", "best_iou")
