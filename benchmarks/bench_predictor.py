"""Per-click cost: prompt encoder + mask decoder + masks at the image's resolution.

Runs our predictor and Meta's reference code (segment-anything's modules, with its
``SamPredictor.predict`` path: prompt encoder, decoder, ``Sam.postprocess_masks``, threshold,
NumPy) on the same weights and the same image embedding, in one process, and prints both
medians and their ratio, plus the IoU between our masks and the reference's.

    .venv/bin/python benchmarks/bench_predictor.py [--clicks 40] [--models vit_b lite_medsam]
        [--breakdown]    # also the median time of each phase of our clicks

vit_b uses random weights and a random embedding (the official file cannot be downloaded
here; the decoder's cost does not depend on the weights), so its masks are noise that covers
the whole image: the worst case for the resampling to image pixels. lite_medsam uses the
embedded weights and the embedding of scikit-image's coins, resized to ``--size``, so its
masks are real objects.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from skimage import data
from skimage.transform import resize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from reference_models import reference_sam  # noqa: E402

from sam_viz.models.build import build_sam  # noqa: E402
from sam_viz.models.checkpoints import embedded_checkpoint_path, read_state_dict  # noqa: E402
from sam_viz.models.registry import MODELS  # noqa: E402
from sam_viz.predictor import Predictor  # noqa: E402
from sam_viz.predictor.batch_decoder import BatchDecoder  # noqa: E402
from sam_viz.predictor.cache import ImageEmbedding  # noqa: E402
from sam_viz.predictor.transforms import ImageFrame  # noqa: E402


def reference_decoder_sam(state: dict[str, torch.Tensor], spec) -> torch.nn.Module:
    """Meta's Sam with its prompt encoder and decoder, loaded with ``state``.

    The image encoder is a stand-in that only carries ``img_size`` (postprocess_masks reads
    it): this benchmark starts from a computed embedding.
    """
    encoder = torch.nn.Module()
    encoder.img_size = spec.image_size
    sam = reference_sam(
        encoder, spec.image_size, spec.embedding_size, spec.pixel_mean, spec.pixel_std
    )
    decoder_state = {k: v for k, v in state.items() if not k.startswith("image_encoder.")}
    sam.load_state_dict(decoder_state, strict=False)
    missing = set(sam.state_dict()) - set(decoder_state)
    assert not missing, missing
    return sam.eval()


def reference_click(sam, features, frame: ImageFrame, points_xy, labels, box, all_tokens=False):
    """SamPredictor.predict's path, with the reference modules.

    With ``all_tokens`` (for checking, not timing) the masks of all four output tokens are
    returned, token 0 (single-mask output) first.
    """
    coords = torch.as_tensor(frame.points_to_model(points_xy), dtype=torch.float)[None]
    labels_t = torch.as_tensor(labels, dtype=torch.int)[None]
    box_t = torch.as_tensor(frame.boxes_to_model(box), dtype=torch.float)[None]
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=(coords, labels_t), boxes=box_t, masks=None)
        kwargs = {
            "image_embeddings": features,
            "image_pe": sam.prompt_encoder.get_dense_pe(),
            "sparse_prompt_embeddings": sparse,
            "dense_prompt_embeddings": dense,
        }
        if all_tokens:
            low_res, iou = sam.mask_decoder.predict_masks(**kwargs)
        else:
            low_res, iou = sam.mask_decoder(**kwargs, multimask_output=True)
        masks = sam.postprocess_masks(low_res, frame.input_size, frame.original_size) > 0
    return masks[0].numpy(), iou[0].numpy(), low_res[0].numpy()


# The phases of one of our clicks, timed by --breakdown: (class, method, label).
PHASES = (
    (BatchDecoder, "transformer", "transformer + IoU head"),
    (BatchDecoder, "masks", "low-res masks (upscaling)"),
    (ImageFrame, "upscale_masks", "masks at image pixels"),
)


@contextlib.contextmanager
def phase_timers() -> Iterator[dict[str, list[float]]]:
    """Time every call of the PHASES methods (milliseconds per call, by label)."""
    times: dict[str, list[float]] = defaultdict(list)
    originals = [(cls, method, getattr(cls, method)) for cls, method, _ in PHASES]

    def timed(function, label):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            times[label].append((time.perf_counter() - start) * 1e3)
            return result

        return wrapper

    for (cls, method, function), (_, _, label) in zip(originals, PHASES, strict=True):
        setattr(cls, method, timed(function, label))
    try:
        yield times
    finally:
        for cls, method, function in originals:
            setattr(cls, method, function)


def bench(
    name: str, clicks: int, size: tuple[int, int], precision: str, breakdown: bool = False
) -> None:
    spec = MODELS[name]
    torch.manual_seed(0)
    model = build_sam(spec)
    if spec.embedded:
        state = read_state_dict(embedded_checkpoint_path())
        model.load_state_dict(state)
    else:
        state = model.state_dict()
    ref = reference_decoder_sam(state, spec)
    predictor = Predictor(model, spec, device="cpu", precision=precision)
    frame = ImageFrame(size, spec.image_size)
    if spec.embedded:
        image = resize(data.coins(), size, preserve_range=True).astype(np.uint8)
        embedding = predictor.set_image(image)
        features = embedding.features
    else:
        grid = spec.embedding_size
        features = torch.randn(1, 256, grid, grid, generator=torch.Generator().manual_seed(1))
        embedding = ImageEmbedding(features, frame, "bench", name)

    rng = np.random.default_rng(0)
    height, width = size
    prompts = []
    for _ in range(clicks):
        x0, y0 = rng.uniform(0, width * 0.6), rng.uniform(0, height * 0.6)
        x1, y1 = x0 + rng.uniform(0.1, 0.4) * width, y0 + rng.uniform(0.1, 0.4) * height
        point = [[(x0 + x1) / 2, (y0 + y1) / 2]]
        prompts.append((np.array(point), np.array([1]), np.array([x0, y0, x1, y1])))

    def ours(p):
        result = predictor.predict(
            points_xy=p[0], point_labels=p[1], box_xyxy=p[2], embedding=embedding
        )
        return result

    def theirs(p, all_tokens=False):
        return reference_click(ref, features, frame, *p, all_tokens=all_tokens)

    for p in prompts[:3]:  # warm-up
        ours(p)
        theirs(p)
    ours_ms, ref_ms, ious = [], [], []
    for p in prompts:
        t0 = time.perf_counter()
        mine = ours(p)
        t1 = time.perf_counter()
        theirs(p)
        t2 = time.perf_counter()
        ours_ms.append((t1 - t0) * 1e3)
        ref_ms.append((t2 - t1) * 1e3)
        all_ref, _, _ = theirs(p, all_tokens=True)
        for mask, token in zip(mine.masks, mine.token_indices, strict=True):
            other = all_ref[token]
            union = (mask | other).sum()
            ious.append(1.0 if union == 0 else (mask & other).sum() / union)
    ours_med, ref_med = statistics.median(ours_ms), statistics.median(ref_ms)
    print(
        f"{name:<12} {height}x{width} {str(predictor.compute_dtype)[6:]:<8} "
        f"ours {ours_med:7.1f} ms  reference {ref_med:7.1f} ms  "
        f"ratio {ref_med / ours_med:5.2f}x  mask IoU vs reference: min {min(ious):.4f} "
        f"mean {np.mean(ious):.4f}"
    )
    if breakdown:
        totals = []
        with phase_timers() as times:
            for p in prompts:
                start = time.perf_counter()
                ours(p)
                totals.append((time.perf_counter() - start) * 1e3)
        parts = {label: statistics.median(values) for label, values in times.items()}
        rest = statistics.median(
            total - sum(values[i] for values in times.values()) for i, total in enumerate(totals)
        )
        print(
            f"  ours by phase (medians; this run {statistics.median(totals):.1f} ms): "
            + ", ".join(f"{label} {ms:.1f} ms" for label, ms in parts.items())
            + f", everything else about {rest:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--models", nargs="+", default=["vit_b", "lite_medsam"])
    parser.add_argument("--size", default="1024x1024", help="image size HxW")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--breakdown", action="store_true", help="also time the phases of our clicks"
    )
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["float32", "auto"],
        help="our predictor's precision(s); auto = bf16 where the CPU has it natively",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    print(
        f"decoder + masks per click, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for name in args.models:
        for precision in args.precision:
            bench(name, args.clicks, (height, width), precision, args.breakdown)


if __name__ == "__main__":
    main()
