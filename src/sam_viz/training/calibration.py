"""Second stage of click training: calibrate the IoU head on what each output really is.

In the first stage (:mod:`sam_viz.training.clicks`), as in SAM, the IoU head regresses each
output's IoU with the one mask the click was sampled from. For a click in a nucleus that mask
is the nucleus or its cell at random, so the head learns an average: the "whole" output
scores well on any click, and on an object with no parts (a coin) the head cannot tell the
tight mask from one that spills over. This stage trains the IoU head alone (the rest of the
model is frozen, so the masks do not change) on the IoU of each output with the best of the
masks that contain the click: the real IoU of the object that output stands for.

It starts from the first stage's weights as shipped (float16 differences, so that a stage-1
delta file resumes exactly) and draws from its own seed, so it is reproducible on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sam_viz.modeling.sam import Sam
from sam_viz.predictor.batch_decoder import BatchDecoder, PreparedImage
from sam_viz.training.data import TrainingImage
from sam_viz.training.losses import pairwise_iou
from sam_viz.training.sampling import ImagePool, PromptSampler, containing_masks, prompt_tensors
from sam_viz.training.steps import run_steps

HEAD_PREFIX = "mask_decoder.iou_prediction_head."


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of the IoU-head stage.

    Off by default (``steps=0``): in the runs tried it did not rank held-out clicks better
    on both the scenes and the coins (``docs/decisions.md``, "IoU-head calibration").

    Attributes:
        steps: Optimiser steps (one image each); 0 skips the stage.
        clicks: Single clicks per step (their three multimask outputs are scored).
        boxes: Box prompts per step (the single-mask output's score stays calibrated).
        lr: Learning rate of the IoU head.
        seed_offset: Added to the training seed for this stage's random draws.
    """

    steps: int = 0
    clicks: int = 8
    boxes: int = 2
    lr: float = 2e-4
    seed_offset: int = 1


class IoUHeadCalibrator:
    """Trains the IoU prediction head on the best IoU of each output with a valid object.

    Args:
        model: The click-trained model (its IoU head changes in place).
        images: Encoded training images.
        config: The stage's settings.
        seed: The training seed (``config.seed_offset`` is added).
        scene_fraction: Share of steps that draw a generated scene.
    """

    def __init__(
        self,
        model: Sam,
        images: list[TrainingImage],
        config: CalibrationConfig,
        *,
        seed: int,
        scene_fraction: float = 0.75,
    ) -> None:
        if not images:
            raise ValueError("IoU-head calibration needs at least one training image.")
        self.model = model
        self.images = images
        self.config = config
        self.rng = np.random.default_rng(seed + config.seed_offset)
        self.sampler = PromptSampler(self.rng)
        self.head = model.mask_decoder.iou_prediction_head
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.startswith(HEAD_PREFIX))
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=config.lr, weight_decay=0.0)
        self.dense_pe = model.prompt_encoder.get_dense_pe().detach()
        # The decoder is frozen here, so its batch form (exact, float32) computes what the
        # head sees for less than the training graph costs.
        self.decoder = BatchDecoder(model)
        self.to_model = model.image_size / images[0].masks.shape[-1]
        self.pool = ImagePool(images, self.rng, scene_fraction)
        self.step_index = 0

    def _decode(
        self,
        prepared: PreparedImage,
        points: tuple[np.ndarray, np.ndarray] | None,
        boxes: np.ndarray | None,
        tokens: list[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits of the given output tokens and the IoU token (no gradient)."""
        prompt_encoder = self.model.prompt_encoder
        point_tensors, box_tensor = prompt_tensors(points, boxes, self.to_model)
        with torch.inference_mode():
            sparse, _ = prompt_encoder(points=point_tensors, boxes=box_tensor, masks=None)
            decoded = self.decoder.transformer(prepared, sparse)
            logits = self.decoder.masks(decoded, tokens)
        # The token feeds the head's autograd graph, so it leaves inference mode as a copy;
        # the logits are only compared, which inference tensors allow.
        return logits, decoded.tokens[:, 0].clone()

    def step(self) -> float:
        """One optimiser step; returns the loss."""
        config = self.config
        image = self.pool.draw()
        masks_np = image.masks.numpy()
        pick = self.rng.integers(len(masks_np), size=config.clicks)
        clicks = np.stack(
            [self.sampler.click(masks_np[i], interior=self.rng.random() < 0.5) for i in pick]
        )
        labels = np.ones((len(pick), 1), np.int64)
        prepared = self.decoder.prepare(image.features, self.dense_pe)
        multi, iou_token = self._decode(prepared, (clicks[:, None], labels), None, [1, 2, 3])
        # Each output against every mask holding the click; the best is what it stands for.
        inside = containing_masks(image, clicks)  # (B, M)
        ious = pairwise_iou(multi, image.masks)  # (B, 3, M)
        ious = torch.where(inside[:, None, :], ious, torch.zeros_like(ious))
        target_clicks = ious.max(dim=2).values
        predicted = self.head(iou_token)
        loss = F.mse_loss(predicted[:, 1:], target_clicks)
        if config.boxes:
            pick_b = self.rng.integers(len(masks_np), size=config.boxes)
            boxes = np.stack([self.sampler.box(masks_np[i]) for i in pick_b])
            logits_b, token_b = self._decode(prepared, None, boxes, [0])
            ious_b = pairwise_iou(logits_b[:, 0], image.masks)  # (boxes, M)
            target_b = ious_b[torch.arange(len(pick_b)), torch.from_numpy(pick_b)]
            loss = loss + F.mse_loss(self.head(token_b)[:, 0], target_b)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_index += 1
        return float(loss.detach())

    def run(
        self,
        log: Callable[[int, float, float], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        log_every: int = 50,
    ) -> list[float]:
        """Run all steps; ``log(step, mean loss of the last steps, elapsed_s)`` reports."""
        return run_steps(
            self, self.config.steps, lambda recent: float(np.mean(recent)), log, cancel, log_every
        )
