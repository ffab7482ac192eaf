"""The output upscaling as per-pixel products, its first one factored through the transformer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam_viz.predictor.batch_decoder import BatchDecoder
from sam_viz.predictor.mask_upscaling import FactoredUpscaling


def test_factored_first_product_equals_the_transposed_convolution(tiny_predictor) -> None:
    """``scale * base + mixing.mT @ small`` is the first transposed convolution applied to
    the transformer's output image tokens, with non-identity layer norms in every block."""
    model = tiny_predictor.model
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for layer in model.mask_decoder.transformer.layers:
            layer.norm4.weight.copy_(
                0.5 + torch.rand(layer.norm4.weight.shape, generator=generator)
            )
            layer.norm4.bias.copy_(0.3 * torch.randn(layer.norm4.bias.shape, generator=generator))
    features = torch.randn(1, 256, *model.prompt_encoder.image_embedding_size, generator=generator)
    points = (torch.rand(3, 1, 2, generator=generator) * 128, torch.ones(3, 1, dtype=torch.long))
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=points, boxes=None, masks=None)
        out = model.mask_decoder.predict_masks_with_tokens(
            features, tiny_predictor.dense_pe, sparse, dense
        )
        conv1 = model.mask_decoder.output_upscaling[0]
        expected = F.conv_transpose2d(out.image_tokens, conv1.weight, conv1.bias, stride=2)
        decoder = BatchDecoder(model)
        prepared = decoder.prepare(features, tiny_predictor.dense_pe)
        inputs = decoder.transformer(prepared, sparse).upscale_chunks[0]
        factored = inputs.scale[..., None] * prepared.upscale_base + inputs.mixing.mT @ inputs.small
    batch, channels, height, width = expected.shape
    # (B, M, 4 * C') with columns (row, col, C') -> (B, C', 2h, 2w)
    factored = factored.view(batch, height // 2, width // 2, 2, 2, channels)
    factored = factored.permute(0, 5, 1, 3, 2, 4).reshape(expected.shape)
    torch.testing.assert_close(factored, expected, atol=1e-4, rtol=1e-4)


def test_rejects_an_upscaling_that_is_not_sams(tiny_model) -> None:
    decoder = tiny_model.mask_decoder
    conv = decoder.output_upscaling[0]
    decoder.output_upscaling[0] = torch.nn.ConvTranspose2d(
        conv.in_channels, conv.out_channels, kernel_size=3, stride=2
    )
    with pytest.raises(ValueError, match="2x2 stride-2"):
        FactoredUpscaling(decoder, list(decoder.transformer.layers))
