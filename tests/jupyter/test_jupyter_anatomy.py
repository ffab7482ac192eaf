"""The teaching computations, checked against the model's own modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_viz.jupyter import anatomy


@pytest.fixture
def embedded(tiny_predictor, non_square_image):
    return tiny_predictor, tiny_predictor.set_image(non_square_image)


def test_point_encoding_is_the_models_fourier_features(tiny_model):
    encoder = tiny_model.prompt_encoder
    xy = np.array([[0.0, 0.0], [10.0, 77.0], [127.0, 3.5]])
    ours = anatomy.point_positional_encoding(tiny_model, xy)
    with torch.inference_mode():
        theirs = encoder.pe_layer.forward_with_coords(
            torch.tensor(xy + 0.5, dtype=torch.float32)[None], encoder.input_image_size
        )[0]
    assert ours.shape == (3, 256)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)
    # sin^2 + cos^2 = 1 per frequency: every encoding has length sqrt(128).
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.sqrt(128), rtol=1e-6)


def test_image_encoding_is_the_same_features_at_cell_centres(tiny_model):
    dense = anatomy.image_positional_encoding(tiny_model)
    grid = dense.shape[-1]
    centres = (np.arange(grid) + 0.5) / grid
    coords = np.stack(np.meshgrid(centres, centres, indexing="xy"), axis=-1)
    ours = anatomy.fourier_encoding(coords, anatomy.gaussian_matrix(tiny_model))
    np.testing.assert_allclose(ours.transpose(2, 0, 1), dense, atol=1e-4)


@pytest.mark.parametrize("with_box", [False, True])
def test_sparse_tokens_are_positional_plus_learned(tiny_model, embedded, with_box):
    _, embedding = embedded
    frame = embedding.frame
    points = np.array([[10.0, 20.0], [40.0, 70.0]])
    labels = np.array([1, 0])
    box = (5.0, 8.0, 50.0, 90.0) if with_box else None
    tokens = anatomy.sparse_tokens(tiny_model, frame, points, labels, box)
    kinds = [t.kind for t in tokens]
    if with_box:
        assert kinds == ["positive point", "negative point", "box top-left", "box bottom-right"]
    else:
        assert kinds == ["positive point", "negative point", "padding (not a point)"]
    learned = anatomy.learned_embeddings(tiny_model)
    np.testing.assert_array_equal(
        tokens[0].learned, tiny_model.prompt_encoder.point_embeddings[1].weight[0].detach().numpy()
    )
    np.testing.assert_array_equal(tokens[1].learned, learned["negative point"])

    coords = torch.tensor(frame.points_to_model(points), dtype=torch.float32)[None]
    boxes = (
        None
        if box is None
        else torch.tensor(frame.boxes_to_model(np.array([box])), dtype=torch.float32)
    )
    with torch.inference_mode():
        sparse, _ = tiny_model.prompt_encoder(
            points=(coords, torch.tensor(labels)[None]), boxes=boxes, masks=None
        )
    np.testing.assert_allclose(np.stack([t.total for t in tokens]), sparse[0].numpy(), atol=1e-4)


def test_mask_path_steps_down_to_the_embedding_grid(tiny_model):
    encoder = tiny_model.prompt_encoder
    low = int(encoder.mask_input_size[0])
    grid = int(encoder.image_embedding_size[0])
    assert low == 4 * grid
    logits = np.random.default_rng(1).normal(size=(low, low)).astype(np.float32)
    stages = anatomy.mask_prompt_path(tiny_model, logits)
    shapes = [s.maps.shape for s in stages]
    assert shapes == [
        (1, low, low),
        (4, low // 2, low // 2),
        (4, low // 2, low // 2),
        (4, low // 2, low // 2),
        (16, grid, grid),
        (16, grid, grid),
        (16, grid, grid),
        (256, grid, grid),
    ]
    assert stages[1].name == "conv 2x2 stride 2 \u2192 4 channels"
    assert stages[4].name == "conv 2x2 stride 2 \u2192 16 channels"
    assert stages[7].name == "conv 1x1 stride 1 \u2192 256 channels"
    with torch.inference_mode():
        _, dense = encoder(points=None, boxes=None, masks=torch.from_numpy(logits)[None, None])
    np.testing.assert_allclose(stages[-1].maps, dense[0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="mask_logits must have shape"):
        anatomy.mask_prompt_path(tiny_model, logits[:8, :8])
    np.testing.assert_array_equal(
        anatomy.no_mask_dense(tiny_model)[:, 3, 5],
        anatomy.learned_embeddings(tiny_model)["no mask"],
    )


def test_decoder_trace_matches_the_predictor(embedded):
    predictor, embedding = embedded
    box = (4.0, 10.0, 50.0, 80.0)
    points, labels = np.array([[20.0, 40.0]]), np.array([1])
    trace = anatomy.decoder_trace(predictor, embedding, points, labels, box)
    prediction = predictor.predict(points, labels, box, embedding=embedding)
    assert trace.token_names == (
        "IoU token",
        "mask token 0",
        "mask token 1",
        "mask token 2",
        "mask token 3",
    )
    assert [t.kind for t in trace.sparse] == ["positive point", "box top-left", "box bottom-right"]
    assert trace.tokens_in.shape == trace.tokens_out.shape == (5, 256)
    assert not np.allclose(trace.tokens_in, trace.tokens_out)
    assert trace.hyper_weights.shape[0] == 4
    for j, token in enumerate(prediction.token_indices):
        np.testing.assert_allclose(
            trace.low_res_logits[token], prediction.low_res_logits[j], atol=1e-4
        )
        assert trace.iou_scores[token] == pytest.approx(prediction.iou_scores[j], abs=1e-5)
        assert trace.candidate_names[token] == prediction.names[j]
    # SAM's training: the ambiguity-aware tokens are the candidates, token 0 is not.
    assert trace.offered_tokens == (1, 2, 3)
    assert trace.candidate_names[0] == "not offered"
    assert trace.best_offered == 1 + int(np.argmax(trace.iou_scores[1:]))
    single = predictor.predict(points, labels, box, embedding=embedding, multimask_output=False)
    np.testing.assert_allclose(trace.low_res_logits[0], single.low_res_logits[0], atol=1e-4)
    # With a mask prompt, the dense part is the mask path's output.
    masked = anatomy.decoder_trace(
        predictor, embedding, points, labels, box, mask_logits=trace.low_res_logits[1]
    )
    path = anatomy.mask_prompt_path(predictor.model, trace.low_res_logits[1])
    np.testing.assert_allclose(masked.dense, path[-1].maps, atol=1e-5)


def test_similarity_peaks_at_the_point(tiny_model):
    size = anatomy.input_size(tiny_model)[0]
    grid = int(tiny_model.prompt_encoder.image_embedding_size[0])
    xy = np.array([0.3 * size, 0.7 * size])
    similarity = anatomy.similarity_map(tiny_model, xy)
    row, col = np.unravel_index(np.argmax(similarity), similarity.shape)
    cell = (xy + 0.5) / size * grid
    assert abs(col + 0.5 - cell[0]) <= 1 and abs(row + 0.5 - cell[1]) <= 1
    assert similarity.max() > 0.9


def test_similarity_depends_on_the_offset_vector(tiny_model):
    size = anatomy.input_size(tiny_model)[0]
    grid = int(tiny_model.prompt_encoder.image_embedding_size[0])
    xy = np.array([0.4 * size, 0.55 * size])
    # The map over the grid is the offset kernel at (cell centre - point).
    centres = (np.arange(grid) + 0.5) * size / grid - 0.5
    offsets = np.stack(np.meshgrid(centres, centres, indexing="xy"), axis=-1) - xy
    np.testing.assert_allclose(
        anatomy.similarity_map(tiny_model, xy),
        anatomy.offset_similarity(tiny_model, offsets),
        atol=1e-5,
    )
    assert anatomy.offset_similarity(tiny_model, np.zeros(2)) == pytest.approx(1.0)
    # Not a function of the distance alone: the same distance in other directions differs.
    radii = [anatomy.half_similarity_radius(tiny_model, angle) for angle in range(0, 180, 15)]
    assert max(radii) > 1.05 * min(radii)
    angles = np.linspace(0, np.pi, 24)
    ring = np.mean(radii) * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    assert np.ptp(anatomy.offset_similarity(tiny_model, ring)) > 0.03


def test_frequency_order_sorts_sin_then_cos_by_wavelength(tiny_model):
    order = anatomy.frequency_order(tiny_model)
    lengths = anatomy.wavelengths(tiny_model)
    count = len(lengths)
    assert sorted(order) == list(range(2 * count))
    assert np.all(np.diff(lengths[order[:count]]) <= 0)
    np.testing.assert_array_equal(order[count:], order[:count] + count)


def test_frequency_channels_span_the_wavelengths(tiny_model):
    lengths = anatomy.wavelengths(tiny_model)
    channels = anatomy.frequency_channels(tiny_model, 4)
    assert lengths[channels[0]] == lengths.max() and lengths[channels[-1]] == lengths.min()
    assert list(lengths[channels]) == sorted(lengths[channels], reverse=True)


@pytest.mark.slow
def test_real_model_mask_path_and_learned_embeddings(lite_predictor):
    model = lite_predictor.model
    stages = anatomy.mask_prompt_path(model, np.zeros((256, 256), np.float32))
    assert [s.maps.shape for s in stages][::3] == [(1, 256, 256), (4, 128, 128), (16, 64, 64)]
    assert stages[-1].maps.shape == (256, 64, 64)
    learned = anatomy.learned_embeddings(model)
    # LiteMedSAM offers its single-mask output (the one it was trained for) as a candidate.
    embedding = lite_predictor.set_image(np.tile(np.arange(64, dtype=np.uint8), (48, 1)))
    trace = anatomy.decoder_trace(lite_predictor, embedding, box_xyxy=(10, 10, 40, 30))
    assert trace.offered_tokens[0] == 0 and len(trace.offered_tokens) == 3
    assert trace.candidate_names.count("not offered") == 1
    note = anatomy.mask_token_note(trace, lite_predictor.spec)
    assert "trained with the single-mask output only" in note
    assert f"token 0 as {trace.candidate_names[0]}" in note
    # Trained vectors: the four prompt kinds are told apart.
    vectors = np.stack([learned[name] for name in anatomy.POINT_EMBEDDING_NAMES])
    assert np.linalg.matrix_rank(vectors) == 4
