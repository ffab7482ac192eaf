"""Int8 image encoders: the linear layers' weights stored and multiplied as int8.

Dynamic quantisation (PyTorch's ``quantize_dynamic``) keeps activations in float32 and
quantises each input on the fly, so no calibration data is needed. It is an opt-in:
its masks drift further from float32 than bfloat16's do (``benchmarks/eval_precision.py``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_linears(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.Linear`` replaced by a dynamically quantised int8 one.

    Args:
        module: A float32 module in eval mode, on the CPU.

    Returns:
        The quantised module (a new object; ``module`` is left as it was).

    Raises:
        ValueError: If the module is not on the CPU (PyTorch quantises for the CPU only).
    """
    devices = {p.device.type for p in module.parameters()}
    if devices - {"cpu"}:
        raise ValueError(
            "int8 runs on the CPU only: pass device='cpu', or use precision='bfloat16' on a GPU."
        )
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the API still works here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings(
            "ignore", message=".*quantized tensor creation", category=UserWarning
        )
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)
