"""The SAM model: image encoder, prompt encoder and mask decoder.

Pixel normalisation and resizing belong to the layer above (they are not part of the
checkpoints' weights); this module starts from a normalised, padded model input.
"""

from __future__ import annotations

import torch
from torch import nn

from sam_viz.modeling.mask_decoder import MaskDecoder
from sam_viz.modeling.prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """Segment Anything: encode an image once, then decode masks for many prompts.

    The state dict has exactly the official ``image_encoder.*``, ``prompt_encoder.*`` and
    ``mask_decoder.*`` entries, so official checkpoints load strictly.

    Args:
        image_encoder: :class:`~sam_viz.modeling.ImageEncoderViT` or
            :class:`~sam_viz.modeling.TinyViT`; must have an ``img_size`` attribute.
        prompt_encoder: The prompt encoder.
        mask_decoder: The mask decoder.
    """

    mask_threshold: float = 0.0

    def __init__(
        self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def image_size(self) -> int:
        """Side of the square model input in pixels."""
        return int(self.image_encoder.img_size)

    def prepare_for_inference(self) -> Sam:
        """Switch to eval mode and let the encoder fold what it can (after loading weights).

        Returns:
            This model.
        """
        self.eval()
        prepare = getattr(self.image_encoder, "prepare_for_inference", None)
        if callable(prepare):
            prepare()
        return self

    def forward(
        self,
        images: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images and decode B prompt sets (convenience; the predictor caches instead).

        Args:
            images: Normalised, padded model inputs, 1x3xSxS (shared by all prompt sets) or
                Bx3xSxS (one image per prompt set).
            points: (coords BxNx2 as (x, y) model-input pixels, labels BxN) or None.
            boxes: Bx4 XYXY boxes in model-input pixels, or None.
            masks: Bx1x(4h)x(4w) mask logits, or None.
            multimask_output: Three candidates per prompt set instead of one mask.

        Returns:
            Low-res mask logits Bx(3 or 1)x(4h)x(4w) and predicted IoUs Bx(3 or 1).
        """
        embeddings = self.image_encoder(images)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
