"""The mask decoder's output upscaling, per pixel and factored through the transformer.

SAM's decoder turns its output image tokens into mask logits with two 2x2 stride-2
transposed convolutions (a layer norm and GELUs between them) and a product with each mask
token's hypernetwork vector. A 2x2 stride-2 transposed convolution is a per-pixel matrix
product on channels-last tokens, so :class:`FactoredUpscaling` runs the upscaling as plain
matrix products on the (M, C) tokens.

The first product is not applied to the transformer's output tokens at all but expanded
through the transformer. Each of its blocks adds a low-rank attention output to the image
tokens (attention weights (M, heads*tokens) times values (heads*tokens, C)) and
layer-normalises them, and a layer norm is an affine map per pixel. So the product equals

* the image tokens entering the decoder times a fixed matrix (:meth:`~FactoredUpscaling.base`,
  once per image), rescaled per pixel, plus
* each block's attention weights and layer-norm terms times small matrices
  (:meth:`~FactoredUpscaling.inputs`, per prompt set):

an (M, K) x (K, 4*C') product per prompt set with K = blocks x (heads*tokens + 2), instead
of (M, C) x (C, 4*C'): fewer rows while the prompt has few tokens (docs/decisions.md,
"Decoder speed", works one through).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from sam_viz.modeling import MaskDecoder
from sam_viz.modeling.common import LayerNorm2d
from sam_viz.modeling.transformer import TwoWayAttentionBlock


@dataclass(frozen=True)
class UpscaleInputs:
    """The output upscaling's first product for b prompt sets, in factored form.

    The transformer's output image tokens times the first transposed convolution's matrix
    (plus its bias) equal ``scale * base + mixing.mT @ small`` per prompt set, where
    ``base`` is :meth:`FactoredUpscaling.base` of the image.

    Attributes:
        scale: (b, M) per-pixel factor of the base (the product of every block's inverse
            layer-norm deviation).
        mixing: (b, K, M) each block's attention weights and layer-norm terms per pixel,
            rescaled by the blocks after it.
        small: (b, K, 4*C') what each row of ``mixing`` contributes to the product.
    """

    scale: torch.Tensor
    mixing: torch.Tensor
    small: torch.Tensor

    def rows(self, start: int, stop: int) -> UpscaleInputs:
        """The inputs of prompt sets ``start:stop`` (views, not copies)."""
        return UpscaleInputs(
            self.scale[start:stop], self.mixing[start:stop], self.small[start:stop]
        )

    @staticmethod
    def cat(parts: list[UpscaleInputs]) -> UpscaleInputs:
        """The inputs of several groups of prompt sets, in order (a copy)."""
        return UpscaleInputs(
            torch.cat([p.scale for p in parts]),
            torch.cat([p.mixing for p in parts]),
            torch.cat([p.small for p in parts]),
        )


@dataclass(frozen=True)
class BlockTerms:
    """What one transformer block's image-side update leaves for the upscaling.

    The block's image tokens are ``LN(z)`` with ``z = previous + weights.mT @ values``.

    Attributes:
        weights: (B, H*N, M) attention weights of the image tokens over the prompt tokens.
        values: (B, H*N, C) the values they mix (output projection folded in).
        mean: (B, M) mean of each ``z`` before the layer norm.
        inv_std: (B, M) inverse standard deviation of the same.
    """

    weights: torch.Tensor
    values: torch.Tensor
    mean: torch.Tensor
    inv_std: torch.Tensor


class FactoredUpscaling:
    """SAM's output upscaling as matrix products, its first one factored (module docstring).

    Args:
        decoder: The mask decoder (its ``output_upscaling`` must be SAM's: 2x2 stride-2
            transposed convolution, layer norm, activation, the same again, activation).
        blocks: The two-way transformer's blocks, in order (their ``norm4`` layer norms
            produce the image tokens).
        dtype: Dtype of everything after the first product (float32 or bfloat16).

    Raises:
        ValueError: If the upscaling is not SAM's.
    """

    def __init__(
        self,
        decoder: MaskDecoder,
        blocks: list[TwoWayAttentionBlock],
        dtype: torch.dtype = torch.float32,
    ) -> None:
        up = decoder.output_upscaling
        conv1, norm, act1, conv2, act2 = up[0], up[1], up[2], up[3], up[4]
        if not (
            isinstance(conv1, nn.ConvTranspose2d)
            and isinstance(conv2, nn.ConvTranspose2d)
            and conv1.kernel_size == conv1.stride == (2, 2)
            and conv2.kernel_size == conv2.stride == (2, 2)
            and conv1.bias is not None
            and conv2.bias is not None
        ):
            raise ValueError("BatchDecoder needs SAM's 2x2 stride-2 output upscaling.")
        self.dtype = dtype
        self._norm, self._act1, self._act2 = cast(LayerNorm2d, norm), act1, act2
        # Transposed convs as (C_in, 4 * C_out) matrices; columns ordered (row, col, C_out).
        # (Copies of the weights as they are now: build this after loading them.)
        up1 = conv1.weight.detach().permute(0, 2, 3, 1).reshape(conv1.in_channels, -1)
        up2 = conv2.weight.detach().permute(0, 2, 3, 1).reshape(conv2.in_channels, -1)
        self._up2 = up2.to(dtype)
        self._up2_bias = cast(torch.Tensor, conv2.bias).detach().repeat(4).to(dtype)
        self._norm_weight = self._norm.weight.detach().to(dtype)
        self._norm_bias = self._norm.bias.detach().to(dtype)
        self.channels = (conv1.out_channels, conv2.out_channels)
        self._expand(blocks, up1, cast(torch.Tensor, conv1.bias).detach().repeat(4))

    def _expand(
        self, blocks: list[TwoWayAttentionBlock], up1: torch.Tensor, bias: torch.Tensor
    ) -> None:
        """Carry the first upscaling matrix back through every block's layer norm.

        Block l's output is ``LN_l(z_l) = (z_l - mean) * inv_std * g_l + b_l`` per pixel, so
        ``LN_l(z_l) @ W = inv_std * (z_l @ (g_l W)) - inv_std * mean * (g_l @ W) + b_l @ W``.
        Starting from ``W = up1`` at the last block, ``g_l W`` is the matrix the block
        before it sees (``_expanded[l]``); ``g_l @ W`` and ``b_l @ W`` are the rows its mean
        and its constant contribute (``_mean_rows[l]``, ``_const_rows[l]``; the last block's
        constant row carries the convolution's bias).
        """
        matrix = up1.float()
        expanded, mean_rows, const_rows = [], [], []
        for block in reversed(blocks):
            gain, shift = block.norm4.weight.detach(), block.norm4.bias.detach()
            mean_rows.append(gain @ matrix)
            const_rows.append(shift @ matrix)
            matrix = gain[:, None] * matrix
            expanded.append(matrix)
        const_rows[0] = const_rows[0] + bias.float()
        self._expanded = expanded[::-1]
        self._mean_rows = mean_rows[::-1]
        self._const_rows = const_rows[::-1]

    def base(self, src: torch.Tensor) -> torch.Tensor:
        """(M, 4*C') the image's part of the first product, from the (1, M, C) image tokens
        entering the decoder (embedding plus no-mask embedding)."""
        return src[0] @ self._expanded[0].to(src)

    def inputs(self, terms: list[BlockTerms]) -> UpscaleInputs:
        """Gather the blocks' terms into the factored first product.

        Unrolling :meth:`_expand` through ``z_1 = src + A_1 V_1`` and
        ``z_l = LN_{l-1}(z_{l-1}) + A_l V_l``, with ``R_l`` the product of the inverse
        deviations of blocks l and after (``R_{L+1} = 1``)::

            out = R_1 * (src @ W_1) + sum_l [ R_l * A_l (V_l W_l)
                                              - R_l * mean_l * (g_l @ W_{l+1})
                                              + R_{l+1} * (b_l @ W_{l+1}) ]
        """
        batch, _, pixels = terms[0].weights.shape
        rows = sum(term.weights.shape[1] + 2 for term in terms)
        mixing = terms[0].weights.new_empty((batch, rows, pixels))
        small = terms[0].values.new_empty((batch, rows, self._expanded[0].shape[1]))
        after = torch.ones_like(terms[-1].inv_std)  # R_{l+1}
        row = 0
        for index in reversed(range(len(terms))):
            term = terms[index]
            scale = after * term.inv_std  # R_l
            count = term.weights.shape[1]
            torch.mul(term.weights, scale[:, None], out=mixing[:, row : row + count])
            torch.mul(term.mean, scale, out=mixing[:, row + count]).neg_()
            mixing[:, row + count + 1] = after
            small[:, row : row + count] = term.values @ self._expanded[index]
            small[:, row + count] = self._mean_rows[index]
            small[:, row + count + 1] = self._const_rows[index]
            row += count + 2
            after = scale
        return UpscaleInputs(after, mixing, small)

    def logits(
        self,
        base: torch.Tensor,
        inputs: UpscaleInputs,
        hyper: torch.Tensor,
        grid: tuple[int, int],
        out: torch.Tensor,
        buffers: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        """Mask logits of b prompt sets, written into ``out``.

        Args:
            base: (M, 4*C') from :meth:`base`.
            inputs: The b prompt sets' factored first product.
            hyper: (b, T, C'') their mask tokens' hypernetwork outputs, in :attr:`dtype`.
            grid: (h, w) of the image tokens.
            out: (b, T, 4h, 4w) float32 logits to fill.
            buffers: Scratch space from :meth:`buffers` for at least b prompt sets.
        """
        height, width = grid
        c1, c2 = self.channels
        b, pixels = inputs.scale.shape
        first, second = buffers
        y1 = torch.mul(base, inputs.scale[..., None], out=first[:b])
        y1 = y1.baddbmm_(inputs.mixing.mT, inputs.small).to(self.dtype)
        y1 = F.layer_norm(
            y1.view(-1, c1), (c1,), self._norm_weight, self._norm_bias, self._norm.eps
        )
        y1 = _activate(self._act1, y1)
        y2 = torch.addmm(self._up2_bias, y1, self._up2, out=second[: b * pixels * 4])
        y2 = _activate(self._act2, y2).view(b, -1, c2)  # pixels (i, j, a, c, a2, c2)
        logits = (y2 @ hyper.mT).view(b, height, width, 2, 2, 2, 2, -1)  # (b, M*16, T)
        # Mask pixel (4i + 2a + a2, 4j + 2c + c2), written in place (one copy).
        out.view(b, -1, height, 2, 2, width, 2, 2).copy_(logits.permute(0, 7, 1, 3, 5, 2, 4, 6))

    def buffers(self, base: torch.Tensor, sets: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scratch space for :meth:`logits` on up to ``sets`` prompt sets at a time (reused:
        fresh large buffers cost page faults)."""
        pixels = base.shape[0]
        first = base.new_empty((sets, pixels, base.shape[1]))
        second = base.new_empty((sets * pixels * 4, self._up2.shape[1]), dtype=self.dtype)
        return first, second


def _activate(activation: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply an activation module, in place when it is a GELU (x is a scratch buffer)."""
    if isinstance(activation, nn.GELU):
        return torch.ops.aten.gelu_(x, approximate=activation.approximate)
    return activation(x)
