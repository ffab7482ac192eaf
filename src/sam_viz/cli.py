"""The ``sam-viz`` command line: segment, embed, models."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sam_viz.models.registry import DEFAULT_MODEL, MODELS


def _numbers(text: str, counts: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(
            f"{what} must be {' or '.join(map(str, counts))} comma-separated numbers, got {text!r}"
        )
    return values


def _box(text: str) -> list[float]:
    return _numbers(text, (4,), "--box X0,Y0,X1,Y1")


def _point(text: str) -> list[float]:
    values = _numbers(text, (2, 3), "--point X,Y[,LABEL]")
    if len(values) == 2:
        values.append(1.0)
    if values[2] not in (0.0, 1.0):
        raise argparse.ArgumentTypeError(
            f"point label must be 1 (positive) or 0 (negative): {text!r}"
        )
    return values


class _Progress:
    """A tqdm bar fed by ``progress(done, total)`` callbacks."""

    def __init__(self, description: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=1, desc=description, unit="block", leave=False)

    def __call__(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def set_description(self, description: str) -> None:
        self._bar.set_description(description)

    def write(self, line: str) -> None:
        """Print a line above the bar."""
        self._bar.write(line)

    def close(self) -> None:
        self._bar.close()


def _load_predictor(args: argparse.Namespace):
    from sam_viz.predictor import Predictor
    from sam_viz.predictor.cache import EmbeddingCache

    cache = EmbeddingCache(directory=args.cache_dir) if getattr(args, "cache_dir", None) else None
    return Predictor.from_pretrained(
        args.model,
        model_name=args.model_name,
        device=args.device,
        cache=cache,
        precision=args.precision,
    )


def _embed(predictor, image: np.ndarray, name: str):
    bar = _Progress(f"embedding {name}")
    try:
        return predictor.set_image(image, contrast="auto", progress=bar)
    finally:
        bar.close()


def cmd_segment(args: argparse.Namespace) -> int:
    import tifffile
    from imageio.v3 import imwrite

    from sam_viz.image import to_rgb01
    from sam_viz.io import read_image
    from sam_viz.prompts import CANDIDATE_NAMES
    from sam_viz.render import masks_to_labels, overlay, to_display_rgb

    boxes = np.asarray(args.box or [], dtype=np.float64).reshape(-1, 4)
    points = np.asarray(args.point or [], dtype=np.float64).reshape(-1, 3)
    if len(boxes) == 0 and len(points) == 0:
        raise ValueError("Give at least one --box X0,Y0,X1,Y1 or --point X,Y[,LABEL].")
    if len(boxes) > 1 and len(points):
        raise ValueError("Points refine one object: use --point with at most one --box.")

    image = read_image(args.image)
    predictor = _load_predictor(args)
    if len(points) and not predictor.spec.trained_with_points and len(boxes) == 0:
        print(
            f"note: {predictor.spec.name} was trained with boxes; a point alone may give an "
            "empty mask. Add --box around the object.",
            file=sys.stderr,
        )
    _embed(predictor, image, Path(args.image).name)

    prompt_sets = [(box, points) for box in boxes] if len(boxes) else [(None, points)]
    per_candidate: dict[str, list[np.ndarray]] = {name: [] for name in CANDIDATE_NAMES}
    objects = []
    for index, (box, pts) in enumerate(prompt_sets, start=1):
        result = predictor.predict(
            points_xy=pts[:, :2] if len(pts) else None,
            point_labels=pts[:, 2].astype(int) if len(pts) else None,
            box_xyxy=box,
        )
        for name, mask in zip(result.names, result.masks, strict=True):
            per_candidate[name].append(mask)
        objects.append(
            {
                "id": index,
                "box_xyxy": None if box is None else [float(v) for v in box],
                "points_xy": pts[:, :2].tolist(),
                "point_labels": pts[:, 2].astype(int).tolist(),
                "best": result.names[result.best],
                "candidates": {
                    name: {
                        "iou_score": float(score),
                        "stability": float(stability),
                        "area": int(mask.sum()),
                    }
                    for name, score, stability, mask in zip(
                        result.names,
                        result.iou_scores,
                        result.stability_scores,
                        result.masks,
                        strict=True,
                    )
                },
            }
        )

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, masks in per_candidate.items():
        tifffile.imwrite(out / f"{name}.tif", masks_to_labels(np.stack(masks)))
    best = np.stack([per_candidate[o["best"]][i] for i, o in enumerate(objects)])
    rgb = to_display_rgb(to_rgb01(image))
    picture = overlay(
        rgb,
        masks_to_labels(best),
        boxes_xyxy=boxes,
        points_xy=points[:, :2] if len(points) else None,
        point_labels=points[:, 2].astype(int) if len(points) else None,
    )
    imwrite(out / "overlay.png", picture)
    summary = {
        "image": str(args.image),
        "model": predictor.spec.name,
        "candidates": list(CANDIDATE_NAMES),
        "label_images": {name: f"{name}.tif" for name in CANDIDATE_NAMES},
        "objects": objects,
    }
    (out / "scores.json").write_text(json.dumps(summary, indent=2))
    for obj in objects:
        scores = ", ".join(
            f"{n} {c['iou_score']:.3f} ({c['area']} px)" for n, c in obj["candidates"].items()
        )
        print(f"object {obj['id']}: {scores}; best: {obj['best']}")
    print(
        f"wrote {', '.join(f'{n}.tif' for n in CANDIDATE_NAMES)}, scores.json and "
        f"overlay.png to {out}"
    )
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from sam_viz.io import read_image

    predictor = _load_predictor(args)
    for source in args.images:
        embedding = _embed(predictor, read_image(source), Path(source).name)
        print(
            f"{source}: embedding {embedding.image_key} ({predictor.spec.name}) "
            f"cached in {args.cache_dir}"
        )
    return 0


def cmd_everything(args: argparse.Namespace) -> int:
    import tifffile

    from sam_viz.automatic.everything import MaskGenerator
    from sam_viz.io import read_image

    image = read_image(args.image)
    predictor = _load_predictor(args)
    overrides = {}
    if args.tile_size is not None:
        overrides["tile_size"] = args.tile_size
    if args.halo is not None:
        overrides["halo"] = args.halo
    if args.tiling is not None:
        overrides["tiling"] = args.tiling == "on"
    if args.prompts is not None:
        overrides["prompts"] = args.prompts
    if args.crop_layers is not None:
        overrides["crop_n_layers"] = args.crop_layers
    generator = MaskGenerator(predictor, **overrides)
    bar = _Progress(f"segmenting {Path(args.image).name}")
    try:
        result = generator.generate(image, progress=bar)
    finally:
        bar.close()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(out, result.labels)
    table = Path(args.table) if args.table else out.with_name(out.stem + ".csv")
    result.write_table(table)
    print(
        f"{result.num_objects} objects ({generator.scheme} prompts, {predictor.spec.name}); "
        f"wrote {out} and {table}"
    )
    return 0


def cmd_train_clicks(args: argparse.Namespace) -> int:
    from sam_viz.training.clicks import TrainConfig
    from sam_viz.training.pipeline import train_clicks

    overrides = {
        name: getattr(args, name)
        for name in ("seed", "steps", "scenes", "augmentations")
        if getattr(args, name) is not None
    }
    if args.samples is not None:
        overrides["samples"] = tuple(n for n in args.samples.split(",") if n and n != "none")
    config = TrainConfig(**overrides)
    bar = _Progress("making the training data")
    stage = {"name": ""}

    def progress(name: str, done: int, total: int) -> None:
        if name != stage["name"]:
            stage["name"] = name
            bar.set_description(name)
        bar(done, total)

    def report(line: str) -> None:
        bar.write(line)

    try:
        train_clicks(
            args.output,
            config,
            resume_from=args.resume_from,
            threads=args.threads,
            report=report,
            progress=progress,
        )
    finally:
        bar.close()
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from sam_viz.models.checkpoints import (
        CheckpointError,
        cache_dir,
        embedded_checkpoint_path,
        shipped_delta_path,
    )

    for spec in MODELS.values():
        if spec.embedded:
            try:
                where = f"embedded: {embedded_checkpoint_path()}"
                if spec.delta_file is not None:
                    where += f"\n{'':<19} + weights delta {shipped_delta_path(spec)}"
            except CheckpointError as err:
                lines = str(err).splitlines()
                where = "embedded, not installed: " + (lines[1] if len(lines) > 1 else lines[0])
        else:
            path = cache_dir() / spec.filename
            where = (
                f"cached: {path}" if path.is_file() else f"download on first use from {spec.url}"
            )
        default = " (default)" if spec.name == DEFAULT_MODEL else ""
        prompts = "+".join(sorted(spec.prompt_kinds))
        print(
            f"{spec.name:<19} {spec.title}{default}\n{'':<19} input {spec.image_size}px, "
            f"prompts: {prompts}\n{'':<19} {where}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam-viz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model",
            default=DEFAULT_MODEL,
            help=f"registry name ({', '.join(MODELS)}) or checkpoint path "
            f"(default: {DEFAULT_MODEL}, embedded)",
        )
        p.add_argument(
            "--model-name",
            default=None,
            help="variant of a checkpoint file, if it cannot be inferred",
        )
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
        p.add_argument(
            "--precision",
            default="float32",
            choices=["float32", "bfloat16", "auto"],
            help="precision of the image encoder and the mask upscaling (auto: bf16 where the "
            "hardware has it natively)",
        )

    seg = sub.add_parser("segment", help="segment objects from box/point prompts")
    seg.add_argument(
        "image", help="image file (PNG, JPEG, TIFF) or sample:NAME (e.g. sample:coins)"
    )
    seg.add_argument(
        "--box",
        action="append",
        type=_box,
        metavar="X0,Y0,X1,Y1",
        help="box around an object (repeat for several objects)",
    )
    seg.add_argument(
        "--point",
        action="append",
        type=_point,
        metavar="X,Y[,LABEL]",
        help="point prompt; LABEL 1 positive (default) or 0 negative",
    )
    seg.add_argument("-o", "--output", required=True, help="output directory")
    seg.add_argument("--cache-dir", default=None, help="keep embeddings on disk here")
    model_options(seg)
    seg.set_defaults(func=cmd_segment)

    emb = sub.add_parser("embed", help="precompute image embeddings into a cache directory")
    emb.add_argument("images", nargs="+", help="image files or sample:NAME")
    emb.add_argument("--cache-dir", required=True, help="directory for the embeddings")
    model_options(emb)
    emb.set_defaults(func=cmd_embed)

    every = sub.add_parser("everything", help="segment every object: a label image + table")
    every.add_argument(
        "image", help="image file (PNG, JPEG, TIFF) or sample:NAME (e.g. sample:coins)"
    )
    every.add_argument("-o", "--output", required=True, help="label image to write (.tif)")
    every.add_argument(
        "--table", default=None, help="object table, .csv or .json (default: next to -o, .csv)"
    )
    every.add_argument(
        "--prompts",
        choices=["auto", "boxes", "points"],
        default=None,
        help="prompt grid (auto: points for models trained with clicks, boxes otherwise)",
    )
    every.add_argument("--tiling", choices=["on", "off"], default=None, help="default: by size")
    every.add_argument("--tile-size", type=int, default=None, help="inner tile side (pixels)")
    every.add_argument("--halo", type=int, default=None, help="context around tiles (pixels)")
    every.add_argument(
        "--crop-layers", type=int, default=None, help="extra crop layers for small objects"
    )
    every.add_argument("--cache-dir", default=None, help="keep embeddings on disk here")
    model_options(every)
    every.set_defaults(func=cmd_everything)

    train = sub.add_parser(
        "train-clicks",
        help="teach the embedded LiteMedSAM to answer clicks (writes a small weights delta)",
    )
    train.add_argument(
        "-o",
        "--output",
        default="lite_medsam_clicks.pt",
        help="delta file to write (the shipped one is "
        "src/sam_viz/models/weights/lite_medsam_clicks.pt)",
    )
    train.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    train.add_argument("--steps", type=int, default=None, help="optimiser steps (default 2200)")
    train.add_argument("--scenes", type=int, default=None, help="generated scenes (default 300)")
    train.add_argument(
        "--augmentations",
        type=int,
        default=None,
        help="augmented versions per scikit-image sample (default 5)",
    )
    train.add_argument(
        "--samples",
        default=None,
        help="comma-separated scikit-image samples for the data engine, or none "
        "(default: the twelve that need no download, coins held out)",
    )
    train.add_argument(
        "--resume-from",
        default=None,
        help="a delta written by the first stage: rebuild the data and run the second only",
    )
    train.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch CPU threads; the result is reproducible for a given count (default 2)",
    )
    train.set_defaults(func=cmd_train_clicks)

    models = sub.add_parser("models", help="list model variants and where their weights are")
    models.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sam-viz`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from sam_viz.models.checkpoints import CheckpointError

    try:
        return int(args.func(args))
    except (CheckpointError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"sam-viz: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
