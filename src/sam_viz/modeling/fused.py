"""Convolutions and linear layers with the GELU after them fused into one oneDNN call.

On the CPU, an exact GELU over a large activation is memory-bound: it reads and writes
every element once more after the convolution or matrix product has written it. oneDNN
applies the GELU as a post-op while the output is still in registers. These are the
operators PyTorch's own CPU compiler (Inductor, with freezing) emits for the same
pattern; calling them directly gives the gain without compiling.

Every function falls back to the plain operators when the fused ones cannot run: on other
devices and dtypes, with gradients (training), while the model is traced or exported, or
where this PyTorch build lacks them or disagrees with the plain path.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from sam_viz.modeling.common import Conv2d_BN, tracing

# Largest difference allowed between the fused and plain results of the start-up check
# (float32 rounding of a different summation order).
_CHECK_TOLERANCE = 1e-4


def conv_gelu(conv: Conv2d_BN, x: torch.Tensor) -> torch.Tensor:
    """``gelu(conv(x))``, fused where possible.

    Args:
        conv: Convolution with its BatchNorm (folded or not).
        x: Feature map, BxCxHxW.

    Returns:
        Feature map, BxC'xH'xW'.
    """
    if not _fusable(x, conv):
        return F.gelu(conv(x))
    weight, bias = conv.folded_weight_and_bias()
    c = conv.c
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, c.padding, c.stride, c.dilation, c.groups, "gelu", [None], "none"
    )


def conv_add_gelu(conv: Conv2d_BN, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``gelu(conv(x) + other)``, fused where possible (a residual block's end).

    Args:
        conv: Convolution with its BatchNorm (folded or not).
        x: Feature map, BxCxHxW.
        other: Tensor of the convolution's output shape.

    Returns:
        Feature map, BxC'xH'xW'.
    """
    if not _fusable(x, conv) or other.dtype != x.dtype:
        return F.gelu(conv(x) + other)
    weight, bias = conv.folded_weight_and_bias()
    c = conv.c
    # oneDNN fuses the addition; a GELU after a binary post-op it refuses, so that one
    # runs in place on the fresh output.
    y = torch.ops.mkldnn._convolution_pointwise.binary(
        x,
        other.contiguous(memory_format=torch.channels_last),
        weight,
        bias,
        c.padding,
        c.stride,
        c.dilation,
        c.groups,
        "add",
        None,
        None,
        [],
        None,
    )
    return torch.ops.aten.gelu_(y)


def linear_gelu(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``gelu(linear(x))``, fused where possible.

    Args:
        linear: Linear layer.
        x: Tokens, ...xC_in.

    Returns:
        Tokens, ...xC_out.
    """
    # Only a plain float Linear: quantised or otherwise swapped layers keep their own path.
    if type(linear) is not nn.Linear or not _fusable(x, linear) or not x.is_contiguous():
        return F.gelu(linear(x))
    return torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, "gelu", [None], "none")


def _fusable(x: torch.Tensor, module: nn.Module) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not tracing()
        and not module.training
        and fusion_available()
    )


@functools.cache
def fusion_available() -> bool:
    """Whether this PyTorch build has the fused operators and they agree with the plain
    ones (checked once per process on small random inputs)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(1, 8, 6, 6, generator=generator).contiguous(
            memory_format=torch.channels_last
        )
        tokens = x.permute(0, 2, 3, 1)
        conv = Conv2d_BN(8, 8, 3, 1, 1).eval()
        linear = nn.Linear(8, 16).eval()
        with torch.no_grad():
            for p in (*conv.parameters(), *linear.parameters()):
                p.copy_(torch.randn(p.shape, generator=generator))
            conv.fuse_()
            weight, bias = conv.folded_weight_and_bias()
            c = conv.c
            pairs = (
                (
                    F.gelu(conv(x)),
                    torch.ops.mkldnn._convolution_pointwise(
                        x, weight, bias, c.padding, c.stride, c.dilation, 1, "gelu", [None], "none"
                    ),
                ),
                (
                    conv(x) + x,
                    torch.ops.mkldnn._convolution_pointwise.binary(
                        x,
                        x,
                        weight,
                        bias,
                        c.padding,
                        c.stride,
                        c.dilation,
                        1,
                        "add",
                        None,
                        None,
                        [],
                        None,
                    ),
                ),
                (
                    F.gelu(linear(tokens)),
                    torch.ops.mkldnn._linear_pointwise(
                        tokens, linear.weight, linear.bias, "gelu", [None], "none"
                    ),
                ),
            )
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return all(
        plain.shape == fused.shape and (plain - fused).abs().max().item() <= _CHECK_TOLERANCE
        for plain, fused in pairs
    )
