"""PyTorch modules of SAM, MobileSAM and LiteMedSAM, named like the official checkpoints."""

from sam_viz.modeling.common import LayerNorm2d, MLPBlock
from sam_viz.modeling.image_encoder import ImageEncoderViT
from sam_viz.modeling.mask_decoder import MLP, MaskDecoder, MaskDecoderOutput
from sam_viz.modeling.prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from sam_viz.modeling.sam import Sam
from sam_viz.modeling.tiny_vit import Conv2d_BN, TinyViT
from sam_viz.modeling.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer

__all__ = [
    "MLP",
    "Attention",
    "Conv2d_BN",
    "ImageEncoderViT",
    "LayerNorm2d",
    "MLPBlock",
    "MaskDecoder",
    "MaskDecoderOutput",
    "PositionEmbeddingRandom",
    "PromptEncoder",
    "Sam",
    "TinyViT",
    "TwoWayAttentionBlock",
    "TwoWayTransformer",
]
