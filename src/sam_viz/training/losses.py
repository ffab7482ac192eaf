"""SAM's training losses and the IoUs the IoU head regresses, on low-res mask logits.

Losses are per mask: focal plus dice for the masks, mean squared error for the IoU head
(SAM's recipe), and a matching of several valid masks to the multimask outputs for clicks
that lie in nested objects.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


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


def pairwise_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of every thresholded mask with every target, counted with one matrix product.

    Args:
        logits: (..., L, L) mask logits.
        targets: (M, L, L) boolean masks.

    Returns:
        (..., M) IoUs; 1 where both masks are empty.
    """
    lead = logits.shape[:-2]
    pred = (logits > 0).reshape(-1, logits.shape[-2] * logits.shape[-1]).float()
    target = targets.flatten(1).float()
    inter = pred @ target.T  # exact: counts stay far below 2**24
    union = pred.sum(1, keepdim=True) + target.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return iou.view(*lead, targets.shape[0])


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
