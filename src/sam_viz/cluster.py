"""Segment everything on many images with dask.distributed: one task per image.

The workers read each image themselves (from its path, so no pixels travel to them), segment
it as ``sam-viz everything`` does in-process, and send back the :class:`Segmentation`; the
caller writes the outputs, through the same atomic writers as the in-process run, so the
labels are equal and an interrupted run leaves no half-written file. A worker loads the model
on its first image and keeps it for the next ones (:class:`ModelCache`).

The default of the command line stays in-process: nothing here is imported without
``--scheduler`` or ``--workers``.

Example (Python or Jupyter)::

    from sam_viz.cluster import EverythingOptions, connect, segment_everything_on_cluster

    with connect(workers=2) as client:
        labels = {
            result.source: result.segmentation.labels
            for result in segment_everything_on_cluster(["plate/*.tif"], client)
        }
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, cast

from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker

from sam_viz.models.registry import DEFAULT_MODEL, MODELS

if TYPE_CHECKING:
    from sam_viz.automatic.results import Segmentation
    from sam_viz.automatic.tiled import Overview, Tile, TileResult
    from sam_viz.predictor import Predictor

CLUSTER_EXTRA = "pip install 'sam-viz[cluster]'"


@dataclass(frozen=True)
class EverythingOptions:
    """How each worker reads and segments an image: the options of ``sam-viz everything``,
    under the same names (see ``sam-viz everything --help``)."""

    model: str = DEFAULT_MODEL
    model_name: str | None = None
    device: str = "auto"
    precision: str = "float32"
    backend: str | None = None
    cache_dir: str | None = None
    diameter: float | None = None
    prompts: str | None = None
    level: int | str = 0
    channel: int | None = None
    plane: tuple[int, ...] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EverythingOptions:
        """The options of a parsed ``sam-viz everything`` command line."""
        values = {f.name: getattr(args, f.name) for f in fields(cls)}
        if getattr(args, "shared_cache", False):
            from sam_viz.files import shared_store

            values["cache_dir"] = str(shared_store())
        return cls(**values)

    def loader(self, source: str, min_diameter: float, *, lazy: bool = False):
        """:func:`sam_viz.io.image_loader` of ``source`` with these options' level, channel,
        plane and diameter."""
        from sam_viz.io import image_loader

        return image_loader(
            source,
            level=self.level,
            channel=self.channel,
            plane=self.plane,
            diameter=self.diameter,
            min_diameter=min_diameter,
            lazy=lazy,
        )

    def model_key(self) -> tuple[object, ...]:
        """What identifies the loaded model: images with equal keys share it."""
        return (self.model, self.model_name, self.device, self.precision, self.backend)


@dataclass(frozen=True)
class ClusterResult:
    """One image's outcome.

    Attributes:
        source: The image as given.
        segmentation: What was found; None when the image could not be read.
        error: Why the image could not be read, else None.
        scheme: The prompt scheme used (``seeds``, ``boxes`` or ``points``).
        model: The model's registry name.
    """

    source: str
    segmentation: Segmentation | None
    error: str | None
    scheme: str
    model: str


class ModelCache(WorkerPlugin):
    """Keeps each worker's model between its tasks, and sets its torch threads.

    A worker with several threads runs its tasks one at a time on the model (torch then uses
    the threads within each image): a predictor is not shared between threads.

    Args:
        torch_threads: Threads torch uses on each worker (1 where several workers share the
            cores: they would otherwise oversubscribe them); None leaves torch's default.
    """

    name = "sam-viz-models"

    def __init__(self, torch_threads: int | None = None) -> None:
        self.torch_threads = torch_threads

    def setup(self, worker: object) -> None:
        """Called on each worker as it starts (restarted ones included)."""
        self._predictors: dict[tuple[object, ...], Predictor] = {}
        self._lock = threading.Lock()
        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(self.torch_threads)

    @property
    def models_loaded(self) -> int:
        """How many models this worker holds."""
        return len(self._predictors)

    @contextmanager
    def model(self, options: EverythingOptions) -> Iterator[Predictor]:
        """The model ``options`` name (loaded on this worker's first use), for one task at
        a time."""
        with self._lock:
            key = options.model_key()
            if key not in self._predictors:
                self._predictors[key] = _load_predictor(options)
            yield self._predictors[key]


def _load_predictor(options: EverythingOptions) -> Predictor:
    from sam_viz.predictor import Predictor
    from sam_viz.predictor.cache import EmbeddingCache

    cache = EmbeddingCache(directory=options.cache_dir) if options.cache_dir else None
    return Predictor.from_pretrained(
        options.model,
        model_name=options.model_name,
        device=options.device,
        cache=cache,
        precision=options.precision,
        backend=options.backend,
        progress=False,
    )


@contextmanager
def connect(scheduler: str | None = None, workers: int | None = None) -> Iterator[Client]:
    """A client of the cluster at ``scheduler``, or of a local cluster of ``workers``
    processes (one thread each), closed on the way out (Ctrl-C included).

    Raises:
        ValueError: Unless exactly one of ``scheduler`` and ``workers`` is given.
        OSError: When the scheduler cannot be reached.
    """
    if (scheduler is None) == (workers is None):
        raise ValueError("Give either a scheduler address or a number of workers.")
    if workers is not None:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        try:
            with Client(cluster) as client:
                # Workers share this machine's cores: more torch threads would oversubscribe.
                client.register_plugin(ModelCache(max(1, (os.cpu_count() or 1) // workers)))
                yield client
        finally:
            cluster.close()
        return
    # A remote worker owns the cores it was given: torch's default fits them, and the
    # model cache it may hold from an earlier run is kept (see run_everything).
    with Client(scheduler) as client:
        yield client


def segment_everything_on_cluster(
    images: Sequence[str],
    client: Client,
    options: EverythingOptions | None = None,
    *,
    min_diameter: float | None = None,
    progress: bool = True,
) -> Iterator[ClusterResult]:
    """Segment every object in each image, one task per image, yielding results as they
    complete (not in the order given).

    A task on a worker that dies is given to another worker (dask.distributed reschedules
    it, up to its ``distributed.scheduler.allowed-failures`` times). Stopping the iteration
    (Ctrl-C included) cancels the tasks not yet done.

    Args:
        images: Image files, OME-Zarr images, folders or glob patterns, as ``sam-viz
            everything`` takes them; the workers must see the same paths.
        client: A client of the cluster, e.g. from :func:`connect`; the
            :class:`ModelCache` plugin is registered on its workers unless it is already.
        options: How to read and segment the images (default: the command line's defaults).
        min_diameter: The smallest object diameter the model segments well, for ``level
            "auto"`` (default: the model's, see :func:`sam_viz.ome.smallest_diameter`).
        progress: Show a progress bar that follows the tasks.

    Yields:
        One :class:`ClusterResult` per image.
    """
    from sam_viz.io import image_sources
    from sam_viz.ome import smallest_diameter

    options = options or EverythingOptions()
    if min_diameter is None:
        min_diameter = smallest_diameter(MODELS.get(options.model_name or options.model))
    yield from run_everything(
        image_sources(images), client, options, min_diameter=min_diameter, progress=progress
    )


def run_everything(
    sources: Sequence[str],
    client: Client,
    options: EverythingOptions,
    *,
    min_diameter: float,
    progress: bool = True,
) -> Iterator[ClusterResult]:
    """:func:`segment_everything_on_cluster` on image sources taken as they are (files,
    OME-Zarr images, ``sample:NAME``; no folders or patterns), with ``min_diameter`` given."""
    _ensure_model_cache(client)
    futures = [
        client.submit(
            _segment_on_worker, _as_seen_by_workers(s), s, options, min_diameter, pure=False
        )
        for s in sources
    ]
    bar = _progress_bar(len(futures), progress)
    try:
        for future in as_completed(futures):
            yield future.result()
            bar.update(1)
    finally:
        client.cancel([f for f in futures if not f.done()])
        bar.close()


def segment_tiled_on_cluster(
    source: str,
    client: Client,
    options: EverythingOptions,
    labels: object,
    *,
    tile_side: int,
    min_diameter: float,
    progress: bool = True,
) -> Segmentation:
    """Segment one large image with one task per tile
    (:mod:`sam_viz.automatic.tiled`); the labels are painted here, into ``labels`` (an
    (H, W) array taking slice assignment, e.g. a zarr array on disk), in tile order.

    The survey (contrast, diameter, seed levels) is made here from a strided pass and the
    busiest crops; each worker reads only its tiles. A tile on a worker that dies is run
    again on another.
    """
    from sam_viz.automatic.tiled import TileAssembler, plan_tiles, survey

    image, downsampling = options.loader(source, min_diameter, lazy=True)()
    diameter = None if options.diameter is None else options.diameter / downsampling
    overview = survey(image, diameter=diameter)
    tiles = plan_tiles(tuple(image.shape[:2]), tile_side, overview.margin)
    _ensure_model_cache(client)
    path = _as_seen_by_workers(source)
    futures = [
        client.submit(_tile_on_worker, path, options, min_diameter, tile, overview, pure=False)
        for tile in tiles
    ]
    assembler = TileAssembler(labels)
    bar = _progress_bar(len(futures), progress, unit="tile")
    try:
        for future in as_completed(futures):
            assembler.add(future.result())
            bar.update(1)
    finally:
        client.cancel([f for f in futures if not f.done()])
        bar.close()
    return assembler.segmentation()


def _tile_on_worker(
    path: str, options: EverythingOptions, min_diameter: float, tile: Tile, overview: Overview
) -> TileResult:
    """The task: read one tile of the image at ``path`` and keep the objects it owns."""
    import dask

    from sam_viz.automatic.everything import MaskGenerator
    from sam_viz.automatic.tiled import segment_tile

    cache = cast(ModelCache, get_worker().plugins[ModelCache.name])
    with cache.model(options) as predictor, dask.config.set(scheduler="synchronous"):
        image, _ = options.loader(path, min_diameter, lazy=True)()
        prompts = {} if options.prompts is None else {"prompts": options.prompts}
        generator = MaskGenerator(predictor, diameter=overview.diameter, **prompts)
        return segment_tile(generator, image, tile, overview)


def _ensure_model_cache(client: Client) -> None:
    """Register :class:`ModelCache` unless it is (asked of the scheduler: workers that join
    later, as a scaled cluster's do, get its plugins)."""
    registered = client.run_on_scheduler(
        lambda dask_scheduler: ModelCache.name in dask_scheduler.worker_plugins
    )
    if not registered:
        client.register_plugin(ModelCache())


def _as_seen_by_workers(source: str) -> str:
    """An absolute path: a worker's working folder need not be ours."""
    from sam_viz.io import SAMPLE_PREFIX

    return source if source.startswith(SAMPLE_PREFIX) else os.path.abspath(source)


def _progress_bar(total: int, show: bool, unit: str = "image"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="segmenting", unit=unit, disable=not show)


def _segment_on_worker(
    path: str, source: str, options: EverythingOptions, min_diameter: float
) -> ClusterResult:
    """The task: read the image at ``path`` on this worker and segment it as the in-process
    ``sam-viz everything`` does (same generator settings, same scale)."""
    cache = cast(ModelCache, get_worker().plugins[ModelCache.name])
    with cache.model(options) as predictor:
        return _segment_with(predictor, path, source, options, min_diameter)


def _segment_with(
    predictor: Predictor, path: str, source: str, options: EverythingOptions, min_diameter: float
) -> ClusterResult:
    import dask

    from sam_viz.automatic.everything import MaskGenerator
    from sam_viz.windows.scaled import ScaledImage

    overrides: dict[str, object] = {"diameter": options.diameter}
    if options.prompts is not None:
        overrides["prompts"] = options.prompts
    generator = MaskGenerator(predictor, settings=None, **overrides)
    model = predictor.spec.name
    try:
        # A lazy OME-Zarr plane is read here, in this task, not as tasks of its own.
        with dask.config.set(scheduler="synchronous"):
            image, downsampling = options.loader(path, min_diameter)()
    except (ValueError, OSError) as err:
        return ClusterResult(source, None, str(err), generator.scheme, model)
    diameter = None if options.diameter is None else options.diameter / downsampling
    scaled = ScaledImage(predictor, image, diameter=diameter)
    segmentation = generator.generate(image, scaled=scaled)
    return ClusterResult(source, segmentation, None, generator.scheme, model)
