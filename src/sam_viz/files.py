"""Writing files so that a crash, a kill or a full disk never leaves a half-written one.

Every output and cache file is written to a hidden partial file beside its final name and
renamed into place only when complete (``os.replace`` is atomic within a directory), so a
reader sees the old file or the new one, never a mix. A partial file's name carries its
writer's host and process id: two writers never share one, and a partial file left by a
killed writer can be recognised and removed by the next run (:func:`remove_stale_partials`).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
# A partial file this old is stale whoever wrote it (a writer on another host of a shared disk).
STALE_AFTER_S = 24 * 3600
CACHE_ENV = "SAM_VIZ_CACHE_DIR"
SHARED_STORE = "embeddings.zarr"
# Metadata files that make a folder a zarr group (zarr v3, zarr v2).
ZARR_GROUP_FILES = ("zarr.json", ".zgroup")


def partial_path(path: str | os.PathLike[str]) -> Path:
    """A hidden, unique name beside ``path`` for writing it (``.NAME.HOST-PID-RANDOM.partial``)."""
    path = Path(path)
    writer = f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
    return path.with_name(f".{path.name}.{writer}{PARTIAL_SUFFIX}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a partial path to write ``path`` to; it replaces ``path`` when the block ends.

    If the block raises (a full disk, a cancel, SIGTERM turned into ``SystemExit``), the
    partial file is removed and ``path`` keeps its old content, or stays absent.
    """
    path = Path(path)
    partial = partial_path(path)
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a partial directory to fill; it replaces the directory ``path`` when the block ends.

    The output is all new or all old: files are written into the partial directory, which
    takes the place of ``path`` by renames once complete (an old ``path`` is moved aside
    first, then removed). If the block raises, the partial directory is removed.
    """
    path = Path(path)
    partial = partial_path(path)
    partial.mkdir()
    try:
        yield partial
        replace_directory(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def remove_stale_partials(
    directory: str | os.PathLike[str], *, recursive: bool = False, name: str | None = None
) -> int:
    """Remove partial files and directories that killed writers left in ``directory``
    (only those of the file ``name``, if given).

    A partial is stale when its writer ran on this host and is gone, or when it is older than
    a day. Returns how many were removed; a directory that cannot be written is left alone.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    stem = f".{name}.*" if name is not None else ".*"
    pattern = f"**/{stem}{PARTIAL_SUFFIX}" if recursive else f"{stem}{PARTIAL_SUFFIX}"
    removed = 0
    for candidate in directory.glob(pattern):
        if not _is_stale(candidate):
            continue
        try:
            if candidate.is_dir():
                shutil.rmtree(candidate)
            else:
                candidate.unlink()
        except OSError:
            continue
        removed += 1
    return removed


def _is_stale(partial: Path) -> bool:
    writer = partial.name[: -len(PARTIAL_SUFFIX)].rsplit(".", 1)[-1]
    host, _, pid_text = writer.rpartition("-")[0].rpartition("-")
    try:
        age = time.time() - partial.lstat().st_mtime
    except OSError:
        return False
    if age > STALE_AFTER_S:
        return True
    if host != _host() or not pid_text.isdigit():
        return False
    return not _process_alive(int(pid_text))


def _host() -> str:
    return socket.gethostname().replace(".", "_")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def cache_dir() -> Path:
    """Directory where downloaded checkpoints (and the shared embedding store) are kept.

    ``$SAM_VIZ_CACHE_DIR`` overrides the platform's user cache directory.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("sam_viz")) / "checkpoints"


def shared_store() -> Path:
    """The zarr store of window embeddings the command line (``--shared-cache``) and the
    napari dock ("Keep embeddings on disk") share, in :func:`cache_dir`."""
    return cache_dir() / SHARED_STORE


def writable_directory(directory: str | os.PathLike[str]) -> bool:
    """Whether files can be created in ``directory`` (created if missing), by trying it."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = partial_path(directory / "probe")
        probe.touch()
        probe.unlink()
    except OSError:
        return False
    return True


def strict_json(value: object, **dumps_options: object) -> str:
    """``value`` as strict JSON: NaN and infinite floats become null, which every parser reads
    (``json.dumps`` would write bare ``NaN``, which is not JSON)."""
    return json.dumps(_finite(value), allow_nan=False, **dumps_options)  # type: ignore[arg-type]


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def replace_directory(source: Path, target: Path) -> None:
    """Rename the folder ``source`` to ``target``; an old ``target`` is first renamed aside
    (to a hidden partial name), then removed, so ``target`` is always whole."""
    if target.exists():
        old = partial_path(target)
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)
