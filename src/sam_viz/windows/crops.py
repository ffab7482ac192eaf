"""Small objects: predict on a window around the prompt, encoded at the model's input size.

The model sees the whole image resized to ``spec.image_size`` pixels: for the embedded
LiteMedSAM (256) a 15-pixel nucleus of a 1024x1024 image shrinks to 4 pixels, too few to
outline. :func:`predict_with_crop` instead encodes a square window around the box at the
model's input size, so the model sees the object at the image's own resolution (one image
pixel per model pixel; larger boxes get a window ``context`` times their size), predicts
there, and pastes the masks back.

Measured with LiteMedSAM on synthetic nuclei in a 1024x1024 image (9 per size, mean IoU
with the box from the true outline; ``benchmarks/bench_everything.py --only small``):

=================  ==========  ==============  ======================
nucleus diameter    whole image  crop (256 px)   also tried
=================  ==========  ==============  ======================
8-12 px             0.47        0.71            128 px window: 0.79
12-18 px            0.53        0.80            128 px: 0.75, 64: 0.64
20-28 px            0.61        0.93            128 px: 0.78, 64: 0.73
32-44 px            0.86        0.94            128 px: 0.96
=================  ==========  ==============  ======================

Windows smaller than the model input (upsampled) helped less, except for the tiniest.

Window corners snap to a grid of a quarter side, so nearby prompts of similar size share a
window, and its embedding comes from the cache.

:func:`should_crop` is the rule for when to use it; :func:`predict_auto` applies it.

Conventions: boxes ``XYXY`` and points ``(x, y)`` in pixels of the whole image.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from sam_viz.models.registry import ModelSpec
from sam_viz.predictor import Prediction, Predictor, ProgressCallback
from sam_viz.windows.tiling import Window, WindowedImage

# Use a crop when the box's longer side, measured in model-input pixels, is below this.
CROP_BELOW_MODEL_PIXELS = 24.0
# Window side as a multiple of the box's longer side (when that exceeds the model input).
DEFAULT_CONTEXT = 3.0
_MIN_WINDOW = 32


def _ladder_side(side: float) -> int:
    """The smallest side >= ``side`` of the form 2^k or 1.5 * 2^k (at least 32)."""
    side = max(side, _MIN_WINDOW)
    k = math.floor(math.log2(side))
    for base in (2**k, 1.5 * 2**k, 2 ** (k + 1)):
        if base >= side:
            return math.ceil(base)
    return int(2 ** (k + 1))


def crop_window(
    box_xyxy: object,
    image_hw: tuple[int, int],
    *,
    min_side: int = 0,
    context: float = DEFAULT_CONTEXT,
) -> Window:
    """A square window around a box: ``context`` times its longer side, at least ``min_side``.

    Args:
        box_xyxy: (x0, y0, x1, y1) box in image pixels.
        image_hw: (H, W) of the image.
        min_side: Smallest window side (the model's input size, for native resolution).
        context: Window side as a multiple of the box's longer side (>= 1).

    Returns:
        (x0, y0, x1, y1) integer window. Its side is snapped to a ladder of sizes (2^k and
        1.5 * 2^k) and its corner to a grid of a quarter side, unless that would cut the box;
        near the image edge the window is shifted inwards, and it is clipped to the image
        when larger.

    Raises:
        ValueError: For a malformed box or ``context`` < 1.
    """
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise ValueError(f"box_xyxy must be 4 finite numbers (x0, y0, x1, y1), got {box_xyxy!r}.")
    if context < 1:
        raise ValueError(f"context must be >= 1 (a window at least the box's size), got {context}.")
    height, width = image_hw
    x0, y0 = min(box[0], box[2]), min(box[1], box[3])
    x1, y1 = max(box[0], box[2]), max(box[1], box[3])
    side = _ladder_side(max(context * max(x1 - x0, y1 - y0, 1.0), min_side))
    step = side / 4

    def place(low: float, high: float, length: int) -> tuple[int, int]:
        if side >= length:
            return 0, length
        start = round(((low + high) / 2 - side / 2) / step) * step
        if start > low or start + side < high:  # snapping would cut the box
            start = (low + high) / 2 - side / 2
        start = round(float(min(max(start, 0), length - side)))
        return start, start + side

    wx0, wx1 = place(x0, x1, width)
    wy0, wy1 = place(y0, y1, height)
    return wx0, wy0, wx1, wy1


def box_model_side(spec: ModelSpec, image_hw: tuple[int, int], box_xyxy: object) -> float:
    """The box's longer side in pixels of the model input when the whole image is encoded."""
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    return float(max(abs(box[2] - box[0]), abs(box[3] - box[1])) * spec.image_size / max(image_hw))


def should_crop(
    spec: ModelSpec,
    image_hw: tuple[int, int],
    box_xyxy: object,
    *,
    below_model_pixels: float = CROP_BELOW_MODEL_PIXELS,
    context: float = DEFAULT_CONTEXT,
) -> bool:
    """Whether :func:`predict_with_crop` should answer this box instead of the whole image.

    True when the box, seen in the whole-image embedding, is shorter than
    ``below_model_pixels`` model pixels and the crop window would be smaller than the image
    (so the object is magnified).
    """
    if box_model_side(spec, image_hw, box_xyxy) >= below_model_pixels:
        return False
    x0, y0, x1, y1 = crop_window(box_xyxy, image_hw, min_side=spec.image_size, context=context)
    return max(x1 - x0, y1 - y0) < max(image_hw)


def _as_source(image: object) -> WindowedImage:
    return image if isinstance(image, WindowedImage) else WindowedImage(image)


def predict_with_crop(
    predictor: Predictor,
    image: object,
    box_xyxy: object,
    points_xy: object = None,
    point_labels: object = None,
    *,
    multimask_output: bool = True,
    context: float = DEFAULT_CONTEXT,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Prediction:
    """Segment the object in a box from a window around it, encoded at the model's size.

    Args:
        predictor: The shared predictor (its current image is left alone).
        image: The whole image (array), or a :class:`~sam_viz.windows.tiling.WindowedImage` of it
            (reuse one for many prompts: its contrast is computed once).
        box_xyxy: (x0, y0, x1, y1) box in image pixels.
        points_xy: Optional (N, 2) extra points (x, y) in image pixels.
        point_labels: Their labels (1 positive, 0 negative).
        multimask_output: As in :meth:`Predictor.predict`.
        context: Window side as a multiple of the box's longer side, when that is more than
            the model's input size.
        progress: Called as ``progress(done, total)`` while the window is encoded.
        cancel: Set it to stop; :class:`~sam_viz.predictor.Cancelled` is raised.

    Returns:
        A :class:`~sam_viz.predictor.Prediction` whose masks have the whole image's shape.
        Its ``low_res_logits`` are in the window's frame: to refine on the whole image, pass
        a mask (not the logits) as ``mask_input``.

    Raises:
        ValueError: For invalid prompts (see :func:`sam_viz.prompts.validate_prompts`).
    """
    source = _as_source(image)
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    window = crop_window(box, source.shape, min_side=predictor.spec.image_size, context=context)
    embedding = source.embed(predictor, window, progress=progress, cancel=cancel)
    wx0, wy0, wx1, wy1 = window
    offset = np.array([wx0, wy0], dtype=np.float64)
    points = None
    if points_xy is not None:
        points = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2) - offset
        points = np.clip(points, 0, [wx1 - wx0, wy1 - wy0])
    local = predictor.predict(
        points_xy=points,
        point_labels=point_labels,
        box_xyxy=box - np.tile(offset, 2),
        multimask_output=multimask_output,
        embedding=embedding,
    )
    return local.pasted(window, source.shape)


def predict_auto(
    predictor: Predictor,
    image: object,
    box_xyxy: object,
    points_xy: object = None,
    point_labels: object = None,
    *,
    multimask_output: bool = True,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Prediction:
    """Like :meth:`Predictor.predict` on ``image`` with a box, using a crop for small boxes.

    The rule is :func:`should_crop`; otherwise the whole image's embedding is used (cached).
    Arguments as :func:`predict_with_crop`.
    """
    source = _as_source(image)
    if should_crop(predictor.spec, source.shape, box_xyxy):
        return predict_with_crop(
            predictor,
            source,
            box_xyxy,
            points_xy,
            point_labels,
            multimask_output=multimask_output,
            progress=progress,
            cancel=cancel,
        )
    embedding = source.embed(predictor, progress=progress, cancel=cancel)
    return predictor.predict(
        points_xy=points_xy,
        point_labels=point_labels,
        box_xyxy=box_xyxy,
        multimask_output=multimask_output,
        embedding=embedding,
    )
