"""SAM's mask decoder rearranged for throughput: many prompt sets on one image embedding.

Segmenting everything decodes hundreds of prompts per image. The decoder's cost is in its
image side: every attention projects all h*w image tokens per prompt set, and the output
upscaling runs two transposed convolutions per prompt set. :class:`BatchDecoder` computes
the same function with less arithmetic, using only the model's weights:

* In the first block the image tokens are the same for every prompt set (image embedding
  plus the no-mask embedding), so their projections are computed once per image
  (:meth:`BatchDecoder.prepare`).
* Where few prompt tokens meet many image tokens, a projection is moved to the few side:
  ``softmax(q · (W_k x + b))`` equals ``softmax((W_kᵀ q) · x)`` (the bias term is constant
  along the softmax axis), ``A (W_v x + b) = (A x) W_vᵀ + b`` (rows of A sum to one), and an
  output projection applied after attention equals attention over values already
  projected. Each image-side product then costs (heads x prompt tokens) instead of the
  projection width per image token.
* The output upscaling runs as per-pixel matrix products, its first one factored through
  the transformer (:mod:`sam_viz.predictor.mask_upscaling`), and masks are only made for the prompt
  sets and output tokens asked for, after their IoU predictions are known.

Results equal :meth:`sam_viz.modeling.MaskDecoder.predict_masks` up to float rounding
(the tests check this). Mask prompts are not supported here (they make the first block's
image tokens differ per prompt set); use the predictor for those.

Shapes: B prompt sets, N tokens per set (output tokens + prompt tokens), M = h*w image
tokens, C channels, H heads, L = 4h low-res mask side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from sam_viz.modeling import MaskDecoder, Sam
from sam_viz.modeling.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer
from sam_viz.predictor.mask_upscaling import BlockTerms, FactoredUpscaling, UpscaleInputs


@dataclass(frozen=True)
class PreparedImage:
    """Per-image work shared by every prompt set.

    Attributes:
        src: (1, M, C) image tokens entering the decoder (embedding + no-mask embedding).
        pe: (1, M, C) positional encoding of the image tokens.
        first_keys: (H, M, d) first block's token-to-image keys, per head.
        first_values: (H, M, d) first block's token-to-image values, per head.
        first_queries: (H, M, d) first block's image-to-token queries, per head (scaled).
        upscale_base: (M, 4*C') the image's part of the output upscaling's first product
            (:meth:`sam_viz.predictor.mask_upscaling.FactoredUpscaling.base`).
        grid: (h, w) of the embedding.
    """

    src: torch.Tensor
    pe: torch.Tensor
    first_keys: torch.Tensor
    first_values: torch.Tensor
    first_queries: torch.Tensor
    upscale_base: torch.Tensor
    grid: tuple[int, int]


@dataclass(frozen=True)
class DecodedTokens:
    """The transformer's output for B prompt sets.

    Attributes:
        tokens: (B, T + 1, C) the output tokens (IoU token, then the T mask tokens) after
            the transformer.
        upscale_chunks: The upscaling's first product in factored form, per chunk of
            prompt sets, in order (kept apart to save copying them into one tensor).
        upscale_base: (M, 4*C') the prepared image's part of that product.
        iou_scores: (B, T) predicted IoU of each output mask token (token 0 is the
            single-mask output).
        grid: (h, w) of the image tokens.
    """

    tokens: torch.Tensor
    upscale_chunks: tuple[UpscaleInputs, ...]
    upscale_base: torch.Tensor
    iou_scores: torch.Tensor
    grid: tuple[int, int]

    def upscale_rows(self, rows: list[int]) -> UpscaleInputs:
        """The upscaling inputs of the given prompt sets (runs of consecutive prompt sets
        in one chunk are sliced, so a single run costs no copy)."""
        starts = [0]
        for part in self.upscale_chunks:
            starts.append(starts[-1] + part.scale.shape[0])
        picked = []
        index = 0
        while index < len(rows):
            row = rows[index]
            chunk = next(i for i in range(len(self.upscale_chunks)) if row < starts[i + 1])
            last = index
            while (
                last + 1 < len(rows)
                and rows[last + 1] == rows[last] + 1
                and rows[last + 1] < starts[chunk + 1]
            ):
                last += 1
            first = row - starts[chunk]
            picked.append(self.upscale_chunks[chunk].rows(first, first + last - index + 1))
            index = last + 1
        return picked[0] if len(picked) == 1 else UpscaleInputs.cat(picked)


# Image-side temporaries ((sets, M, C) tensors) of at most this many bytes per chunk of
# prompt sets (4 sets for SAM's 64x64x256 tokens): small chunks stay in the CPU's last-level
# cache and are reused by the allocator, where large ones are fresh pages each call
# (measurements: docs/decisions.md, "Decoder speed").
_CHUNK_BYTES = 16 * 2**20

# Up to this many prompt sets, the final attention adds the positional encoding to the image
# tokens (one pass) instead of scoring it in a separate product.
_FEW_SETS = 8


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., T, D) to (..., H, T, D/H)."""
    *lead, tokens, width = x.shape
    return x.reshape(*lead, tokens, heads, width // heads).transpose(-3, -2)


def _head_weight(linear: nn.Linear, heads: int) -> torch.Tensor:
    """A projection's (D, C) weight as (H, d, C): rows of each head."""
    out_features, in_features = linear.weight.shape
    return linear.weight.reshape(heads, out_features // heads, in_features)


class BatchDecoder:
    """Decodes many prompt sets on one image embedding, equal to the model's decoder.

    Args:
        model: A SAM model whose decoder has the standard two-way transformer.
        upscale_dtype: Dtype of the output upscaling after its first (factored) product:
            the second transposed convolution and the hypernetwork product. bfloat16
            halves their cost on hardware that computes it natively; the transformer, the
            first upscaling product and the IoU head always run in float32, and the logits
            are returned as float32.

    Typical use::

        decoder = BatchDecoder(predictor.model)
        prepared = decoder.prepare(embedding.features, predictor.dense_pe)
        sparse, _ = predictor.model.prompt_encoder(points=None, boxes=boxes, masks=None)
        decoded = decoder.transformer(prepared, sparse)
        low_res = decoder.masks(decoded, token_indices=[0])      # (B, 1, L, L)
    """

    def __init__(self, model: Sam, *, upscale_dtype: torch.dtype = torch.float32) -> None:
        self.model = model
        self.decoder = cast(MaskDecoder, model.mask_decoder)
        self.transformer_module = cast(TwoWayTransformer, self.decoder.transformer)
        self._layers = [
            cast(TwoWayAttentionBlock, layer) for layer in self.transformer_module.layers
        ]
        self.heads = int(self.transformer_module.num_heads)
        self.upscaling = FactoredUpscaling(self.decoder, self._layers, upscale_dtype)

    @property
    def upscale_dtype(self) -> torch.dtype:
        """Dtype of the output upscaling after its first product (see the class)."""
        return self.upscaling.dtype

    # --------------------------------------------------------------------------- per image
    @torch.inference_mode()
    def prepare(self, features: torch.Tensor, image_pe: torch.Tensor) -> PreparedImage:
        """Compute what every prompt set on this image shares.

        Args:
            features: (1, C, h, w) image embedding.
            image_pe: (1, C, h, w) positional encoding of the embedding grid.

        Returns:
            The shared work, for :meth:`transformer`.
        """
        if features.ndim != 4 or features.shape[0] != 1:
            raise ValueError(f"features must have shape (1, C, h, w), got {tuple(features.shape)}.")
        height, width = features.shape[-2:]
        no_mask = self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        src = (features + no_mask.to(features)).flatten(2).transpose(1, 2)
        pe = image_pe.to(features).flatten(2).transpose(1, 2)
        first = self._layers[0]
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        heads = self.heads
        keys = _heads(t2i.k_proj(src + pe)[0], heads)
        values = _heads(t2i.v_proj(src)[0], heads)
        scale = (i2t.internal_dim // heads) ** -0.5
        queries = _heads(i2t.q_proj(src + pe)[0], heads) * scale
        return PreparedImage(
            src.contiguous(),
            pe.contiguous(),
            keys.contiguous(),
            values.contiguous(),
            queries.contiguous(),
            self.upscaling.base(src),
            (height, width),
        )

    # ------------------------------------------------------------------------ transformer
    @torch.inference_mode()
    def transformer(
        self, prepared: PreparedImage, sparse: torch.Tensor, *, chunk: int | None = None
    ) -> DecodedTokens:
        """Run the two-way transformer and the IoU head for B prompt sets.

        Args:
            prepared: From :meth:`prepare`.
            sparse: (B, K, C) sparse prompt embeddings from the prompt encoder.
            chunk: Prompt sets computed at a time; by default as many as keep the
                image-side temporaries within :data:`_CHUNK_BYTES`.

        Returns:
            Tokens, image tokens and IoU predictions.
        """
        if chunk is None:
            per_set = prepared.src[0].numel() * prepared.src.element_size()
            chunk = max(1, _CHUNK_BYTES // per_set)
        parts = [
            self._transformer_chunk(prepared, sparse[start : start + chunk])
            for start in range(0, sparse.shape[0], chunk)
        ]
        if len(parts) == 1:
            return parts[0]
        return DecodedTokens(
            torch.cat([p.tokens for p in parts]),
            tuple(chunk for p in parts for chunk in p.upscale_chunks),
            prepared.upscale_base,
            torch.cat([p.iou_scores for p in parts]),
            prepared.grid,
        )

    def _transformer_chunk(self, prepared: PreparedImage, sparse: torch.Tensor) -> DecodedTokens:
        decoder = self.decoder
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        batch = sparse.shape[0]
        point_embedding = torch.cat(
            [output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse.to(output_tokens)], dim=1
        )
        queries = point_embedding
        keys = prepared.src  # shared until the first block updates it
        terms = []
        for index, layer in enumerate(self._layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + point_embedding
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            q = queries + point_embedding
            if index == 0:
                update = self._shared_token_to_image(layer, prepared, q)
            else:
                keys_pe = keys + prepared.pe
                update = self._token_to_image(layer.cross_attn_token_to_image, q, keys, keys_pe)
            queries = layer.norm2(queries + update)
            queries = layer.norm3(queries + layer.mlp(queries))
            q = queries + point_embedding
            if index == 0:
                updated, weights, values = self._shared_image_to_token(layer, prepared, q, queries)
            else:
                i2t = layer.cross_attn_image_to_token
                updated, weights, values = self._image_to_token(i2t, keys, keys_pe, q, queries)
            # The layer norm's own statistics (its aten op returns them) feed the upscaling.
            norm = layer.norm4
            keys, mean, inv_std = torch.native_layer_norm(
                updated, norm.normalized_shape, norm.weight, norm.bias, norm.eps
            )
            terms.append(BlockTerms(weights, values, mean[..., 0], inv_std[..., 0]))
        # The final attention only matters for the output tokens (the IoU and mask tokens):
        # the prompt tokens' last update is never read.
        final = self.transformer_module
        outputs = output_tokens.shape[0]
        queries = queries[:, :outputs]
        # For a few prompt sets, adding the encoding once costs less than a second product
        # per set; for many, the sum would be a large temporary.
        few = batch <= _FEW_SETS
        update = self._token_to_image(
            final.final_attn_token_to_image,
            queries + point_embedding[:, :outputs],
            keys,
            keys + prepared.pe if few else None,
            None if few else prepared.pe,
        )
        queries = final.norm_final_attn(queries + update)
        iou = decoder.iou_prediction_head(queries[:, 0])
        upscale = self.upscaling.inputs(terms)
        return DecodedTokens(queries, (upscale,), prepared.upscale_base, iou, prepared.grid)

    def _shared_token_to_image(
        self, layer: TwoWayAttentionBlock, prepared: PreparedImage, q_in: torch.Tensor
    ) -> torch.Tensor:
        """First block's token-to-image attention; keys and values are the prepared ones."""
        attn = layer.cross_attn_token_to_image
        q = _heads(attn.q_proj(q_in), self.heads)  # (B, H, N, d)
        out = F.scaled_dot_product_attention(
            q,
            prepared.first_keys.unsqueeze(0).expand(q.shape[0], -1, -1, -1),
            prepared.first_values.unsqueeze(0).expand(q.shape[0], -1, -1, -1),
        )
        batch, _, tokens, _ = out.shape
        return attn.out_proj(out.transpose(1, 2).reshape(batch, tokens, attn.internal_dim))

    def _token_to_image(
        self,
        attn: Attention,
        q_in: torch.Tensor,
        keys: torch.Tensor,
        keys_pe: torch.Tensor | None,
        pe: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token-to-image attention with the key and value projections moved to the tokens.

        Args:
            attn: The attention module.
            q_in: (B, N, C) queries (tokens with their encoding).
            keys: (B, M, C) image tokens: the values.
            keys_pe: (B, M, C) image tokens plus their encoding (the keys), or None to use
                ``keys`` and ``pe`` separately.
            pe: (1, M, C) positional encoding, when ``keys_pe`` is None.

        Returns:
            (B, N, C) update of the tokens.
        """
        heads = self.heads
        batch, tokens, _ = q_in.shape
        q = _heads(attn.q_proj(q_in), heads)  # (B, H, N, d)
        scale = q.shape[-1] ** -0.5
        # Scores q · (W_k (x + pe) + b_k): the bias term is constant over image tokens.
        q_folded = torch.einsum("bhne,hec->bhnc", q * scale, _head_weight(attn.k_proj, heads))
        q_folded = q_folded.reshape(batch, heads * tokens, -1)
        # Scores as (B, M, H*N), image tokens times the few folded queries: the faster
        # orientation of this product on the CPU (docs/decisions.md, "Decoder speed").
        if keys_pe is not None:
            scores = keys_pe @ q_folded.mT
        else:
            assert pe is not None
            scores = (pe[0] @ q_folded.reshape(-1, q_folded.shape[-1]).T).view(
                -1, batch, heads * tokens
            )
            scores = scores.transpose(0, 1).baddbmm(keys, q_folded.mT)
        weights = scores.softmax(dim=1)  # over the image tokens
        mixed = (weights.mT @ keys).view(batch, heads, tokens, -1)  # (B, H, N, C)
        values = torch.einsum("bhnc,hec->bhne", mixed, _head_weight(attn.v_proj, heads))
        values = values + attn.v_proj.bias.view(heads, 1, -1)
        return attn.out_proj(values.transpose(1, 2).reshape(batch, tokens, attn.internal_dim))

    def _out_folded_values(self, attn: Attention, values: torch.Tensor) -> torch.Tensor:
        """Values with the output projection and its bias folded in: (B, H*N, C).

        Each head's (B, N, d) values times its block of the output projection. The bias is
        spread over the rows: each head's attention weights sum to one over N, so adding
        bias / H to every row adds the bias once to every output.
        """
        heads = self.heads
        batch, _, tokens, width = values.shape
        out_weight = attn.out_proj.weight.reshape(-1, heads, width)  # (C, H, d)
        folded = torch.einsum("bhne,che->bhnc", values, out_weight) + attn.out_proj.bias / heads
        return folded.reshape(batch, heads * tokens, -1)

    def _shared_image_to_token(
        self,
        layer: TwoWayAttentionBlock,
        prepared: PreparedImage,
        q_tokens: torch.Tensor,
        v_in: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """First block's image-to-token attention; the image queries are the prepared ones.

        Returns:
            As :meth:`_image_to_token`.
        """
        attn = layer.cross_attn_image_to_token
        heads = self.heads
        batch, tokens, _ = q_tokens.shape
        k = _heads(attn.k_proj(q_tokens), heads)  # (B, H, N, d)
        # (H, B*N, d) @ (H, d, M) -> (H, B, N, M); softmax over the prompt's tokens N.
        k_all = k.transpose(0, 1).reshape(heads, batch * tokens, -1)
        scores = torch.bmm(k_all, prepared.first_queries.mT).view(heads, batch, tokens, -1)
        weights = scores.softmax(dim=2).transpose(0, 1).reshape(batch, heads * tokens, -1)
        v = _heads(attn.v_proj(v_in), heads)
        values = self._out_folded_values(attn, v)
        # Residual + attention output in one product: src + weightsᵀ (values with bias).
        return torch.baddbmm(prepared.src, weights.mT, values), weights, values

    def _image_to_token(
        self,
        attn: Attention,
        residual: torch.Tensor,
        q_image: torch.Tensor,
        q_tokens: torch.Tensor,
        v_in: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image-to-token attention with the query and output projections moved to the tokens.

        Args:
            attn: The attention module.
            residual: (B, M, C) image tokens the attention output is added to (in place).
            q_image: (B, M, C) image tokens with their encoding (the queries).
            q_tokens: (B, N, C) tokens with their encoding (the keys).
            v_in: (B, N, C) tokens (the values).

        Returns:
            (B, M, C) image tokens plus the attention output, the (B, H*N, M) attention
            weights and the (B, H*N, C) values they mix (output projection folded in).
        """
        heads = self.heads
        batch, tokens, _ = q_tokens.shape
        k = _heads(attn.k_proj(q_tokens), heads)  # (B, H, N, d)
        k = k * k.shape[-1] ** -0.5
        # (W_q x + b_q) · k = x · (W_qᵀ k) + b_q · k
        k_folded = torch.einsum("bhne,hec->bhnc", k, _head_weight(attn.q_proj, heads))
        bias = torch.einsum("bhne,he->bhn", k, attn.q_proj.bias.view(heads, -1))
        k_folded = k_folded.reshape(batch, heads * tokens, -1)
        # (M, H*N) is the faster orientation of the product; the softmax over each head's
        # few tokens is not (rows of N), so the scores are transposed back for it.
        scores = torch.baddbmm(bias.reshape(batch, 1, heads * tokens), q_image, k_folded.mT)
        scores = scores.mT.contiguous()
        weights = scores.view(batch, heads, tokens, -1).softmax(dim=2)
        weights = weights.view(batch, heads * tokens, -1)
        v = _heads(attn.v_proj(v_in), heads)
        values = self._out_folded_values(attn, v)
        # The residual is this chunk's own tensor, no longer needed: add in place.
        return residual.baddbmm_(weights.mT, values), weights, values

    # ------------------------------------------------------------------------------ masks
    @torch.inference_mode()
    def masks(
        self,
        decoded: DecodedTokens,
        token_indices: list[int] | torch.Tensor,
        rows: torch.Tensor | None = None,
        *,
        chunk: int = 4,
    ) -> torch.Tensor:
        """Low-res mask logits of some output tokens for some prompt sets.

        Args:
            decoded: From :meth:`transformer`.
            token_indices: Output mask tokens to make masks for (0 = single-mask output,
                1-3 the multimask outputs).
            rows: Indices of the prompt sets to make masks for; all by default.
            chunk: Prompt sets upscaled at a time (bounds the temporaries).

        Returns:
            (R, len(token_indices), L, L) float32 logits, R = len(rows), computed in
            :attr:`upscale_dtype` after the first upscaling product.
        """
        count = decoded.tokens.shape[0]
        row_list = list(range(count)) if rows is None else [int(r) for r in rows]
        index = torch.as_tensor(token_indices, dtype=torch.long)
        mask_tokens = decoded.tokens[row_list, 1 : 1 + self.decoder.num_mask_tokens]
        hyper = torch.stack(
            [self.decoder.output_hypernetworks_mlps[int(t)](mask_tokens[:, int(t)]) for t in index],
            dim=1,
        ).to(self.upscale_dtype)  # (R, T, C/8)
        height, width = decoded.grid
        out = torch.empty((len(row_list), len(index), 4 * height, 4 * width), device=hyper.device)
        buffers = self.upscaling.buffers(decoded.upscale_base, min(chunk, len(row_list)))
        for start in range(0, len(row_list), chunk):
            inputs = decoded.upscale_rows(row_list[start : start + chunk])
            stop = start + inputs.scale.shape[0]
            self.upscaling.logits(
                decoded.upscale_base,
                inputs,
                hyper[start:stop],
                decoded.grid,
                out[start:stop],
                buffers,
            )
        return out
