"""Model variants as data: one frozen :class:`ModelSpec` per variant in :data:`MODELS`.

The names are the ones users know from segment-anything (``vit_b``, ``vit_l``, ``vit_h``),
MobileSAM (``mobile_sam``), MedSAM (``lite_medsam``) and micro-sam's microscopy models
(``vit_b_lm``, ``vit_b_em_organelles``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

PromptKind = Literal["point", "box", "mask"]
ALL_PROMPT_KINDS: frozenset[PromptKind] = frozenset({"point", "box", "mask"})
MultimaskTraining = Literal["all", "single_click", "none"]

# Hex digest length per hash algorithm a download may be checked with (pooch's names; xxh128
# needs the ``xxhash`` package).
HASH_HEX_LENGTHS: dict[str, int] = {"sha256": 64, "xxh128": 32}

# SAM's ImageNet statistics on a 0..255 scale.
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ViTConfig:
    """SAM's ViT image encoder (windowed attention with a few global blocks)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16


@dataclass(frozen=True)
class TinyViTConfig:
    """TinyViT image encoder as distilled by MobileSAM and LiteMedSAM."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    patch_embed_stride: int = 4
    classifier_head_classes: int = 0


@dataclass(frozen=True)
class SeededThresholds:
    """When "segment everything" keeps the model's outline of an object it found.

    Everything finds one seed and region per object from the image, then prompts the model
    with each region's box (:mod:`sam_viz.automatic.seeded`). These values are set per
    model from statistics over many generated fields (``benchmarks/eval_everything.py
    --tune``); the defaults were set so for the embedded LiteMedSAM, and are where other
    models start until they are measured.

    Attributes:
        min_predicted_iou: The model's predicted IoU a mask needs.
        min_stability: Stability score a mask needs.
        min_agreement: IoU a mask needs with its seed's region (it outlines that object).
        keep_regions: Keep the region where the model's mask is not kept.
    """

    min_predicted_iou: float = 0.7
    min_stability: float = 0.7
    min_agreement: float = 0.2
    keep_regions: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """One model variant: architecture, input handling and where its weights come from.

    Attributes:
        name: Registry key, e.g. ``"vit_b"``.
        title: Human-readable name for menus.
        encoder: Image encoder configuration (:class:`ViTConfig` or :class:`TinyViTConfig`).
        image_size: Side of the square model input in pixels (1024 for SAM, 256 for LiteMedSAM).
        pixel_mean: Per-channel mean subtracted from the 0..255 RGB input.
        pixel_std: Per-channel std the input is divided by (0..255 scale).
        url: Where the official checkpoint can be downloaded, or None.
        sha256: SHA-256 of the official checkpoint file, or None where none is published
            (or only another hash is: see ``known_hash``).
        filename: File name used in the download cache.
        prompt_kinds: Prompt kinds the model was trained with.
        multimask: For which prompts its three ambiguity-aware output tokens were trained:
            ``"all"`` (SAM), ``"single_click"`` (our click training: other prompts were
            trained on the single-mask output) or ``"none"`` (LiteMedSAM, trained with the
            single-mask output only: its other tokens give fragments). Where they were not
            trained, the candidates are the single-mask output plus the two best of them.
        embedded: True if the weights ship with an installed Python package.
        license: Licence of the weights.
        base: For weights shipped as a delta: the registered variant whose checkpoint the
            delta is added to (its image encoder, and so its embeddings, are unchanged).
        delta_file: The delta's file name inside ``sam_viz/models/weights``.
        seeded: When "segment everything" keeps this model's outlines.
        box_margin: A box prompt is widened by this fraction of the model input on each
            side: the loose boxes the model was trained with (README, "Object scale").
        known_hash: The published hash of the checkpoint file as ``"algorithm:hex"``
            (``"xxh128:..."`` or ``"sha256:..."``), for publishers that give no SHA-256.
            :attr:`file_hash` is the one a download is checked against.
    """

    name: str
    title: str
    encoder: ViTConfig | TinyViTConfig
    image_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    url: str | None
    sha256: str | None
    filename: str
    prompt_kinds: frozenset[PromptKind] = ALL_PROMPT_KINDS
    multimask: MultimaskTraining = "all"
    embedded: bool = False
    license: str = "Apache-2.0"
    base: str | None = None
    delta_file: str | None = None
    seeded: SeededThresholds = SeededThresholds()
    box_margin: float = 0.0
    known_hash: str | None = None

    def __post_init__(self) -> None:
        if self.known_hash is None:
            return
        algorithm, _, digest = self.known_hash.partition(":")
        length = HASH_HEX_LENGTHS.get(algorithm)
        if length is None or len(digest) != length or not _is_lower_hex(digest):
            accepted = ", ".join(f"{a} ({n} hex digits)" for a, n in HASH_HEX_LENGTHS.items())
            raise ValueError(
                f"Model {self.name!r}: known_hash {self.known_hash!r} is not "
                f"'algorithm:hex' with lower-case hex; accepted algorithms: {accepted}."
            )
        if algorithm == "sha256" and self.sha256 is not None and digest != self.sha256:
            raise ValueError(
                f"Model {self.name!r}: known_hash {self.known_hash!r} contradicts "
                f"sha256 {self.sha256!r}."
            )

    @property
    def file_hash(self) -> str | None:
        """The hash a downloaded checkpoint must have, as ``"algorithm:hex"``, or None."""
        if self.known_hash is not None:
            return self.known_hash
        return f"sha256:{self.sha256}" if self.sha256 is not None else None

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for every released variant)."""
        if isinstance(self.encoder, ViTConfig):
            return self.image_size // self.encoder.patch_size
        # TinyViT: the stem's stride, then two stride-2 patch mergings.
        return self.image_size // (self.encoder.patch_embed_stride * 4)

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution mask logits (4x the embedding)."""
        return 4 * self.embedding_size

    @property
    def encoder_name(self) -> str:
        """The variant whose image encoder weights this one uses (embeddings are shared)."""
        return self.base or self.name

    @property
    def trained_with_points(self) -> bool:
        """Whether single clicks are a prompt the model was trained to answer."""
        return "point" in self.prompt_kinds


def _is_lower_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text)


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

_VIT_B = ViTConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))
_VIT_L = ViTConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23))
# MobileSAM's TinyViT keeps its (unused) ImageNet classifier head in the checkpoint.
_MOBILE_TINY_VIT = TinyViTConfig(patch_embed_stride=4, classifier_head_classes=1000)

# micro-sam's models fine-tuned for microscopy, as its model registry lists them: the newest
# version of each, v4 for vit_b and vit_l, v3 for vit_t_lm and v2 for vit_t_em_organelles
# (the model-zoo folder versions 1.2, 1.1 and 1 mark v4, v3 and v2). Each file is the SAM
# state dict; the instance-segmentation decoder micro-sam adds is a separate file that we do
# not use.
_MICRO_SAM_URL = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io/"
_MICRO_SAM_LICENSE = "CC-BY-4.0"


def _micro_sam(
    name: str, title: str, encoder: ViTConfig | TinyViTConfig, path: str, xxh128: str, version: str
) -> ModelSpec:
    """One of micro-sam's microscopy models: SAM's input handling, its file and hash."""
    return ModelSpec(
        name=name,
        title=f"micro-sam {title}, {version}",
        encoder=encoder,
        image_size=1024,
        pixel_mean=_IMAGENET_MEAN,
        pixel_std=_IMAGENET_STD,
        url=_MICRO_SAM_URL + path,
        sha256=None,
        known_hash=f"xxh128:{xxh128}",
        filename=f"micro_sam_{name}_{version}.pt",
        license=_MICRO_SAM_LICENSE,
    )


_LITE_MEDSAM = ModelSpec(
    name="lite_medsam",
    title="LiteMedSAM (TinyViT, embedded)",
    encoder=TinyViTConfig(patch_embed_stride=1),
    image_size=256,
    # LiteMedSAM takes the image scaled to 0..1 with no mean/std normalisation.
    pixel_mean=(0.0, 0.0, 0.0),
    pixel_std=(255.0, 255.0, 255.0),
    url=None,
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    filename="lite_medsam.pth",
    prompt_kinds=frozenset({"box", "mask"}),
    multimask="none",
    embedded=True,
    # Trained on boxes loosened by a few pixels; measured on many generated fields.
    box_margin=0.035,
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="vit_b",
            title="SAM ViT-B",
            encoder=_VIT_B,
            image_size=1024,
            pixel_mean=_IMAGENET_MEAN,
            pixel_std=_IMAGENET_STD,
            url=_SAM_URL + "sam_vit_b_01ec64.pth",
            sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
            filename="sam_vit_b_01ec64.pth",
        ),
        ModelSpec(
            name="vit_l",
            title="SAM ViT-L",
            encoder=_VIT_L,
            image_size=1024,
            pixel_mean=_IMAGENET_MEAN,
            pixel_std=_IMAGENET_STD,
            url=_SAM_URL + "sam_vit_l_0b3195.pth",
            sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
            filename="sam_vit_l_0b3195.pth",
        ),
        ModelSpec(
            name="vit_h",
            title="SAM ViT-H",
            encoder=ViTConfig(
                embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)
            ),
            image_size=1024,
            pixel_mean=_IMAGENET_MEAN,
            pixel_std=_IMAGENET_STD,
            url=_SAM_URL + "sam_vit_h_4b8939.pth",
            sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
            filename="sam_vit_h_4b8939.pth",
        ),
        ModelSpec(
            name="mobile_sam",
            title="MobileSAM (TinyViT)",
            encoder=_MOBILE_TINY_VIT,
            image_size=1024,
            pixel_mean=_IMAGENET_MEAN,
            pixel_std=_IMAGENET_STD,
            url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            filename="mobile_sam.pt",
        ),
        _LITE_MEDSAM,
        # LiteMedSAM's encoder and checkpoint, with a prompt side trained here for clicks.
        replace(
            _LITE_MEDSAM,
            name="lite_medsam_clicks",
            title="LiteMedSAM + clicks (embedded, trained here)",
            sha256=None,
            prompt_kinds=ALL_PROMPT_KINDS,
            multimask="single_click",
            base="lite_medsam",
            delta_file="lite_medsam_clicks.pt",
            # Its decoder was retrained here on boxes with SAM's noise around tight boxes.
            box_margin=0.0,
        ),
        _micro_sam(
            name="vit_t_lm",
            title="light microscopy (TinyViT)",
            encoder=_MOBILE_TINY_VIT,
            path="faithful-chicken/1.1/files/vit_t.pt",
            xxh128="72ec5074774761a6e5c05a08942f981e",
            version="v3",
        ),
        _micro_sam(
            name="vit_b_lm",
            title="light microscopy (ViT-B)",
            encoder=_VIT_B,
            path="diplomatic-bug/1.2/files/vit_b.pt",
            xxh128="fe9252a29f3f4ea53c15a06de471e186",
            version="v4",
        ),
        _micro_sam(
            name="vit_l_lm",
            title="light microscopy (ViT-L)",
            encoder=_VIT_L,
            path="idealistic-rat/1.2/files/vit_l.pt",
            xxh128="017f20677997d628426dec80a8018f9d",
            version="v4",
        ),
        _micro_sam(
            name="vit_t_em_organelles",
            title="EM organelles (TinyViT)",
            encoder=_MOBILE_TINY_VIT,
            path="greedy-whale/1/files/vit_t.pt",
            xxh128="253474720c497cce605e57c9b1d18fd9",
            version="v2",
        ),
        _micro_sam(
            name="vit_b_em_organelles",
            title="EM organelles (ViT-B)",
            encoder=_VIT_B,
            path="noisy-ox/1.2/files/vit_b.pt",
            xxh128="f3bf2ed83d691456bae2c3f9a05fb438",
            version="v4",
        ),
        _micro_sam(
            name="vit_l_em_organelles",
            title="EM organelles (ViT-L)",
            encoder=_VIT_L,
            path="humorous-crab/1.2/files/vit_l.pt",
            xxh128="810b084b6e51acdbf760a993d8619f2d",
            version="v4",
        ),
    )
}

DEFAULT_MODEL = "lite_medsam"


def get_spec(name: str) -> ModelSpec:
    """Return the registered variant called ``name``.

    Raises:
        ValueError: If no variant of that name is registered (the message lists them).
    """
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise ValueError(f"Unknown model {name!r}. Registered models: {known}.") from None
