"""Stacks: shared contrast, per-slice embeddings on disk, propagation through slices."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sam_viz.automatic.stacks import (
    PropagationRun,
    StackImages,
    embed_stack,
    propagate,
    validate_stack,
)
from sam_viz.predictor import Cancelled, Predictor
from sam_viz.predictor.cache import EmbeddingCache
from sam_viz.synthetic.microscopy import make_field


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


def test_each_direction_says_where_and_why_it_stopped(tiny_predictor) -> None:
    stack = np.random.default_rng(1).integers(0, 255, (5, 32, 48), dtype=np.uint8)
    mask = np.zeros((32, 48), bool)
    mask[8:24, 10:30] = True
    # No mask can have a billion pixels: both directions stop on their first slice.
    result = propagate(tiny_predictor, stack, 2, mask, min_area=10**9)
    forward, backward = result.runs
    assert (forward.direction, forward.slices, forward.stopped_at) == ("forward", (), 3)
    assert (backward.direction, backward.slices, backward.stopped_at) == ("backward", (), 1)
    for run in result.runs:
        assert run.reason in ("empty", "small") and run.threshold == 10**9
        assert run.value is not None and run.value < run.threshold
    assert (result.first, result.last) == (2, 2) and not result.masks[[0, 1, 3, 4]].any()
    assert "Forward: not carried; stopped at slice 3: its mask there" in result.describe()
    # Only forward: one run, which reports the stack's end when it gets there.
    forward_only = propagate(tiny_predictor, stack, 4, mask, direction="forward")
    assert forward_only.run("backward") is None
    assert forward_only.runs == (PropagationRun("forward", 4, (), "stack_end"),)
    assert forward_only.describe() == "Forward: not carried, slice 4 is the stack's last."


@pytest.mark.parametrize(
    ("run", "text"),
    [
        (
            PropagationRun("forward", 10, (), "stability", 11, 0.74, 0.8),
            "forward: not carried; stopped at slice 11: stability score 0.74 < 0.80",
        ),
        (
            PropagationRun("backward", 10, (9, 8), "score", 7, 0.61, 0.7),
            "backward: carried to slices 9-8; stopped at slice 7: predicted IoU 0.61 < 0.70",
        ),
        (
            PropagationRun("forward", 3, (4,), "growth", 5, 2.6, 2.0),
            "forward: carried to slice "
            "4; stopped at slice 5: its mask there was 2.6x the previous slice's area (> 2.0x)",
        ),
        (
            PropagationRun("forward", 3, (4,), "overlap", 5, 0.3, 0.5),
            "only 30% of its mask there lay on the previous slice's (< 50%)",
        ),
        (
            PropagationRun("backward", 3, (2, 1, 0), "stack_end"),
            "backward: carried to slices 2-0, the stack's first slice",
        ),
    ],
)
def test_a_run_reads_as_a_sentence(run, text) -> None:
    assert text in run.describe()
    assert run.reached == (run.slices[-1] if run.slices else run.start)


def nucleus_on_every_slice(
    depth: int,
    label: int = 23,
    seed: int = 2,
    field_shape: tuple[int, int] = (256, 256),
    crop: tuple[int, int] = (96, 128),
    diameter: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A generated nuclei field (16-bit, dim, noisy) cropped around one nucleus (centred
    where the field allows), on every slice of a stack with fresh camera-like noise per
    slice; and that nucleus's mask. LiteMedSAM answers the default nucleus (180 px) with
    stability scores of 0.7-0.8, which stopped propagation on its start slice under a
    fixed cut-off of 0.8."""
    field = make_field("nuclei", seed, field_shape, diameter=diameter)
    rows, cols = np.nonzero(field.labels == label)
    height, width = crop
    y0 = int(np.clip(rows.mean() - height / 2, 0, field_shape[0] - height))
    x0 = int(np.clip(cols.mean() - width / 2, 0, field_shape[1] - width))
    image = field.image[y0 : y0 + height, x0 : x0 + width].astype(np.float64)
    rng = np.random.default_rng(0)
    noise = 0.05 * field.image.std()
    stack = image + rng.normal(0, noise, (depth, *image.shape))
    nucleus = field.labels[y0 : y0 + height, x0 : x0 + width] == label
    return np.clip(stack, 0, 65535).astype(np.uint16), nucleus


@pytest.mark.slow
def test_a_nucleus_on_every_slice_is_carried_both_ways_to_the_stack_ends(lite_predictor) -> None:
    stack, nucleus = nucleus_on_every_slice(9)
    images = StackImages(lite_predictor, stack, diameter=16)
    result = propagate(lite_predictor, images, 4, nucleus)
    assert (result.first, result.last) == (0, 8), result.describe()
    # The mask does not creep outwards slice after slice (each box was once a pixel looser
    # than the previous mask: 180 px became 277 px four slices away).
    for z in range(9):
        iou = (result.masks[z] & nucleus).sum() / (result.masks[z] | nucleus).sum()
        assert iou >= 0.8, f"slice {z}: IoU {iou:.2f}"
    forward, backward = result.run("forward"), result.run("backward")
    assert forward == PropagationRun("forward", 4, (5, 6, 7, 8), "stack_end")
    assert backward == PropagationRun("backward", 4, (3, 2, 1, 0), "stack_end")
    assert result.describe() == (
        "Forward: carried to slices 5-8, the stack's last slice. "
        "Backward: carried to slices 3-0, the stack's first slice."
    )


@pytest.mark.slow
def test_an_embedded_stack_is_only_decoded(lite_predictor) -> None:
    # A nucleus larger than the typical one, between two grid windows: neither leaves half
    # its side as room, so it was answered in a window of its own, embedded anew on every
    # slice, though every plane was embedded.
    stack, nucleus = nucleus_on_every_slice(5, 3, 3, (256, 320), (160, 192), diameter=24)
    predictor = Predictor(
        lite_predictor.model, lite_predictor.spec, device="cpu", cache=EmbeddingCache(64)
    )
    images = StackImages(predictor, stack, diameter=24)
    embed_stack(predictor, images)
    encoded: list[int] = []
    hook = predictor.model.image_encoder.register_forward_hook(lambda *_: encoded.append(1))
    try:
        result = propagate(predictor, images, 2, nucleus)
    finally:
        hook.remove()
    assert not encoded, f"{len(encoded)} windows embedded during propagation"
    assert (result.first, result.last) == (0, 4), result.describe()
    for z in range(5):
        iou = (result.masks[z] & nucleus).sum() / (result.masks[z] | nucleus).sum()
        assert iou >= 0.85, f"slice {z}: IoU {iou:.2f}"


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
        # Each direction names the test that ended it, on the slice past the last one found.
        forward, backward = result.run("forward"), result.run("backward")
        assert forward is not None and backward is not None
        assert (forward.stopped_at, backward.stopped_at) == (result.last + 1, result.first - 1)
        for run in (forward, backward):
            assert run.value is not None and run.threshold is not None, run
            if run.reason == "growth":
                assert run.value > run.threshold
            else:
                assert run.value < run.threshold
