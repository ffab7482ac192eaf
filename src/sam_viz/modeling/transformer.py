"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Names follow the official checkpoints (``layers.N.{self_attn,norm1,cross_attn_token_to_image,
norm2,mlp.lin1,mlp.lin2,norm3,norm4,cross_attn_image_to_token}``, ``final_attn_token_to_image``,
``norm_final_attn``; each attention has ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam_viz.modeling.common import MLPBlock

# Attention over at most this many keys uses plain matrix products (see Attention.forward).
_FEW_KEYS = 64


class TwoWayTransformer(nn.Module):
    """Transformer decoder over prompt tokens (queries) and image tokens (keys).

    Args:
        depth: Number of two-way blocks.
        embedding_dim: Token width.
        num_heads: Attention heads.
        mlp_dim: Hidden width of the token MLPs.
        activation: Activation of the token MLPs.
        attention_downsample_rate: Cross-attention works at ``embedding_dim`` divided by
            this.
    """

    def __init__(
        self,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the blocks and a final token-to-image attention.

        Args:
            image_embedding: Image tokens as a map, BxCxhxw.
            image_pe: Positional encoding of the map, BxCxhxw or 1xCxhxw.
            point_embedding: Prompt and output tokens, BxNxC (also their positional
                encoding, as in SAM).

        Returns:
            Updated prompt tokens BxNxC and updated image tokens Bx(h*w)xC.
        """
        # Contiguous token-major copies once: every add, norm and projection below then reads
        # memory in order (strided (B, C, h*w) views made each of them several times slower).
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(
                queries=queries, keys=keys, query_pe=point_embedding, key_pe=key_pe
            )
        attn_out = self.final_attn_token_to_image(
            q=queries + point_embedding, k=keys + key_pe, v=keys
        )
        queries = self.norm_final_attn(queries + attn_out)
        return queries, keys


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token-to-image attention, token MLP, image-to-token attention.

    Args:
        embedding_dim: Token width.
        num_heads: Attention heads.
        mlp_dim: Hidden width of the token MLP.
        activation: Activation of the token MLP.
        attention_downsample_rate: Width reduction inside the cross-attentions.
        skip_first_layer_pe: Leave the positional encoding out of the self-attention
            (the first block, whose queries are the encodings themselves).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update both token sets.

        Args:
            queries: Prompt tokens, BxNxC.
            keys: Image tokens, BxMxC.
            query_pe: Positional encoding of the prompt tokens, BxNxC.
            key_pe: Positional encoding of the image tokens, BxMxC or 1xMxC.

        Returns:
            Updated queries BxNxC and keys BxMxC.
        """
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        keys_with_pe = keys + key_pe
        q = queries + query_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=keys_with_pe, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        attn_out = self.cross_attn_image_to_token(q=keys_with_pe, k=q, v=queries)
        keys = self.norm4(keys + attn_out)
        return queries, keys


class Attention(nn.Module):
    """Multi-head attention whose projections may narrow the width.

    Args:
        embedding_dim: Width of inputs and output.
        num_heads: Attention heads.
        downsample_rate: Projections map to ``embedding_dim // downsample_rate``.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(
                f"num_heads {num_heads} must divide the internal width {self.internal_dim}."
            )
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        return x.view(batch, tokens, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attend from q to (k, v).

        Args:
            q: Queries, BxNxC.
            k: Keys, BxMxC.
            v: Values, BxMxC.

        Returns:
            BxNxC.
        """
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        if k.shape[-2] <= _FEW_KEYS:
            # Image tokens attending to a handful of prompt tokens: plain matrix products
            # beat the fused kernel, which is tuned for long key sequences.
            weights = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        batch, _, tokens, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, self.internal_dim))
