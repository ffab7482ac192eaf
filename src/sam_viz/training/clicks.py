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
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sam_viz.modeling.sam import Sam
from sam_viz.training.data import NATURAL_IMAGES, TrainingImage
from sam_viz.training.losses import dice_loss, focal_loss, mask_iou, matched_loss
from sam_viz.training.sampling import (
    ImagePool,
    PromptSampler,
    click_levels,
    containing_masks,
    prompt_tensors,
)
from sam_viz.training.steps import StepLosses, run_steps

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
            it (:func:`~sam_viz.training.sampling.click_levels`), not only on the mask it was
            drawn from. Off in the shipped weights: it moved the held-out checks no more
            than a different seed does (``docs/decisions.md``, "Click training").
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


@dataclass(frozen=True)
class _ClickAnswers:
    """The single clicks of one step and the model's answers to them.

    Attributes:
        pick: (B,) index of the mask each click was drawn from.
        clicks: (B, 1, 2) click positions; ``labels`` (B, 1) their labels (all positive).
        multi: (B, 3, L, L) low-res logits of the three multimask outputs.
        best: (B,) the output trained for each click.
        target: (B, L, L) the drawn masks.
        loss: The clicks' mask loss; ``iou_term`` the IoU head's, ``best_iou`` the mean
            best-of-three IoU (reported).
    """

    pick: np.ndarray
    clicks: np.ndarray
    labels: np.ndarray
    multi: torch.Tensor
    best: torch.Tensor
    target: torch.Tensor
    loss: torch.Tensor
    iou_term: torch.Tensor
    best_iou: torch.Tensor


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
        self._set_learning_rates()
        image = self.pool.draw()
        masks_np = image.masks.numpy()
        targets = image.masks.float()
        model = self.model.train()
        losses: dict[str, torch.Tensor] = {}
        zero = torch.zeros(())

        # Single clicks: best of the three multimask outputs.
        clicks = self._single_clicks(model, image, masks_np, targets)
        losses["clicks"] = clicks.loss
        iou_terms = [clicks.iou_term]

        # Corrections: a click in the first answer's error region, its logits as mask prompt.
        if config.corrections:
            losses["corrections"], iou_term = self._corrections(model, image, masks_np, clicks)
            iou_terms.append(iou_term)

        # Boxes and box + click: single-mask output, distilled from the original decoder.
        box_losses, distill_terms = self._box_prompts(model, image, masks_np, targets, iou_terms)
        losses["boxes"] = torch.stack(box_losses).mean() if box_losses else zero
        losses["distill"] = (
            config.distill_weight * torch.stack(distill_terms).mean() if distill_terms else zero
        )
        losses["iou"] = torch.stack(iou_terms).mean()
        losses.setdefault("corrections", zero)

        self._optimise(losses)
        return StepLosses(
            **{name: float(value.detach()) for name, value in losses.items()},
            best_iou=float(clicks.best_iou),
        )

    def _set_learning_rates(self) -> None:
        """Warm-up then cosine decay, for this step."""
        factor = self._lr_factor(self.step_index)
        for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base * factor

    def _single_clicks(
        self, model: Sam, image: TrainingImage, masks_np: np.ndarray, targets: torch.Tensor
    ) -> _ClickAnswers:
        """Decode one click per drawn mask and score the three multimask outputs."""
        config = self.config
        pick = self._pick_masks(image, config.clicks)
        clicks = np.stack(
            [self.sampler.click(masks_np[i], interior=self.rng.random() < 0.5) for i in pick]
        )[:, None]
        labels = np.ones((len(pick), 1), np.int64)
        logits, iou_pred = self._decode(model, image.features, (clicks, labels), None, None)
        target = targets[torch.from_numpy(pick)]
        multi = logits[:, 1:]
        if config.nested_levels:
            loss, best = self._nested_level_loss(image, pick, clicks, multi, targets)
        else:
            per_output = self._mask_losses(multi, target[:, None].expand_as(multi))  # (B, 3)
            best = per_output.argmin(dim=1)
            loss = per_output.gather(1, best[:, None]).mean()
        real_iou = mask_iou(multi, target[:, None].expand_as(multi))
        return _ClickAnswers(
            pick=pick,
            clicks=clicks,
            labels=labels,
            multi=multi,
            best=best,
            target=target,
            loss=loss,
            iou_term=F.mse_loss(iou_pred[:, 1:], real_iou),
            best_iou=real_iou.max(dim=1).values.mean(),
        )

    def _nested_level_loss(
        self,
        image: TrainingImage,
        pick: np.ndarray,
        clicks: np.ndarray,
        multi: torch.Tensor,
        targets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs matched to the levels of mask around each click: (loss, outputs)."""
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
        return torch.stack(matched).mean(), best

    def _corrections(
        self, model: Sam, image: TrainingImage, masks_np: np.ndarray, clicks: _ClickAnswers
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A second click on the first answers' errors: (mask loss, IoU-head term)."""
        first = np.arange(min(self.config.corrections, len(clicks.pick)))
        chosen = clicks.multi[first, clicks.best[first]].detach()
        second, second_labels = zip(
            *(
                self.sampler.correction(chosen[i].numpy(), masks_np[clicks.pick[i]])
                for i in range(len(first))
            ),
            strict=True,
        )
        points = np.concatenate([clicks.clicks[first], np.stack(second)[:, None]], axis=1)
        point_labels = np.concatenate(
            [clicks.labels[first], np.asarray(second_labels, np.int64)[:, None]], axis=1
        )
        logits2, iou2 = self._decode(
            model, image.features, (points, point_labels), None, chosen[:, None]
        )
        target2 = clicks.target[first]
        loss = self._mask_losses(logits2[:, 0], target2).mean()
        return loss, F.mse_loss(iou2[:, 0], mask_iou(logits2[:, 0], target2))

    def _box_prompts(
        self,
        model: Sam,
        image: TrainingImage,
        masks_np: np.ndarray,
        targets: torch.Tensor,
        iou_terms: list[torch.Tensor],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Boxes, then boxes + click: (mask losses, distillation terms); the IoU-head terms
        are appended to ``iou_terms``."""
        config = self.config
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
            logits_b, iou_b = self._decode(model, image.features, box_points, boxes, None)
            with torch.no_grad():
                teacher, _ = self._decode(self.teacher, image.features, box_points, boxes, None)
            target_b = targets[torch.from_numpy(pick_b)]
            box_losses.append(self._mask_losses(logits_b[:, 0], target_b).mean())
            iou_terms.append(F.mse_loss(iou_b[:, 0], mask_iou(logits_b[:, 0], target_b)))
            distill_terms.append(
                F.binary_cross_entropy_with_logits(logits_b[:, 0], teacher[:, 0].sigmoid())
            )
        return box_losses, distill_terms

    def _optimise(self, losses: dict[str, torch.Tensor]) -> None:
        """Back-propagate the sum of ``losses`` (in their order) and take the step."""
        total = cast(torch.Tensor, sum(losses.values()))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], max_norm=1.0
        )
        self.optimizer.step()
        self.step_index += 1

    def run(
        self,
        log: Callable[[int, StepLosses, float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        log_every: int = 25,
    ) -> list[StepLosses]:
        """Run all steps; ``log(step, mean losses of the last steps, elapsed_s)`` reports."""
        return run_steps(self, self.config.steps, StepLosses.mean, log, cancel, log_every)
