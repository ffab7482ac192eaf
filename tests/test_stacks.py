"""Stacks: shared contrast, per-slice embeddings on disk, propagation through slices."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sam_viz.automatic.stacks import StackImages, embed_stack, propagate, validate_stack
from sam_viz.predictor import Cancelled, Predictor
from sam_viz.predictor.cache import EmbeddingCache


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((5, 5), "stack must have shape"),
        ((2, 8, 8, 2), "stack must have shape"),
        ((0, 8, 8), "no slices"),
    ],
)
def test_bad_stacks_are_refused(shape, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate_stack(np.zeros(shape, np.uint8))


def test_contrast_and_scale_are_shared_by_the_whole_stack(tiny_predictor) -> None:
    stack = np.zeros((3, 12, 10), np.uint16)
    stack[0, :6] = 1000
    stack[2] = 1000  # a bright slice
    stack[1, 0, 0] = 4000
    images = StackImages(tiny_predictor, stack, contrast="minmax", diameter=5)
    # The same raw value maps to the same model input on every slice.
    assert images.slice(0).rgb01[0, 0, 0] == pytest.approx(images.slice(2).rgb01[5, 5, 0])
    assert images.slice(1).rgb01[0, 0, 0] == pytest.approx(1.0)
    assert images.slice(-1).rgb01.shape == (12, 10, 3)
    assert {images.slice(i).diameter for i in range(3)} == {5.0}
    with pytest.raises(IndexError):
        images.slice(3)
    with pytest.raises(ValueError, match="contrast"):
        StackImages(tiny_predictor, stack, contrast="gamma")
    estimated = StackImages(tiny_predictor, stack)  # one estimate for every slice
    assert len({estimated.slice(i).diameter for i in range(3)}) == 1


def test_stack_embeddings_round_trip_on_disk(tiny_model, tiny_spec, tmp_path) -> None:
    stack = np.random.default_rng(0).integers(0, 255, (3, 40, 56), dtype=np.uint8)
    writer = Predictor(
        tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path)
    )
    steps: list[tuple[int, int]] = []
    images = StackImages(writer, stack, diameter=20)
    windows = embed_stack(writer, images, progress=lambda d, t: steps.append((d, t)))
    assert steps == [(1, 3), (2, 3), (3, 3)]
    files = sorted(tmp_path.rglob("*.pt"))
    assert windows == len(files) == 3 * len(images.slice(0).grid)
    reader = Predictor(
        tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path)
    )

    def no_encoding(*args, **kwargs):
        raise AssertionError("the embedding should have come from disk")

    reader._encode = no_encoding
    again = StackImages(reader, stack, diameter=20)
    assert embed_stack(reader, again) == windows
    window = again.slice(1).grid.windows[0]
    ours, theirs = again.slice(1).embedding(window), images.slice(1).embedding(window)
    assert np.array_equal(ours.features.numpy(), theirs.features.numpy())
    # Another model's reader does not take these files.
    other = Predictor(
        tiny_model,
        tiny_spec,
        device="cpu",
        cache=EmbeddingCache(directory=tmp_path),
        model_key="other",
    )
    assert other.cache.get("other", theirs.image_key) is None
    assert writer.cache.get(writer.model_key, theirs.image_key) is not None


def test_propagate_bad_input(tiny_predictor) -> None:
    stack = np.zeros((4, 32, 48), np.uint8)
    mask = np.zeros((32, 48), bool)
    mask[10:20, 10:20] = True
    with pytest.raises(ValueError, match="shape"):
        propagate(tiny_predictor, stack, 1, mask[:, :40])
    with pytest.raises(ValueError, match="empty"):
        propagate(tiny_predictor, stack, 1, np.zeros_like(mask))
    with pytest.raises(ValueError, match="outside the stack"):
        propagate(tiny_predictor, stack, 4, mask)
    with pytest.raises(ValueError, match="direction"):
        propagate(tiny_predictor, stack, 1, mask, direction="up")


def test_propagate_cancel_and_progress(tiny_predictor) -> None:
    stack = np.random.default_rng(1).integers(0, 255, (5, 32, 48), dtype=np.uint8)
    mask = np.zeros((32, 48), bool)
    mask[8:24, 10:30] = True
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        propagate(tiny_predictor, stack, 2, mask, cancel=cancel)
    steps: list[tuple[int, int]] = []
    result = propagate(
        tiny_predictor,
        stack,
        2,
        mask,
        min_score=-1.0,
        min_overlap=0.0,
        max_growth=1e9,
        min_area=1,
        progress=lambda d, t: steps.append((d, t)),
    )
    assert result.masks.shape == (5, 32, 48) and result.masks[2].sum() == mask.sum()
    assert steps[-1] == (4, 4)
    assert np.isnan(result.scores).sum() == 5 - (result.last - result.first + 1)


def spheres_stack(
    shape: tuple[int, int, int], balls: list[tuple[int, int, int, float, float]], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bright balls on a dark noisy background, and their label volume.

    Each ball is (z, y, x, radius in slices, radius in pixels): a sphere imaged with slices
    several pixels apart, as is usual in microscopy.
    """
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    truth = np.zeros(shape, np.int32)
    for index, (z, y, x, rz, rxy) in enumerate(balls, start=1):
        inside = ((zz - z) / rz) ** 2 + ((yy - y) / rxy) ** 2 + ((xx - x) / rxy) ** 2 <= 1
        truth[inside] = index
    volume = np.where(truth > 0, 180.0, 45.0) + rng.normal(0, 15, shape)
    return np.clip(volume, 0, 255).astype(np.uint8), truth


@pytest.mark.slow
def test_propagation_recovers_spheres_slice_by_slice(lite_predictor) -> None:
    balls = [(7, 96, 70, 5.5, 40.0), (6, 96, 190, 4.5, 36.0)]
    stack, truth = spheres_stack((14, 192, 256), balls)
    # The session predictor's model with a cache that holds the whole stack.
    predictor = Predictor(
        lite_predictor.model, lite_predictor.spec, device="cpu", cache=EmbeddingCache(max_items=16)
    )
    images = StackImages(predictor, stack)
    for index, (z, *_rest) in enumerate(balls, start=1):
        ball = truth == index
        result = propagate(predictor, images, z, ball[z])
        largest = ball.sum(axis=(1, 2)).max()
        for s in range(stack.shape[0]):
            if ball[s].sum() >= 0.25 * largest:  # the poles' small caps may be missed
                iou = (result.masks[s] & ball[s]).sum() / (result.masks[s] | ball[s]).sum()
                assert iou >= 0.8, f"ball {index}, slice {s}: IoU {iou:.2f}"
        # It stops where the ball ends: nothing on slices without the ball.
        present = np.flatnonzero(ball.any(axis=(1, 2)))
        assert present[0] <= result.first and result.last <= present[-1]
        assert not result.masks[~ball.any(axis=(1, 2))].any()
