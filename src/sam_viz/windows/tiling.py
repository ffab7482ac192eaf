"""Images larger than the model input: windows, tiles with a halo, and their embeddings.

The model sees every image resized to ``spec.image_size`` (256 pixels for the embedded
LiteMedSAM), so a 4096x4096 micrograph loses most of its detail. Here an image is cut into
tiles: each tile owns an *inner* region (tiles' inner regions do not overlap) and is encoded
with a *halo* of context around it, so an object near a tile border is seen whole by the
tile that owns its centre. Each tile's embedding is an ordinary
:class:`~sam_viz.predictor.cache.ImageEmbedding` of the tile's pixels, cached (in memory
and, with an ``EmbeddingCache(directory=...)``, on disk) like any other.

Conventions: windows and boxes are ``XYXY`` in pixels of the whole image with exclusive
ends; points are ``(x, y)``. ``tile_size`` is the side of a tile's inner region and
``halo`` the context added on each side (as in micro-sam), so a tile's window is at most
``tile_size + 2 * halo`` pixels wide.

Contrast is computed once for the whole image (:class:`WindowedImage`), so every tile is
normalised alike.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from sam_viz.image import Contrast, to_rgb01, validate_image
from sam_viz.models.registry import ModelSpec
from sam_viz.predictor import Prediction, Predictor, ProgressCallback
from sam_viz.predictor.cache import ImageEmbedding

Window = tuple[int, int, int, int]
MIN_TILE_SIZE = 16


def embed_rgb01(
    predictor: Predictor,
    rgb01: np.ndarray,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> ImageEmbedding:
    """Embed an (H, W, 3) float image in 0..1 without making it the predictor's image.

    The same as ``predictor.embed(rgb01, contrast="none")``: the embedding is shared with
    ``predictor.set_image(rgb01, contrast="none")`` through the predictor's cache.

    Args:
        predictor: The predictor whose model and cache to use.
        rgb01: (H, W, 3) float32 RGB in 0..1 (e.g. a window of :func:`to_rgb01`'s output).
        progress: Called as ``progress(done, total)`` while the encoder runs.
        cancel: Set it to stop; :class:`~sam_viz.predictor.Cancelled` is raised.

    Returns:
        The window's embedding.
    """
    array = np.ascontiguousarray(rgb01, dtype=np.float32)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"rgb01 must have shape (H, W, 3), got {array.shape}.")
    return predictor.embed(array, contrast="none", progress=progress, cancel=cancel)


class WindowedImage:
    """An image converted to model RGB once, from which windows are cut and embedded.

    Args:
        image: 2-D grayscale, RGB or RGBA array (see :mod:`sam_viz.image`).
        contrast: Contrast rule for the whole image (see :func:`sam_viz.image.to_rgb01`).
        percentiles: Percentiles of the percentile stretch.
    """

    def __init__(
        self,
        image: object,
        *,
        contrast: Contrast = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
    ) -> None:
        array = validate_image(image)
        self.shape: tuple[int, int] = (int(array.shape[0]), int(array.shape[1]))
        self.rgb01 = to_rgb01(array, contrast=contrast, percentiles=percentiles)

    def window(self, window_xyxy: Window) -> np.ndarray:
        """The (h, w, 3) float RGB pixels of a window (clipped to the image)."""
        x0, y0, x1, y1 = clip_window(window_xyxy, self.shape)
        return self.rgb01[y0:y1, x0:x1]

    def embed(
        self,
        predictor: Predictor,
        window_xyxy: Window | None = None,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> ImageEmbedding:
        """Embedding of a window (the whole image by default); see :func:`embed_rgb01`."""
        if window_xyxy is None:
            window_xyxy = (0, 0, self.shape[1], self.shape[0])
        return embed_rgb01(predictor, self.window(window_xyxy), progress=progress, cancel=cancel)


def clip_window(window_xyxy: Window, shape_hw: tuple[int, int]) -> Window:
    """Clip an integer XYXY window to an image of shape (H, W).

    Raises:
        ValueError: If the clipped window is empty.
    """
    height, width = shape_hw
    x0, y0, x1, y1 = (round(float(v)) for v in window_xyxy)
    x0, x1 = max(0, x0), min(width, x1)
    y0, y1 = max(0, y0), min(height, y1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ValueError(
            f"Window {tuple(window_xyxy)} does not overlap the image of width {width} and "
            f"height {height}."
        )
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`TileGrid`.

    Attributes:
        index: Position in :attr:`TileGrid.tiles` (row-major).
        inner_xyxy: The region this tile owns; inner regions tile the image exactly.
        window_xyxy: The inner region plus the halo, clipped to the image: what is encoded.
    """

    index: int
    inner_xyxy: Window
    window_xyxy: Window


def default_tiling(spec: ModelSpec) -> tuple[int, int]:
    """Tile size and halo for a model: (tile_size, halo).

    A tile's window (tile plus halo on both sides) is the model's input size, but at least
    384 pixels: a small model input (LiteMedSAM's 256) then sees tiles at two thirds of
    their resolution, which keeps the number of tiles of large images manageable (at half
    resolution, coins 3 pixels apart already merged). The halo is an eighth of the window,
    enough for objects up to a quarter of a window across.
    """
    window = max(spec.image_size, 384)
    halo = window // 8
    return window - 2 * halo, halo


@dataclass(frozen=True)
class TileGrid:
    """Tiles covering an image: inner regions of ``tile_size`` plus a ``halo`` around.

    Build one with :meth:`create`.

    Attributes:
        shape: (H, W) of the image.
        tile_size: Side of each tile's inner region in pixels.
        halo: Context added on each side of the inner region.
        tiles: The tiles, row-major.
    """

    shape: tuple[int, int]
    tile_size: int
    halo: int
    tiles: tuple[Tile, ...]

    @classmethod
    def create(cls, shape_hw: tuple[int, int], tile_size: int, halo: int) -> TileGrid:
        """Cut an image of shape (H, W) into tiles.

        Raises:
            ValueError: If ``tile_size`` is below 16 pixels, ``halo`` is negative, or the
                halo is not smaller than the tile size.
        """
        height, width = (int(v) for v in shape_hw[:2])
        if int(tile_size) != tile_size or int(halo) != halo:
            raise ValueError(f"tile_size and halo must be integers, got {tile_size}, {halo}.")
        tile_size, halo = int(tile_size), int(halo)
        if tile_size < MIN_TILE_SIZE:
            raise ValueError(f"tile_size must be at least {MIN_TILE_SIZE} pixels, got {tile_size}.")
        if halo < 0:
            raise ValueError(f"halo must be >= 0 pixels, got {halo}.")
        if halo >= tile_size:
            raise ValueError(
                f"halo ({halo}) must be smaller than tile_size ({tile_size}): the halo is the "
                "context added around each tile; use a larger tile or a smaller halo."
            )
        tiles: list[Tile] = []
        for row in range(math.ceil(height / tile_size)):
            for col in range(math.ceil(width / tile_size)):
                x0, y0 = col * tile_size, row * tile_size
                inner = (x0, y0, min(x0 + tile_size, width), min(y0 + tile_size, height))
                window = clip_window(
                    (inner[0] - halo, inner[1] - halo, inner[2] + halo, inner[3] + halo),
                    (height, width),
                )
                tiles.append(Tile(len(tiles), inner, window))
        return cls((height, width), tile_size, halo, tuple(tiles))

    @property
    def grid(self) -> tuple[int, int]:
        """Number of tile (rows, columns)."""
        return math.ceil(self.shape[0] / self.tile_size), math.ceil(self.shape[1] / self.tile_size)

    def owner(self, x: float, y: float) -> Tile:
        """The tile whose inner region contains the point (x, y) (clamped to the image)."""
        height, width = self.shape
        rows, cols = self.grid
        col = min(cols - 1, max(0, int(x // self.tile_size)))
        row = min(rows - 1, max(0, int(y // self.tile_size)))
        if not (0 <= x <= width and 0 <= y <= height):
            raise ValueError(f"Point ({x:g}, {y:g}) lies outside the image {width}x{height}.")
        return self.tiles[row * cols + col]

    def window_for_box(self, box_xyxy: np.ndarray) -> Tile | None:
        """The tile whose window contains the box with the largest margin, or None."""
        x0, y0, x1, y1 = (float(v) for v in box_xyxy)
        height, width = self.shape
        best, best_margin = None, -1.0
        for tile in self.tiles:
            wx0, wy0, wx1, wy1 = tile.window_xyxy
            if x0 < wx0 or y0 < wy0 or x1 > wx1 or y1 > wy1:
                continue
            # Room between the box and each window edge that is not the image's edge.
            sides = [x0 - wx0 if wx0 > 0 else math.inf, y0 - wy0 if wy0 > 0 else math.inf]
            sides += [wx1 - x1 if wx1 < width else math.inf, wy1 - y1 if wy1 < height else math.inf]
            margin = min(sides)
            if margin > best_margin:
                best, best_margin = tile, margin
        return best


class TiledImage:
    """Interactive prompts on an image larger than the model input, answered per tile.

    A prompt is answered from the embedding of the tile whose window holds its box with the
    most room; a box that fits no tile's window (it crosses a border by more than the halo)
    gets a window of its own around it. Either way an object across a tile border comes out
    as one mask.

    Args:
        predictor: The shared predictor (its current image is left alone).
        image: The whole image, or a :class:`WindowedImage` of it.
        tile_size: Inner tile side in pixels (default from the model, see
            :func:`default_tiling`).
        halo: Context around each tile in pixels.
    """

    def __init__(
        self,
        predictor: Predictor,
        image: object,
        *,
        tile_size: int | None = None,
        halo: int | None = None,
    ) -> None:
        default_tile, default_halo = default_tiling(predictor.spec)
        self.predictor = predictor
        self.source = image if isinstance(image, WindowedImage) else WindowedImage(image)
        self.grid = TileGrid.create(
            self.source.shape,
            default_tile if tile_size is None else tile_size,
            default_halo if halo is None else halo,
        )
        self._embeddings: dict[Window, ImageEmbedding] = {}

    def embed_all(
        self,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[ImageEmbedding]:
        """Embed every tile now (e.g. in a worker thread); ``progress(done, total)`` per tile."""
        out = []
        for done, tile in enumerate(self.grid.tiles, start=1):
            out.append(self._embedding(tile.window_xyxy, cancel))
            if progress is not None:
                progress(done, len(self.grid.tiles))
        return out

    def _embedding(self, window: Window, cancel: threading.Event | None = None) -> ImageEmbedding:
        if window not in self._embeddings:
            self._embeddings[window] = self.source.embed(self.predictor, window, cancel=cancel)
        return self._embeddings[window]

    def window_for(self, box_xyxy: object) -> Window:
        """The window a box prompt is answered in (a tile's window, or one around the box)."""
        box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise ValueError(
                f"box_xyxy must be 4 finite numbers (x0, y0, x1, y1), got {box_xyxy!r}."
            )
        tile = self.grid.window_for_box(box)
        if tile is not None:
            return tile.window_xyxy
        height, width = self.source.shape
        side = max(
            self.grid.tile_size + 2 * self.grid.halo,
            int(np.ceil(1.25 * max(box[2] - box[0], box[3] - box[1]))),
        )
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0 = round(float(min(max(cx - side / 2, 0), max(width - side, 0))))
        y0 = round(float(min(max(cy - side / 2, 0), max(height - side, 0))))
        return clip_window((x0, y0, x0 + side, y0 + side), (height, width))

    def predict(
        self,
        box_xyxy: object,
        points_xy: object = None,
        point_labels: object = None,
        *,
        multimask_output: bool = True,
    ) -> Prediction:
        """Segment the object in a box (plus optional points), as :meth:`Predictor.predict`.

        Returns:
            A :class:`~sam_viz.predictor.Prediction` with masks of the whole image's shape;
            its ``low_res_logits`` are in the frame of the window used (:meth:`window_for`).

        Raises:
            ValueError: For a malformed box, or points outside the box's window.
        """
        window = self.window_for(box_xyxy)
        x0, y0, x1, y1 = window
        offset = np.array([x0, y0], dtype=np.float64)
        points = None
        if points_xy is not None:
            points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2) - offset
            if ((points < 0) | (points > [x1 - x0, y1 - y0])).any():
                raise ValueError(
                    f"Points must lie in the window {window} the box is answered in; "
                    "give points on or near the boxed object."
                )
        local = self.predictor.predict(
            points_xy=points,
            point_labels=point_labels,
            box_xyxy=np.asarray(box_xyxy, dtype=np.float64).reshape(-1) - np.tile(offset, 2),
            multimask_output=multimask_output,
            embedding=self._embedding(window),
        )
        return local.pasted(window, self.source.shape)
