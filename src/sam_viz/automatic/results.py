"""Results of automatic segmentation: candidate masks, the label image and its table.

Joining the candidates of several tiles is :mod:`sam_viz.automatic.merging`.

Conventions as in :mod:`sam_viz.automatic.instances`: boxes ``XYXY`` with exclusive ends in image
pixels; label images are (H, W) int32 with 0 for background.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam_viz.files import atomic_path, strict_json
from sam_viz.masks import InstanceMask, paint_labels
from sam_viz.windows.geometry import Window

TABLE_SUFFIXES = (".csv", ".json", ".parquet")


@dataclass(frozen=True)
class Proposals:
    """Masks proposed by automatic segmentation so far, with their scores (one row per mask).

    Attributes:
        masks: The masks.
        iou: (K,) predicted IoU.
        stability: (K,) stability score.
        prompts: (K, 4) the prompt of each mask: a box, or a point (x, y) as (x, y, x, y).
        window_areas: (K,) pixel area of the window each mask was decoded in.
    """

    masks: tuple[InstanceMask, ...]
    iou: np.ndarray
    stability: np.ndarray
    prompts: np.ndarray
    window_areas: np.ndarray

    @classmethod
    def empty(cls) -> Proposals:
        """No masks."""
        zeros = np.zeros(0, dtype=np.float32)
        return cls((), zeros, zeros, np.zeros((0, 4)), np.zeros(0))

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def boxes(self) -> np.ndarray:
        """(K, 4) int64 boxes of the masks."""
        return np.array([m.box_xyxy for m in self.masks], dtype=np.int64).reshape(-1, 4)

    @property
    def nms_boxes(self) -> np.ndarray:
        """(K, 4) boxes as first and last pixel indices, as NMS compares them.

        SAM's reference generator measures box overlap on pixel-index corners; doing the
        same keeps our NMS decisions identical to its.
        """
        return self.boxes - np.array([0, 0, 1, 1])

    def extend(
        self,
        masks_and_stability: tuple[Sequence[InstanceMask | None], np.ndarray],
        iou: np.ndarray,
        prompts: np.ndarray,
    ) -> Proposals:
        """These candidates plus new ones; masks given as None are left out."""
        masks, stability = masks_and_stability
        keep = [i for i, m in enumerate(masks) if m is not None]
        prompts = np.asarray(prompts, dtype=np.float64)
        if prompts.shape[1] == 2:
            prompts = np.concatenate([prompts, prompts], axis=1)
        new = Proposals(
            tuple(masks[i] for i in keep),  # type: ignore[misc]
            np.asarray(iou, dtype=np.float32)[keep],
            np.asarray(stability, dtype=np.float32)[keep],
            prompts[keep],
            np.zeros(len(keep)),
        )
        return self.concat(new)

    def concat(self, other: Proposals) -> Proposals:
        """These candidates followed by ``other``'s."""
        return Proposals(
            self.masks + other.masks,
            np.concatenate([self.iou, other.iou]),
            np.concatenate([self.stability, other.stability]),
            np.concatenate([self.prompts.reshape(-1, 4), other.prompts.reshape(-1, 4)]),
            np.concatenate([self.window_areas, other.window_areas]),
        )

    def subset(self, indices: np.ndarray | Sequence[int]) -> Proposals:
        """The candidates at ``indices``, in that order."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        return Proposals(
            tuple(self.masks[i] for i in index),
            self.iou[index],
            self.stability[index],
            self.prompts.reshape(-1, 4)[index],
            self.window_areas[index],
        )

    def with_masks(self, masks: Sequence[InstanceMask]) -> Proposals:
        """The same candidates with their masks replaced."""
        return Proposals(tuple(masks), self.iou, self.stability, self.prompts, self.window_areas)

    def shifted(self, dx: int, dy: int, window: Window) -> Proposals:
        """Masks and prompts moved from window to image pixels; remembers the window's area."""
        x0, y0, x1, y1 = window
        return Proposals(
            tuple(m.shifted(dx, dy) for m in self.masks),
            self.iou,
            self.stability,
            self.prompts.reshape(-1, 4) + np.array([dx, dy, dx, dy]),
            np.full(len(self.masks), float((x1 - x0) * (y1 - y0))),
        )


@dataclass(frozen=True)
class Segmentation:
    """Everything a :class:`~sam_viz.automatic.everything.MaskGenerator` found in an image.

    Attributes:
        labels: (H, W) int32 label image; 0 is background. Smaller objects lie on top of
            larger ones where masks overlap.
        masks: Every kept mask (they may overlap), in the generator's order.
        predicted_iou: (K,) the model's predicted IoU of each mask.
        stability_score: (K,) stability score of each mask.
        prompts: (K, 4) the prompt of each mask (a box, or a point as (x, y, x, y)).
        mask_labels: (K,) the label each mask has in :attr:`labels`, 0 where it was left out
            (mostly hidden under smaller objects).
        rows: The table, when it was made as the labels were written (a tiled run, whose
            labels may be an array on disk); computed from :attr:`labels` when None.
    """

    labels: np.ndarray
    masks: tuple[InstanceMask, ...]
    predicted_iou: np.ndarray
    stability_score: np.ndarray
    prompts: np.ndarray
    mask_labels: np.ndarray
    rows: list[dict[str, float | int]] | None = None

    @property
    def num_objects(self) -> int:
        """Number of objects in :attr:`labels`."""
        return int(np.count_nonzero(self.mask_labels))

    def table(self) -> list[dict[str, float | int]]:
        """One row per object of :attr:`labels`, by label.

        Columns: ``label``, ``area`` (visible pixels), ``x0, y0, x1, y1`` (box of the visible
        pixels, exclusive ends), ``centroid_x``, ``centroid_y``, ``predicted_iou``,
        ``stability_score``, ``mask_area`` (pixels of the whole mask).
        """
        from scipy import ndimage

        if self.rows is not None:
            return list(self.rows)
        count = int(self.labels.max()) if self.labels.size else 0
        if count == 0:
            return []
        index = np.arange(1, count + 1)
        areas = np.bincount(self.labels.ravel(), minlength=count + 1)[1:]
        centroids = ndimage.center_of_mass(np.ones_like(self.labels), self.labels, index)
        slices = ndimage.find_objects(self.labels, max_label=count)
        by_label = {int(v): i for i, v in enumerate(self.mask_labels) if v}
        rows = []
        for label in index:
            k = by_label[int(label)]
            rows_slice, cols_slice = slices[label - 1]
            cy, cx = centroids[label - 1]
            rows.append(
                {
                    "label": int(label),
                    "area": int(areas[label - 1]),
                    "x0": int(cols_slice.start),
                    "y0": int(rows_slice.start),
                    "x1": int(cols_slice.stop),
                    "y1": int(rows_slice.stop),
                    "centroid_x": round(float(cx), 2),
                    "centroid_y": round(float(cy), 2),
                    "predicted_iou": round(float(self.predicted_iou[k]), 4),
                    "stability_score": round(float(self.stability_score[k]), 4),
                    "mask_area": int(self.masks[k].area),
                }
            )
        return rows

    def write_table(self, path: str | Path) -> Path:
        """Write :meth:`table` as CSV (``.csv``), JSON (``.json``) or Parquet (``.parquet``,
        needs pyarrow), replacing ``path`` only once it is complete.

        Raises:
            ValueError: For another suffix (say which format to write).
            ImportError: For Parquet without pyarrow installed.
        """
        path = Path(path)
        check_table_suffix(path)
        rows = self.table()
        with atomic_path(path) as partial:
            if path.suffix.lower() == ".parquet":
                _write_parquet(partial, rows)
            elif path.suffix.lower() == ".csv":
                columns = list(rows[0]) if rows else ["label", "area"]
                with partial.open("w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=columns)
                    writer.writeheader()
                    writer.writerows(rows)
            else:
                partial.write_text(strict_json(rows, indent=1))
        return path


def check_table_suffix(path: Path) -> None:
    """Raise ValueError unless ``path`` names a table format :meth:`write_table` writes
    (Parquet only where pyarrow is installed)."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(
            f"Cannot write an object table as {path.name!r}: name it .csv or .json "
            "(or .parquet, with pyarrow installed)."
        )
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ValueError(
            f"Writing {path.name!r} needs pyarrow (pip install pyarrow); or name it .csv."
        )


def _write_parquet(path: Path, rows: list[dict[str, float | int]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(rows[0]) if rows else ["label", "area"]
    table = pa.table({name: [row[name] for row in rows] for name in columns})
    pq.write_table(table, path)


def to_segmentation(
    candidates: Proposals, shape_hw: tuple[int, int], min_visible_fraction: float = 0.5
) -> Segmentation:
    """Paint candidates into a label image, largest first, so small objects stay on top.

    A mask left with less than ``min_visible_fraction`` of its pixels visible is mostly
    made of smaller objects (for example a mask covering two touching cells found on their
    own too) and is left out. Labels are numbered 1.. by decreasing area.
    """
    count = len(candidates)
    areas = np.array([m.area for m in candidates.masks], dtype=np.int64)
    order = np.argsort(-areas, kind="stable")
    labels = paint_labels(shape_hw, candidates.masks, order)
    visible = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = visible >= min_visible_fraction * areas[order]
    keep &= visible > 0
    if not keep.all():
        labels = paint_labels(shape_hw, candidates.masks, order[keep])
    mask_labels = np.zeros(count, dtype=np.int32)
    mask_labels[order[keep]] = np.arange(1, int(keep.sum()) + 1)
    return Segmentation(
        labels,
        candidates.masks,
        candidates.iou,
        candidates.stability,
        candidates.prompts,
        mask_labels,
    )
