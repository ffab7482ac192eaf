"""What SAM's prompt encoder and mask decoder compute, step by step, as arrays.

UI-free (NumPy and PyTorch only): the teaching views (:mod:`sam_viz.jupyter.figures`,
:mod:`sam_viz.jupyter.explorer`) draw these, and tests compare them with the model's own
modules.

The path of a prompt, in SAM's own module names:

1. A point (x, y) in original pixels is mapped to model-input pixels (the image is resized
   so its longest side is ``S``), shifted to the pixel centre (+ 0.5) and normalised to
   [0, 1] by ``S``.
2. ``prompt_encoder.pe_layer`` (random Fourier features) turns it into 256 numbers:
   ``sin`` and ``cos`` of ``2 pi (2 c - 1) @ G`` for a fixed random Gaussian matrix ``G``
   (2 x 128), ``positional_encoding_gaussian_matrix``.
3. A learned vector is added: ``point_embeddings[1]`` for a positive point, ``[0]`` for a
   negative one, ``[2]`` and ``[3]`` for a box's top-left and bottom-right corners. Points
   without a box get one padding token, ``not_a_point_embed`` (with no positional part).
4. A mask prompt (low-res logits, 4x the embedding grid) goes through
   ``prompt_encoder.mask_downscaling``: conv 2x2 stride 2 to 4 channels, LayerNorm, GELU,
   conv 2x2 stride 2 to 16 channels, LayerNorm, GELU, conv 1x1 to 256 channels, so it lands
   on the image embedding's grid. Without a mask, ``no_mask_embed`` is added everywhere.
5. The image embedding gets its own positional encoding, the same Fourier features at every
   grid cell centre (``get_dense_pe()``).
6. The mask decoder prepends its output tokens (``iou_token`` and 4 ``mask_tokens``) to the
   prompt tokens, runs the two-way transformer, and reads the IoU scores from the IoU token
   and one mask per mask token (token 0 is the single-mask output, tokens 1-3 the three
   ambiguity-aware ones; which of them a model's candidates are: :func:`mask_token_note`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from sam_viz.modeling.sam import Sam
from sam_viz.models.registry import ModelSpec
from sam_viz.predictor import Predictor
from sam_viz.predictor.cache import ImageEmbedding
from sam_viz.predictor.transforms import ImageFrame
from sam_viz.prompts import POSITIVE, PromptSet, validate_prompts

# point_embeddings[i] is the learned vector for: negative point, positive point, box corners.
POINT_EMBEDDING_NAMES = ("negative point", "positive point", "box top-left", "box bottom-right")


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def gaussian_matrix(model: Sam) -> np.ndarray:
    """SAM's random Fourier matrix ``G``, shape (2, F): row 0 multiplies x, row 1 y."""
    gaussian = model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    return _numpy(cast(torch.Tensor, gaussian))  # a registered buffer


def input_size(model: Sam) -> tuple[int, int]:
    """(height, width) of the model input the prompt coordinates are normalised by."""
    height, width = model.prompt_encoder.input_image_size
    return int(height), int(width)


def fourier_encoding(coords01: np.ndarray, gaussian: np.ndarray) -> np.ndarray:
    """Random Fourier features of normalised coordinates.

    Args:
        coords01: (..., 2) (x, y) coordinates in [0, 1].
        gaussian: (2, F) frequency matrix.

    Returns:
        (..., 2F): ``sin`` of the F projections, then their ``cos``.
    """
    projected = 2 * math.pi * ((2 * np.asarray(coords01, dtype=np.float64) - 1) @ gaussian)
    return np.concatenate([np.sin(projected), np.cos(projected)], axis=-1)


def normalized_coords(model: Sam, xy_model: np.ndarray) -> np.ndarray:
    """Model-input pixel coordinates (..., 2) to the [0, 1] coordinates the encoder uses
    (pixel centre: + 0.5, then divided by the input size)."""
    height, width = input_size(model)
    coords = np.asarray(xy_model, dtype=np.float64) + 0.5
    return coords / np.array([width, height], dtype=np.float64)


def point_positional_encoding(model: Sam, xy_model: np.ndarray) -> np.ndarray:
    """The positional part of point prompts: (N, 2) model-input (x, y) pixels to (N, 256)."""
    return fourier_encoding(normalized_coords(model, xy_model), gaussian_matrix(model))


def image_positional_encoding(model: Sam) -> np.ndarray:
    """The image embedding's positional encoding, (256, G, G) (``get_dense_pe()``)."""
    with torch.inference_mode():
        return _numpy(model.prompt_encoder.get_dense_pe()[0])


def wavelengths(model: Sam) -> np.ndarray:
    """Wavelength in model-input pixels of each of the F frequencies (channel k and F + k).

    Channel k varies as ``sin(2 pi * 2 * (x g_x + y g_y) / S + const)``, a plane wave of
    wavelength ``S / (2 |g|)`` where g is column k of ``G``.
    """
    gaussian = gaussian_matrix(model)
    size = max(input_size(model))
    return size / (2 * np.maximum(np.linalg.norm(gaussian, axis=0), 1e-12))


def frequency_channels(model: Sam, count: int = 4) -> np.ndarray:
    """``count`` sin channels spread from the longest wavelength to the shortest."""
    order = np.argsort(-wavelengths(model))
    picks = np.linspace(0, len(order) - 1, count).round().astype(int)
    return order[picks]


def frequency_order(model: Sam) -> np.ndarray:
    """(2F,) channel indices sorted by frequency: the F sin channels from the longest
    wavelength to the shortest, then their cos channels in the same order.

    SAM stores the channels in the random order of ``G``'s columns, so a strip of an
    encoding in raw order hides which waves change slowly as a point moves.
    """
    order = np.argsort(-wavelengths(model), kind="stable")
    return np.concatenate([order, order + len(order)])


def offset_similarity(model: Sam, offsets_xy_model: np.ndarray) -> np.ndarray:
    """Cosine similarity between the encodings of two points ``offset`` apart.

    Each sin/cos pair contributes ``cos`` of its phase difference, so the similarity is
    ``mean_k cos(4 pi (dx g_xk / W + dy g_yk / H))``: a function of the offset vector
    (dx, dy), not only of its length. ``G``'s columns point in random directions with
    random lengths, so the bump is stretched more in some directions than in others.

    Args:
        offsets_xy_model: (..., 2) offsets (dx, dy) in model-input pixels.

    Returns:
        (...,) similarities in [-1, 1]; 1 at offset (0, 0).
    """
    height, width = input_size(model)
    steps = np.asarray(offsets_xy_model, dtype=np.float64) / np.array([width, height])
    return np.cos(4 * math.pi * (steps @ gaussian_matrix(model))).mean(axis=-1)


def half_similarity_radius(model: Sam, angle_deg: float, *, step: float = 0.25) -> float:
    """How far (model-input pixels) a point must move in direction ``angle_deg`` (0: +x,
    90: +y, down) before its encoding's similarity to the start drops below one half."""
    direction = np.array([math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))])
    distances = np.arange(0.0, max(input_size(model)), step)
    below = np.flatnonzero(offset_similarity(model, distances[:, None] * direction) < 0.5)
    return float(distances[below[0]]) if len(below) else float("inf")


def similarity_map(model: Sam, xy_model: np.ndarray) -> np.ndarray:
    """Cosine similarity (G, G) between one point's encoding and the image's at every cell.

    Every encoding has the same norm (sqrt(F): each sin/cos pair has length 1), so this is the
    dot product up to a constant: a bump centred on the point, which is how attention between
    prompt tokens and image tokens knows "where". Its shape is that of
    :func:`offset_similarity`: it depends on the direction of the offset, not only on the
    distance.
    """
    point = point_positional_encoding(model, np.reshape(xy_model, (1, 2)))[0]
    dense = image_positional_encoding(model)
    dots = np.tensordot(point, dense, axes=(0, 0))
    norms = np.linalg.norm(point) * np.linalg.norm(dense, axis=0)
    return dots / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class SparseToken:
    """One sparse prompt token: a positional part plus a learned part.

    Attributes:
        kind: "positive point", "negative point", "box top-left", "box bottom-right" or
            "padding (not a point)".
        xy_model: (x, y) in model-input pixels (before the +0.5 shift), or None for padding.
        positional: (256,) Fourier features of the position (zeros for padding).
        learned: (256,) the learned embedding added for this kind.
    """

    kind: str
    xy_model: tuple[float, float] | None
    positional: np.ndarray
    learned: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """(256,) the token the decoder sees: positional + learned."""
        return self.positional + self.learned


def learned_embeddings(model: Sam) -> dict[str, np.ndarray]:
    """The learned (256,) vectors of the prompt encoder, by name."""
    encoder = model.prompt_encoder
    named = {
        name: _numpy(cast(torch.nn.Embedding, encoder.point_embeddings[i]).weight[0])
        for i, name in enumerate(POINT_EMBEDDING_NAMES)
    }
    named["padding (not a point)"] = _numpy(encoder.not_a_point_embed.weight[0])
    named["no mask"] = _numpy(encoder.no_mask_embed.weight[0])
    return named


def sparse_tokens(
    model: Sam,
    frame: ImageFrame,
    points_xy: object = None,
    point_labels: object = None,
    box_xyxy: object = None,
) -> list[SparseToken]:
    """The sparse tokens of a prompt set, built the way SAM's prompt encoder builds them.

    Args:
        model: A SAM model.
        frame: The image's frame (``embedding.frame``).
        points_xy: (N, 2) (x, y) points in original pixels.
        point_labels: (N,) 1 positive, 0 negative; all positive when omitted.
        box_xyxy: One (x0, y0, x1, y1) box in original pixels, or None.

    Returns:
        Points first (and one padding token when there is no box), then the two box corners.

    Raises:
        ValueError: As :func:`sam_viz.prompts.validate_prompts`.
    """
    prompts = validate_prompts(frame.original_size, points_xy, point_labels, box_xyxy)
    learned = learned_embeddings(model)
    tokens = []
    points = frame.points_to_model(prompts.points_xy)
    encodings = point_positional_encoding(model, points)
    for xy, label, encoding in zip(points, prompts.point_labels, encodings, strict=True):
        kind = "positive point" if label == POSITIVE else "negative point"
        tokens.append(SparseToken(kind, (float(xy[0]), float(xy[1])), encoding, learned[kind]))
    if len(prompts.points_xy) and not len(prompts.boxes_xyxy):
        zeros = np.zeros_like(learned["padding (not a point)"])
        tokens.append(
            SparseToken("padding (not a point)", None, zeros, learned["padding (not a point)"])
        )
    for box in frame.boxes_to_model(prompts.boxes_xyxy):
        corners = box.reshape(2, 2)
        for xy, kind, encoding in zip(
            corners,
            POINT_EMBEDDING_NAMES[2:],
            point_positional_encoding(model, corners),
            strict=True,
        ):
            tokens.append(SparseToken(kind, (float(xy[0]), float(xy[1])), encoding, learned[kind]))
    return tokens


@dataclass(frozen=True)
class MaskStage:
    """One intermediate of the dense (mask) prompt path.

    Attributes:
        name: What produced it, e.g. "conv 2x2 stride 2 -> 4 channels".
        maps: (C, h, w) float32 feature maps.
    """

    name: str
    maps: np.ndarray


def mask_prompt_path(model: Sam, mask_logits: np.ndarray) -> list[MaskStage]:
    """Run a mask prompt through ``prompt_encoder.mask_downscaling`` one layer at a time.

    Args:
        mask_logits: (L, L) low-res logits (``Prediction.low_res_logits[i]``), L = 4 G.

    Returns:
        The input, then the output of every layer; the last is the (256, G, G) dense prompt
        embedding added to the image embedding.

    Raises:
        ValueError: If the mask is not (L, L) for this model.
    """
    encoder = model.prompt_encoder
    expected = tuple(int(v) for v in encoder.mask_input_size)
    logits = np.asarray(mask_logits, dtype=np.float32)
    if logits.shape != expected:
        raise ValueError(
            f"mask_logits must have shape {expected} for this model, got {logits.shape}."
        )
    x = torch.from_numpy(logits)[None, None].to(encoder.no_mask_embed.weight.device)
    stages = [MaskStage("mask prompt (low-res logits)", _numpy(x[0]))]
    with torch.inference_mode():
        for layer in encoder.mask_downscaling:
            x = layer(x)
            stages.append(MaskStage(_layer_name(layer), _numpy(x[0])))
    return stages


def _layer_name(layer: torch.nn.Module) -> str:
    if isinstance(layer, torch.nn.Conv2d):
        k, s = layer.kernel_size[0], layer.stride[0]
        return f"conv {k}x{k} stride {s} \u2192 {layer.out_channels} channels"
    return type(layer).__name__


def no_mask_dense(model: Sam) -> np.ndarray:
    """The dense prompt without a mask: ``no_mask_embed`` at every grid cell, (256, G, G)."""
    grid = tuple(int(v) for v in model.prompt_encoder.image_embedding_size)
    vector = _numpy(model.prompt_encoder.no_mask_embed.weight[0])
    return np.broadcast_to(vector[:, None, None], (len(vector), *grid)).copy()


@dataclass(frozen=True)
class DecoderTrace:
    """What the mask decoder did with one prompt set.

    Attributes:
        token_names: "IoU token", "mask token 0" .. "mask token 3": the decoder's own
            output tokens, which enter the transformer ahead of the prompt tokens.
        tokens_in: (5, 256) those tokens as learned (``iou_token``, ``mask_tokens``).
        tokens_out: (5, 256) the same tokens after the two-way transformer has mixed them
            with the prompt tokens and the image.
        iou_scores: (4,) predicted IoU of each mask token's mask.
        low_res_logits: (4, L, L) each mask token's mask logits.
        hyper_weights: (4, C) the weights each mask token's hypernetwork MLP makes; a mask is
            these weights dotted with the upscaled image features at every pixel.
        candidate_names: For each mask token, the candidate name the predictor gives it
            ("subpart", "part", "whole" by area), or "not offered" for a token that is not
            one of its candidates.
        offered_tokens: The mask tokens the predictor offers, in token order: 1-3 where the
            model's ambiguity-aware tokens were trained for this prompt; otherwise token 0
            (the single-mask output) and the two of 1-3 it scores highest (see
            :func:`mask_token_note`).
        sparse: The sparse prompt tokens (see :func:`sparse_tokens`).
        dense: (256, G, G) the dense prompt added to the image embedding.
    """

    token_names: tuple[str, ...]
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    iou_scores: np.ndarray
    low_res_logits: np.ndarray
    hyper_weights: np.ndarray
    candidate_names: tuple[str, ...]
    offered_tokens: tuple[int, ...]
    sparse: list[SparseToken]
    dense: np.ndarray

    @property
    def best_offered(self) -> int:
        """The offered mask token with the highest predicted IoU."""
        return max(self.offered_tokens, key=lambda k: float(self.iou_scores[k]))


def token_role(token: int) -> str:
    """What mask token ``token`` is for: SAM's single-mask output (0) or one of its three
    ambiguity-aware outputs (1-3)."""
    return "single-mask output" if token == 0 else "ambiguity-aware output"


def mask_token_note(trace: DecoderTrace, spec: ModelSpec) -> str:
    """In words: what mask token 0 and tokens 1-3 are, which of them this model's
    candidates are for this prompt, and why (plain text)."""
    offered = trace.offered_tokens
    text = (
        "Mask token 0 is SAM's single-mask output: the one mask SAM returns when asked for "
        "one (multimask_output=False), meant for prompts that leave no doubt. Tokens 1-3 are "
        "its ambiguity-aware outputs, trained to give three different plausible masks "
        "(such as subpart, part, whole) for an ambiguous prompt like a single click. "
    )
    if tuple(offered) == (1, 2, 3):
        return text + (
            f"{spec.title} trained them for this prompt, so tokens 1-3 are the three "
            "candidates, named by area; token 0 is not offered."
        )
    why = {
        "none": "it was trained with the single-mask output only",
        "single_click": "they were trained for a single click only",
    }.get(spec.multimask, "they were not trained for it")
    left_out = [k for k in range(1, len(trace.candidate_names)) if k not in offered]
    named = ", ".join(f"token {k} as {trace.candidate_names[k]}" for k in offered)
    return text + (
        f"{spec.title}'s tokens 1-3 were not trained for this prompt ({why}), so sam_viz "
        "offers token 0 plus the two of tokens 1-3 with the highest predicted IoU, named by "
        f"area ({named}); token {', '.join(map(str, left_out))} is not offered."
    )


def decoder_trace(
    predictor: Predictor,
    embedding: ImageEmbedding,
    points_xy: object = None,
    point_labels: object = None,
    box_xyxy: object = None,
    mask_logits: np.ndarray | None = None,
) -> DecoderTrace:
    """Run the prompt encoder and mask decoder on one prompt set and record the internals.

    Args:
        predictor: The predictor whose model to use.
        embedding: The image (``predictor.set_image(image)``).
        points_xy: (N, 2) points in original (x, y) pixels.
        point_labels: (N,) 1 positive, 0 negative.
        box_xyxy: One box (x0, y0, x1, y1) in original pixels.
        mask_logits: An optional (L, L) low-res mask prompt.

    Returns:
        A :class:`DecoderTrace`; its masks and scores are the predictor's for the same prompt.

    Raises:
        ValueError: As :func:`sam_viz.prompts.validate_prompts`.
    """
    model = predictor.model
    frame = embedding.frame
    device = predictor.device
    prompts = validate_prompts(frame.original_size, points_xy, point_labels, box_xyxy)
    has_points, has_box = len(prompts.points_xy) > 0, len(prompts.boxes_xyxy) > 0
    sparse = sparse_tokens(
        model,
        frame,
        prompts.points_xy if has_points else None,
        prompts.point_labels if has_points else None,
        prompts.boxes_xyxy[0] if has_box else None,
    )
    points, boxes, masks = _model_prompts(frame, prompts, mask_logits, device)

    # The prompt encoder and the decoder, with the decoder's own tokens before and after.
    decoder = model.mask_decoder
    with torch.inference_mode():
        sparse_embed, dense_embed = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
        out = decoder.predict_masks_with_tokens(
            image_embeddings=embedding.features.to(device),
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse_embed,
            dense_prompt_embeddings=dense_embed,
        )
        tokens_in = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens_out = torch.cat([out.iou_token[:1], out.mask_tokens[0]], dim=0)
    n_mask = int(decoder.mask_tokens.weight.shape[0])
    names, offered = _candidate_names(predictor, embedding, prompts, mask_logits, n_mask)
    return DecoderTrace(
        token_names=("IoU token", *[f"mask token {k}" for k in range(n_mask)]),
        tokens_in=_numpy(tokens_in),
        tokens_out=_numpy(tokens_out),
        iou_scores=_numpy(out.iou_pred[0]),
        low_res_logits=_numpy(out.masks[0]),
        hyper_weights=_numpy(out.hyper_in[0]),
        candidate_names=names,
        offered_tokens=offered,
        sparse=sparse,
        dense=_numpy(dense_embed[0]),
    )


def _model_prompts(
    frame: ImageFrame,
    prompts: PromptSet,
    mask_logits: np.ndarray | None,
    device: torch.device,
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, torch.Tensor | None]:
    """The prompt encoder's inputs: (points and labels, first box, mask), in model pixels."""
    has_points, has_box = len(prompts.points_xy) > 0, len(prompts.boxes_xyxy) > 0
    points = None
    if has_points:
        coords = torch.as_tensor(frame.points_to_model(prompts.points_xy), dtype=torch.float32)
        labels = torch.as_tensor(prompts.point_labels, dtype=torch.int64)
        points = (coords[None].to(device), labels[None].to(device))
    boxes = None
    if has_box:
        boxes = torch.as_tensor(
            frame.boxes_to_model(prompts.boxes_xyxy[:1]), dtype=torch.float32
        ).to(device)
    masks = None
    if mask_logits is not None:
        masks = torch.as_tensor(np.asarray(mask_logits, np.float32), device=device)[None, None]
    return points, boxes, masks


def _candidate_names(
    predictor: Predictor,
    embedding: ImageEmbedding,
    prompts: PromptSet,
    mask_logits: np.ndarray | None,
    n_mask: int,
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Each mask token's candidate name (by area) or "not offered", and the offered tokens."""
    has_points, has_box = len(prompts.points_xy) > 0, len(prompts.boxes_xyxy) > 0
    offered = predictor.predict(
        prompts.points_xy if has_points else None,
        prompts.point_labels if has_points else None,
        prompts.boxes_xyxy[0] if has_box else None,
        mask_logits,
        embedding=embedding,
    )
    names = ["not offered"] * n_mask
    for name, token in zip(offered.names, offered.token_indices, strict=True):
        names[int(token)] = name
    return tuple(names), tuple(sorted(int(token) for token in offered.token_indices))
