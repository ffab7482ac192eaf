"""Image embeddings and their cache (in memory, optionally on disk).

An embedding is keyed by the image's content hash and the model it came from, so the napari
plugin and the Jupyter widget showing the same image through one predictor share it, and a
file on disk is never used for another image or model.

On disk, a cache directory named ``*.zarr`` is a zarr store: one group per model, one per
image, and one array per window embedding, named by its window and zoom
(``MODEL/IMAGE/w{x0}-{y0}-{x1}-{y1}-s{side}.zarr``, its values in the array's attributes).
:func:`sam_viz.files.shared_store` is the one the command line (``--shared-cache``) and the
napari dock ("Keep embeddings on disk") share, so embedding once serves both. Any other
directory holds one ``.pt`` file per embedding.

A file on disk never gives a wrong answer: it holds a SHA-256 digest of its features and
frame, checked on reading, and is written whole or not at all (:mod:`sam_viz.files`). A
damaged file is recomputed and replaced; a cache directory that cannot be written (a shared,
precomputed one) is still read.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sam_viz.files import (
    ZARR_GROUP_FILES,
    atomic_directory,
    atomic_path,
    remove_stale_partials,
)
from sam_viz.predictor.transforms import ImageFrame

# 2: the frame's zoom is stored (windows of large images); 3: a digest of the contents.
CACHE_FORMAT_VERSION = 3
_KEYS = (
    "version",
    "digest",
    "features",
    "original_size",
    "image_size",
    "zoom",
    "image_key",
    "model_key",
)


ZARR_SUFFIX = ".zarr"


class StaleEmbeddingError(ValueError):
    """An intact embedding file of another image, model or format version."""


@dataclass(frozen=True)
class ImageEmbedding:
    """The image encoder's output for one image.

    Attributes:
        features: (1, 256, G, G) float32 image embedding (G = 64 for released models).
        frame: Geometry between the original image and the model input.
        image_key: Content hash of the image and its contrast settings; for a window of an
            image, that of the whole image plus the window and its zoom.
        model_key: Identifies the model weights that produced it.
    """

    features: torch.Tensor
    frame: ImageFrame
    image_key: str
    model_key: str

    def save(self, path: str | Path) -> Path:
        """Write the embedding to ``path``: a ``.pt`` file holding tensors and plain values,
        or for a ``.zarr`` path a zarr array with the values as its attributes.

        The file appears whole or not at all, so concurrent writers and readers are safe.

        Raises:
            OSError: If the file cannot be written (``path`` is then unchanged).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        features = self.features.detach().to("cpu", torch.float32).contiguous()
        data = {
            "version": CACHE_FORMAT_VERSION,
            "features": features,
            "original_size": [int(v) for v in self.frame.original_size],
            "image_size": int(self.frame.image_size),
            "zoom": None if self.frame.zoom is None else float(self.frame.zoom),
            "image_key": self.image_key,
            "model_key": self.model_key,
        }
        data["digest"] = _digest(data)
        if path.suffix == ZARR_SUFFIX:
            _save_zarr(path, data)
            return path
        with atomic_path(path) as partial, partial.open("wb") as file:
            # A Python file object, so a failed write raises OSError (torch's own raises
            # RuntimeError).
            torch.save(data, file)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        image_key: str | None = None,
        model_key: str | None = None,
        expected_shape: tuple[int, ...] | None = None,
    ) -> ImageEmbedding:
        """Read an embedding saved by :meth:`save`, verifying it.

        Args:
            path: The file.
            image_key: The image it must be of, if given.
            model_key: The model that must have made it, if given.
            expected_shape: The features' shape, (1, C, G, G), if known (see
                :attr:`sam_viz.predictor.Predictor.embedding_shape`).

        Raises:
            StaleEmbeddingError: (a ValueError) If the file is intact but of another image,
                model or format version: compute the embedding again.
            ValueError: If the file is damaged (unreadable, a digest mismatch, missing or
                mistyped values, features that are not a finite (1, C, H, W) float32 tensor)
                or its features are not of ``expected_shape``.
        """
        path = Path(path)
        try:
            if path.suffix == ZARR_SUFFIX:
                data = _load_zarr(path)
            else:
                data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{path} is not a readable sam_viz embedding file: {err}") from err
        if not isinstance(data, dict) or "version" not in data:
            raise ValueError(
                f"{path} is not a sam_viz embedding file (version {CACHE_FORMAT_VERSION})."
            )
        if data["version"] != CACHE_FORMAT_VERSION:
            raise StaleEmbeddingError(
                f"{path} is a sam_viz embedding file of format version {data['version']!r}, "
                f"not {CACHE_FORMAT_VERSION}; compute it again."
            )
        _check_values(path, data)
        if data["digest"] != _digest(data):
            raise ValueError(
                f"{path} is damaged: its contents do not match their digest; compute it again."
            )
        features = data["features"]
        if features.ndim != 4 or features.shape[0] != 1:
            raise ValueError(
                f"{path} holds features of shape {tuple(features.shape)}, not (1, C, H, W); "
                "compute it again."
            )
        if expected_shape is not None and tuple(features.shape) != tuple(expected_shape):
            raise ValueError(
                f"{path} holds features of shape {tuple(features.shape)}, not the "
                f"{tuple(expected_shape)} this model makes; compute it again."
            )
        if not bool(torch.isfinite(features).all()):
            raise ValueError(f"{path} holds non-finite features (NaN or inf); compute it again.")
        if image_key is not None and data["image_key"] != image_key:
            raise StaleEmbeddingError(
                f"{path} holds the embedding of another image; compute it again."
            )
        if model_key is not None and data["model_key"] != model_key:
            raise StaleEmbeddingError(
                f"{path} was made by model {data['model_key']!r}, not {model_key!r}; "
                "compute it again."
            )
        height, width = data["original_size"]
        frame = ImageFrame((height, width), data["image_size"], data["zoom"])
        return cls(features, frame, data["image_key"], data["model_key"])


def _save_zarr(path: Path, data: dict) -> None:
    """One embedding as a zarr array (one chunk) with its values as attributes, appearing
    whole or not at all."""
    import zarr

    features = data["features"].numpy()
    with atomic_directory(path) as partial:
        array = zarr.create_array(
            store=str(partial), shape=features.shape, chunks=features.shape, dtype="<f4"
        )
        array[...] = features
        array.attrs.update({k: data[k] for k in _KEYS if k != "features"})


def _load_zarr(path: Path) -> dict:
    import zarr

    array = zarr.open_array(str(path), mode="r")
    data = dict(array.attrs.asdict())
    data["features"] = torch.from_numpy(np.ascontiguousarray(array[...], dtype=np.float32))
    return data


def _digest(data: dict) -> str:
    """SHA-256 of an embedding file's values: the features' shape and bytes, and the rest."""
    features: torch.Tensor = data["features"]
    plain = {k: data[k] for k in _KEYS if k not in ("digest", "features")}
    plain["shape"] = list(features.shape)
    digest = hashlib.sha256(json.dumps(plain, sort_keys=True).encode())
    # Little-endian bytes, so a cache directory shared between machines verifies on each.
    digest.update(np.ascontiguousarray(features.numpy(), dtype="<f4"))
    return digest.hexdigest()


def _check_values(path: Path, data: dict) -> None:
    """Raise ValueError unless an embedding file's values have the types :meth:`save` wrote."""
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} is damaged: it lacks {', '.join(missing)}; compute it again.")
    size = data["original_size"]
    checks = {
        "digest": isinstance(data["digest"], str),
        "features": isinstance(data["features"], torch.Tensor)
        and data["features"].dtype == torch.float32
        and data["features"].layout == torch.strided,
        "original_size": isinstance(size, list)
        and len(size) == 2
        and all(type(v) is int and v > 0 for v in size),
        "image_size": type(data["image_size"]) is int and data["image_size"] > 0,
        "zoom": data["zoom"] is None or type(data["zoom"]) is float,
        "image_key": isinstance(data["image_key"], str),
        "model_key": isinstance(data["model_key"], str),
    }
    wrong = [k for k, ok in checks.items() if not ok]
    if wrong:
        raise ValueError(
            f"{path} is damaged: {', '.join(wrong)} not of the type saved; compute it again."
        )


class EmbeddingCache:
    """A small LRU of embeddings in memory, backed by an optional directory on disk.

    Thread-safe: a front end may compute embeddings in a worker thread while another reads.
    A damaged file in the directory is reported once (a warning), then recomputed and
    replaced; a directory that cannot be written is read, and new embeddings stay in memory.
    """

    def __init__(self, max_items: int = 64, directory: str | Path | None = None) -> None:
        """Args:
        max_items: Embeddings kept in memory (each is 4 MiB for a 64x64 grid).
        directory: If given, embeddings are also written there and read back on a miss.
        """
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}.")
        self.max_items = max_items
        self.directory = Path(directory) if directory is not None else None
        self._items: OrderedDict[tuple[str, str], ImageEmbedding] = OrderedDict()
        self._lock = threading.Lock()
        # Damaged files already reported, by path and (mtime, size): read and warned once.
        self._refused: dict[Path, tuple[int, int]] = {}
        self._saving = True
        if self.directory is not None:
            remove_stale_partials(self.directory, recursive=True)  # left by killed writers

    def use_directory(self, directory: str | Path | None) -> None:
        """Read and write embeddings in ``directory`` from now on (None: memory only)."""
        path = Path(directory) if directory is not None else None
        if path is not None:
            remove_stale_partials(path, recursive=True)
        with self._lock:
            self.directory = path
            self._refused.clear()
            self._saving = True

    def _file(self, model_key: str, image_key: str) -> Path:
        assert self.directory is not None
        safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_key)
        if self.directory.suffix != ZARR_SUFFIX:
            return self.directory / safe_model / f"{image_key}.pt"
        # A window's key is its image's key, then "-w" and the window: one group per image.
        image, _, window = image_key.partition("-w")
        name = f"w{window}" if window else "image"
        return self.directory / safe_model / image / f"{name}{ZARR_SUFFIX}"

    def _make_groups(self, path: Path) -> None:
        """Group metadata from the store's root down to ``path``'s folder, so zarr tools
        walk the store (written once per folder)."""
        import zarr

        assert self.directory is not None
        parts = path.parent.relative_to(self.directory).parts
        for depth in range(len(parts) + 1):
            group = self.directory.joinpath(*parts[:depth])
            if not any((group / name).is_file() for name in ZARR_GROUP_FILES):
                zarr.open_group(str(group), mode="a", zarr_format=3)

    def get(
        self, model_key: str, image_key: str, *, expected_shape: tuple[int, ...] | None = None
    ) -> ImageEmbedding | None:
        """The cached embedding for this model and image, or None.

        Args:
            model_key: The model's key.
            image_key: The image's key.
            expected_shape: The shape of the model's features; a file holding another is
                refused.

        A file that fails verification gives None and one warning; the caller computes the
        embedding and :meth:`put` replaces the file.
        """
        with self._lock:
            hit = self._items.get((model_key, image_key))
            if hit is not None:
                self._items.move_to_end((model_key, image_key))
                return hit
        if self.directory is None:
            return None
        path = self._file(model_key, image_key)
        try:
            stat = path.stat()
        except OSError:
            return None
        signature = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._refused.get(path) == signature:
                return None
        try:
            embedding = ImageEmbedding.load(
                path, image_key=image_key, model_key=model_key, expected_shape=expected_shape
            )
        except StaleEmbeddingError:
            return None
        except ValueError as err:
            with self._lock:
                self._refused[path] = signature
            warnings.warn(
                f"Embedding cache file {path} is refused and will be recomputed and "
                f"replaced: {err}",
                UserWarning,
                stacklevel=2,
            )
            return None
        self._remember(embedding)
        return embedding

    def put(self, embedding: ImageEmbedding) -> None:
        """Store an embedding (and write it to the cache directory, if there is one).

        If the directory cannot be written, one warning says so and embeddings are kept in
        memory only from then on.
        """
        self._remember(embedding)
        if self.directory is None or not self._saving:
            return
        path = self._file(embedding.model_key, embedding.image_key)
        try:
            if path.suffix == ZARR_SUFFIX:
                self._make_groups(path)
            embedding.save(path)
        except OSError as err:
            with self._lock:
                first, self._saving = self._saving, False
            if first:
                warnings.warn(
                    f"cache directory {self.directory} is not writable: embeddings are read "
                    f"from it but not saved ({err}).",
                    UserWarning,
                    stacklevel=2,
                )
            return
        with self._lock:
            self._refused.pop(path, None)

    def _remember(self, embedding: ImageEmbedding) -> None:
        with self._lock:
            self._items[(embedding.model_key, embedding.image_key)] = embedding
            self._items.move_to_end((embedding.model_key, embedding.image_key))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
