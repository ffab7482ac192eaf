"""A large synthetic scan made lazily: islands of nuclei on an empty slide.

A whole-slide scan or a stitched plate is mostly background with tissue (or wells) in
places. :class:`Slide` imitates that at any size without ever holding it: a dask array whose
chunks are drawn when read, from islands that are :func:`~sam_viz.synthetic.microscopy.
nuclei_field` fields (deterministic per seed) laid on a camera-offset background with shot
and read noise. Islands sit at arbitrary offsets, so they straddle any tiling of the slide.
Their instance labels are known exactly, island by island.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sam_viz.synthetic.microscopy import nuclei_field

# The background every island's own background is matched to (camera offset, counts).
OFFSET = 400.0
READ_NOISE = 12.0


@dataclass(frozen=True)
class Island:
    """One region of nuclei: its top-left corner (x, y), side and field seed."""

    x: int
    y: int
    side: int
    seed: int

    @property
    def window(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.side, self.y + self.side


@dataclass(frozen=True)
class Slide:
    """A lazily drawn uint16 scan of ``shape`` with nuclei of ``diameter`` in ``islands``."""

    shape: tuple[int, int]
    islands: tuple[Island, ...]
    diameter: float
    density: float = 0.3
    chunk: int = 1024
    seed: int = 0

    def image(self):
        """The scan as a (H, W) uint16 dask array; each chunk is drawn when computed."""
        import dask.array as da

        height, width = self.shape
        chunks = (_sizes(height, self.chunk), _sizes(width, self.chunk))
        return da.map_blocks(
            self._block, dtype=np.uint16, chunks=chunks, meta=np.zeros((0, 0), np.uint16)
        )

    def _block(self, block_info=None) -> np.ndarray:
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        index = block_info[None]["chunk-location"]
        return self.region((x0, y0, x1, y1), seed=hash((self.seed, *index)) & 0xFFFFFFFF)

    def region(self, window: Sequence[int], seed: int = 0) -> np.ndarray:
        """The pixels of ``window`` (x0, y0, x1, y1): background noise plus the islands."""
        x0, y0, x1, y1 = (int(v) for v in window)
        rng = np.random.default_rng(seed)
        values = OFFSET + rng.normal(0.0, READ_NOISE, (y1 - y0, x1 - x0))
        for island, (ix0, iy0, ix1, iy1) in self._overlapping(window):
            field = _island_pixels(island, self.diameter, self.density)
            values[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = field[
                iy0 - island.y : iy1 - island.y, ix0 - island.x : ix1 - island.x
            ]
        return np.clip(values, 0, 65535).astype(np.uint16)

    def labels(self, window: Sequence[int]) -> np.ndarray:
        """Ground-truth labels of ``window``, unique over the slide (island i's objects are
        numbered from ``i * 100_000 + 1``)."""
        x0, y0, x1, y1 = (int(v) for v in window)
        out = np.zeros((y1 - y0, x1 - x0), np.int32)
        for island, (ix0, iy0, ix1, iy1) in self._overlapping(window):
            number = self.islands.index(island)
            truth = _island_labels(island, self.diameter, self.density)
            part = truth[iy0 - island.y : iy1 - island.y, ix0 - island.x : ix1 - island.x]
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = np.where(
                part > 0, part + number * 100_000, 0
            )
        return out

    def _overlapping(self, window: Sequence[int]):
        x0, y0, x1, y1 = window
        for island in self.islands:
            ix0, iy0, ix1, iy1 = island.window
            cx0, cy0, cx1, cy1 = max(x0, ix0), max(y0, iy0), min(x1, ix1), min(y1, iy1)
            if cx0 < cx1 and cy0 < cy1:
                yield island, (cx0, cy0, cx1, cy1)


def make_slide(
    shape: tuple[int, int] = (20_000, 20_000),
    *,
    islands: int = 12,
    island_side: int = 1024,
    diameter: float = 24.0,
    density: float = 0.3,
    seed: int = 0,
    chunk: int = 1024,
) -> Slide:
    """A slide with ``islands`` islands placed at random, apart from each other."""
    rng = np.random.default_rng(seed)
    height, width = shape
    gap = int(2 * diameter)
    placed: list[Island] = []
    for _ in range(islands * 200):
        if len(placed) == islands:
            break
        x = int(rng.integers(0, max(1, width - island_side)))
        y = int(rng.integers(0, max(1, height - island_side)))
        if all(
            x + island_side + gap <= p.x
            or p.x + p.side + gap <= x
            or y + island_side + gap <= p.y
            or p.y + p.side + gap <= y
            for p in placed
        ):
            placed.append(Island(x, y, island_side, seed * 1000 + len(placed)))
    if len(placed) < islands:
        raise ValueError(f"{islands} islands of {island_side} px do not fit a {shape} slide.")
    return Slide(shape, tuple(placed), diameter, density, chunk, seed)


def _sizes(length: int, chunk: int) -> tuple[int, ...]:
    full, rest = divmod(length, chunk)
    return (chunk,) * full + ((rest,) if rest else ())


@functools.lru_cache(maxsize=8)
def _island(island: Island, diameter: float, density: float):
    return nuclei_field(island.seed, (island.side, island.side), diameter=diameter, density=density)


def _island_pixels(island: Island, diameter: float, density: float) -> np.ndarray:
    """The island's field with its background moved to the slide's."""
    image = _island(island, diameter, density).image.astype(np.float64)
    return image - np.percentile(image, 5) + OFFSET


def _island_labels(island: Island, diameter: float, density: float) -> np.ndarray:
    return _island(island, diameter, density).labels
