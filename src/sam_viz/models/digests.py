"""Content hashes of checkpoint files, computed once per version of a file.

Hashing a checkpoint reads all of it, so a hash is remembered under the file's identity on
disk (resolved path, size, modification time in nanoseconds, inode): in memory for the
process, and in a small JSON index (:data:`INDEX_NAME`) in the checkpoint cache directory for
later runs. A file rewritten in place gets a new identity and is hashed again. The index is
a cache: an unreadable one is ignored, an unwritable one is not written.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Protocol

from sam_viz.files import atomic_path

INDEX_NAME = "digests.json"
INDEX_VERSION = 1
CHUNK_SIZE = 1 << 20

# (algorithm, resolved path, size, mtime_ns, inode) -> hex digest. A process-wide memo of
# facts about files, not state anyone changes: a changed file has another key.
_memo: dict[tuple[str, str, int, int, int], str] = {}
_lock = threading.Lock()


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def hash_file(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks.

    Args:
        path: The file.
        algorithm: ``"xxh128"`` (needs the ``xxhash`` package) or a :mod:`hashlib` name.

    Raises:
        OSError: If the file cannot be read.
    """
    digest: _Hasher
    if algorithm == "xxh128":
        import xxhash

        digest = xxhash.xxh128()
    else:
        digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(
    path: str | os.PathLike[str], algorithm: str = "sha256", *, index_dir: Path | None
) -> str:
    """Hex digest of a file, hashed only if this version of it was never hashed before.

    Args:
        path: The file.
        algorithm: See :func:`hash_file`.
        index_dir: Directory of the JSON index that remembers digests across runs (the
            checkpoint cache directory); None remembers them for this process only.

    Raises:
        OSError: If the file cannot be read.
    """
    path = Path(path).resolve()
    identity = _identity(path)
    key = (algorithm, str(path), *identity)
    with _lock:
        known = _memo.get(key)
    if known is None and index_dir is not None:
        entry = _read_index(index_dir).get(_index_key(algorithm, path))
        if entry is not None and _entry_matches(entry, identity):
            known = str(entry["digest"])
            with _lock:
                _memo[key] = known
    if known is not None:
        return known
    digest = hash_file(path, algorithm)
    # A file rewritten while it was read has a new identity: its digest is not kept.
    if _identity(path) == identity:
        remember(path, algorithm, digest, index_dir=index_dir, identity=identity)
    return digest


def remember(
    path: str | os.PathLike[str],
    algorithm: str,
    digest: str,
    *,
    index_dir: Path | None,
    identity: tuple[int, int, int] | None = None,
) -> None:
    """Record the digest of a file known otherwise (a download whose hash was just checked).

    Args:
        path: The file, as it is now on disk.
        algorithm: The digest's algorithm (see :func:`hash_file`).
        digest: Its hex digest.
        index_dir: See :func:`file_digest`.
        identity: The file's (size, mtime_ns, inode) when it was hashed; read now if None.
    """
    path = Path(path).resolve()
    if identity is None:
        try:
            identity = _identity(path)
        except OSError:
            return
    with _lock:
        _memo[(algorithm, str(path), *identity)] = digest
    if index_dir is not None:
        _write_index_entry(index_dir, algorithm, path, identity, digest)


def _identity(path: Path) -> tuple[int, int, int]:
    """(size, mtime_ns, inode): what changes when a file is rewritten, copied over or replaced."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _index_key(algorithm: str, path: Path) -> str:
    return f"{algorithm}:{path}"


def _entry_matches(entry: dict[str, object], identity: tuple[int, int, int]) -> bool:
    """Whether an index entry holds a digest of the file version ``identity`` names."""
    recorded = (entry.get("size"), entry.get("mtime_ns"), entry.get("inode"))
    return recorded == identity and isinstance(entry.get("digest"), str)


def _read_index(index_dir: Path) -> dict[str, dict[str, object]]:
    """The index's entries; empty if it is missing, unreadable or of another format."""
    try:
        data = json.loads((index_dir / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
        return {}
    files = data.get("files")
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(v, dict)}


def _write_index_entry(
    index_dir: Path, algorithm: str, path: Path, identity: tuple[int, int, int], digest: str
) -> None:
    """Add an entry to the index, dropping those of files gone or changed; errors are ignored."""
    entries = _read_index(index_dir)
    size, mtime_ns, inode = identity
    entries[_index_key(algorithm, path)] = {
        "size": size,
        "mtime_ns": mtime_ns,
        "inode": inode,
        "digest": digest,
    }
    kept = {k: v for k, v in entries.items() if _entry_is_current(k, v)}
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(index_dir / INDEX_NAME) as partial:
            partial.write_text(
                json.dumps({"version": INDEX_VERSION, "files": kept}, indent=1), encoding="utf-8"
            )
    except OSError:
        pass  # a read-only cache only costs hashing again next run


def _entry_is_current(key: str, entry: dict[str, object]) -> bool:
    """Whether an index entry still describes the file it names."""
    _, _, path_text = key.partition(":")
    try:
        identity = _identity(Path(path_text))
    except OSError:
        return False
    return _entry_matches(entry, identity)
