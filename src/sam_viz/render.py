"""Masks to pictures, as plain NumPy: label images, RGBA overlays, composites.

Used by the command line (overlay.png), the Jupyter widget (RGBA canvases) and the napari
plugin (label images), so every front end draws the same thing.
"""

from __future__ import annotations

import numpy as np

# Colour per candidate, by name (RGB 0..255).
CANDIDATE_COLORS: dict[str, tuple[int, int, int]] = {
    "subpart": (255, 159, 28),
    "part": (46, 196, 182),
    "whole": (231, 29, 54),
    "mask": (231, 29, 54),
}


# A qualitative palette for object labels (label k gets entry (k - 1) mod its length).
_PALETTE = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
        (220, 190, 255),
        (170, 110, 40),
        (255, 250, 200),
        (128, 0, 0),
        (170, 255, 195),
        (128, 128, 0),
        (255, 215, 180),
        (0, 0, 128),
        (128, 128, 128),
    ],
    dtype=np.uint8,
)


def candidate_color(name: str) -> tuple[int, int, int]:
    """Overlay colour (RGB) of a candidate by name (SAM's single mask: ``"mask"``)."""
    return CANDIDATE_COLORS.get(name, CANDIDATE_COLORS["mask"])


def masks_to_labels(masks: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Stack of (M, H, W) bool masks to one label image; later masks win on overlap.

    Args:
        masks: (M, H, W) boolean masks.
        labels: (M,) label of each mask; 1..M by default.

    Returns:
        (H, W) label image, uint16 if the labels fit, else uint32; 0 is background.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (M, H, W), got {masks.shape}.")
    ids = np.arange(1, len(masks) + 1) if labels is None else np.asarray(labels)
    dtype = np.uint16 if ids.size == 0 or ids.max() < 2**16 else np.uint32
    out = np.zeros(masks.shape[1:], dtype=dtype)
    for mask, label in zip(masks, ids, strict=True):
        out[mask] = label
    return out


def labels_to_rgba(labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A label image (H, W) to RGBA uint8 with the shared palette; 0 stays transparent."""
    labels = np.asarray(labels)
    rgba = np.zeros((*labels.shape, 4), dtype=np.uint8)
    fg = labels > 0
    rgba[fg, :3] = _PALETTE[(labels[fg].astype(np.int64) - 1) % len(_PALETTE)]
    rgba[fg, 3] = round(255 * alpha)
    return rgba


def to_display_rgb(rgb01: np.ndarray) -> np.ndarray:
    """Float RGB in 0..1 (H, W, 3) to uint8 for display."""
    return (np.clip(rgb01, 0, 1) * 255 + 0.5).astype(np.uint8)


def composite(rgb: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """Alpha-blend an RGBA uint8 overlay onto an RGB uint8 image of the same size."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    blended = rgb.astype(np.float32) * (1 - alpha) + rgba[..., :3].astype(np.float32) * alpha
    return (blended + 0.5).astype(np.uint8)


def overlay(
    rgb: np.ndarray,
    labels: np.ndarray,
    *,
    alpha: float = 0.45,
    boxes_xyxy: np.ndarray | None = None,
    points_xy: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
) -> np.ndarray:
    """Image with coloured objects, their outlines, and the prompts drawn on top.

    Args:
        rgb: (H, W, 3) uint8 image.
        labels: (H, W) label image.
        alpha: Fill opacity.
        boxes_xyxy: Optional (M, 4) boxes to outline (white).
        points_xy: Optional (N, 2) points; positive green, negative red.
        point_labels: (N,) 1/0 labels of the points.
    """
    from skimage.draw import disk
    from skimage.segmentation import find_boundaries

    out = composite(rgb, labels_to_rgba(labels, alpha))
    edges = find_boundaries(labels, mode="inner")
    out[edges] = labels_to_rgba(labels, 1.0)[edges][:, :3]
    height, width = labels.shape
    boxes = np.zeros((0, 4)) if boxes_xyxy is None else np.asarray(boxes_xyxy, dtype=float)
    for x0, y0, x1, y1 in np.round(boxes).astype(int):
        x0, x1 = np.clip([x0, x1 - 1], 0, width - 1)
        y0, y1 = np.clip([y0, y1 - 1], 0, height - 1)
        white = (255, 255, 255)
        out[y0, x0 : x1 + 1] = out[y1, x0 : x1 + 1] = white
        out[y0 : y1 + 1, x0] = out[y0 : y1 + 1, x1] = white
    if points_xy is not None:
        kinds = np.ones(len(points_xy), int) if point_labels is None else np.asarray(point_labels)
        radius = max(2, round(min(height, width) / 150))
        for (x, y), kind in zip(np.asarray(points_xy), kinds, strict=True):
            rr, cc = disk((y, x), radius, shape=(height, width))
            out[rr, cc] = (0, 220, 0) if kind == 1 else (230, 0, 0)
    return out
