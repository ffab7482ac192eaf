"""SAM's mask decoder: output tokens + prompt tokens + image embedding to masks and scores.

Names follow the official checkpoints (``transformer.*``, ``iou_token``, ``mask_tokens``,
``output_upscaling.{0,1,3}``, ``output_hypernetworks_mlps.N.layers.M``,
``iou_prediction_head.layers.M``).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from sam_viz.modeling.common import LayerNorm2d
from sam_viz.modeling.transformer import TwoWayTransformer


class MaskDecoderOutput(NamedTuple):
    """Everything the decoder computes for a batch of B prompt sets, for visualisation.

    Attributes:
        masks: Low-resolution mask logits of all mask tokens, Bx(T)x(4h)x(4w); token 0 is
            the single-mask output, tokens 1.. the multimask candidates.
        iou_pred: Predicted IoU of each mask, BxT.
        iou_token: IoU output token after the transformer, BxC.
        mask_tokens: Mask output tokens after the transformer, BxTxC.
        hyper_in: Per-token weights for the upscaled channels, BxTx(C/8).
        upscaled_embedding: Upscaled image features the masks are read from,
            Bx(C/8)x(4h)x(4w).
        image_tokens: Image tokens after the transformer, BxCxhxw.
    """

    masks: torch.Tensor
    iou_pred: torch.Tensor
    iou_token: torch.Tensor
    mask_tokens: torch.Tensor
    hyper_in: torch.Tensor
    upscaled_embedding: torch.Tensor
    image_tokens: torch.Tensor


class MaskDecoder(nn.Module):
    """Predicts masks and their quality from image and prompt embeddings.

    Args:
        transformer_dim: Token width C.
        transformer: The two-way transformer.
        num_multimask_outputs: Masks predicted when disambiguating (plus one single mask).
        iou_head_depth: Layers of the IoU prediction MLP.
        iou_head_hidden_dim: Hidden width of the IoU prediction MLP.
        activation: Activation used while upscaling.
    """

    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: nn.Module | None = None,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = (
            transformer
            if transformer is not None
            else TwoWayTransformer(
                depth=2, embedding_dim=transformer_dim, mlp_dim=2048, num_heads=8
            )
        )
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompt sets on one image (or one image per prompt set).

        Args:
            image_embeddings: 1xCxhxw (shared by all prompt sets) or BxCxhxw.
            image_pe: Positional encoding of the embedding grid, 1xCxhxw.
            sparse_prompt_embeddings: Point and box tokens, BxKxC.
            dense_prompt_embeddings: Mask embeddings, BxCxhxw.
            multimask_output: Return the multimask candidates instead of the single mask.

        Returns:
            Low-res mask logits Bx(3 or 1)x(4h)x(4w) and predicted IoUs Bx(3 or 1).
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, selected], iou_pred[:, selected]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks and IoUs of all mask tokens (see :meth:`forward` for the arguments).

        Returns:
            Mask logits BxTx(4h)x(4w) and IoUs BxT with T = num_multimask_outputs + 1.
        """
        out = self.predict_masks_with_tokens(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        return out.masks, out.iou_pred

    def predict_masks_with_tokens(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> MaskDecoderOutput:
        """Run the decoder and keep its intermediate tokens (see :meth:`forward`).

        Returns:
            A :class:`MaskDecoderOutput` with all mask tokens' outputs.

        Raises:
            ValueError: If the image batch is neither 1 nor the number of prompt sets.
        """
        batch = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, batch):
            raise ValueError(
                f"image_embeddings has batch {image_embeddings.shape[0]}; expected 1 (shared) "
                f"or {batch} (one per prompt set)."
            )
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings.to(output_tokens.dtype)], dim=1)

        # Broadcasting shares one image embedding among the prompt sets without copying it.
        src = image_embeddings + dense_prompt_embeddings
        if src.shape[0] != batch:
            src = src.expand(batch, -1, -1, -1)
        _, channels, height, width = src.shape
        hs, image_tokens = self.transformer(src, image_pe, tokens)
        iou_token = hs[:, 0]
        mask_tokens = hs[:, 1 : 1 + self.num_mask_tokens]

        image_map = image_tokens.transpose(1, 2).reshape(batch, channels, height, width)
        upscaled = self.output_upscaling(image_map)
        hyper_in = torch.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )
        b, c, up_h, up_w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, up_h * up_w)).view(b, -1, up_h, up_w)
        iou_pred = self.iou_prediction_head(iou_token)
        return MaskDecoderOutput(
            masks=masks,
            iou_pred=iou_pred,
            iou_token=iou_token,
            mask_tokens=mask_tokens,
            hyper_in=hyper_in,
            upscaled_embedding=upscaled,
            image_tokens=image_map,
        )


class MLP(nn.Module):
    """Stack of linear layers with ReLU between them.

    Args:
        input_dim: Input width.
        hidden_dim: Width of the hidden layers.
        output_dim: Output width.
        num_layers: Number of linear layers.
        sigmoid_output: Apply a sigmoid to the output.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in itertools.pairwise(widths)
        )
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to the last axis: ...x(input_dim) to ...x(output_dim)."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x
