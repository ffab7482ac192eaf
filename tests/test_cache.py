"""Embedding cache: memory LRU, disk round trip, stale files refused."""

import warnings

import numpy as np
import pytest
import torch

from sam_viz.predictor.cache import EmbeddingCache, ImageEmbedding
from sam_viz.predictor.transforms import ImageFrame


def _embedding(image_key="img", model_key="model"):
    return ImageEmbedding(torch.randn(1, 256, 4, 4), ImageFrame((96, 64), 64), image_key, model_key)


def test_disk_round_trip_and_stale_files_refused(tmp_path):
    emb = _embedding()
    path = emb.save(tmp_path / "e.pt")
    back = ImageEmbedding.load(path, image_key="img", model_key="model")
    torch.testing.assert_close(back.features, emb.features)
    assert back.frame == emb.frame
    with pytest.raises(ValueError, match="another image"):
        ImageEmbedding.load(path, image_key="other", model_key="model")
    with pytest.raises(ValueError, match="made by model"):
        ImageEmbedding.load(path, image_key="img", model_key="vit_h")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable"):
        ImageEmbedding.load(tmp_path / "junk.pt")


def test_lru_evicts_oldest_and_disk_backs_it(tmp_path):
    cache = EmbeddingCache(max_items=2, directory=tmp_path)
    a, b, c = _embedding("a"), _embedding("b"), _embedding("c")
    for emb in (a, b, c):
        cache.put(emb)
    assert len(cache) == 2
    restored = cache.get("model", "a")  # evicted from memory, read back from disk
    assert restored is not None and restored is not a
    torch.testing.assert_close(restored.features, a.features)
    assert cache.get("model", "zzz") is None
    assert cache.get("other_model", "a") is None


def test_predictor_uses_disk_cache_across_instances(tmp_path, tiny_model, tiny_spec):
    from sam_viz.predictor import Predictor

    image = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    first = Predictor(tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path))
    emb = first.set_image(image)
    calls = [0]
    tiny_model.image_encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    second = Predictor(
        tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path)
    )
    again = second.set_image(image)
    assert calls[0] == 0
    torch.testing.assert_close(again.features, emb.features)


def test_bad_cache_size():
    with pytest.raises(ValueError, match="max_items"):
        EmbeddingCache(max_items=0)


# --------------------------------------------------------------------- damaged files
def _flip_exponent_bit(path, features):
    """Flip the top exponent bit of the first float of the saved features."""
    data = bytearray(path.read_bytes())
    start = data.find(features.numpy().tobytes()[:64])
    assert start >= 0, "the features' bytes were not found in the file"
    data[start + 3] ^= 0x40  # little-endian float32: byte 3 holds the sign and 7 exponent bits
    path.write_bytes(bytes(data))


def _flip_400_bytes(path, features):
    data = bytearray(path.read_bytes())
    start = data.find(features.numpy().tobytes()[:64])
    assert start >= 0, "the features' bytes were not found in the file"
    for i in range(start, start + 400):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path, features):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _wrong_shape(path, features):
    """A file with a valid digest, of this image and model, with features of another grid."""
    good = ImageEmbedding.load(path)
    small = torch.randn(1, 256, 4, 4)
    ImageEmbedding(small, good.frame, good.image_key, good.model_key).save(path)


def _missing_key(path, features):
    data = torch.load(path, weights_only=True)
    del data["digest"]
    torch.save(data, path)


@pytest.fixture
def cached_image(tmp_path, tiny_model, tiny_spec):
    """An image embedded by the tiny model into a cache directory: (image, embedding, file)."""
    from sam_viz.predictor import Predictor

    image = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    predictor = Predictor(
        tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path)
    )
    embedding = predictor.set_image(image)
    (path,) = tmp_path.glob("*/*.pt")
    return image, embedding, path


@pytest.mark.parametrize(
    "damage", [_flip_exponent_bit, _flip_400_bytes, _truncate, _wrong_shape, _missing_key]
)
def test_damaged_file_warns_once_is_recomputed_and_replaced(
    cached_image, tmp_path, tiny_model, tiny_spec, damage
):
    from sam_viz.predictor import Predictor

    image, fresh, path = cached_image
    damage(path, fresh.features)
    predictor = Predictor(
        tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path)
    )
    with pytest.raises(ValueError):
        ImageEmbedding.load(path, expected_shape=predictor.embedding_shape)
    calls = [0]
    tiny_model.image_encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    with pytest.warns(UserWarning, match="recomputed and replaced") as record:
        again = predictor.set_image(image)
    assert len(record) == 1 and str(path) in str(record[0].message)
    assert calls[0] == 1
    torch.testing.assert_close(again.features, fresh.features, rtol=0, atol=0)
    replaced = ImageEmbedding.load(path, expected_shape=predictor.embedding_shape)
    torch.testing.assert_close(replaced.features, fresh.features, rtol=0, atol=0)
    # The bad file is reported once: a second cache reading the replaced file is silent.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert EmbeddingCache(directory=tmp_path).get(fresh.model_key, fresh.image_key)


def test_damaged_file_is_reported_once_per_cache(cached_image, tmp_path):
    _, fresh, path = cached_image
    _flip_exponent_bit(path, fresh.features)
    cache = EmbeddingCache(directory=tmp_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            assert cache.get(fresh.model_key, fresh.image_key) is None
    assert len(record) == 1


def test_old_format_is_recomputed_silently(cached_image, tmp_path, tiny_model, tiny_spec):
    from sam_viz.predictor import Predictor

    image, fresh, path = cached_image
    data = torch.load(path, weights_only=True)
    data["version"] = 2
    del data["digest"]
    torch.save(data, path)
    with pytest.raises(ValueError, match="format version 2, not 3"):
        ImageEmbedding.load(path)
    predictor = Predictor(
        tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = predictor.set_image(image)
    torch.testing.assert_close(again.features, fresh.features, rtol=0, atol=0)
    assert torch.load(path, weights_only=True)["version"] == 3


def test_load_refuses_wrong_values(tmp_path):
    path = _embedding().save(tmp_path / "e.pt")
    good = torch.load(path, weights_only=True)

    def rewritten(**changes):
        torch.save({**good, **changes}, path)
        return path

    torch.save({k: v for k, v in good.items() if k != "image_key"}, path)
    with pytest.raises(ValueError, match="lacks image_key"):
        ImageEmbedding.load(path)
    with pytest.raises(ValueError, match="features not of the type"):
        ImageEmbedding.load(rewritten(features=good["features"].tolist()))
    with pytest.raises(ValueError, match="features not of the type"):
        ImageEmbedding.load(rewritten(features=good["features"].double()))
    with pytest.raises(ValueError, match="image_size not of the type"):
        ImageEmbedding.load(rewritten(image_size="64"))
    with pytest.raises(ValueError, match="do not match their digest"):
        ImageEmbedding.load(rewritten(original_size=[64, 96]))  # a swapped frame


@pytest.mark.parametrize("shape", [(256, 4, 4), (2, 256, 4, 4)])
def test_load_refuses_features_not_one_4d_grid(tmp_path, shape):
    emb = ImageEmbedding(torch.randn(shape), ImageFrame((96, 64), 64), "img", "model")
    with pytest.raises(ValueError, match=r"not \(1, C, H, W\)"):
        ImageEmbedding.load(emb.save(tmp_path / "e.pt"))


def test_load_refuses_non_finite_and_other_shapes(tmp_path):
    features = torch.randn(1, 256, 4, 4)
    path = ImageEmbedding(features, ImageFrame((96, 64), 64), "img", "model").save(
        tmp_path / "e.pt"
    )
    with pytest.raises(ValueError, match=r"not the \(1, 256, 8, 8\) this model makes"):
        ImageEmbedding.load(path, expected_shape=(1, 256, 8, 8))
    assert ImageEmbedding.load(path, expected_shape=(1, 256, 4, 4)).features.shape == (1, 256, 4, 4)
    features[0, 3, 1, 2] = float("nan")
    ImageEmbedding(features, ImageFrame((96, 64), 64), "img", "model").save(path)
    with pytest.raises(ValueError, match="non-finite"):
        ImageEmbedding.load(path)


def test_save_leaves_no_partial_files(tmp_path):
    _embedding().save(tmp_path / "e.pt")
    _embedding().save(tmp_path / "e.pt")  # replaces
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.pt"]


# ------------------------------------------------------------------ zarr store on disk
def test_a_zarr_store_holds_one_array_per_window_and_verifies_them(tmp_path):
    import zarr

    store = tmp_path / "embeddings.zarr"
    first = EmbeddingCache(directory=store)
    window = _embedding("abc123-w0-0-64-64-s64", "lite/medsam")
    whole = _embedding("abc123", "lite/medsam")
    first.put(window)
    first.put(whole)
    other = EmbeddingCache(directory=store)  # another process: nothing in memory
    back = other.get("lite/medsam", "abc123-w0-0-64-64-s64")
    assert back is not None and back.image_key == window.image_key
    torch.testing.assert_close(back.features, window.features)
    assert back.frame == window.frame
    assert other.get("lite/medsam", "abc123-w0-0-64-64-s32") is None  # another zoom

    group = zarr.open_group(str(store), mode="r")  # a zarr hierarchy: model, image, window
    arrays = sorted(group["lite_medsam"]["abc123"].array_keys())
    assert arrays == ["image.zarr", "w0-0-64-64-s64.zarr"]
    array = group["lite_medsam"]["abc123"]["w0-0-64-64-s64.zarr"]
    assert array.shape == (1, 256, 4, 4) and array.attrs["image_key"] == window.image_key

    chunk = next(
        p
        for p in (store / "lite_medsam" / "abc123" / "w0-0-64-64-s64.zarr").rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    third = EmbeddingCache(directory=store)
    with pytest.warns(UserWarning, match="refused and will be recomputed"):
        assert third.get("lite/medsam", window.image_key) is None
    third.put(window)  # replaced whole
    assert EmbeddingCache(directory=store).get("lite/medsam", window.image_key) is not None


def test_a_cache_can_start_and_stop_keeping_embeddings_on_disk(tmp_path):
    cache = EmbeddingCache()
    cache.put(_embedding("a"))
    cache.use_directory(tmp_path / "e.zarr")
    cache.put(_embedding("b"))
    cache.use_directory(None)
    cache.put(_embedding("c"))
    on_disk = EmbeddingCache(directory=tmp_path / "e.zarr")
    assert [on_disk.get("model", k) is not None for k in "abc"] == [False, True, False]
