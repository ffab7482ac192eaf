"""Prompts to low-res masks: the prompt encoder and mask decoder as the predictor runs them.

:class:`PromptDecoder` turns validated prompts (in pixels of the original image) into the
model's inputs and runs the decoder, reusing the image side of the decoder across prompts on
one image. The plain functions around it convert prompts the way the model was trained to
see them (:func:`model_boxes`, :func:`mask_prompt`) and pick which of SAM's four output
tokens answer a prompt (:func:`candidate_tokens`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import numpy as np
import torch

from sam_viz.modeling import Sam
from sam_viz.models.registry import ModelSpec
from sam_viz.predictor.batch_decoder import BatchDecoder, PreparedImage
from sam_viz.predictor.cache import ImageEmbedding
from sam_viz.predictor.patches import low_res_canvas, patch_groups
from sam_viz.predictor.transforms import ImageFrame
from sam_viz.prompts import MASK_PROMPT_LOGIT, PromptSet

ChooseTokens = Callable[[torch.Tensor], torch.Tensor]
"""Picks the output tokens to make masks for from one prompt set's (4,) IoU predictions."""


def reduced_precision(
    device: torch.device, compute_dtype: torch.dtype
) -> contextlib.AbstractContextManager[None]:
    """Reduced-precision matrix products, if ``compute_dtype`` asks for them."""
    if compute_dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=compute_dtype)


def mask_prompt(
    mask_input: np.ndarray | None, frame: ImageFrame, low_res_size: int
) -> np.ndarray | None:
    """A mask prompt as the (L, L) float32 low-res logits the model takes.

    Args:
        mask_input: Low-res logits (L, L) or (1, L, L) (a previous prediction's
            ``low_res_logits[i]``), or a mask of the image's shape; None for no mask prompt.
        frame: How the image maps onto the model input.
        low_res_size: L, the side of the model's low-res masks.

    Raises:
        ValueError: For another shape, or NaN or inf logits.
    """
    if mask_input is None:
        return None
    mask = np.asarray(mask_input)
    low = low_res_size
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.shape == (low, low) and mask.dtype.kind == "f":
        logits = mask.astype(np.float32)
    elif mask.shape == frame.original_size:
        binary = frame.mask_to_low_res(mask.astype(bool), low) > 0.5
        logits = np.where(binary, MASK_PROMPT_LOGIT, -MASK_PROMPT_LOGIT).astype(np.float32)
    elif mask.shape == (low, low):
        raise ValueError(
            f"mask_input of shape ({low}, {low}) is read as low-res logits, which are float; "
            f"this one is {mask.dtype}. For a binary mask give one of the image's shape "
            f"{frame.original_size}; for logits, pass a previous prediction's low_res_logits[i]."
        )
    else:
        raise ValueError(
            f"mask_input has shape {mask.shape}; give low-res logits of shape ({low}, {low}) "
            f"(a previous prediction's low_res_logits[i]) or a mask of the image's shape "
            f"{frame.original_size}."
        )
    if not np.isfinite(logits).all():
        raise ValueError("mask_input contains NaN or inf.")
    return logits


def model_boxes(boxes_xyxy: np.ndarray, frame: ImageFrame, spec: ModelSpec) -> np.ndarray:
    """Boxes in model-input pixels as the model was trained to see them: widened by
    ``spec.box_margin`` of the input on each side (within the image)."""
    boxes = frame.boxes_to_model(boxes_xyxy)
    margin = spec.box_margin * spec.image_size
    if margin:
        in_h, in_w = frame.input_size
        boxes = boxes + np.array([-margin, -margin, margin, margin])
        boxes = np.clip(boxes, 0, [in_w, in_h, in_w, in_h])
    return boxes


def candidate_tokens(
    iou: torch.Tensor, spec: ModelSpec, multimask_output: bool, *, single_click: bool
) -> torch.Tensor:
    """Which of SAM's four output tokens answer a prompt.

    Token 0 is the single-mask output; tokens 1-3 the ambiguity-aware ones. Where the
    model's multimask tokens were not trained for this kind of prompt (``spec.multimask``),
    the candidates are its single-mask output plus the two multimask outputs it scores
    highest (by ``iou``, the (4,) IoU predictions).
    """
    if not multimask_output:
        return torch.tensor([0])
    trained = spec.multimask == "all" or (spec.multimask == "single_click" and single_click)
    if trained:
        return torch.tensor([1, 2, 3])
    ranked = 1 + torch.argsort(iou[1:4].float().cpu(), descending=True)[:2]
    return torch.cat([torch.tensor([0]), ranked])


class PromptDecoder:
    """Runs a model's prompt encoder and mask decoder on validated prompts.

    Without a mask prompt the decoder's image side is computed once per image
    (:class:`~sam_viz.predictor.batch_decoder.BatchDecoder`) and kept for the next prompts
    on the same image.

    Args:
        model: The model, on ``device``.
        device: Where the model runs.
        dense_pe: The prompt encoder's dense positional encoding (1, C, G, G).
    """

    def __init__(self, model: Sam, device: torch.device, dense_pe: torch.Tensor) -> None:
        self.model = model
        self.device = device
        self.dense_pe = dense_pe
        # The shared-image decoder and its work for the last image predicted on.
        self._prepared: tuple[tuple[str, str, int], BatchDecoder, PreparedImage] | None = None
        self._lock = threading.Lock()

    def decode(
        self,
        embedding: ImageEmbedding,
        prompts: PromptSet,
        *,
        spec: ModelSpec,
        compute_dtype: torch.dtype,
        per_box: bool,
        choose: ChooseTokens,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the prompt encoder and decoder.

        Args:
            embedding: The image.
            prompts: Validated prompts.
            spec: The model's variant (its box margin).
            compute_dtype: The precision of the decoder's reduced-precision parts.
            per_box: One prompt set per box (else one set holding everything).
            choose: Picks the output tokens to make masks for from the first prompt set's
                (4,) IoU predictions; masks are only made for those.

        Returns:
            Low-res logits of the chosen tokens (B, T, L, L), the IoU predictions of all
            four tokens (B, 4), and the chosen token indices (T,).
        """
        points, boxes, masks = self._prompt_tensors(embedding.frame, prompts, spec, per_box)
        with torch.inference_mode():
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=masks)
            if masks is None:
                return self._decode_sharing_the_image(embedding, sparse, compute_dtype, choose)
            with reduced_precision(self.device, compute_dtype):
                low_res, iou = self.model.mask_decoder.predict_masks(
                    image_embeddings=embedding.features.to(self.device),
                    image_pe=self.dense_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                )
        tokens = choose(iou[0].float().cpu())
        return low_res[:, tokens].float(), iou.float(), tokens

    def decode_local(
        self, embedding: ImageEmbedding, boxes_xyxy: np.ndarray, *, spec: ModelSpec
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per box, each decoded on a patch of the embedding around it
        (:mod:`sam_viz.predictor.patches`).

        Args:
            embedding: The image.
            boxes_xyxy: (B, 4) validated boxes in original pixels.
            spec: The model's variant (its box margin, input and low-res sizes).

        Returns:
            Low-res logits of the single-mask output (B, 1, L, L), ``OUTSIDE_LOGIT`` away
            from each box's patch, and the IoU predictions of all four tokens (B, 4).
        """
        in_model = model_boxes(boxes_xyxy, embedding.frame, spec)
        features = embedding.features.to(self.device)
        grid = (int(features.shape[-2]), int(features.shape[-1]))
        cells = in_model * (grid[1] / spec.image_size)
        low = low_res_canvas(len(in_model), spec.low_res_size, self.device)
        iou = torch.zeros((len(in_model), 4), device=self.device)
        decoder = BatchDecoder(self.model)
        with torch.inference_mode():
            boxes = torch.as_tensor(in_model, dtype=torch.float32, device=self.device)
            sparse, _ = self.model.prompt_encoder(points=None, boxes=boxes, masks=None)
            for patch, members in patch_groups(cells, grid).items():
                prepared = decoder.prepare(patch.crop(features), patch.crop(self.dense_pe))
                decoded = decoder.transformer(prepared, sparse[members])
                iou[members] = decoded.iou_scores.float()
                patch.paste(low, members, decoder.masks(decoded, [0]))
        return low, iou

    def _prompt_tensors(
        self, frame: ImageFrame, prompts: PromptSet, spec: ModelSpec, per_box: bool
    ) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, torch.Tensor | None]:
        """The prompt encoder's inputs in model pixels, one prompt set per box when
        ``per_box``: (points and labels, boxes, mask logits), each None when absent."""
        device = self.device
        n_sets = len(prompts.boxes_xyxy) if per_box else 1
        points = None
        if len(prompts.points_xy):
            coords = torch.as_tensor(frame.points_to_model(prompts.points_xy), dtype=torch.float32)
            labels = torch.as_tensor(prompts.point_labels, dtype=torch.int64)
            points = (
                coords[None].expand(n_sets, -1, -1).to(device),
                labels[None].expand(n_sets, -1).to(device),
            )
        boxes = None
        if len(prompts.boxes_xyxy):
            in_model = model_boxes(prompts.boxes_xyxy, frame, spec)
            boxes = torch.as_tensor(in_model, dtype=torch.float32)
            boxes = boxes.to(device) if per_box else boxes[:1].to(device)
        masks = None
        if prompts.mask is not None:
            masks = torch.as_tensor(prompts.mask, device=device)[None, None].expand(
                n_sets, -1, -1, -1
            )
        return points, boxes, masks

    def _decode_sharing_the_image(
        self,
        embedding: ImageEmbedding,
        sparse: torch.Tensor,
        compute_dtype: torch.dtype,
        choose: ChooseTokens,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder rearranged so its image side is computed once per image.

        Without a mask prompt the first block's image-side projections are the same for
        every prompt on an image; :class:`~sam_viz.predictor.batch_decoder.BatchDecoder`
        computes them once and moves the other image-side projections to the prompt
        tokens: the same results up to float rounding. In reduced precision only the mask
        upscaling runs in it (see :class:`~sam_viz.predictor.batch_decoder.BatchDecoder`).
        """
        key = (embedding.image_key, embedding.model_key, id(embedding.features))
        with self._lock:
            cached = self._prepared
        if cached is not None and cached[0] == key:
            _, decoder, prepared = cached
        else:
            decoder = BatchDecoder(self.model, upscale_dtype=compute_dtype)
            prepared = decoder.prepare(embedding.features.to(self.device), self.dense_pe)
            with self._lock:
                self._prepared = (key, decoder, prepared)
        decoded = decoder.transformer(prepared, sparse)
        iou = decoded.iou_scores.float()
        tokens = choose(iou[0].cpu())
        return decoder.masks(decoded, tokens), iou, tokens
