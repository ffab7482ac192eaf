"""Embedding cache: memory LRU, disk round trip, stale files refused."""

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
