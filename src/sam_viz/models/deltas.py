"""Weights shipped as a difference from a base checkpoint.

Click training changes a few small tensors of LiteMedSAM. Rather than a second 39 MB file,
the package ships those tensors' differences from the base checkpoint in float16 (the
differences are small, so half precision loses nothing that matters) with the base file's
SHA-256, so a delta is never added to the wrong checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import cast

import torch

from sam_viz.files import atomic_path

DELTA_FORMAT = "sam_viz.delta/1"


def compute_deltas(
    state: Mapping[str, torch.Tensor],
    base_state: Mapping[str, torch.Tensor],
    names: Iterable[str],
) -> dict[str, torch.Tensor]:
    """The float16 differences of the named tensors from the base; unchanged ones left out.

    Args:
        state: The trained model's state dict.
        base_state: The base checkpoint's state dict (the tensors the deltas are added to).
        names: The tensors that may have changed.
    """
    deltas = {}
    for name in names:
        diff = state[name].detach().float().cpu() - base_state[name].float()
        if diff.abs().max() > 0:
            deltas[name] = diff.half()
    return deltas


def save_delta(
    deltas: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    base_sha256: str,
    config: Mapping[str, object],
    notes: Mapping[str, object] | None = None,
) -> Path:
    """Write weights differences (from :func:`compute_deltas`) with what they belong to.

    Args:
        deltas: float16 differences from the base checkpoint, by tensor name.
        path: Output file (``.pt``), written to a partial file and renamed when complete.
        base_sha256: SHA-256 of the base checkpoint file (checked when the delta is applied).
        config: The training settings (plain values, stored for the record).
        notes: Further plain values to store (timings, figures).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial, partial.open("wb") as handle:
        torch.save(
            {
                "format": DELTA_FORMAT,
                "base_sha256": base_sha256,
                "deltas": dict(deltas),
                "config": dict(config),
                "notes": dict(notes or {}),
            },
            handle,
        )
    return path


def read_delta(path: str | Path) -> dict[str, object]:
    """Read a delta file written by :func:`save_delta` (plain values only, ``weights_only``).

    Raises:
        ValueError: If the file cannot be read or is not a sam_viz delta.
    """
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise ValueError(
            f"{path} could not be read as a weights delta ({type(err).__name__})."
        ) from err
    if not isinstance(content, dict) or content.get("format") != DELTA_FORMAT:
        raise ValueError(f"{path} is not a sam_viz weights delta ({DELTA_FORMAT}).")
    return content


def apply_delta(
    base_state: Mapping[str, torch.Tensor], delta: Mapping[str, object], *, base_sha256: str | None
) -> dict[str, torch.Tensor]:
    """The base state dict with the delta's differences added (a new dict; base unchanged).

    Raises:
        ValueError: If the delta was made for another base checkpoint, or names a tensor
            the base lacks or has in another shape.
    """
    expected = delta["base_sha256"]
    if base_sha256 is not None and expected != base_sha256:
        raise ValueError(
            f"This weights delta was trained on the checkpoint with SHA-256 {expected}, "
            f"not on {base_sha256}."
        )
    state = dict(base_state)
    deltas = cast(Mapping[str, torch.Tensor], delta["deltas"])
    for name, diff in deltas.items():
        if name not in state or state[name].shape != diff.shape:
            raise ValueError(
                f"The weights delta changes {name!r}, which the base checkpoint lacks or has "
                "in another shape."
            )
        state[name] = (state[name].float() + diff.float()).to(state[name].dtype)
    return state
