"""The ``sam-viz`` command line: segment, embed, models."""

from __future__ import annotations

import argparse
import math
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sam_viz.files import (
    atomic_directory,
    atomic_path,
    remove_stale_partials,
    strict_json,
    writable_directory,
)
from sam_viz.models.registry import DEFAULT_MODEL, MODELS
from sam_viz.ome import DEFAULT_LABEL_NAME

if TYPE_CHECKING:
    from sam_viz.automatic.results import Segmentation

LABEL_SUFFIXES = (".tif", ".tiff", ".png")
# overlay.png is a preview: a full-size RGB picture of a whole slide would be 3x the image.
OVERLAY_MAX_SIDE = 1024
# --box and --point values such as "-10,-10,68,80": argparse would take them for options.
_NEGATIVE_NUMBERS = re.compile(r"-[\d.]+(,[-+]?[\d.]+)+")


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def _indices(text: str) -> tuple[int, ...]:
    return tuple(_index(part) for part in text.split(","))


def _level(text: str) -> int | str:
    return "auto" if text.lower() == "auto" else _index(text)


def _tile(text: str) -> int | str:
    if text in ("auto", "off"):
        return text
    side = _positive_int(text)
    if side < 64:
        raise argparse.ArgumentTypeError(f"a tile side is at least 64 pixels, got {side}")
    return side


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

    directory = _cache_directory(args)
    cache = EmbeddingCache(directory=directory) if directory else None
    return Predictor.from_pretrained(
        args.model,
        model_name=args.model_name,
        device=args.device,
        cache=cache,
        precision=args.precision,
        backend=args.backend,
    )


def _cache_directory(args: argparse.Namespace) -> str | None:
    """Where embeddings are kept: ``--cache-dir``, or the store napari shares with
    ``--shared-cache``."""
    if getattr(args, "shared_cache", False):
        from sam_viz.files import shared_store

        if args.cache_dir:
            raise ValueError("Give --cache-dir or --shared-cache, not both.")
        return str(shared_store())
    return getattr(args, "cache_dir", None)


def _cache_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--cache-dir`` and ``--shared-cache``: where embeddings are kept on disk."""
    where = p.add_mutually_exclusive_group(required=required)
    where.add_argument(
        "--cache-dir",
        default=None,
        help="keep embeddings on disk in this folder (a zarr store when it is named *.zarr)",
    )
    where.add_argument(
        "--shared-cache",
        action="store_true",
        help='keep embeddings in the zarr store the napari dock uses with "Keep embeddings '
        'on disk" (embeddings.zarr in the model cache folder, SAM_VIZ_CACHE_DIR)',
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


def _check_output(path: Path, overwrite: bool, inputs: Sequence[str]) -> None:
    """Refuse, before any work, an output that would replace an input or an existing output
    (without --overwrite), or that cannot be written."""
    for source in inputs:
        given = Path(source)
        if given.exists() and path.exists() and path.resolve() == given.resolve():
            raise ValueError(f"The output {path} is the input image; choose another -o.")
        if path.is_dir() and given.exists() and path.resolve() in given.resolve().parents:
            raise ValueError(f"The input {source} is inside the output {path}; choose another -o.")
    if path.is_dir() and path.suffix.lower() in (*LABEL_SUFFIXES, ".csv", ".json"):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if path.exists() and not overwrite:
        raise ValueError(
            f"{path} exists; pass --overwrite to replace it (the new output takes its place "
            "only once complete), or choose another -o."
        )
    path.parent.mkdir(parents=True, exist_ok=True)  # raises what is wrong with the path
    if not writable_directory(path.parent):
        raise PermissionError(13, "Cannot create files in the output's folder", str(path.parent))
    remove_stale_partials(path.parent, name=path.name)  # what a killed earlier run left


def _replaced(path: Path, existed: bool) -> str:
    return f" (replaced the earlier {path})" if existed else ""


def _spec_of(args: argparse.Namespace):
    """The registered variant ``--model`` names, if known without loading anything."""
    name = args.model_name or args.model
    return MODELS.get(name)


def cmd_segment(args: argparse.Namespace) -> int:
    from sam_viz.io import read_image
    from sam_viz.prompts import check_answerable

    # Every check that needs no model comes before loading it.
    prompts = _prompt_set(args)
    image = read_image(args.image)
    prompts = prompts.validated(image.shape[:2])
    spec = _spec_of(args)
    if spec is not None:
        check_answerable(spec, prompts)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; -o names an output folder.")
    existed = out.exists() and any(out.iterdir())
    _check_output(out, args.overwrite or not existed, [args.image])
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
    # Written into a partial folder that takes the place of OUT once complete: all new or all old.
    with atomic_directory(out) as staging:
        summary = _write_answer(staging, answer, prompts)
        summary.update(
            image=str(args.image),
            model=predictor.spec.name,
            diameter=scaled.diameter,
            notes=list(answer.notes),
        )
        (staging / "scores.json").write_text(strict_json(summary, indent=2))
        _write_overlay(staging / "overlay.png", image, answer.labels[answer.best], prompts)
    for line in _describe_answer(answer):
        print(line)
    print(
        f"wrote {', '.join(summary['label_images'].values())}, scores.json and overlay.png "
        f"to {out}{_replaced(out, existed)}"
    )
    return 0


def _write_answer(out: Path, answer, prompts) -> dict:
    """Write the label images of an answer; returns the summary for scores.json."""
    import tifffile

    from sam_viz.predictor.candidates import label_areas

    if answer.n_objects > 1:  # several boxes: one mask per box
        tifffile.imwrite(out / "labels.tif", answer.labels[0])
        areas = label_areas(answer.labels[0], answer.n_objects)
        objects = [
            {"id": i + 1, "box_xyxy": [float(v) for v in box], "area": int(areas[i])}
            for i, box in enumerate(prompts.boxes_xyxy)
        ]
        return {
            "label_images": {"objects": "labels.tif"},
            "overlaps": "a pixel several masks claim goes to the smallest object",
            "objects": objects,
        }
    names = {name: f"{name}.tif" for name in answer.names}
    for index, name in enumerate(answer.names):
        tifffile.imwrite(out / names[name], answer.labels[index])
    candidates = {
        name: {
            "iou_score": float(answer.iou_scores[i]),
            "stability": float(answer.stability_scores[i]),
            "area": int(np.count_nonzero(answer.labels[i])),
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
        f"{name} {answer.iou_scores[i]:.3f} ({np.count_nonzero(answer.labels[i])} px)"
        for i, name in enumerate(answer.names)
    )
    return [f"object 1: {scores}; best: {answer.names[answer.best]}"]


def _write_overlay(path: Path, image: np.ndarray, labels: np.ndarray, prompts) -> None:
    """A preview of the answer over the image, at most OVERLAY_MAX_SIDE pixels a side."""
    from imageio.v3 import imwrite

    from sam_viz.image import to_rgb01
    from sam_viz.render import overlay, to_display_rgb

    step = max(1, math.ceil(max(image.shape[:2]) / OVERLAY_MAX_SIDE))
    points = prompts.points_xy / step if len(prompts.points_xy) else None
    picture = overlay(
        to_display_rgb(to_rgb01(image[::step, ::step])),
        labels[::step, ::step],
        boxes_xyxy=prompts.boxes_xyxy / step,
        points_xy=points,
        point_labels=prompts.point_labels if points is not None else None,
    )
    imwrite(path, picture, extension=".png")


def cmd_embed(args: argparse.Namespace) -> int:
    from sam_viz.io import read_image

    directory = _cache_directory(args)
    if not writable_directory(directory):
        raise PermissionError(13, "Cannot write embeddings into the cache folder", directory)
    predictor = _load_predictor(args)
    failed: list[str] = []
    for source in args.images:
        try:
            scaled = _scaled(predictor, read_image(source), args.diameter)
        except (ValueError, TypeError, OSError) as err:  # report it, go on with the rest
            print(f"sam-viz: {source}: {err}", file=sys.stderr)
            failed.append(source)
            continue
        bar = _Progress(f"embedding {Path(source).name}")
        try:
            count = scaled.embed_all(progress=bar)
        finally:
            bar.close()
        print(
            f"{source}: {count} window{'s' * (count != 1)} ({scaled.scale}, "
            f"{predictor.spec.name}) cached in {directory}"
        )
    if failed:
        print(
            f"sam-viz: {len(failed)} of {len(args.images)} images were not embedded: "
            + ", ".join(failed),
            file=sys.stderr,
        )
        return 1
    return 0


@dataclass(frozen=True)
class _Output:
    """Where ``everything`` writes one image's results."""

    source: str
    labels: Path  # a label image file, or the label group of an OME-Zarr image
    table: Path
    into_zarr: bool


def cmd_everything(args: argparse.Namespace) -> int:
    from sam_viz.automatic.everything import MaskGenerator
    from sam_viz.io import image_sources
    from sam_viz.ome import smallest_diameter

    # Every check that needs no model comes before loading it.
    _check_cluster_options(args)
    outputs = _everything_outputs(image_sources(args.images), args)
    existed = {p: p.exists() for o in outputs for p in (o.labels, o.table)}
    for output in outputs:
        _check_everything_output(output, args)
    smallest = smallest_diameter(_spec_of(args))
    loaders = [_image_loader(o.source, args, smallest, lazy=True) for o in outputs]
    if args.scheduler is not None or args.workers is not None:
        return _everything_on_cluster(outputs, args, smallest, existed)
    if len(loaders) == 1:  # one image is read before the model: a bad file is told at once
        loaded = loaders[0]()
        loaders = [lambda: loaded]
    predictor = _load_predictor(args)
    overrides: dict[str, object] = {"diameter": args.diameter}
    if args.prompts is not None:
        overrides["prompts"] = args.prompts
    generator = MaskGenerator(predictor, settings=None, **overrides)
    failed = 0
    for output, load in zip(outputs, loaders, strict=True):
        try:
            image, downsampling = load()
        except (ValueError, OSError) as err:  # report it, go on with the rest
            print(f"sam-viz: {output.source}: {err}", file=sys.stderr)
            failed += 1
            continue
        diameter = None if args.diameter is None else args.diameter / downsampling
        how = f"{generator.scheme} prompts, {predictor.spec.name}"
        tile = _tile_side(args.tile, image.shape)
        if tile:
            per_image = MaskGenerator(
                predictor, settings=None, **{**overrides, "diameter": diameter}
            )
            result = _segment_in_tiles(
                output, image.shape, args, partial(_tiles_here, per_image, image, output, tile)
            )
            how += f", tiles of {tile} px"
        else:
            from sam_viz.io import to_numpy

            image = to_numpy(image)
            result = _segment_everything(generator, predictor, image, output.source, diameter)
            _write_everything(output, result, args)
        _report_written(output, result, how, existed)
    return _report_failed(failed, len(outputs))


def _report_written(output: _Output, result, how: str, existed: dict[Path, bool]) -> None:
    replaced = [str(p) for p in (output.labels, output.table) if existed[p]]
    print(
        f"{output.source}: {result.num_objects} objects ({how}); "
        f"wrote {output.labels} and {output.table}"
        + (f" (replaced the earlier {', '.join(replaced)})" if replaced else "")
    )


def _report_failed(failed: int, total: int) -> int:
    if failed:
        print(f"sam-viz: {failed} of {total} images were not segmented", file=sys.stderr)
    return 1 if failed else 0


def _check_cluster_options(args: argparse.Namespace) -> None:
    """--scheduler and --workers: one at most, a sensible count, dask.distributed installed."""
    import importlib.util

    if args.scheduler is not None and args.workers is not None:
        raise ValueError(
            "--scheduler and --workers exclude each other: --scheduler uses a running "
            "cluster, --workers N starts one here."
        )
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be 1 or more, got {args.workers}.")
    if args.scheduler is not None and not args.scheduler.strip():
        raise ValueError("--scheduler needs an address, e.g. tcp://10.0.0.5:8786.")
    if (args.scheduler or args.workers) and importlib.util.find_spec("distributed") is None:
        raise ValueError(
            "--scheduler and --workers need dask.distributed: pip install 'sam-viz[cluster]'."
        )


def _everything_on_cluster(
    outputs: Sequence[_Output],
    args: argparse.Namespace,
    smallest: float,
    existed: dict[Path, bool],
) -> int:
    """One task per image on dask.distributed; each result is written here as it arrives."""
    from sam_viz.cluster import EverythingOptions, connect, run_everything, segment_tiled_on_cluster

    options = EverythingOptions.from_args(args)
    shapes = {o.source: _lazy_shape(o.source, args, smallest) for o in outputs}
    tiles = {source: _tile_side(args.tile, shape) for source, shape in shapes.items()}
    by_source = {o.source: o for o in outputs if not tiles[o.source]}
    failed = 0
    with connect(args.scheduler, args.workers) as client:
        for output in outputs:  # large images: one task per tile
            if tiles[output.source]:
                on_workers = partial(
                    segment_tiled_on_cluster,
                    output.source,
                    client,
                    options,
                    tile_side=tiles[output.source],
                    min_diameter=smallest,
                )
                result = _segment_in_tiles(output, shapes[output.source], args, on_workers)
                how = f"tiles of {tiles[output.source]} px on dask.distributed"
                _report_written(output, result, how, existed)
        results = run_everything(list(by_source), client, options, min_diameter=smallest)
        for result in results:
            output = by_source[result.source]
            if result.segmentation is None:
                print(f"sam-viz: {output.source}: {result.error}", file=sys.stderr)
                failed += 1
                continue
            _write_everything(output, result.segmentation, args)
            how = f"{result.scheme} prompts, {result.model}, on dask.distributed"
            _report_written(output, result.segmentation, how, existed)
    return _report_failed(failed, len(outputs))


def _everything_outputs(sources: Sequence[str], args: argparse.Namespace) -> list[_Output]:
    """Where each image's labels and table go: -o for one image, the folder -o for several,
    or inside each OME-Zarr image (its table beside it) without -o."""
    from sam_viz.automatic.results import check_table_suffix
    from sam_viz.io import is_ome_zarr
    from sam_viz.ome import label_group_path

    if args.table and len(sources) > 1:
        raise ValueError("--table names one table; for several images leave it out.")
    outputs = []
    for source in sources:
        if args.output is None:
            if not is_ome_zarr(source):
                raise ValueError(
                    f"Give -o for {source}: a label image (.tif, .tiff or .png), or a folder "
                    "for several images (only OME-Zarr images take their labels inside)."
                )
            labels = label_group_path(source, args.label_name)
            table = Path(source).parent / f"{_stem(source)}_{args.label_name}.csv"
        elif len(sources) == 1:
            labels = _label_image_path(Path(args.output))
            table = labels.with_name(labels.stem + ".csv")
        else:
            folder = Path(args.output)
            if folder.suffix.lower() in LABEL_SUFFIXES:
                raise ValueError(
                    f"{len(sources)} images: -o names a folder for their label images, "
                    f"not one file ({folder.name!r})."
                )
            labels = folder / f"{_stem(source)}.tif"
            table = labels.with_suffix(".csv")
        table = Path(args.table) if args.table else table
        check_table_suffix(table)
        outputs.append(_Output(source, labels, table, args.output is None))
    _check_distinct(outputs)
    return outputs


def _label_image_path(path: Path) -> Path:
    if path.suffix.lower() not in LABEL_SUFFIXES:
        raise ValueError(
            f"Cannot write a label image as {path.name!r}: name it .tif or .tiff (any number "
            "of objects) or .png (up to 65,535 objects)."
        )
    return path


def _stem(source: str) -> str:
    """An image's name without its format suffixes: ``plate/A1.ome.zarr`` -> ``A1``."""
    name = Path(source.removeprefix("sample:")).name
    for suffix in (".zarr", ".tiff", ".tif", ".png", ".jpeg", ".jpg", ".ome"):
        name = name.removesuffix(suffix)
    return name


def _check_distinct(outputs: Sequence[_Output]) -> None:
    seen: dict[Path, str] = {}
    for output in outputs:
        for path in (output.labels, output.table):
            if path in seen:
                raise ValueError(
                    f"{seen[path]} and {output.source} would both write {path}; "
                    "segment them in separate runs (or rename one)."
                )
            seen[path] = output.source


def _check_everything_output(output: _Output, args: argparse.Namespace) -> None:
    from sam_viz.ome import check_label_target

    if output.into_zarr:
        check_label_target(output.source, args.label_name, args.overwrite)
    else:
        _check_output(output.labels, args.overwrite, [output.source])
    _check_output(output.table, args.overwrite, [output.source])


def _image_loader(source: str, args: argparse.Namespace, smallest: float, lazy: bool = False):
    """:func:`sam_viz.io.image_loader` with the command line's options."""
    from sam_viz.io import image_loader

    return image_loader(
        source,
        level=args.level,
        channel=args.channel,
        plane=args.plane,
        diameter=args.diameter,
        min_diameter=smallest,
        lazy=lazy,
    )


def _tile_side(option: int | str, shape: Sequence[int]) -> int:
    """The tile side ``--tile`` asks for this image (0: the whole image at once)."""
    from sam_viz.automatic.tiled import TILE_SIDE
    from sam_viz.image import is_large

    if option == "off":
        return 0
    if option == "auto":
        return TILE_SIDE if is_large(shape) else 0
    return int(option)


def _lazy_shape(source: str, args: argparse.Namespace, smallest: float) -> tuple[int, ...]:
    """The shape of an image, opened lazily (0 x 0 where it cannot be read: the task says)."""
    try:
        return tuple(_image_loader(source, args, smallest, lazy=True)()[0].shape)
    except (ValueError, OSError):
        return (0, 0)


def _segment_in_tiles(
    output: _Output, shape: Sequence[int], args: argparse.Namespace, segment
) -> Segmentation:
    """Segment a large image tile by tile with ``segment(labels)``, its labels streamed
    through a zarr array on disk into the output, never held whole; returns the
    segmentation (its table made per tile)."""
    import shutil

    from sam_viz.automatic.tiled import label_store
    from sam_viz.files import partial_path

    if not output.into_zarr and output.labels.suffix.lower() == ".png":
        raise ValueError(
            f"{output.source} is segmented in tiles: name the label image .tif (a PNG holds "
            "at most 65,535 objects and is written whole)."
        )
    staging = partial_path(output.table.with_name(output.table.stem + "-labels.zarr"))
    try:
        result = segment(label_store(staging, tuple(shape[:2])))
        _write_everything(output, result, args)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _tiles_here(generator, image, output: _Output, tile: int, labels) -> Segmentation:
    """Segment ``image`` tile by tile in this process into ``labels``, with a progress bar."""
    from sam_viz.automatic.tiled import segment_tiled

    bar = _Progress(f"segmenting {Path(output.source).name} in tiles of {tile} px")
    try:
        return segment_tiled(generator, image, labels, tile_side=tile, progress=bar)
    finally:
        bar.close()


def _segment_everything(generator, predictor, image: np.ndarray, source: str, diameter):
    scaled = _scaled(predictor, image, diameter)
    bar = _Progress(f"segmenting {Path(source).name}")
    try:
        return generator.generate(image, progress=bar, scaled=scaled)
    finally:
        bar.close()


def _write_everything(output: _Output, result, args: argparse.Namespace) -> None:
    """The label image (a file, or a label group inside the OME-Zarr image) and the table."""
    if output.into_zarr:
        from sam_viz.ome import write_labels

        write_labels(output.source, result.labels, args.label_name, overwrite=args.overwrite)
    else:
        _write_labels(output.labels, result.labels)
    result.write_table(output.table)


def _write_labels(path: Path, labels: np.ndarray) -> None:
    """Write a label image in the format its suffix names, replacing ``path`` once complete."""
    if not isinstance(labels, np.ndarray):  # a tiled run's labels on disk: copied tile by tile
        from sam_viz.automatic.tiled import write_tiff_tiles

        with atomic_path(path) as partial:
            write_tiff_tiles(partial, labels)
        return
    if path.suffix.lower() == ".png":
        from imageio.v3 import imwrite

        if labels.max(initial=0) >= 2**16:
            raise ValueError(
                f"{int(labels.max())} objects do not fit a 16-bit PNG; name the output .tif."
            )
        with atomic_path(path) as partial:
            imwrite(partial, labels.astype(np.uint16), extension=".png")
        return
    import tifffile

    with atomic_path(path) as partial:
        tifffile.imwrite(partial, labels)


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
        cached_checkpoint_state,
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
            # The hash is checked once per version of the file, so listing stays quick.
            where = {
                "absent": f"download on first use from {spec.url}",
                "verified": f"cached: {path}",
                "unchecked": f"cached (hash not checked): {path}",
                "damaged": f"cached file damaged (hash mismatch): {path}; it will be "
                "downloaded again on next use (or delete it)",
                "unreadable": f"cached file unreadable: {path}; it will be downloaded again "
                "on next use (or delete it)",
            }[cached_checkpoint_state(spec)]
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
        choices=["float32", "bfloat16", "auto", "int8"],
        help="precision of the image encoder and the mask upscaling (auto: bf16 where the "
        "hardware has it natively; int8: the encoder's linear layers quantised, CPU only, "
        "opt-in)",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=["auto", "torch", "onnxruntime", "openvino"],
        help="who runs the float32 image encoder on the CPU (default: $SAM_VIZ_BACKEND, else "
        "auto: an exported copy where it is measured faster here, needs sam-viz[fast])",
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


def _overwrite_option(p: argparse.ArgumentParser) -> None:
    """Add ``--overwrite``: without it, an existing output is never replaced."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output (the new one takes its place only once complete)",
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
    _overwrite_option(seg)
    _cache_options(seg)
    _diameter_option(seg)
    _model_options(seg)
    seg.set_defaults(func=cmd_segment)


def _add_embed(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``embed`` subcommand: embeddings precomputed into a cache directory."""
    emb = sub.add_parser("embed", help="precompute image embeddings into a cache directory")
    emb.add_argument("images", nargs="+", help="image files or sample:NAME")
    _cache_options(emb, required=True)
    _diameter_option(emb)
    _model_options(emb)
    emb.set_defaults(func=cmd_embed)


def _add_everything(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``everything`` subcommand: every object, as a label image and a table."""
    every = sub.add_parser("everything", help="segment every object: a label image + table")
    every.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (PNG, JPEG, TIFF), OME-Zarr images (IMAGE.zarr), folders or glob "
        "patterns of them, or sample:NAME (e.g. sample:coins)",
    )
    every.add_argument(
        "-o",
        "--output",
        default=None,
        help="label image to write (.tif, .tiff or .png), or for several images a folder; "
        "default for OME-Zarr images: inside them, as labels/NAME (see --label-name)",
    )
    every.add_argument(
        "--label-name",
        default=DEFAULT_LABEL_NAME,
        help=f"label group written into an OME-Zarr image (default {DEFAULT_LABEL_NAME}); "
        "its table goes beside the image as IMAGE_NAME.csv",
    )
    every.add_argument(
        "--level",
        type=_level,
        default=0,
        help="resolution level of an OME-Zarr image or pyramidal TIFF (0, the default: full "
        "resolution), or auto: the coarsest level where --diameter objects stay large "
        "enough for the model",
    )
    every.add_argument(
        "--channel", type=_index, default=None, help="channel of an OME-Zarr image (from 0)"
    )
    every.add_argument(
        "--plane",
        type=_indices,
        default=None,
        metavar="INDEX[,INDEX]",
        help="plane of an OME-Zarr stack along its t and z axes that have several entries (from 0)",
    )
    _overwrite_option(every)
    every.add_argument(
        "--table",
        default=None,
        help="object table, .csv, .json or .parquet (with pyarrow) (default: next to the "
        "labels, .csv)",
    )
    every.add_argument(
        "--prompts",
        choices=["auto", "seeds", "boxes", "points"],
        default=None,
        help="how objects are found (auto: seeds found in the image, outlined by the model; "
        "boxes or points: SAM's prompt grid)",
    )
    _cache_options(every)
    every.add_argument(
        "--tile",
        type=_tile,
        default="auto",
        metavar="SIDE|auto|off",
        help="segment in tiles of SIDE pixels, reading the image and writing the labels one "
        "tile at a time (auto, the default: for images over 4096x4096 px, tiles of 2048)",
    )
    _diameter_option(every)
    _model_options(every)
    _cluster_options(every)
    every.set_defaults(func=cmd_everything)


def _cluster_options(p: argparse.ArgumentParser) -> None:
    """Add ``--scheduler`` and ``--workers``: one task per image on dask.distributed."""
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run one task per image on the dask.distributed cluster at ADDRESS (e.g. "
        "tcp://10.0.0.5:8786); its workers must see the image paths (needs sam-viz[cluster])",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run one task per image on a local dask.distributed cluster of N processes "
        "started for this run (default: in this process; needs sam-viz[cluster])",
    )


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
    train.add_argument(
        "--steps", type=_positive_int, default=None, help="optimiser steps (default 2200)"
    )
    train.add_argument(
        "--scenes", type=_positive_int, default=None, help="generated scenes (default 300)"
    )
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
        type=_positive_int,
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
    args = parser.parse_args(_negative_numbers_joined(sys.argv[1:] if argv is None else argv))
    from sam_viz.models.checkpoints import CheckpointError
    from sam_viz.progress import Cancelled

    with _terminate_as_interrupt():
        try:
            return int(args.func(args))
        except (CheckpointError, ValueError, TypeError) as err:
            print(f"sam-viz: error: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            print(f"sam-viz: error: {_describe_os_error(err)}", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, Cancelled):
            print("sam-viz: interrupted; no output was half-written", file=sys.stderr)
            return 130


def _negative_numbers_joined(argv: Sequence[str]) -> list[str]:
    """``--box -10,-10,68,80`` as ``--box=-10,-10,68,80``, which argparse reads as a value."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if token in ("--box", "--point") and _NEGATIVE_NUMBERS.fullmatch(following):
            joined.append(f"{token}={following}")
            index += 2
        else:
            joined.append(token)
            index += 1
    return joined


def _describe_os_error(err: OSError) -> str:
    if err.strerror is None or err.filename is None:
        return str(err)
    hints = {
        PermissionError: "check its permissions, or choose another place",
        IsADirectoryError: "it is a folder; give a file name",
        NotADirectoryError: "a part of the path is a file, not a folder",
        FileExistsError: "it exists; choose another name",
    }
    hint = next((text for kind, text in hints.items() if isinstance(err, kind)), "")
    return f"{err.strerror}: {err.filename}" + (f" ({hint})" if hint else "")


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the run as Ctrl-C does, so partial outputs are removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
