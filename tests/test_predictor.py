"""The shared predictor, on a tiny random-weight model and a non-square image."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from sam_viz.predictor import Cancelled, Predictor
from sam_viz.predictor.cache import EmbeddingCache
from sam_viz.prompts import validate_prompts


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_set_image_embeds_once_and_caches(tiny_predictor, non_square_image):
    calls = _count_calls(tiny_predictor.model.image_encoder)
    first = tiny_predictor.set_image(non_square_image)
    second = tiny_predictor.set_image(non_square_image.copy())
    assert calls[0] == 1
    assert second is first
    assert first.features.shape == (1, 256, 8, 8)
    assert first.frame.original_size == (96, 64)


def test_two_predictors_sharing_a_cache_share_the_embedding(
    tiny_model, tiny_spec, non_square_image
):
    cache = EmbeddingCache()
    a = Predictor(tiny_model, tiny_spec, device="cpu", cache=cache)
    b = Predictor(tiny_model, tiny_spec, device="cpu", cache=cache)
    calls = _count_calls(tiny_model.image_encoder)
    assert a.set_image(non_square_image) is b.set_image(non_square_image)
    assert calls[0] == 1


def test_progress_is_reported_and_cancel_keeps_the_previous_image(tiny_predictor, non_square_image):
    steps = []
    first = tiny_predictor.set_image(non_square_image, progress=lambda d, t: steps.append((d, t)))
    assert steps[-1][0] == steps[-1][1] and len(steps) >= 3
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        tiny_predictor.set_image(non_square_image[::-1].copy(), cancel=cancel)
    assert tiny_predictor.embedding is first


def test_predict_returns_three_candidates_at_original_size_ordered_by_area(
    tiny_predictor, non_square_image
):
    tiny_predictor.set_image(non_square_image)
    result = tiny_predictor.predict(
        points_xy=[[20, 50]], point_labels=[1], box_xyxy=[10, 28, 42, 72]
    )
    assert result.masks.shape == (3, 96, 64) and result.masks.dtype == bool
    assert result.names == ("subpart", "part", "whole")
    areas = result.masks.reshape(3, -1).sum(1)
    assert list(areas) == sorted(areas)
    assert result.iou_scores.shape == (3,)
    assert result.low_res_logits.shape == (3, 32, 32)
    assert sorted(result.token_indices.tolist()) == [1, 2, 3]
    np.testing.assert_array_equal(result.mask("whole"), result.masks[2])
    assert 0 <= result.best < 3


def test_candidates_are_ranked_by_predicted_iou_times_stability(tiny_predictor, non_square_image):
    embedding = tiny_predictor.set_image(non_square_image)
    result = tiny_predictor.predict(points_xy=[[20, 50]], point_labels=[1])
    grid = embedding.frame.valid_low_res(torch.from_numpy(result.low_res_logits))[0]
    inner, outer = (grid > 1).sum((1, 2)), (grid > -1).sum((1, 2))
    want = np.where(outer > 0, inner / np.maximum(outer, 1), 0)
    np.testing.assert_allclose(result.stability_scores, want, rtol=1e-6)
    assert result.best == int(np.argmax(result.iou_scores * result.stability_scores))
    # A confident but unstable mask loses to a stable one.
    ranked = dataclasses.replace(
        result, iou_scores=np.array([0.9, 0.8, 0.7]), stability_scores=np.array([0.5, 1, 1])
    )
    assert ranked.best == 1


def test_single_mask_output(tiny_predictor, non_square_image):
    tiny_predictor.set_image(non_square_image)
    result = tiny_predictor.predict(box_xyxy=[10, 28, 42, 72], multimask_output=False)
    assert result.masks.shape == (1, 96, 64) and result.names == ("mask",)
    assert result.token_indices.tolist() == [0]


@pytest.mark.parametrize(
    ("multimask", "click", "box", "expected"),
    [
        ("all", True, False, "multimask"),
        ("all", False, True, "multimask"),
        ("single_click", True, False, "multimask"),
        ("single_click", False, True, "single+2"),  # box: trained on the single output only
        ("single_click", False, False, "single+2"),  # two clicks
        ("none", True, False, "single+2"),
    ],
)
def test_candidates_come_from_the_tokens_trained_for_the_prompt(
    tiny_predictor, tiny_spec, non_square_image, multimask, click, box, expected
):
    import dataclasses

    tiny_predictor.spec = dataclasses.replace(tiny_spec, multimask=multimask)
    tiny_predictor.set_image(non_square_image)
    points = [[20, 50]] if click else [[20, 50], [25, 40]]
    result = tiny_predictor.predict(
        points_xy=None if box else points, box_xyxy=[10, 28, 42, 72] if box else None
    )
    tokens = sorted(result.token_indices.tolist())
    if expected == "multimask":
        assert tokens == [1, 2, 3]
    else:
        assert tokens[0] == 0 and len(set(tokens)) == 3


def test_points_reach_the_model_as_x_y_in_model_pixels(tiny_predictor, non_square_image):
    """A swapped (row, col) would show up here: the image is 96 rows by 64 columns."""
    seen = {}

    def spy(module, args, kwargs):
        seen["points"] = kwargs["points"]
        seen["boxes"] = kwargs["boxes"]

    tiny_predictor.model.prompt_encoder.register_forward_pre_hook(spy, with_kwargs=True)
    tiny_predictor.set_image(non_square_image)
    tiny_predictor.predict(points_xy=[[60, 10]], box_xyxy=[0, 0, 64, 96])
    coords, labels = seen["points"]
    # input size for 96x64 at 128 is 128x85: sx = 85/64, sy = 128/96
    np.testing.assert_allclose(coords[0, 0].numpy(), [60 * 85 / 64, 10 * 128 / 96], rtol=1e-5)
    np.testing.assert_allclose(seen["boxes"][0].numpy(), [0, 0, 85, 128], rtol=1e-5)
    assert labels.tolist() == [[1]]


def test_predict_boxes_is_one_batched_call_matching_single_calls(
    tiny_predictor, non_square_image, monkeypatch
):
    from sam_viz.predictor.batch_decoder import BatchDecoder

    tiny_predictor.set_image(non_square_image)
    boxes = np.array([[10, 28, 42, 72], [0, 0, 30, 30], [30, 50, 64, 96]], float)
    batches = []
    transformer = BatchDecoder.transformer

    def counted(self, prepared, sparse, **kwargs):
        batches.append(sparse.shape[0])
        return transformer(self, prepared, sparse, **kwargs)

    monkeypatch.setattr(BatchDecoder, "transformer", counted)
    batched = tiny_predictor.predict_boxes(boxes)
    assert batches == [3]
    assert batched.masks.shape == (3, 96, 64) and batched.iou_scores.shape == (3,)
    for i, box in enumerate(boxes):
        single = tiny_predictor.predict(box_xyxy=box, multimask_output=False)
        np.testing.assert_allclose(batched.low_res_logits[i], single.low_res_logits[0], atol=1e-4)
        np.testing.assert_array_equal(batched.masks[i], single.masks[0])


def test_the_shared_image_decoder_matches_the_model_decoder(tiny_predictor, non_square_image):
    """Without a mask prompt, predictions go through BatchDecoder; the model's own decoder
    (used with a mask prompt, or in bfloat16) gives the same logits."""
    embedding = tiny_predictor.set_image(non_square_image)
    prompts = validate_prompts(
        embedding.frame.original_size, [[20, 50], [30, 60]], [1, 0], np.array([10, 28, 42, 72.0])
    )

    def all_tokens(_: torch.Tensor) -> torch.Tensor:
        return torch.arange(4)

    fast = tiny_predictor._decode(embedding, prompts, per_box=False, choose=all_tokens)
    with torch.inference_mode():
        sparse, dense = tiny_predictor.model.prompt_encoder(
            points=(
                torch.as_tensor(embedding.frame.points_to_model(prompts.points_xy))[None].float(),
                torch.as_tensor(prompts.point_labels)[None],
            ),
            boxes=torch.as_tensor(embedding.frame.boxes_to_model(prompts.boxes_xyxy)).float(),
            masks=None,
        )
        plain = tiny_predictor.model.mask_decoder.predict_masks(
            embedding.features, tiny_predictor.dense_pe, sparse, dense
        )
    torch.testing.assert_close(fast[0], plain[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast[1], plain[1], atol=1e-5, rtol=1e-4)
    # The prepared image is reused.
    again = tiny_predictor._decode(embedding, prompts, per_box=False, choose=all_tokens)
    torch.testing.assert_close(again[0], fast[0])


def test_bfloat16_runs_only_the_mask_upscaling_in_reduced_precision(
    tiny_model, tiny_spec, non_square_image
):
    """In bfloat16 the transformer and IoU head stay float32 (same scores, same tokens);
    only the upscaling's products are rounded, which moves logits by a little."""
    exact = Predictor(tiny_model, tiny_spec, device="cpu")
    reduced = Predictor(tiny_model, tiny_spec, device="cpu", precision="bfloat16")
    prompt = {"points_xy": [[20, 50]], "point_labels": [1], "box_xyxy": [10, 28, 42, 72]}
    embedding = exact.set_image(non_square_image)  # one float32 embedding for both
    want, got = exact.predict(**prompt), reduced.predict(**prompt, embedding=embedding)
    assert got.low_res_logits.dtype == np.float32
    np.testing.assert_array_equal(got.token_indices, want.token_indices)
    np.testing.assert_allclose(got.iou_scores, want.iou_scores, rtol=1e-6)
    scale = np.abs(want.low_res_logits).max()
    error = np.abs(got.low_res_logits - want.low_res_logits).max()
    assert 0 < error < 0.02 * scale  # rounded (so bf16 did run), but only a little


def test_mask_prompt_as_previous_logits_or_user_mask(tiny_predictor, non_square_image):
    tiny_predictor.set_image(non_square_image)
    first = tiny_predictor.predict(box_xyxy=[10, 28, 42, 72])
    refined = tiny_predictor.predict(box_xyxy=[10, 28, 42, 72], mask_input=first.low_res_logits[2])
    assert not np.allclose(refined.low_res_logits, first.low_res_logits)
    user_mask = np.zeros((96, 64), bool)
    user_mask[30:70, 12:40] = True
    from_mask = tiny_predictor.predict(mask_input=user_mask)
    assert from_mask.masks.shape == (3, 96, 64)
    with pytest.raises(ValueError, match="mask_input has shape"):
        tiny_predictor.predict(mask_input=np.zeros((10, 10)))
    with pytest.raises(ValueError, match="NaN"):
        tiny_predictor.predict(mask_input=np.full((32, 32), np.nan, np.float32))


def test_bad_calls_raise_clear_errors(tiny_predictor, non_square_image):
    with pytest.raises(RuntimeError, match="set_image"):
        tiny_predictor.predict(box_xyxy=[0, 0, 10, 10])
    tiny_predictor.set_image(non_square_image)
    with pytest.raises(ValueError, match="predict_boxes"):
        tiny_predictor.predict(box_xyxy=[[0, 0, 10, 10], [1, 1, 5, 5]])
    with pytest.raises(ValueError, match="outside the image"):
        tiny_predictor.predict(points_xy=[[100, 10]])
    with pytest.raises(ValueError, match="empty"):
        tiny_predictor.predict()
    with pytest.raises(ValueError, match="accepted shapes"):
        tiny_predictor.set_image(np.zeros((4, 96, 64, 3)))


def test_explicit_embedding_pins_the_image(tiny_predictor, non_square_image):
    tall = tiny_predictor.set_image(non_square_image)
    tiny_predictor.set_image(np.zeros((50, 70), np.uint8))
    result = tiny_predictor.predict(box_xyxy=[10, 28, 42, 72], embedding=tall)
    assert result.masks.shape[1:] == (96, 64)


def test_unavailable_device_is_a_clear_error(tiny_model, tiny_spec):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        Predictor(tiny_model, tiny_spec, device="cuda")
