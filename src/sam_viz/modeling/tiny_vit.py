"""TinyViT image encoder as distilled by MobileSAM (1024 input) and LiteMedSAM (256 input).

A convolutional first stage (MBConv blocks) is followed by three stages of windowed
attention blocks, each with a depthwise "local" convolution, and SAM's conv neck; the
output is a 256-channel 64x64 embedding either way. Names follow the official checkpoints
(``patch_embed.seq.{0,2}.{c,bn}``, ``layers.N.blocks.M...``, ``layers.N.downsample...``,
``neck.0..3``; MobileSAM's file also holds an unused classifier, ``norm_head`` and ``head``).

Feature maps travel as BxCxHxW tensors in channels-last memory, so the token view BxHxWxC
used by the attention blocks is the same memory without copies.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from sam_viz.modeling.common import (
    Conv2d_BN,
    LayerNorm2d,
    attention,
    can_work_in_place,
    chunked_over_tokens,
    conv_in_row_bands,
    window_partition,
    window_unpartition,
)
from sam_viz.modeling.fused import conv_add_gelu, conv_gelu, linear_gelu

# PatchMerging keeps the resolution when it widens to one of these (TinyViT's rule, which
# leaves the last two stages of the SAM variants at the same 64x64 grid).
_STRIDE_ONE_WIDTHS = (320, 448, 576)


class PatchEmbed(nn.Module):
    """Two Conv2d_BN with GELU between, from image to ``embed_dim`` channels.

    Args:
        in_chans: Image channels.
        embed_dim: Output channels (the first conv has half as many).
        stride: Total downsampling: 4 (MobileSAM: two 3x3 stride-2 convs) or 1 (LiteMedSAM:
            two 1x1 convs).
    """

    def __init__(self, in_chans: int, embed_dim: int, stride: int = 4) -> None:
        super().__init__()
        if stride == 4:
            kernel, step, pad = 3, 2, 1
        elif stride == 1:
            kernel, step, pad = 1, 1, 0
        else:
            raise ValueError(f"patch_embed_stride must be 4 or 1, got {stride}.")
        self.stride = stride
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, embed_dim // 2, kernel, step, pad),
            nn.GELU(),
            Conv2d_BN(embed_dim // 2, embed_dim, kernel, step, pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed: BxCxHxW image to Bx(embed_dim)x(H/stride)x(W/stride)."""
        first, _, second = self.seq
        if self.stride == 1:  # 1x1 convolutions: the first one is pixel-wise
            return conv_in_row_bands(x, second, before=lambda t: conv_gelu(first, t))
        x = conv_in_row_bands(x, first, convolve=lambda t: conv_gelu(first, t))
        return conv_in_row_bands(x, second)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU.

    Args:
        dim: Input and output channels.
        expand_ratio: Hidden channels as a multiple of ``dim``.
    """

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2d_BN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2d_BN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2d_BN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block: BxCxHxW to BxCxHxW."""

        # The GELUs are fused into the convolutions before them (act1-3 hold no state).
        return conv_in_row_bands(
            x,
            self.conv2,
            lambda t: conv_gelu(self.conv1, t),
            lambda y, rows: conv_add_gelu(self.conv3, y, x[:, :, rows]),
            lambda t: conv_gelu(self.conv2, t),
        )


class PatchMerging(nn.Module):
    """Downsampling between stages: 1x1 conv, GELU, 3x3 depthwise conv, GELU, 1x1 conv.

    Args:
        dim: Input channels.
        out_dim: Output channels.
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.stride = 1 if out_dim in _STRIDE_ONE_WIDTHS else 2
        self.act = nn.GELU()
        self.conv1 = Conv2d_BN(dim, out_dim)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, self.stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Merge: BxCxHxW to Bx(out_dim)x(H/stride)x(W/stride), rounding up."""
        return conv_in_row_bands(
            x,
            self.conv2,
            lambda t: conv_gelu(self.conv1, t),
            lambda y, _: self.conv3(y),
            lambda t: conv_gelu(self.conv2, t),
        )


class ConvLayer(nn.Module):
    """First stage: MBConv blocks, then an optional PatchMerging.

    Args:
        dim: Channels.
        depth: Number of MBConv blocks.
        out_dim: Channels after the downsampling.
        expand_ratio: MBConv expansion.
        downsample: Whether to end with a PatchMerging.
    """

    def __init__(
        self, dim: int, depth: int, out_dim: int, expand_ratio: float, downsample: bool
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stage: BxCxHxW to Bx(out_dim)xH'xW'."""
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViTAttention(nn.Module):
    """Multi-head attention within windows, with a learned bias per head and offset.

    The bias depends on the absolute (row, column) offset between query and key inside
    the window; ``attention_bias_idxs`` (not saved) maps each pair to its offset.

    Args:
        dim: Token width.
        num_heads: Attention heads (``dim`` must divide evenly).
        window_size: Window side.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.scale = self.key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * self.key_dim * num_heads)
        self.proj = nn.Linear(self.key_dim * num_heads, dim)
        cells = list(itertools.product(range(window_size), range(window_size)))
        offsets: dict[tuple[int, int], int] = {}
        index = [
            offsets.setdefault((abs(r1 - r2), abs(c1 - c2)), len(offsets))
            for (r1, c1) in cells
            for (r2, c2) in cells
        ]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer(
            "attention_bias_idxs",
            torch.tensor(index, dtype=torch.long).view(len(cells), len(cells)),
            persistent=False,
        )

    def bias(self) -> torch.Tensor:
        """Attention bias for every (query, key) pair of a window, heads x N x N."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def forward(self, x: torch.Tensor, window_size: int) -> torch.Tensor:
        """Attend within windows.

        Padding cells of partial windows take part as zero tokens, like in TinyViT: after
        the layer norm they equal its bias, so their projections are computed once.

        Args:
            x: Tokens, BxHxWxC (not normalised).
            window_size: Window side (the one this module was built for).

        Returns:
            Tokens, BxHxWxC.
        """
        _, height, width, _ = x.shape
        qkv = self.qkv(self.norm(x))
        needs_pad = height % window_size or width % window_size
        pad_value = self.qkv(self.norm.bias[None])[0] if needs_pad else None
        windows, padded_hw = window_partition(qkv, window_size, pad_value)
        count, tokens, _ = windows.shape
        q, k, v = windows.view(count, tokens, self.num_heads, 3 * self.key_dim).split(
            self.key_dim, dim=3
        )
        # A mask with the batch axis (expanded, not copied) lets the fused kernel run.
        bias = self.bias().to(q.dtype).expand(count, -1, -1, -1)
        out = attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=bias,
            scale=self.scale,
        )
        out = out.transpose(1, 2).reshape(count, tokens, -1)
        out = window_unpartition(out, window_size, padded_hw, (height, width))
        return self.proj(out)


class TinyViTMlp(nn.Module):
    """Layer norm, then two linear layers with GELU between.

    Args:
        dim: Input and output width.
        hidden_dim: Hidden width.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to the last axis: ...xC to ...xC."""
        return chunked_over_tokens(
            lambda t: self.fc2(linear_gelu(self.fc1, self.norm(t))), x, self.fc1
        )


class TinyViTBlock(nn.Module):
    """Window attention, depthwise local convolution, MLP; residuals around attn and MLP.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        window_size: Attention window side.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        local_conv_size: Kernel size of the depthwise convolution.
    """

    def __init__(
        self, dim: int, num_heads: int, window_size: int, mlp_ratio: float, local_conv_size: int
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}.")
        self.window_size = window_size
        self.attn = TinyViTAttention(dim, num_heads, window_size)
        self.mlp = TinyViTMlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2d_BN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: Feature map, BxCxHxW in channels-last memory.

        Returns:
            Feature map, BxCxHxW in channels-last memory.
        """
        tokens = x.permute(0, 2, 3, 1)
        y = self.attn(tokens, self.window_size)
        tokens = y.add_(tokens) if can_work_in_place(y) else y + tokens
        tokens = self.local_conv(tokens.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.mlp(tokens)
        tokens = tokens.add_(y) if can_work_in_place(tokens) else tokens + y
        return tokens.permute(0, 3, 1, 2)


class BasicLayer(nn.Module):
    """One attention stage: TinyViT blocks, then an optional PatchMerging.

    Args:
        dim: Channels.
        depth: Number of blocks.
        num_heads: Attention heads.
        window_size: Attention window side.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        local_conv_size: Kernel of the depthwise convolutions.
        out_dim: Channels after the downsampling.
        downsample: Whether to end with a PatchMerging.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        local_conv_size: int,
        out_dim: int,
        downsample: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio, local_conv_size)
            for _ in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stage: BxCxHxW to Bx(out_dim)xH'xW' (channels-last)."""
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT image encoder with SAM's neck.

    Args:
        img_size: Side of the square model input (1024 for MobileSAM, 256 for LiteMedSAM).
        in_chans: Image channels.
        embed_dims: Channels of the four stages.
        depths: Blocks per stage.
        num_heads: Attention heads per stage (the first, convolutional, stage ignores it).
        window_sizes: Attention window side per stage.
        mlp_ratio: MLP hidden width as a multiple of the stage width.
        mbconv_expand_ratio: Expansion of the first stage's MBConv blocks.
        local_conv_size: Kernel of the depthwise convolution in attention blocks.
        patch_embed_stride: 4 for MobileSAM's two 3x3 stride-2 convs, 1 for LiteMedSAM's
            two 1x1 convs.
        classifier_head_classes: Classes of the (unused) ImageNet head kept by MobileSAM's
            checkpoint, or 0 for none.
        out_chans: Channels of the output embedding.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: tuple[int, ...] = (64, 128, 160, 320),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (2, 4, 5, 10),
        window_sizes: tuple[int, ...] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        patch_embed_stride: int = 4,
        classifier_head_classes: int = 0,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes):
            raise ValueError(
                "embed_dims, depths, num_heads and window_sizes must have the same length."
            )
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], patch_embed_stride)
        self.layers = nn.ModuleList()
        last = len(embed_dims) - 1
        for i, (dim, depth) in enumerate(zip(embed_dims, depths, strict=True)):
            out_dim = embed_dims[min(i + 1, last)]
            if i == 0:
                layer: nn.Module = ConvLayer(dim, depth, out_dim, mbconv_expand_ratio, i < last)
            else:
                layer = BasicLayer(
                    dim,
                    depth,
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    local_conv_size,
                    out_dim,
                    i < last,
                )
            self.layers.append(layer)
        self.norm_head: nn.Module | None = None
        self.head: nn.Module | None = None
        if classifier_head_classes > 0:
            self.norm_head = nn.LayerNorm(embed_dims[-1])
            self.head = nn.Linear(embed_dims[-1], classifier_head_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    @torch.no_grad()
    def fuse_(self) -> TinyViT:
        """Fold every BatchNorm into its convolution, in place, for faster inference.

        Call after the checkpoint is loaded: fused modules no longer have the checkpoint's
        ``bn`` entries, so the state dict changes. Outputs are unchanged up to rounding.

        Returns:
            This encoder.
        """
        for module in self.modules():
            if isinstance(module, Conv2d_BN):
                module.fuse_()
        return self

    def prepare_for_inference(self) -> TinyViT:
        """Switch to eval mode and fold the BatchNorms (see :meth:`fuse_`).

        Returns:
            This encoder.
        """
        return self.eval().fuse_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            x: Normalised images, Bx3xHxW with H = W = ``img_size``.

        Returns:
            Image embeddings, Bx(out_chans)x64x64 for the SAM configurations
            (H / patch_embed_stride / 4 in general).
        """
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        return self.neck(x).contiguous()
