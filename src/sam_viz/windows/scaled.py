"""An image embedded as windows at its object scale, answering prompts in image pixels.

:class:`ScaledImage` is what every front end segments: the command line, the Python API,
napari (one per plane) and Jupyter. It converts the image to model RGB once, with contrast
from the whole image (or stack), so every window is normalised alike; it cuts the image into
windows sized from the typical object diameter (:mod:`sam_viz.windows.scale`); and it sends
each prompt to a window that holds it with context, embedding that window on first use.
Masks come back with the whole image's shape.

Conventions: points ``(x, y)`` and boxes ``XYXY`` in pixels of the whole image; windows
``XYXY`` with exclusive ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from sam_viz.image import Contrast, contrast_limits, image_key, to_rgb01, validate_image
from sam_viz.masks import InstanceMask
from sam_viz.predictor.candidates import BoxesPrediction, Candidates, Prediction
from sam_viz.progress import ProgressCallback, check_cancel
from sam_viz.prompts import PromptSet
from sam_viz.windows.geometry import (
    Window,
    WindowGrid,
    clip_window,
    place_window,
    touches_inner_edge,
)
from sam_viz.windows.scale import (
    GOOD_FRACTIONS,
    OBJECT_FRACTION,
    Scale,
    scale_for,
    window_side_for,
)

if TYPE_CHECKING:  # the predictor's modules import torch: not imported with this module
    from sam_viz.automatic.seeds import SeedLevels
    from sam_viz.predictor.cache import ImageEmbedding
    from sam_viz.predictor.predictor import Predictor
    from sam_viz.predictor.transforms import ImageFrame
    from sam_viz.windows.blobs import Polarity

# An estimate resting on fewer objects is not trusted: the image is seen whole instead.
MIN_ESTIMATE_OBJECTS = 5
# Room a prompt needs around it inside a window, as a fraction of the object's side.
CONTEXT_FRACTION = 0.5
# A mask cut by its window's edge is answered again in a window this many times larger.
GROWTH = 2.0
MAX_REROUTES = 2


@dataclass(frozen=True)
class DiameterSource:
    """Where a :class:`ScaledImage`'s diameter came from: ``"given"``, ``"estimated"`` (with
    the estimate's description) or ``"default"`` (nothing to estimate from)."""

    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


def _limits_rgb01(array: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """An image stretched between fixed contrast limits (low, high) to float RGB in 0..1."""
    low, high = limits
    span = high - low if high > low else 1.0
    values = array[..., :3] if array.ndim == 3 else array
    scaled = np.clip((values.astype(np.float32) - low) / span, 0.0, 1.0)
    return to_rgb01(np.nan_to_num(scaled), contrast="none")


class ScaledImage:
    """An image, its object scale, and its window embeddings; answers prompts.

    Args:
        predictor: The shared predictor (its model and embedding cache are used; its current
            image is left alone).
        image: 2-D grayscale, RGB or RGBA array of any numeric dtype (:mod:`sam_viz.image`).
        diameter: Typical object diameter in image pixels; estimated from the image when
            None (:func:`sam_viz.windows.diameter.estimate_diameter`).
        contrast: Contrast rule for the whole image (:func:`sam_viz.image.to_rgb01`).
        percentiles: Percentiles of the percentile stretch.
        limits: Fixed (low, high) contrast limits instead, e.g. those of a whole stack.
        fraction: The fraction of a window an object of the typical diameter spans (coarser
            windows are fewer: segment everything uses them to bound its time).

    Example::

        scaled = ScaledImage(Predictor.from_pretrained(), image)   # diameter estimated
        result = scaled.predict(box_xyxy=[410, 220, 436, 243])     # a 26-px nucleus
        result.masks.shape                                         # (3, H, W)
    """

    def __init__(
        self,
        predictor: Predictor,
        image: object,
        *,
        diameter: float | None = None,
        contrast: Contrast = "auto",
        percentiles: tuple[float, float] = (0.5, 99.5),
        limits: tuple[float, float] | None = None,
        fraction: float = OBJECT_FRACTION,
    ) -> None:
        array = validate_image(image)
        self.fraction = fraction
        self.predictor = predictor
        self.shape: tuple[int, int] = (int(array.shape[0]), int(array.shape[1]))
        if limits is None:
            # The rule as numbers: the CLI and napari (which passes a stack's limits) then
            # convert one image alike and share its cached window embeddings.
            values = array[..., :3] if array.ndim == 3 else array
            limits = contrast_limits(values, contrast=contrast, percentiles=percentiles)
        if limits is not None:
            self.rgb01 = _limits_rgb01(array, limits)
            self.key = image_key(array, contrast=f"limits{limits}")
        else:
            self.rgb01 = to_rgb01(array, contrast="none")
            self.key = image_key(array, contrast="none")
        # Whether objects are brighter than their surroundings, when it was estimated.
        self.polarity: Polarity | None = None
        # Seed-finding levels of the large image this is a tile of (sam_viz.automatic.tiled).
        self.seed_levels: SeedLevels | None = None
        if diameter is None:
            diameter, self.diameter_source = self._estimate(array)
        else:
            self.diameter_source = DiameterSource("given")
        self.scale: Scale = scale_for(predictor.spec, self.shape, float(diameter), fraction)
        self.grid = WindowGrid.create(self.shape, self.scale.side, self.scale.halo)
        # The windows (and sides) known to be embedded: computed here, or found cached.
        self.embedded: set[tuple[Window, int]] = set()

    def _estimate(self, array: np.ndarray) -> tuple[float, DiameterSource]:
        from sam_viz.windows.diameter import estimate_diameter

        estimate = estimate_diameter(array)
        self.polarity = estimate.polarity
        if estimate.count < MIN_ESTIMATE_OBJECTS:
            # Too few objects to measure (or one large one): the whole image at once.
            return float(max(self.shape)), DiameterSource("default", f"estimate: {estimate}")
        return estimate.diameter, DiameterSource("estimated", str(estimate))

    def with_diameter(self, diameter: float) -> ScaledImage:
        """The same image at another object scale (the converted pixels are shared)."""
        return self.with_scale(diameter=diameter)

    def with_scale(
        self, *, diameter: float | None = None, fraction: float | None = None
    ) -> ScaledImage:
        """The same image with another diameter and/or window fraction (the converted
        pixels, and the diameter unless given, are shared)."""
        other = object.__new__(ScaledImage)
        other.__dict__.update(self.__dict__)
        if diameter is not None:
            other.diameter_source = DiameterSource("given")
        other.fraction = self.fraction if fraction is None else fraction
        chosen = self.diameter if diameter is None else float(diameter)
        other.scale = scale_for(self.predictor.spec, self.shape, chosen, other.fraction)
        other.grid = WindowGrid.create(self.shape, other.scale.side, other.scale.halo)
        other.embedded = set()
        return other

    @property
    def diameter(self) -> float:
        """The typical object diameter used, in image pixels."""
        return self.scale.diameter

    # ------------------------------------------------------------------------ embeddings
    def window_key(self, window: Window, side: int) -> str:
        """Cache key of a window's embedding: the image, the window and its zoom."""
        x0, y0, x1, y1 = window
        return f"{self.key}-w{x0}-{y0}-{x1}-{y1}-s{side}"

    def _frame(self, window: Window, side: int) -> ImageFrame:
        # Imported here: it imports torch, and the napari dock imports this module to open.
        from sam_viz.predictor.transforms import ImageFrame

        x0, y0, x1, y1 = window
        return ImageFrame((y1 - y0, x1 - x0), self.predictor.spec.image_size, self._zoom(side))

    def _zoom(self, side: int) -> float | None:
        # One window holding the whole image is SAM's usual frame (longest side fitted).
        return None if side >= max(self.shape) else self.predictor.spec.image_size / side

    def is_embedded(self, window: Window, side: int | None = None) -> bool:
        """Whether a window's embedding is in the predictor's cache."""
        side = self.scale.side if side is None else side
        predictor = self.predictor
        key = self.window_key(window, side)
        shape = predictor.embedding_shape
        if predictor.cache.get(predictor.model_key, key, expected_shape=shape) is None:
            return False
        self.embedded.add((window, side))
        return True

    def embedding(
        self,
        window: Window,
        side: int | None = None,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> ImageEmbedding:
        """The embedding of a window (of ``side``, the scale's by default), computed once."""
        side = self.scale.side if side is None else side
        pixels = self._pixels(window)()
        key = self.window_key(window, side)
        embedding = self.predictor.encode(pixels, self._frame(window, side), key, progress, cancel)
        self.embedded.add((window, side))
        return embedding

    def embed_all(
        self,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> int:
        """Embed every window of the grid now (cached ones are skipped).

        Args:
            progress: Called as ``progress(done, total)`` in windows.
            cancel: Set it to stop; :class:`~sam_viz.progress.Cancelled` is raised.

        Returns:
            How many windows the grid has.
        """
        side = self.scale.side
        return self.embed_windows(
            [(window, side) for window in self.grid.windows], progress=progress, cancel=cancel
        )

    def embed_windows(
        self,
        windows: Sequence[tuple[Window, int]],
        *,
        batch_size: int | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> int:
        """Embed these (window, side) pairs now, in batches (cached ones are skipped).

        Args:
            windows: Windows with the side each is zoomed to.
            batch_size: Windows per encoder call; chosen by free memory if None.
            progress: Called as ``progress(done, total)`` in windows.
            cancel: Set it to stop; :class:`~sam_viz.progress.Cancelled` is raised.

        Returns:
            How many windows were asked for.
        """
        items = [
            (self._pixels(window), self._frame(window, side), self.window_key(window, side))
            for window, side in windows
        ]
        self.predictor.encode_many(items, batch_size=batch_size, progress=progress, cancel=cancel)
        self.embedded.update(windows)
        return len(items)

    def _pixels(self, window: Window) -> Callable[[], np.ndarray]:
        """What reads a window's RGB pixels (on the thread that reads the next batch)."""
        x0, y0, x1, y1 = window
        return lambda: np.ascontiguousarray(self.rgb01[y0:y1, x0:x1])

    def missing_windows(self) -> list[Window]:
        """The grid's windows whose embedding is not cached yet."""
        return [w for w in self.grid.windows if not self.is_embedded(w)]

    # --------------------------------------------------------------------------- routing
    def route(self, prompts: PromptSet) -> tuple[Window, int]:
        """The window (and its side) a prompt set is answered in.

        A box or mask is answered in a grid window when the object's size suits the grid's
        zoom (:data:`~sam_viz.windows.scale.GOOD_FRACTIONS`) and the window holds it with
        :data:`CONTEXT_FRACTION` of its side as room; otherwise in a window centred on it,
        sized for it. Points alone are taken to mark an object of the typical diameter.

        Raises:
            ValueError: For an empty prompt set.
        """
        bounds = prompts.bounds_xyxy()
        if bounds is None:
            raise ValueError("The prompt set is empty: give at least one point, box or mask.")
        sized = len(prompts.boxes_xyxy) or (prompts.mask is not None and prompts.mask.dtype == bool)
        if not sized:  # points: an object of the typical diameter around them
            radius = self.diameter / 2
            bounds = bounds + np.array([-radius, -radius, radius, radius])
        return self._route_bounds(bounds)

    def _route_box(self, box: np.ndarray, grid_only: bool) -> tuple[Window, int]:
        if grid_only:
            window = self.grid.holding(box.tolist(), 0.0)
            if window is not None:
                return window, self.scale.side
        return self.route(PromptSet(boxes_xyxy=box[None]))

    def _route_bounds(self, bounds: np.ndarray, at_least: int = 0) -> tuple[Window, int]:
        """The window for an object within ``bounds``; ``at_least`` asks for a window side
        of at least that many pixels (an object that went on past its first window)."""
        height, width = self.shape
        bounds = np.clip(bounds, 0, [width, height, width, height])
        object_side = float(max(bounds[2] - bounds[0], bounds[3] - bounds[1], 1.0))
        low, high = GOOD_FRACTIONS
        if not at_least and low <= object_side / self.scale.side <= high:
            window = self.grid.holding(bounds.tolist(), CONTEXT_FRACTION * object_side)
            if window is not None:
                return window, self.scale.side
        side = max(window_side_for(self.predictor.spec, object_side), at_least)
        if side >= max(self.shape):
            return (0, 0, width, height), max(self.shape)
        centre = ((bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
        return place_window(centre, side, self.shape, snap=max(1, side // 4)), side

    # --------------------------------------------------------------------------- answers
    def answer(
        self,
        prompts: PromptSet,
        *,
        multimask_output: bool = True,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Candidates:
        """Answer a prompt set (see :meth:`Predictor.answer`) with masks of the whole image.

        Several boxes are answered one mask per box, each in its own window, batched per
        window. A mask prompt must be an (H, W) bool mask of the whole image.

        Args:
            prompts: The prompts, in pixels of the whole image.
            multimask_output: Three candidates (default) or SAM's single mask.
            progress: Called as ``progress(done, total)`` while a window is embedded.
            cancel: Set it to stop an embedding; :class:`~sam_viz.progress.Cancelled`.

        Raises:
            ValueError: For an empty or invalid prompt set (the message is for the user).
        """
        prompts = prompts.validated(self.shape)
        if prompts.mask is not None and prompts.mask.shape != self.shape:
            raise ValueError(
                f"A mask prompt must be a bool mask of the image's shape {self.shape}, got "
                f"{prompts.mask.shape}."
            )
        if len(prompts.boxes_xyxy) >= 2:
            # Cropped masks, never (boxes, H, W): thousands of boxes on a large image.
            masks = [InstanceMask.from_full(np.zeros((0, 0), bool))] * len(prompts.boxes_xyxy)
            iou = np.zeros(len(masks), dtype=np.float32)
            stability = np.zeros(len(masks), dtype=np.float32)
            for window, members, local in self.boxes_by_window(
                prompts.boxes_xyxy, progress=progress, cancel=cancel
            ):
                x0, y0 = window[:2]
                for index, mask in zip(members, local.masks, strict=True):
                    masks[index] = InstanceMask.from_full(mask).shifted(x0, y0)
                iou[members] = local.iou_scores
                stability[members] = local.stability_scores
            return Candidates.from_masks(masks, self.shape, iou, stability, prompts)
        prediction = self._predict_one(prompts, multimask_output, progress, cancel)
        return Candidates.from_prediction(prediction, prompts.notes)

    def predict(
        self,
        points_xy: object = None,
        point_labels: object = None,
        box_xyxy: object = None,
        mask_input: np.ndarray | None = None,
        *,
        multimask_output: bool = True,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Prediction:
        """Segment one object, as :meth:`Predictor.predict`, in pixels of the whole image.

        Returns:
            The candidates with masks of the whole image's shape; their ``low_res_logits``
            are in the frame of the window used.
        """
        prompts = PromptSet(
            points_xy=np.zeros((0, 2)) if points_xy is None else np.asarray(points_xy, float),
            point_labels=(
                np.ones(len(np.atleast_2d(np.asarray(points_xy))), np.int64)
                if point_labels is None and points_xy is not None
                else np.asarray([] if point_labels is None else point_labels, np.int64)
            ),
            boxes_xyxy=np.zeros((0, 4)) if box_xyxy is None else np.asarray(box_xyxy, float),
            mask=mask_input,
        ).validated(self.shape)
        if len(prompts.boxes_xyxy) > 1:
            raise ValueError("predict() takes one box; for several boxes use predict_boxes().")
        return self._predict_one(prompts, multimask_output, progress, cancel)

    def predict_boxes(
        self,
        boxes_xyxy: object,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> BoxesPrediction:
        """One mask per box, each answered in a window that suits it (batched per window)."""
        prompts = PromptSet(boxes_xyxy=np.asarray(boxes_xyxy, float).reshape(-1, 4))
        prompts = prompts.validated(self.shape)
        return self._predict_boxes(prompts.boxes_xyxy, progress, cancel)

    def _predict_one(
        self,
        prompts: PromptSet,
        multimask_output: bool,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> Prediction:
        window, side = self.route(prompts)
        for attempt in range(MAX_REROUTES + 1):
            embedding = self.embedding(window, side, progress=progress, cancel=cancel)
            local = self.predictor.predict(
                *_local_prompts(prompts, window),
                multimask_output=multimask_output,
                embedding=embedding,
            )
            best = local.masks[local.best]
            if attempt == MAX_REROUTES or not _cut(best, window, self.shape):
                break
            # The object goes on past the window: answer it again in a larger one.
            bounds = _mask_bounds(best, window)
            window, side = self._route_bounds(bounds, at_least=int(GROWTH * side))
        return _pasted(local, window, self.shape)

    def boxes_by_window(
        self,
        boxes: np.ndarray,
        *,
        grid_only: bool = False,
        local: bool = False,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[Window, np.ndarray, BoxesPrediction]]:
        """Answer boxes one mask each, window by window, without whole-image masks.

        Each box is routed to its window (:meth:`route`); with ``grid_only``, to the grid
        window holding it with the most room whatever its size (fewer windows to embed).
        The boxes of one window are decoded in one batched call; with ``local``, each on
        a patch of the window's embedding around it (see :meth:`Predictor.predict_boxes`).
        ``progress(done, total)`` counts windows.

        Yields:
            (window, indices of its boxes, their prediction in the window's pixels).
        """
        routes = [self._route_box(box, grid_only) for box in boxes]
        groups = _groups(routes)
        for done, ((window, side), members) in enumerate(groups.items(), start=1):
            check_cancel(cancel, "Segmenting")
            embedding = self.embedding(window, side, cancel=cancel)
            x0, y0 = window[:2]
            answer = self.predictor.predict_boxes(
                boxes[members] - np.array([x0, y0, x0, y0]), embedding=embedding, local=local
            )
            if progress is not None:
                progress(done, len(groups))
            yield window, np.asarray(members), answer

    def _predict_boxes(
        self,
        boxes: np.ndarray,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> BoxesPrediction:
        height, width = self.shape
        masks = np.zeros((len(boxes), height, width), dtype=bool)
        iou = np.zeros(len(boxes), dtype=np.float32)
        stability = np.zeros(len(boxes), dtype=np.float32)
        logits: list[np.ndarray] = [np.zeros(0)] * len(boxes)
        for window, members, local in self.boxes_by_window(boxes, progress=progress, cancel=cancel):
            x0, y0, x1, y1 = window
            masks[members, y0:y1, x0:x1] = local.masks
            iou[members] = local.iou_scores
            stability[members] = local.stability_scores
            for index, row in zip(members, local.low_res_logits, strict=True):
                logits[index] = row
        return BoxesPrediction(masks, iou, np.stack(logits), stability)

    def windows_for(self, prompts: PromptSet) -> Iterator[tuple[Window, int]]:
        """The windows answering ``prompts`` needs (one per box with several boxes)."""
        if len(prompts.boxes_xyxy) >= 2:
            yield from dict.fromkeys(
                self.route(PromptSet(boxes_xyxy=box[None])) for box in prompts.boxes_xyxy
            )
        else:
            yield self.route(prompts)


def _groups(routes: list[tuple[Window, int]]) -> dict[tuple[Window, int], list[int]]:
    groups: dict[tuple[Window, int], list[int]] = {}
    for index, route in enumerate(routes):
        groups.setdefault(route, []).append(index)
    return groups


def _local_prompts(
    prompts: PromptSet, window: Window
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(points, labels, box, mask) of a one-object prompt set in a window's pixels."""
    x0, y0, x1, y1 = window
    offset = np.array([x0, y0], dtype=np.float64)
    points = labels = box = mask = None
    if len(prompts.points_xy):
        points = np.clip(prompts.points_xy - offset, 0, [x1 - x0, y1 - y0])
        labels = prompts.point_labels
    if len(prompts.boxes_xyxy):
        box = prompts.boxes_xyxy[0] - np.tile(offset, 2)
    if prompts.mask is not None:
        mask = prompts.mask[y0:y1, x0:x1]
    return points, labels, box, mask


def _cut(mask: np.ndarray, window: Window, shape: tuple[int, int]) -> bool:
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return False
    cols = np.flatnonzero(mask.any(axis=0))
    x0, y0 = window[:2]
    box = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
    return touches_inner_edge(box, window, shape)


def _mask_bounds(mask: np.ndarray, window: Window) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    x0, y0 = window[:2]
    return np.array([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1], float)


def _pasted(local: Prediction, window: Window, shape_hw: tuple[int, int]) -> Prediction:
    """A window's prediction with masks of the whole image (logits stay the window's)."""
    x0, y0, x1, y1 = clip_window(window, shape_hw)
    if (x0, y0, x1, y1) == (0, 0, shape_hw[1], shape_hw[0]):
        return local
    masks = np.zeros((len(local.masks), *shape_hw), dtype=bool)
    masks[:, y0:y1, x0:x1] = local.masks
    return replace(local, masks=masks)
