"""Device and precision choices, made at run time from what the machine has.

torch is imported by each function, not with this module: the napari dock imports it to
list the devices, and must open without waiting for torch.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def select_device(preference: str | torch.device | None = None) -> torch.device:
    """Pick the device to run the model on.

    Args:
        preference: ``None`` or ``"auto"`` for CUDA, then Apple MPS, then CPU; or an explicit
            device such as ``"cpu"``, ``"cuda:1"``, ``"mps"``.

    Raises:
        ValueError: If an explicitly requested device is not available here.
    """
    import torch  # on first use, see the module's docstring

    if preference is None or preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as err:
        raise ValueError(
            f"Unknown device {preference!r}: use 'auto', 'cpu', 'cuda' or 'mps'."
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("Device 'cuda' was requested but no CUDA GPU is available; use 'cpu'.")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError("Device 'mps' was requested but Apple MPS is not available; use 'cpu'.")
    return device


def available_devices() -> list[str]:
    """Device names a user can choose here, best first, ending with ``"cpu"``."""
    import torch  # on first use, see the module's docstring

    names = []
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(1, torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        names.append("mps")
    return [*names, "cpu"]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX-BF16 or AVX512-BF16).

    On CPUs without it, bf16 matrix products are emulated and slower than float32.
    """
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Resolve a precision setting to the dtype the model's matrix products run in.

    Args:
        precision: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (bfloat16 on a GPU, or on a CPU
            with native bf16 support; float32 otherwise).
        device: The device the model runs on.

    Raises:
        ValueError: For an unknown precision name.
    """
    import torch  # on first use, see the module's docstring

    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
            return torch.bfloat16
        return torch.float32
    raise ValueError(f"precision must be 'float32', 'bfloat16' or 'auto', got {precision!r}.")
