"""Training images for click training: embeddings computed once, masks on the model's grid.

Two sources, both made on this machine:

* generated scenes (:mod:`sam_viz.synthetic.scenes`) with exact nested masks;
* the images that ship with scikit-image, with masks the model produces itself from box
  prompts (SAM's "masks generated automatically":
  :class:`~sam_viz.automatic.everything.MaskGenerator` with the box scheme), each in several
  augmented versions (crops, flips, rotations,
  inverted contrast). scikit-image's ``coins`` is held out: the checks click on it.

The image encoder is frozen, so every image is encoded once; masks are kept on the decoder's
low-resolution grid (the model-input frame, padding included), where the losses are computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sam_viz.automatic.everything import EverythingSettings, MaskGenerator
from sam_viz.predictor import Predictor
from sam_viz.synthetic.scenes import Scene, scenes

# scikit-image samples that need no download, and are not held out for evaluation.
NATURAL_IMAGES: tuple[str, ...] = (
    "astronaut",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "microaneurysms",
    "moon",
    "retina",
    "rocket",
)
HELD_OUT_IMAGES: tuple[str, ...] = ("coins",)
_MIN_LOW_RES_AREA = 6  # pixels of the low-res grid
_MAX_SAMPLE_SIDE = 512  # larger samples are shrunk first: the model sees 256 pixels anyway

# Reports a named stage of the work: ``progress(stage, done, total)``.
StageProgress = Callable[[str, int, int], None]


@dataclass
class TrainingImage:
    """One encoded image and its masks on the decoder's low-resolution grid.

    Attributes:
        name: Where it came from (``"scene 12"``, ``"camera #3"``).
        features: (1, C, h, w) image embedding.
        masks: (M, L, L) bool masks in the model-input frame (L = ``spec.low_res_size``).
        parents: (M,) index of each mask's enclosing mask, or -1.
        generated: True for generated scenes (exact masks), False for the model's own masks.
    """

    name: str
    features: torch.Tensor
    masks: torch.Tensor
    parents: np.ndarray
    generated: bool


def encode(
    predictor: Predictor,
    name: str,
    image: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    parents: np.ndarray,
    *,
    generated: bool,
) -> TrainingImage | None:
    """Encode an image and bring its masks to the low-res grid; None when no mask is left."""
    embedding = predictor.set_image(image)
    low = predictor.spec.low_res_size
    kept: list[np.ndarray] = []
    index_map: dict[int, int] = {}
    for index, mask in enumerate(masks):
        small = embedding.frame.mask_to_low_res(mask, low) > 0.5
        if small.sum() >= _MIN_LOW_RES_AREA:
            index_map[index] = len(kept)
            kept.append(small)
    if not kept:
        return None
    new_parents = np.full(len(kept), -1, np.int64)
    for old, new in index_map.items():
        parent = int(parents[old])
        while parent >= 0 and parent not in index_map:  # skip parents that were dropped
            parent = int(parents[parent])
        new_parents[new] = index_map.get(parent, -1)
    return TrainingImage(
        name=name,
        features=embedding.features.detach().float().cpu(),
        masks=torch.from_numpy(np.stack(kept)),
        parents=new_parents,
        generated=generated,
    )


def scene_images(
    predictor: Predictor,
    seed: int,
    count: int,
    progress: StageProgress | None = None,
) -> list[TrainingImage]:
    """Generate ``count`` scenes from ``seed`` and encode them."""
    out = []
    for index, scene in enumerate(scenes(seed, count)):
        item = encode(
            predictor, f"scene {index}", scene.image, scene.masks, scene.parents, generated=True
        )
        if item is not None:
            out.append(item)
        if progress is not None:
            progress("scenes", index + 1, count)
    return out


def _augment(
    rng: np.random.Generator, image: np.ndarray, masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A random crop (half to all of each side), flip, quarter turn and, for grey, inversion."""
    height, width = image.shape[:2]
    crop_h = int(height * rng.uniform(0.5, 1.0))
    crop_w = int(width * rng.uniform(0.5, 1.0))
    top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
    image = image[top : top + crop_h, left : left + crop_w]
    masks = masks[:, top : top + crop_h, left : left + crop_w]
    if rng.random() < 0.5:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    turns = int(rng.integers(0, 4))
    image, masks = np.rot90(image, turns), np.rot90(masks, turns, axes=(1, 2))
    if image.ndim == 2 and rng.random() < 0.3:
        image = image.max() - image
    return np.ascontiguousarray(image), np.ascontiguousarray(masks)


def automatic_masks(predictor: Predictor, image: np.ndarray) -> np.ndarray:
    """The model's own masks for every object it finds with boxes: (K, H, W) bool."""
    settings = EverythingSettings(prompts="boxes", whole_image=True).with_overrides(
        pred_iou_thresh=0.8
    )
    result = MaskGenerator(predictor, settings).generate(image)
    shape = image.shape[:2]
    if not result.masks:
        return np.zeros((0, *shape), bool)
    return np.stack([mask.full(shape) for mask in result.masks])


def sample_image(name: str) -> np.ndarray:
    """A scikit-image sample as 8-bit grey or RGB, at most 512 pixels a side."""
    import skimage.data
    from skimage.transform import rescale

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    side = max(image.shape[:2])
    if side > _MAX_SAMPLE_SIDE:
        image = rescale(
            image,
            _MAX_SAMPLE_SIDE / side,
            channel_axis=-1 if image.ndim == 3 else None,
            anti_aliasing=True,
            preserve_range=True,
        )
    return np.round(image).clip(0, 255).astype(np.uint8)


def natural_images(
    predictor: Predictor,
    seed: int,
    augmentations: int,
    names: Iterable[str] = NATURAL_IMAGES,
    progress: StageProgress | None = None,
) -> list[TrainingImage]:
    """The data engine: the model's masks on scikit-image's samples, augmented and encoded.

    Args:
        predictor: The original model (its box answers become the masks).
        seed: Seed of the augmentations.
        augmentations: Augmented versions per image (besides the image itself).
        names: scikit-image sample names.
        progress: Called with (stage, done, total).

    Returns:
        The encoded images that have at least one mask.
    """
    rng = np.random.default_rng(seed)
    names = list(names)
    out = []
    for index, name in enumerate(names):
        image = sample_image(name)
        masks = automatic_masks(predictor, image)
        if len(masks):
            parents = np.full(len(masks), -1, np.int64)
            for version in range(augmentations + 1):
                if version == 0:
                    picture, version_masks = image, masks
                else:
                    picture, version_masks = _augment(rng, image, masks)
                item = encode(
                    predictor, f"{name} #{version}", picture, version_masks, parents,
                    generated=False,
                )  # fmt: skip
                if item is not None:
                    out.append(item)
        if progress is not None:
            progress("data engine", index + 1, len(names))
    return out


def held_out_scenes(seed: int, count: int) -> list[Scene]:
    """Scenes from a seed stream the training never uses (the training seed + 10_000)."""
    return scenes(seed + 10_000, count)
