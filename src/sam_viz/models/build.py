"""Build an (untrained) :class:`~sam_viz.modeling.Sam` from a :class:`ModelSpec`."""

from __future__ import annotations

from sam_viz.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TinyViT,
    TwoWayTransformer,
)
from sam_viz.models.registry import ModelSpec, TinyViTConfig, ViTConfig

PROMPT_EMBED_DIM = 256


def build_sam(spec: ModelSpec) -> Sam:
    """Build the model described by ``spec`` with freshly initialised weights.

    Args:
        spec: The variant to build.

    Returns:
        The model in eval mode, on the CPU. Load a checkpoint into it with
        :func:`sam_viz.models.checkpoints.load_model`.
    """
    encoder_cfg = spec.encoder
    image_encoder: ImageEncoderViT | TinyViT
    if isinstance(encoder_cfg, ViTConfig):
        image_encoder = ImageEncoderViT(
            img_size=spec.image_size,
            patch_size=encoder_cfg.patch_size,
            embed_dim=encoder_cfg.embed_dim,
            depth=encoder_cfg.depth,
            num_heads=encoder_cfg.num_heads,
            out_chans=PROMPT_EMBED_DIM,
            window_size=encoder_cfg.window_size,
            global_attn_indexes=encoder_cfg.global_attn_indexes,
        )
    elif isinstance(encoder_cfg, TinyViTConfig):
        image_encoder = TinyViT(
            img_size=spec.image_size,
            embed_dims=encoder_cfg.embed_dims,
            depths=encoder_cfg.depths,
            num_heads=encoder_cfg.num_heads,
            window_sizes=encoder_cfg.window_sizes,
            patch_embed_stride=encoder_cfg.patch_embed_stride,
            classifier_head_classes=encoder_cfg.classifier_head_classes,
            out_chans=PROMPT_EMBED_DIM,
        )
    else:  # pragma: no cover - the registry only holds the two kinds
        raise TypeError(f"Unsupported encoder config {type(encoder_cfg).__name__}")

    grid = spec.embedding_size
    model = Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_EMBED_DIM,
            image_embedding_size=(grid, grid),
            input_image_size=(spec.image_size, spec.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=PROMPT_EMBED_DIM,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=2048, num_heads=8
            ),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
    return model.eval()
