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


def _diameter(text: str) -> float | None:
    if text.lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"--diameter must be a positive number or auto, got {text!r}"
        )
    return value


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


def _scaled(predictor, image: np.ndarray, diameter: float | None):
    from sam_viz.windows.scaled import ScaledImage

    scaled = ScaledImage(predictor, image, diameter=diameter)
    print(f"object scale: {scaled.scale} ({scaled.diameter_source})", file=sys.stderr)
    return scaled


def _prompt_set(args: argparse.Namespace):
    """The --box and --point options as one prompt set (one policy for several boxes)."""
    from sam_viz.prompts import UNUSED_WITH_BOXES_NOTE, PromptSet

    boxes = np.asarray(args.box or [], dtype=np.float64).reshape(-1, 4)
    points = np.asarray(args.point or [], dtype=np.float64).reshape(-1, 3)
    if len(boxes) == 0 and len(points) == 0:
        raise ValueError("Give at least one --box X0,Y0,X1,Y1 or --point X,Y[,LABEL].")
    prompts = PromptSet(points[:, :2], points[:, 2].astype(np.int64), boxes)
    if len(boxes) > 1 and len(points):
        prompts = prompts.with_notes(UNUSED_WITH_BOXES_NOTE)
    return prompts


def cmd_segment(args: argparse.Namespace) -> int:
    from sam_viz.image import to_rgb01
    from sam_viz.io import read_image
    from sam_viz.prompts import check_answerable

    prompts = _prompt_set(args)
    image = read_image(args.image)
    prompts = prompts.validated(image.shape[:2])  # before loading the model
    predictor = _load_predictor(args)
    check_answerable(predictor.spec, prompts)
    scaled = _scaled(predictor, image, args.diameter)
    bar = _Progress(f"embedding {Path(args.image).name}")
    try:
        answer = scaled.answer(prompts, progress=bar)
    finally:
        bar.close()
    for note in answer.notes:
        print(f"note: {note}", file=sys.stderr)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    summary = _write_answer(out, answer, prompts)
    summary.update(image=str(args.image), model=predictor.spec.name, diameter=scaled.diameter)
    (out / "scores.json").write_text(json.dumps(summary, indent=2))
    best = answer.labels[answer.best]
    rgb = to_rgb01(image)
    _write_overlay(out / "overlay.png", rgb, best, prompts)
    for line in _describe_answer(answer):
        print(line)
    print(
        f"wrote {', '.join(summary['label_images'].values())}, scores.json and overlay.png to {out}"
    )
    return 0


def _write_answer(out: Path, answer, prompts) -> dict:
    """Write the label images of an answer; returns the summary for scores.json."""
    import tifffile

    if answer.n_objects > 1:  # several boxes: one mask per box
        tifffile.imwrite(out / "labels.tif", answer.labels[0])
        objects = [
            {
                "id": i + 1,
                "box_xyxy": [float(v) for v in box],
                "area": int((answer.labels[0] == i + 1).sum()),
            }
            for i, box in enumerate(prompts.boxes_xyxy)
        ]
        return {"label_images": {"objects": "labels.tif"}, "objects": objects}
    names = {name: f"{name}.tif" for name in answer.names}
    for index, name in enumerate(answer.names):
        tifffile.imwrite(out / names[name], answer.labels[index])
    candidates = {
        name: {
            "iou_score": float(answer.iou_scores[i]),
            "stability": float(answer.stability_scores[i]),
            "area": int(answer.masks[i].sum()),
        }
        for i, name in enumerate(answer.names)
    }
    obj = {
        "id": 1,
        "box_xyxy": None if prompts.box is None else list(prompts.box),
        "points_xy": prompts.points_xy.tolist(),
        "point_labels": prompts.point_labels.tolist(),
        "best": answer.names[answer.best],
        "candidates": candidates,
    }
    return {"candidates": list(answer.names), "label_images": names, "objects": [obj]}


def _describe_answer(answer) -> list[str]:
    if answer.n_objects > 1:
        mean = float(answer.iou_scores[0])
        return [f"{answer.n_objects} objects, one mask per box (mean predicted IoU {mean:.3f})"]
    scores = ", ".join(
        f"{name} {answer.iou_scores[i]:.3f} ({int(answer.masks[i].sum())} px)"
        for i, name in enumerate(answer.names)
    )
    return [f"object 1: {scores}; best: {answer.names[answer.best]}"]


def _write_overlay(path: Path, rgb01: np.ndarray, labels: np.ndarray, prompts) -> None:
    from imageio.v3 import imwrite

    from sam_viz.render import overlay, to_display_rgb

    picture = overlay(
        to_display_rgb(rgb01),
        labels,
        boxes_xyxy=prompts.boxes_xyxy,
        points_xy=prompts.points_xy if len(prompts.points_xy) else None,
        point_labels=prompts.point_labels if len(prompts.points_xy) else None,
    )
    imwrite(path, picture)


def cmd_embed(args: argparse.Namespace) -> int:
    from sam_viz.io import read_image

    predictor = _load_predictor(args)
    for source in args.images:
        scaled = _scaled(predictor, read_image(source), args.diameter)
        bar = _Progress(f"embedding {Path(source).name}")
        try:
            count = scaled.embed_all(progress=bar)
        finally:
            bar.close()
        print(
            f"{source}: {count} window{'s' * (count != 1)} ({scaled.scale}, "
            f"{predictor.spec.name}) cached in {args.cache_dir}"
        )
    return 0


def cmd_everything(args: argparse.Namespace) -> int:
    import tifffile

    from sam_viz.automatic.everything import MaskGenerator
    from sam_viz.io import read_image

    image = read_image(args.image)
    predictor = _load_predictor(args)
    overrides: dict[str, object] = {"diameter": args.diameter}
    if args.prompts is not None:
        overrides["prompts"] = args.prompts
    generator = MaskGenerator(predictor, settings=None, **overrides)
    scaled = _scaled(predictor, image, args.diameter)
    bar = _Progress(f"segmenting {Path(args.image).name}")
    try:
        result = generator.generate(image, progress=bar, scaled=scaled)
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


def _model_options(p: argparse.ArgumentParser) -> None:
    """Add the options that choose the model, its device and its precision."""
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


def _diameter_option(p: argparse.ArgumentParser) -> None:
    """Add ``--diameter``, the typical object size the windows are scaled for."""
    p.add_argument(
        "--diameter",
        type=_diameter,
        default=None,
        metavar="PIXELS",
        help="typical object diameter in image pixels (default: auto, estimated from the "
        "image); windows are magnified so such objects fill a good part of the model input",
    )


def _add_segment(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``segment`` subcommand: objects from box/point prompts."""
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
    _diameter_option(seg)
    _model_options(seg)
    seg.set_defaults(func=cmd_segment)


def _add_embed(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``embed`` subcommand: embeddings precomputed into a cache directory."""
    emb = sub.add_parser("embed", help="precompute image embeddings into a cache directory")
    emb.add_argument("images", nargs="+", help="image files or sample:NAME")
    emb.add_argument("--cache-dir", required=True, help="directory for the embeddings")
    _diameter_option(emb)
    _model_options(emb)
    emb.set_defaults(func=cmd_embed)


def _add_everything(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``everything`` subcommand: every object, as a label image and a table."""
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
        choices=["auto", "seeds", "boxes", "points"],
        default=None,
        help="how objects are found (auto: seeds found in the image, outlined by the model; "
        "boxes or points: SAM's prompt grid)",
    )
    every.add_argument("--cache-dir", default=None, help="keep embeddings on disk here")
    _diameter_option(every)
    _model_options(every)
    every.set_defaults(func=cmd_everything)


def _add_train_clicks(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``train-clicks`` subcommand: the weights delta that teaches LiteMedSAM clicks."""
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


def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``models`` subcommand: the model variants and where their weights are."""
    models = sub.add_parser("models", help="list model variants and where their weights are")
    models.set_defaults(func=cmd_models)


def build_parser() -> argparse.ArgumentParser:
    """The ``sam-viz`` argument parser, one subcommand per task."""
    parser = argparse.ArgumentParser(prog="sam-viz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_segment(sub)
    _add_embed(sub)
    _add_everything(sub)
    _add_train_clicks(sub)
    _add_models(sub)
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
