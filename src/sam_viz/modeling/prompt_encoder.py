"""SAM's prompt encoder: points and boxes to sparse tokens, a mask to a dense map.

Names follow the official checkpoints (``pe_layer.positional_encoding_gaussian_matrix``,
``point_embeddings.0..3``, ``not_a_point_embed``, ``mask_downscaling.{0,1,3,4,6}``,
``no_mask_embed``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sam_viz.modeling.common import LayerNorm2d

# Point labels, as in SAM.
NOT_A_POINT = -1
NEGATIVE_POINT = 0
POSITIVE_POINT = 1


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder.

    Args:
        embed_dim: Width of every prompt embedding.
        image_embedding_size: Grid (h, w) of the image embedding.
        input_image_size: Padded model-input size (H, W) in pixels; point and box
            coordinates are given in this frame.
        mask_in_chans: Hidden channels of the mask downscaling network.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # Added to a point's positional encoding: negative point, positive point,
        # box top-left corner, box bottom-right corner.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of every cell of the image embedding grid.

        Returns:
            1x(embed_dim)xhxw.
        """
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """Embed point prompts.

        Args:
            coords: BxNx2 point coordinates as (x, y) pixels of the model input.
            labels: BxN labels: 1 positive, 0 negative, -1 not a point (ignored).
            pad: Append one not-a-point token (SAM does when no box is given).

        Returns:
            Point tokens, Bx(N + pad)x(embed_dim): positional encoding of the pixel centre
            plus the label's learned embedding; not-a-point tokens are the learned
            not-a-point embedding alone.

        Raises:
            ValueError: If the shapes do not match.
        """
        if coords.ndim != 3 or coords.shape[-1] != 2 or labels.shape != coords.shape[:2]:
            raise ValueError(
                f"points must be coords BxNx2 and labels BxN, got {tuple(coords.shape)} "
                f"and {tuple(labels.shape)}."
            )
        coords = coords + 0.5  # centre of the pixel
        if pad:
            coords = torch.cat([coords, coords.new_zeros((coords.shape[0], 1, 2))], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), NOT_A_POINT)], dim=1)
        embedding = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        labels = labels[..., None]
        embedding = torch.where(labels == NOT_A_POINT, self.not_a_point_embed.weight, embedding)
        for label in (NEGATIVE_POINT, POSITIVE_POINT):
            learned = self.point_embeddings[label].weight
            embedding = torch.where(labels == label, embedding + learned, embedding)
        return embedding

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Embed box prompts as two corner tokens each.

        Args:
            boxes: Bx4 (or Bx1x4) boxes as XYXY pixels of the model input.

        Returns:
            Corner tokens, Bx2x(embed_dim) (top-left, bottom-right).

        Raises:
            ValueError: If the last axis is not 4.
        """
        if boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be Bx4 XYXY, got shape {tuple(boxes.shape)}.")
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        learned = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return embedding + learned

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Embed mask prompts.

        Args:
            masks: Bx1x(4h)x(4w) mask logits (a previous prediction's low-res logits).

        Returns:
            Dense embedding, Bx(embed_dim)xhxw.
        """
        return self.mask_stages(masks)[-1]

    def mask_stages(self, masks: torch.Tensor) -> list[torch.Tensor]:
        """The mask downscaling network's intermediate maps, for visualisation.

        Args:
            masks: Bx1x(4h)x(4w) mask logits.

        Returns:
            Three maps: after the first stride-2 stage (Bx(mask_in_chans/4)x2hx2w), after
            the second (Bx(mask_in_chans)xhxw) and the final embedding (Bx(embed_dim)xhxw).

        Raises:
            ValueError: If the masks do not have the expected shape.
        """
        expected = (1, *self.mask_input_size)
        if masks.ndim != 4 or tuple(masks.shape[1:]) != expected:
            raise ValueError(
                f"masks must be Bx1x{self.mask_input_size[0]}x{self.mask_input_size[1]} "
                f"logits, got shape {tuple(masks.shape)}."
            )
        stages = []
        x = masks
        for index, layer in enumerate(self.mask_downscaling):
            x = layer(x)
            if index in (2, 5):  # after each conv + norm + GELU stage
                stages.append(x)
        stages.append(x)
        return stages

    def no_mask_dense_embedding(self, batch_size: int) -> torch.Tensor:
        """Dense embedding used when no mask is given (one learned vector everywhere).

        Args:
            batch_size: Number of prompt sets B.

        Returns:
            Bx(embed_dim)xhxw (an expanded view, not a copy).
        """
        height, width = self.image_embedding_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch_size, -1, height, width)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed a batch of prompt sets.

        Args:
            points: (coords BxNx2 as (x, y) model-input pixels, labels BxN) or None.
            boxes: Bx4 XYXY boxes in model-input pixels, or None.
            masks: Bx1x(4h)x(4w) mask logits, or None.

        Returns:
            Sparse tokens Bx(K)x(embed_dim), K = points (+1 padding token when there are
            points but no boxes) + 2 per box; dense embedding Bx(embed_dim)xhxw.
        """
        batch = _batch_size(points, boxes, masks)
        tokens = []
        if points is not None:
            tokens.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            tokens.append(self.embed_boxes(boxes))
        if tokens:
            sparse = torch.cat(tokens, dim=1) if len(tokens) > 1 else tokens[0]
        else:
            weight = self.no_mask_embed.weight
            sparse = weight.new_empty((batch, 0, self.embed_dim))
        if masks is not None:
            dense = self.embed_masks(masks)
        else:
            dense = self.no_mask_dense_embedding(batch)
        return sparse, dense


def _batch_size(
    points: tuple[torch.Tensor, torch.Tensor] | None,
    boxes: torch.Tensor | None,
    masks: torch.Tensor | None,
) -> int:
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random spatial frequencies (Fourier features).

    A point with coordinates p in [0, 1]^2 is encoded as
    ``[sin(2 pi (2p - 1) G), cos(2 pi (2p - 1) G)]`` with a fixed Gaussian matrix G.

    Args:
        num_pos_feats: Number of frequencies; the encoding has twice as many channels.
        scale: Standard deviation of G.
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode points normalised to [0, 1].

        Args:
            coords: ...x2 normalised (x, y) coordinates.

        Returns:
            ...x(2 * num_pos_feats) encoding.
        """
        projected = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        projected = 2 * math.pi * projected
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encode the centres of the cells of an h x w grid.

        Args:
            size: Grid size (h, w).

        Returns:
            Encoding, (2 * num_pos_feats)xhxw.
        """
        height, width = size
        matrix = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(height, device=matrix.device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=matrix.device, dtype=torch.float32) + 0.5) / width
        grid = torch.stack(
            [xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1
        )
        return self.encode(grid).permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """Encode points given in pixels.

        Args:
            coords_input: BxNx2 (x, y) pixel coordinates.
            image_size: Frame size (H, W) the pixels refer to.

        Returns:
            Encoding, BxNx(2 * num_pos_feats).
        """
        height, width = image_size
        coords = coords_input.float()
        coords = torch.stack([coords[..., 0] / width, coords[..., 1] / height], dim=-1)
        return self.encode(coords)
