"""Encoder throughput: GELUs fused into the layers before them, and windows encoded in
batches while the next batch is prepared, with the same embeddings as one by one."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch.profiler import profile

import sam_viz.modeling.fused as fused
import sam_viz.predictor.predictor as predictor_module
from sam_viz.modeling import TinyViT
from sam_viz.modeling.tiny_vit import MBConv, PatchMerging, TinyViTMlp
from sam_viz.predictor import Cancelled, EmbeddingCache, Predictor
from sam_viz.synthetic.microscopy import make_field
from sam_viz.windows.scaled import ScaledImage


def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(0.3 * torch.randn(tensor.shape, generator=generator))
    return module.eval()


def _plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused, "fusion_available", lambda: False)


@pytest.mark.skipif(not fused.fusion_available(), reason="no oneDNN fused operators here")
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: MBConv(16, 4.0), (16, 40, 36)),
        (lambda: PatchMerging(16, 32), (16, 40, 36)),
        (lambda: PatchMerging(16, 320), (16, 20, 20)),
        (lambda: TinyViTMlp(24, 96), (30, 22, 24)),
    ],
)
def test_fused_blocks_equal_the_plain_operators(make, shape, batch, monkeypatch) -> None:
    block = _randomised(make(), 1)
    for module in block.modules():
        if hasattr(module, "fuse_"):
            module.fuse_()
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2))
    if not isinstance(block, TinyViTMlp):
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        with profile() as trace:
            fast = block(x)
        _plain(monkeypatch)
        plain = block(x)
    ops = {event.key for event in trace.key_averages()}
    assert ops & {"mkldnn::_convolution_pointwise", "mkldnn::_linear_pointwise"}, ops
    assert fast.shape == plain.shape
    assert (fast - plain).abs().max().item() <= 1e-4


def test_fusion_stays_off_where_it_cannot_run() -> None:
    block = _randomised(MBConv(8, 2.0), 3)
    x = torch.randn(1, 8, 12, 12)
    # With gradients (training and fine-tuning) the plain operators run and autograd works.
    out = block(x.requires_grad_())
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_a_batch_is_embedded_as_its_windows_one_by_one(tiny_predictor) -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((150, 210)) * 255).astype(np.uint8)
    scaled = ScaledImage(tiny_predictor, image, diameter=12)
    windows = [(window, scaled.scale.side) for window in scaled.grid.windows]
    assert len(windows) >= 4
    one_by_one = Predictor(tiny_predictor.model, tiny_predictor.spec, device="cpu")
    alone = ScaledImage(one_by_one, image, diameter=12)
    calls: list[int] = []
    hook = tiny_predictor.model.image_encoder.register_forward_hook(
        lambda _m, inputs, _o: calls.append(inputs[0].shape[0])
    )
    reported: list[tuple[int, int]] = []
    try:
        embeddings = tiny_predictor.encode_many(
            [(scaled._pixels(w), scaled._frame(w, s), scaled.window_key(w, s)) for w, s in windows],
            batch_size=3,
            progress=lambda done, total: reported.append((done, total)),
        )
    finally:
        hook.remove()
    total = len(windows)
    assert calls == [min(3, total - i) for i in range(0, total, 3)]
    assert reported[0] == (0, total) and reported[-1] == (total, total)
    for (window, side), batched in zip(windows, embeddings, strict=True):
        single = alone.embedding(window, side)
        assert batched.image_key == single.image_key
        assert batched.features.shape == single.features.shape
        assert (batched.features - single.features).abs().max().item() <= 1e-4


def test_cached_windows_are_not_encoded_again(tiny_predictor) -> None:
    image = (np.random.default_rng(1).random((260, 260)) * 255).astype(np.uint8)
    scaled = ScaledImage(tiny_predictor, image, diameter=10)
    first = scaled.grid.windows[0]
    scaled.embedding(first)
    seen: list[int] = []
    hook = tiny_predictor.model.image_encoder.register_forward_hook(
        lambda _m, inputs, _o: seen.append(inputs[0].shape[0])
    )
    try:
        total = scaled.embed_all()
        again = scaled.embed_all()
    finally:
        hook.remove()
    assert total == again == len(scaled.grid)
    assert sum(seen) == len(scaled.grid) - 1  # the first one was cached, the rerun all
    assert all(scaled.is_embedded(window) for window in scaled.grid.windows)


def test_cancel_stops_between_batches_and_keeps_what_was_done(tiny_predictor) -> None:
    image = (np.random.default_rng(2).random((300, 300)) * 255).astype(np.uint8)
    scaled = ScaledImage(tiny_predictor, image, diameter=10)
    cancel = threading.Event()
    windows = [(w, scaled.scale.side) for w in scaled.grid.windows]

    def progress(done: int, _total: int) -> None:
        if done >= 2:
            cancel.set()

    with pytest.raises(Cancelled):
        tiny_predictor.encode_many(
            [(scaled._pixels(w), scaled._frame(w, s), scaled.window_key(w, s)) for w, s in windows],
            batch_size=2,
            progress=progress,
            cancel=cancel,
        )
    done = [scaled.is_embedded(w, s) for w, s in windows]
    assert done[:2] == [True, True] and not any(done[2:])


def test_the_cpu_encodes_one_window_per_call(tiny_predictor) -> None:
    assert tiny_predictor.encoder_batch_size() == predictor_module.MAX_CPU_BATCH == 1


def test_the_batch_size_follows_the_free_memory(tiny_predictor, monkeypatch) -> None:
    monkeypatch.setattr(predictor_module, "MAX_CPU_BATCH", predictor_module.MAX_ENCODER_BATCH)
    per_window = predictor_module.WINDOW_BYTES_PER_PIXEL * tiny_predictor.spec.image_size**2
    monkeypatch.setattr(predictor_module, "available_memory", lambda: 4 * per_window * 3)
    assert tiny_predictor.encoder_batch_size() == 3
    monkeypatch.setattr(predictor_module, "available_memory", lambda: per_window)
    assert tiny_predictor.encoder_batch_size() == 1
    monkeypatch.setattr(predictor_module, "available_memory", lambda: 1 << 50)
    assert tiny_predictor.encoder_batch_size() == predictor_module.MAX_ENCODER_BATCH


@pytest.mark.slow
def test_the_real_encoder_fused_and_batched_gives_the_same_masks(lite_predictor) -> None:
    field = make_field("nuclei", 4, (384, 384), diameter=20)
    predictor = Predictor(
        lite_predictor.model, lite_predictor.spec, device="cpu", cache=EmbeddingCache(64)
    )
    scaled = ScaledImage(predictor, field.image, diameter=20)
    scaled.embed_all()
    ids = [i for i in np.unique(field.labels) if i][:6]
    boxes = []
    for label in ids:
        rows, cols = np.nonzero(field.labels == label)
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    fast = [scaled.predict(box_xyxy=np.array(b, float)).masks for b in boxes]
    encoder = predictor.model.image_encoder
    assert isinstance(encoder, TinyViT)
    plain_predictor = Predictor(
        lite_predictor.model, lite_predictor.spec, device="cpu", cache=EmbeddingCache(64)
    )
    original = fused.fusion_available
    fused.fusion_available = lambda: False
    try:
        plain = ScaledImage(plain_predictor, field.image, diameter=20)
        for window in plain.grid.windows:
            plain.embedding(window)
        slow = [plain.predict(box_xyxy=np.array(b, float)).masks for b in boxes]
    finally:
        fused.fusion_available = original
    for a, b in zip(fast, slow, strict=True):
        assert np.array_equal(a, b)
