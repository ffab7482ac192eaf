"""Image embeddings and their cache (in memory, optionally on disk).

An embedding is keyed by the image's content hash and the model it came from, so the napari
plugin and the Jupyter widget showing the same image through one predictor share it, and a
file on disk is never used for another image or model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from sam_viz.predictor.transforms import ImageFrame

CACHE_FORMAT_VERSION = 2  # 2: the frame's zoom is stored (windows of large images)


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
        """Write the embedding to ``path`` (a ``.pt`` file holding tensors and plain values)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".part")
        torch.save(
            {
                "version": CACHE_FORMAT_VERSION,
                "features": self.features.detach().to("cpu", torch.float32),
                "original_size": list(self.frame.original_size),
                "image_size": self.frame.image_size,
                "zoom": self.frame.zoom,
                "image_key": self.image_key,
                "model_key": self.model_key,
            },
            partial,
        )
        partial.replace(path)
        return path

    @classmethod
    def load(
        cls, path: str | Path, *, image_key: str | None = None, model_key: str | None = None
    ) -> ImageEmbedding:
        """Read an embedding saved by :meth:`save`, refusing one from another image or model.

        Raises:
            ValueError: If the file is not an embedding, or its image/model key differs from
                the expected one (a stale cache).
        """
        path = Path(path)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{path} is not a readable sam_viz embedding file: {err}") from err
        if not isinstance(data, dict) or data.get("version") != CACHE_FORMAT_VERSION:
            raise ValueError(
                f"{path} is not a sam_viz embedding file (version {CACHE_FORMAT_VERSION})."
            )
        if image_key is not None and data["image_key"] != image_key:
            raise ValueError(f"{path} holds the embedding of another image; compute it again.")
        if model_key is not None and data["model_key"] != model_key:
            raise ValueError(
                f"{path} was made by model {data['model_key']!r}, not {model_key!r}; "
                "compute it again."
            )
        height, width = (int(v) for v in data["original_size"])
        zoom = data.get("zoom")
        frame = ImageFrame(
            (height, width), int(data["image_size"]), None if zoom is None else float(zoom)
        )
        return cls(data["features"], frame, data["image_key"], data["model_key"])


class EmbeddingCache:
    """A small LRU of embeddings in memory, backed by an optional directory on disk.

    Thread-safe: a front end may compute embeddings in a worker thread while another reads.
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

    def _file(self, model_key: str, image_key: str) -> Path:
        assert self.directory is not None
        safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_key)
        return self.directory / safe_model / f"{image_key}.pt"

    def get(self, model_key: str, image_key: str) -> ImageEmbedding | None:
        """The cached embedding for this model and image, or None."""
        with self._lock:
            hit = self._items.get((model_key, image_key))
            if hit is not None:
                self._items.move_to_end((model_key, image_key))
                return hit
        if self.directory is not None:
            path = self._file(model_key, image_key)
            if path.is_file():
                try:
                    embedding = ImageEmbedding.load(path, image_key=image_key, model_key=model_key)
                except ValueError:
                    return None
                self._remember(embedding)
                return embedding
        return None

    def put(self, embedding: ImageEmbedding) -> None:
        """Store an embedding (and write it to the cache directory, if there is one)."""
        self._remember(embedding)
        if self.directory is not None:
            embedding.save(self._file(embedding.model_key, embedding.image_key))

    def _remember(self, embedding: ImageEmbedding) -> None:
        with self._lock:
            self._items[(embedding.model_key, embedding.image_key)] = embedding
            self._items.move_to_end((embedding.model_key, embedding.image_key))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
