"""Small building blocks shared by the image encoders and the mask decoder."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Upper bounds, in elements, for the temporaries of chunked computations. Large fresh
# buffers are mapped from the OS on every call, and first-touching their pages can cost
# more than the arithmetic; buffers up to a few tens of MiB are recycled by the C allocator
# and mostly stay in the last-level cache. Chunks are not made smaller than needed: every
# extra operator is a thread synchronisation, which is slow when other processes share
# the cores.
CHUNK_ELEMENTS = 2**22  # MLP hidden activations (16 MiB in float32)
MASK_CHUNK_ELEMENTS = 2**24  # additive attention masks (one head of a ViT global block)
BAND_ELEMENTS = 2**22  # widest intermediate of a band of convolution rows

RowFn = Callable[[torch.Tensor, slice], torch.Tensor]


def tracing() -> bool:
    """Whether the model is being traced, compiled or exported (to ONNX or OpenVINO).

    Graph capture then takes the plain operators: the eager-only shortcuts (row bands,
    token chunks, in-place updates, oneDNN fused operators) would be baked in as Python
    loops and views that exporters cannot always follow.
    """
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def can_work_in_place(*tensors: torch.Tensor) -> bool:
    """Whether in-place updates of these tensors cannot break autograd.

    Args:
        *tensors: Tensors about to be modified in place.

    Returns:
        True when gradients are off or none of the tensors takes part in autograd, and the
        model is not being traced.
    """
    if tracing():
        return False
    if not torch.is_grad_enabled():
        return True
    return not any(t.requires_grad for t in tensors)


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channel axis of a BxCxHxW feature map.

    Args:
        num_channels: Number of channels C.
        eps: Added to the variance for numerical stability.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each pixel's channel vector.

        Args:
            x: Feature map, BxCxHxW (any memory format; channels-last is fastest).

        Returns:
            The normalised map, BxCxHxW, in channels-last memory format.
        """
        channels = x.shape[1]
        y = F.layer_norm(x.permute(0, 2, 3, 1), (channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them (transformer feed-forward).

    Args:
        embedding_dim: Input and output width.
        mlp_dim: Hidden width.
        act: Activation class, instantiated once.
    """

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to the last axis.

        Args:
            x: Tokens, ...xC with C = ``embedding_dim``.

        Returns:
            Tokens of the same shape.
        """
        return chunked_over_tokens(lambda t: self.lin2(self.act(self.lin1(t))), x, self.lin1)


def chunked_over_tokens(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, widest: nn.Linear
) -> torch.Tensor:
    """Apply a token-wise function to slices of the tokens to bound temporary sizes.

    On the CPU without gradients, large inputs are processed in slices of whole tokens whose
    hidden activations fit in :data:`CHUNK_ELEMENTS`; results are written into one output.

    Args:
        fn: Function mapping NxC_in tokens to NxC_out tokens, token by token.
        x: Tokens, ...xC_in.
        widest: The linear layer with the widest output inside ``fn`` (sets the slice size).

    Returns:
        ``fn`` applied to every token, ...xC_out.
    """
    flat = x.reshape(-1, x.shape[-1])
    tokens = flat.shape[0]
    per_chunk = max(1, CHUNK_ELEMENTS // widest.out_features)
    # tracing() first: comparing a symbolic batch size would add a guard to the graph.
    if tracing() or tokens <= per_chunk or torch.is_grad_enabled() or x.device.type != "cpu":
        return fn(x)
    chunks = -(-tokens // per_chunk)
    per_chunk = -(-tokens // chunks)
    first = fn(flat[:per_chunk])
    out = first.new_empty((tokens, first.shape[-1]))
    out[:per_chunk] = first
    for start in range(per_chunk, tokens, per_chunk):
        out[start : start + per_chunk] = fn(flat[start : start + per_chunk])
    return out.view(*x.shape[:-1], first.shape[-1])


def _window_grid(windows: torch.Tensor, batch: int, n_h: int, n_w: int, size: int) -> torch.Tensor:
    """View windows (B*nH*nW)x(size*size)xC as a B x nH x size x nW x size x C pixel grid."""
    channels = windows.shape[-1]
    return windows.view(batch, n_h, n_w, size, size, channels).transpose(2, 3)


def _grid_blocks(
    height: int, width: int, size: int
) -> list[tuple[tuple[slice | int, ...], tuple[slice, slice], tuple[int, ...] | None]]:
    """Rectangles of a padded window grid that hold image pixels.

    Returns (index into the B x nH x size x nW x size x C grid, (rows, cols) of the image,
    shape to split the image block into, or None when it needs no reshaping) for the full
    windows, the partial right column, the partial bottom row and the corner.
    """
    full_h, full_w = height // size, width // size
    rest_h, rest_w = height - full_h * size, width - full_w * size
    rows, cols = slice(0, full_h * size), slice(0, full_w * size)
    last_rows, last_cols = slice(full_h * size, height), slice(full_w * size, width)
    blocks = []
    if full_h and full_w:
        blocks.append(
            (
                (slice(None), slice(0, full_h), slice(None), slice(0, full_w)),
                (rows, cols),
                (full_h, size, full_w, size),
            )
        )
    if full_h and rest_w:
        blocks.append(
            (
                (slice(None), slice(0, full_h), slice(None), full_w, slice(0, rest_w)),
                (rows, last_cols),
                (full_h, size, rest_w),
            )
        )
    if rest_h and full_w:
        blocks.append(
            (
                (slice(None), full_h, slice(0, rest_h), slice(0, full_w)),
                (last_rows, cols),
                (rest_h, full_w, size),
            )
        )
    if rest_h and rest_w:
        blocks.append(
            (
                (slice(None), full_h, slice(0, rest_h), full_w, slice(0, rest_w)),
                (last_rows, last_cols),
                None,
            )
        )
    return blocks


def _traced_window_partition(
    x: torch.Tensor, size: int, pad_value: torch.Tensor | None
) -> torch.Tensor:
    """:func:`window_partition` by padding, reshapes and one copy (for exporters)."""
    batch, height, width, channels = x.shape
    pad_h, pad_w = -height % size, -width % size
    if pad_h or pad_w:
        padded = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        if pad_value is not None:
            inside = F.pad(x.new_ones((1, height, width, 1)), (0, 0, 0, pad_w, 0, pad_h))
            padded = torch.where(inside > 0, padded, pad_value.to(x.dtype))
        x = padded
    n_h, n_w = (height + pad_h) // size, (width + pad_w) // size
    grid = x.view(batch, n_h, size, n_w, size, channels).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(batch * n_h * n_w, size * size, channels)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, spelled out in plain operators when tracing.

    Exporters decompose the fused kernel into operators whose outputs have other strides
    than the kernel's, which breaks views recorded after it; the plain form has none.

    Args:
        q: Queries, ...xNxc.
        k: Keys, ...xMxc.
        v: Values, ...xMxc'.
        attn_mask: Additive mask broadcastable to ...xNxM, or None.
        scale: Logit scale; ``c**-0.5`` if None.

    Returns:
        Attention output, ...xNxc'.
    """
    if not tracing():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q * scale) @ k.transpose(-2, -1)
    if attn_mask is not None:
        logits = logits + attn_mask
    return logits.softmax(dim=-1) @ v


def window_partition(
    x: torch.Tensor, window_size: int, pad_value: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut a token grid into non-overlapping square windows, padding bottom and right.

    The windows are written in one pass (no padded copy of the grid is made first).

    Args:
        x: Tokens on a grid, BxHxWxC.
        window_size: Window side length.
        pad_value: Vector (C,) written into padded positions; zeros if None.

    Returns:
        Windows, (B*nH*nW)x(window_size*window_size)xC in row-major window order, and the
        padded grid size (Hp, Wp).
    """
    batch, height, width, channels = x.shape
    size = window_size
    n_h, n_w = -(-height // size), -(-width // size)
    if tracing():
        return _traced_window_partition(x, size, pad_value), (n_h * size, n_w * size)
    windows = x.new_empty((batch * n_h * n_w, size * size, channels))
    grid = _window_grid(windows, batch, n_h, n_w, size)
    for index, (rows, cols), split in _grid_blocks(height, width, size):
        block = x[:, rows, cols]
        grid[index] = block if split is None else block.reshape(batch, *split, channels)
    fill = 0.0 if pad_value is None else pad_value.to(x.dtype)
    if height % size:
        grid[:, -1, height % size :] = fill
    if width % size:
        grid[:, :, :, -1, width % size :] = fill
    return windows, (n_h * size, n_w * size)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Reassemble windows from :func:`window_partition` into a grid and drop the padding.

    Args:
        windows: (B*nH*nW)x(window_size*window_size)xC.
        window_size: Window side length.
        padded_hw: Padded grid size (Hp, Wp).
        hw: Original grid size (H, W).

    Returns:
        Tokens, BxHxWxC, contiguous.
    """
    height, width = hw
    size = window_size
    n_h, n_w = padded_hw[0] // size, padded_hw[1] // size
    batch = windows.shape[0] // (n_h * n_w)
    channels = windows.shape[-1]
    if tracing():
        grid = windows.view(batch, n_h, n_w, size, size, channels).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(batch, n_h * size, n_w * size, channels)[:, :height, :width]
    grid = _window_grid(windows, batch, n_h, n_w, size)
    x = windows.new_empty((batch, height, width, channels))
    for index, (rows, cols), split in _grid_blocks(height, width, size):
        target = x[:, rows, cols]
        if split is not None:
            target = target.view(batch, *split, channels)
        target.copy_(grid[index])
    return x


class Conv2d_BN(nn.Sequential):  # the checkpoints' class name
    """Bias-free convolution followed by BatchNorm (children ``c`` and ``bn``).

    In eval mode the BatchNorm is applied folded into the convolution; :meth:`fuse_` makes
    that permanent (the ``bn`` child becomes an identity and ``c`` gains a bias), which
    changes the state dict, so call it only after the checkpoint is loaded.

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
        kernel_size: Square kernel size.
        stride: Convolution stride.
        padding: Zero padding on each side.
        groups: Convolution groups (``in_chans`` for a depthwise convolution).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(
            in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False
        )
        self.bn: nn.Module = nn.BatchNorm2d(out_chans)

    @property
    def is_fused(self) -> bool:
        """Whether :meth:`fuse_` folded the BatchNorm into the convolution."""
        return not isinstance(self.bn, nn.BatchNorm2d)

    def folded_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Convolution weight and bias equal to conv followed by eval-mode BatchNorm.

        Returns:
            Weight (out, in/groups, k, k) and bias (out,).
        """
        if self.is_fused:
            return self.c.weight, self.c.bias
        bn = self.bn
        factor = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.c.weight * factor[:, None, None, None]
        bias = bn.bias - bn.running_mean * factor
        return weight, bias

    @torch.no_grad()
    def fuse_(self) -> Conv2d_BN:
        """Fold the BatchNorm into the convolution in place (for inference only).

        Returns:
            This module.
        """
        if self.is_fused:
            return self
        weight, bias = self.folded_weight_and_bias()
        self.c.weight.copy_(weight)
        self.c.bias = nn.Parameter(bias.detach().clone(), requires_grad=self.c.weight.requires_grad)
        self.bn = nn.Identity()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve and normalise.

        Args:
            x: Feature map, BxCxHxW.

        Returns:
            Feature map, Bx(out_chans)xH'xW' (channels-last when the input is).
        """
        if self.training and not self.is_fused:
            return self.bn(self.c(x))
        weight, bias = self.folded_weight_and_bias()
        conv = self.c
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def conv_in_row_bands(
    x: torch.Tensor,
    conv: Conv2d_BN,
    before: Callable[[torch.Tensor], torch.Tensor] | None = None,
    after: RowFn | None = None,
    convolve: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Compute ``after(conv(before(x)))`` one band of output rows at a time.

    ``before`` must act on each pixel independently (1x1 convolutions, activations); the
    input rows each band needs, including the convolution's halo, go through it. On the CPU
    without gradients the bands are sized by :data:`BAND_ELEMENTS`; the result is identical.

    Args:
        x: Feature map, BxCxHxW (channels-last memory is best).
        conv: Convolution with square kernel, stride and padding.
        before: Pixel-wise function applied before ``conv``; identity if None.
        after: Function of (conv output rows, slice of those output rows); identity if None.
        convolve: What computes ``conv`` on a band (for example ``conv`` fused with the
            activation after it); ``conv`` itself if None.

    Returns:
        The result for all rows, BxC'xH'xW', channels-last.
    """
    before = before or (lambda t: t)
    after = after or (lambda t, _: t)
    convolve = convolve or conv
    kernel, stride, pad = conv.c.kernel_size[0], conv.c.stride[0], conv.c.padding[0]
    batch, _, height, width = x.shape
    out_h = (height + 2 * pad - kernel) // stride + 1
    if tracing():  # before any comparison of the (possibly symbolic) batch size
        return after(convolve(before(x)), slice(0, out_h))
    # Per output row, across the batch: bands of a batch of windows stay as small as one's.
    widest = batch * max(conv.c.in_channels, conv.c.out_channels) * width * stride
    rows = max(1, BAND_ELEMENTS // widest)
    if torch.is_grad_enabled() or x.device.type != "cpu" or out_h <= rows or tracing():
        return after(convolve(before(x)), slice(0, out_h))
    context = -(-pad // stride)  # output rows computed before a band to cover its halo
    out: torch.Tensor | None = None
    for o0 in range(0, out_h, rows):
        o1 = min(o0 + rows, out_h)
        first = max(o0 - context, 0)
        band = x[:, :, first * stride : min((o1 - 1) * stride - pad + kernel, height)]
        y = convolve(before(band))[:, :, o0 - first : o1 - first]
        y = after(y, slice(o0, o1))
        if out is None:
            out = torch.empty(
                (batch, y.shape[1], out_h, y.shape[3]),
                dtype=y.dtype,
                device=y.device,
                memory_format=torch.channels_last,
            )
        out[:, :, o0:o1] = y
    assert out is not None
    return out
