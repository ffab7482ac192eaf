"""Decode many prompts on one window's embedding into compact candidate masks.

Used by :mod:`sam_viz.automatic.everything`: prompts are decoded in batches (:class:`BatchDecoder`),
masks are made only for the outputs whose predicted IoU passes, upscaled to the window,
scored for stability and kept as :class:`~sam_viz.automatic.instances.InstanceMask` crops.

Local decoding (``local=True``, box prompts only) serves a first, exploratory pass: each
box is decoded on a patch of the embedding around it (:mod:`sam_viz.predictor.patches`).
Its masks are close to the whole-grid ones but not equal, so they only pick which objects
to refine; the final masks come from whole-grid decoding.

Conventions: prompts in pixels of the window (points ``(x, y)``, boxes ``XYXY``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sam_viz.automatic.instances import compact, masks_to_boxes
from sam_viz.automatic.results import Proposals
from sam_viz.masks import InstanceMask
from sam_viz.predictor import Predictor
from sam_viz.predictor.batch_decoder import BatchDecoder, PreparedImage
from sam_viz.predictor.cache import ImageEmbedding
from sam_viz.predictor.patches import Patch, low_res_canvas, patch_groups
from sam_viz.predictor.stability import stability_scores


class WindowDecoder:
    """Decodes prompts on one embedding, in batches, into candidate masks.

    Args:
        predictor: The predictor whose model is used.
        decoder: A :class:`BatchDecoder` of that model.
        embedding: The window's embedding.
        batch_size: Prompts decoded at a time.
        stability_offset: Logit offset of the stability score.
    """

    def __init__(
        self,
        predictor: Predictor,
        decoder: BatchDecoder,
        embedding: ImageEmbedding,
        *,
        batch_size: int = 64,
        stability_offset: float = 1.0,
    ) -> None:
        self.predictor = predictor
        self.decoder = decoder
        self.embedding = embedding
        self.batch_size = batch_size
        self.stability_offset = stability_offset
        self.features = embedding.features.to(predictor.device)
        self.dense_pe = predictor.dense_pe
        self.prepared = decoder.prepare(self.features, self.dense_pe)

    def decode(
        self,
        prompts: np.ndarray,
        tokens: list[int],
        *,
        iou_thresh: float,
        stability_thresh: float,
        local: bool = False,
        on_batch: Callable[[], None] | None = None,
    ) -> Proposals:
        """Decode prompts; keep the masks passing both thresholds (in window pixels).

        Args:
            prompts: (P, 2) points or (P, 4) boxes in window pixels.
            tokens: Decoder output tokens to read (0 single mask, 1-3 multimask).
            iou_thresh: Keep outputs whose predicted IoU exceeds this.
            stability_thresh: Keep masks whose stability score reaches this.
            local: Decode each box on a patch of the embedding around it (see the module
                docstring); boxes only.
            on_batch: Called after each batch (progress; may raise to cancel).

        Returns:
            The kept masks with their scores and prompts.
        """
        if local and prompts.shape[1] == 4 and len(prompts):
            return self._decode_local(prompts, tokens, iou_thresh, stability_thresh, on_batch)
        found = Proposals.empty()
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            found = found.concat(
                self._batch(self.prepared, batch, tokens, iou_thresh, stability_thresh, None)
            )
            if on_batch is not None:
                on_batch()
        return found

    def _decode_local(
        self,
        boxes: np.ndarray,
        tokens: list[int],
        iou_thresh: float,
        stability_thresh: float,
        on_batch: Callable[[], None] | None,
    ) -> Proposals:
        frame = self.embedding.frame
        grid_h, grid_w = self.prepared.grid
        cells = frame.boxes_to_model(boxes) * (grid_w / frame.image_size)
        found = Proposals.empty()
        for patch, members in patch_groups(cells, (grid_h, grid_w)).items():
            prepared = self.decoder.prepare(patch.crop(self.features), patch.crop(self.dense_pe))
            for start in range(0, len(members), self.batch_size):
                batch = boxes[members[start : start + self.batch_size]]
                found = found.concat(
                    self._batch(prepared, batch, tokens, iou_thresh, stability_thresh, patch)
                )
        if on_batch is not None:  # progress as whole-grid decoding would report it
            for _ in range(-(-len(boxes) // self.batch_size)):
                on_batch()
        return found

    def _batch(
        self,
        prepared: PreparedImage,
        batch: np.ndarray,
        tokens: list[int],
        iou_thresh: float,
        stability_thresh: float,
        patch: Patch | None,
    ) -> Proposals:
        """Decode one batch on ``prepared`` (``patch`` of the embedding, or all of it)."""
        frame = self.embedding.frame
        model = self.predictor.model
        token_index = torch.tensor(tokens)
        device = self.predictor.device
        with torch.inference_mode():
            if batch.shape[1] == 2:
                coords = torch.as_tensor(frame.points_to_model(batch), dtype=torch.float32)
                labels = torch.ones((len(batch), 1), dtype=torch.int64)
                sparse, _ = model.prompt_encoder(
                    points=(coords[:, None].to(device), labels.to(device)), boxes=None, masks=None
                )
            else:
                boxes = torch.as_tensor(frame.boxes_to_model(batch), dtype=torch.float32)
                sparse, _ = model.prompt_encoder(points=None, boxes=boxes.to(device), masks=None)
            decoded = self.decoder.transformer(prepared, sparse)
            iou = decoded.iou_scores[:, token_index].float().cpu()
            keep = iou > iou_thresh
            rows = torch.nonzero(keep.any(dim=1)).flatten()
            if not len(rows):
                return Proposals.empty()
            low = self.decoder.masks(decoded, token_index, rows)
            picked = keep[rows]
            low = low[picked.to(low.device)]  # (K, l, l)
            if patch is not None:
                canvas = low_res_canvas(len(low), self.predictor.spec.low_res_size, low.device)
                patch.paste(canvas, np.arange(len(low)), low[:, None])
                low = canvas[:, 0]
            prompt_rows = rows[:, None].expand_as(picked)[picked].numpy()
            return Proposals.empty().extend(
                self._masks(low, stability_thresh), iou[rows][picked].numpy(), batch[prompt_rows]
            )

    def _masks(
        self, low: torch.Tensor, stability_thresh: float, chunk: int = 16
    ) -> tuple[list[InstanceMask | None], np.ndarray]:
        """Upscale low-res logits (K, L, L) to the window; masks passing stability, scores."""
        frame = self.embedding.frame
        masks: list[InstanceMask | None] = []
        scores = []
        for start in range(0, len(low), chunk):
            logits = frame.upscale_logits(low[start : start + chunk, None])[:, 0]
            stability = stability_scores(logits, 0.0, self.stability_offset)
            binary = logits > 0
            boxes = masks_to_boxes(binary)
            for mask, score in zip(compact(binary, boxes), stability.tolist(), strict=True):
                ok = score >= stability_thresh and mask.area > 0
                masks.append(mask if ok else None)
                scores.append(score)
        return masks, np.asarray(scores, dtype=np.float32)
