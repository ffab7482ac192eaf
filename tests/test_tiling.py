"""Tiles with a halo: geometry, per-tile embeddings and their disk cache, objects across borders."""

from __future__ import annotations

import numpy as np
import pytest

from sam_viz.automatic.everything import MaskGenerator
from sam_viz.image import image_key
from sam_viz.models.registry import MODELS
from sam_viz.predictor import Predictor
from sam_viz.predictor.cache import EmbeddingCache, ImageEmbedding
from sam_viz.windows.tiling import TiledImage, TileGrid, WindowedImage, default_tiling, embed_rgb01


def test_tiles_partition_the_image_and_windows_add_the_halo() -> None:
    grid = TileGrid.create((250, 410), tile_size=100, halo=20)
    assert grid.grid == (3, 5) and len(grid.tiles) == 15
    owned = np.zeros((250, 410), np.int32)
    for tile in grid.tiles:
        x0, y0, x1, y1 = tile.inner_xyxy
        owned[y0:y1, x0:x1] += 1
        wx0, wy0, wx1, wy1 = tile.window_xyxy
        assert wx0 == max(0, x0 - 20) and wy0 == max(0, y0 - 20)
        assert wx1 == min(410, x1 + 20) and wy1 == min(250, y1 + 20)
    assert (owned == 1).all()
    assert grid.owner(105, 0).index == 1
    assert grid.owner(410, 250).index == 14  # the far corner belongs to the last tile
    with pytest.raises(ValueError, match="outside"):
        grid.owner(-5, 10)


@pytest.mark.parametrize(
    ("tile", "halo", "message"),
    [(8, 2, "at least 16"), (64, -1, ">= 0"), (32, 32, "smaller than tile_size"), (40, 60, "halo")],
)
def test_bad_tiling_is_refused(tile, halo, message) -> None:
    with pytest.raises(ValueError, match=message):
        TileGrid.create((100, 100), tile_size=tile, halo=halo)


def test_default_tiling_from_the_model() -> None:
    tile, halo = default_tiling(MODELS["lite_medsam"])
    assert tile + 2 * halo == 384 and halo > 0
    tile, halo = default_tiling(MODELS["vit_b"])
    assert tile + 2 * halo == 1024


def test_window_for_box_prefers_room_and_ignores_image_edges() -> None:
    grid = TileGrid.create((200, 200), tile_size=100, halo=30)
    # A box across the vertical border at x=100: both top tiles' windows hold it.
    tile = grid.window_for_box(np.array([90, 10, 110, 30]))
    assert tile is not None and tile.index in (0, 1)
    # Touching the image's top edge costs no room.
    assert grid.window_for_box(np.array([10, 0, 40, 20])).index == 0
    # Wider than any window.
    assert grid.window_for_box(np.array([10, 10, 190, 30])) is None


def test_embedding_a_window_leaves_the_current_image_and_uses_the_cache(tiny_predictor) -> None:
    image = np.random.default_rng(0).integers(0, 255, (90, 70), dtype=np.uint8)
    current = tiny_predictor.set_image(image)
    source = WindowedImage(image)
    first = source.embed(tiny_predictor, (10, 20, 60, 80))
    assert tiny_predictor.embedding is current
    assert first.frame.original_size == (60, 50)
    assert source.embed(tiny_predictor, (10, 20, 60, 80)) is first  # from the cache
    # set_image on the same float pixels shares the embedding's key.
    assert first.image_key == image_key(
        np.ascontiguousarray(source.window((10, 20, 60, 80))), contrast="none"
    )
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        embed_rgb01(tiny_predictor, np.zeros((5, 5)))
    with pytest.raises(ValueError, match="does not overlap"):
        source.window((100, 100, 120, 120))


def test_tile_embeddings_round_trip_on_disk_and_refuse_others(
    tiny_model, tiny_spec, tmp_path
) -> None:
    image = np.random.default_rng(2).integers(0, 255, (150, 130), dtype=np.uint8)
    writer = Predictor(
        tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path)
    )
    tiled = TiledImage(writer, image, tile_size=64, halo=16)
    steps: list[tuple[int, int]] = []
    saved = tiled.embed_all(progress=lambda d, t: steps.append((d, t)))
    assert steps[-1] == (9, 9)  # 3 x 3 tiles
    files = sorted(tmp_path.rglob("*.pt"))
    assert len(files) == 9  # one per tile

    reader = Predictor(
        tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path)
    )

    def no_encoding(*args, **kwargs):
        raise AssertionError("the embedding should have come from disk")

    reader._encode = no_encoding
    loaded = TiledImage(reader, image, tile_size=64, halo=16).embed_all()
    for a, b in zip(saved, loaded, strict=True):
        assert a.image_key == b.image_key and a.frame == b.frame
        assert np.array_equal(a.features.numpy(), b.features.numpy())

    # A tile's file refuses to stand for another tile or another model.
    with pytest.raises(ValueError, match="another image"):
        ImageEmbedding.load(files[0], image_key="0" * 32, model_key=reader.model_key)
    with pytest.raises(ValueError, match="model"):
        ImageEmbedding.load(files[0], model_key="vit_b")
    other = next(f for f in files if f != files[0])
    files[0].replace(other)  # a wrong file where another tile's embedding should be
    fresh = Predictor(tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path))
    assert fresh.cache.get(fresh.model_key, other.stem) is None


def test_tiled_prediction_pastes_into_the_whole_image(tiny_predictor) -> None:
    image = np.random.default_rng(3).integers(0, 255, (120, 200), dtype=np.uint8)
    tiled = TiledImage(tiny_predictor, image, tile_size=64, halo=16)
    result = tiled.predict([70, 20, 100, 50])
    assert result.masks.shape == (3, 120, 200)
    x0, y0, x1, y1 = tiled.window_for([70, 20, 100, 50])
    outside = np.ones((120, 200), bool)
    outside[y0:y1, x0:x1] = False
    assert not result.masks[:, outside].any()
    # The same prompt on that window alone gives the same masks.
    local = tiny_predictor.predict(
        box_xyxy=[70 - x0, 20 - y0, 100 - x0, 50 - y0],
        embedding=WindowedImage(image).embed(tiny_predictor, (x0, y0, x1, y1)),
    )
    assert np.array_equal(result.masks[:, y0:y1, x0:x1], local.masks)
    with pytest.raises(ValueError, match="4 finite numbers"):
        tiled.predict([70, 20, 100])
    with pytest.raises(ValueError, match="Points must lie"):
        tiled.predict([70, 20, 100, 50], points_xy=[[190, 110]])
    # A box wider than any tile window gets a window of its own that holds it.
    wx0, wy0, wx1, wy1 = tiled.window_for([10, 10, 190, 100])
    assert wx0 <= 10 and wy0 <= 10 and wx1 >= 190 and wy1 >= 100


def _disks(
    shape: tuple[int, int], centres: list[tuple[int, int]], radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bright noisy disks on a dark noisy background, and their label image."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.int32)
    for index, (cx, cy) in enumerate(centres, start=1):
        truth[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = index
    image = np.where(truth > 0, 190.0, 40.0) + rng.normal(0, 12, shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


def _best_iou(labels: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    """Best IoU of a truth object against one label, and how many labels share it."""
    ids, counts = np.unique(labels[truth], return_counts=True)
    best = max(
        (
            c / np.count_nonzero(truth | (labels == j))
            for j, c in zip(ids, counts, strict=True)
            if j
        ),
        default=0.0,
    )
    sharing = sum(1 for j, c in zip(ids, counts, strict=True) if j and c > 0.05 * truth.sum())
    return best, sharing


@pytest.mark.slow
def test_tiling_keeps_objects_whole_across_borders(lite_predictor) -> None:
    # 4 tiles of 192 + halo 48. Disk 1 sits across the vertical border x=192, disk 2 on the
    # corner where four tiles meet, disk 3 well inside the first tile.
    image, truth = _disks((384, 384), [(192, 90), (192, 192), (90, 300)], radius=22)
    settings = {"box_sizes": (64.0,), "tile_size": 192, "halo": 48}
    generator = MaskGenerator(lite_predictor, tiling=True, **settings)
    tiled = generator.generate(image)
    for index in (1, 2, 3):
        best, sharing = _best_iou(tiled.labels, truth == index)
        assert best >= 0.8, f"disk {index}: IoU {best:.2f}"
        assert sharing == 1, f"disk {index} is split over {sharing} objects"
    assert tiled.num_objects == 3
    # Far from borders, tiling changes nothing: the tile's window alone gives the same mask.
    tile = generator.tile_grid(image.shape).owner(90, 300)
    x0, y0, x1, y1 = tile.window_xyxy
    alone = MaskGenerator(lite_predictor, tiling=False, **settings).generate(image[y0:y1, x0:x1])
    disk = (truth == 3)[y0:y1, x0:x1]
    mask_tiled = (
        tiled.labels[y0:y1, x0:x1] == np.bincount(tiled.labels[y0:y1, x0:x1][disk]).argmax()
    )
    mask_alone = alone.labels == np.bincount(alone.labels[disk]).argmax()
    assert (mask_tiled & mask_alone).sum() / (mask_tiled | mask_alone).sum() >= 0.95
    # A box prompt across the border comes out as one whole object too.
    box = [192 - 26, 90 - 26, 192 + 26, 90 + 26]
    tiled_image = TiledImage(lite_predictor, image, tile_size=192, halo=48)
    mask = tiled_image.predict(box, multimask_output=False).masks[0]
    disk = truth == 1
    assert (mask & disk).sum() / (mask | disk).sum() >= 0.8
