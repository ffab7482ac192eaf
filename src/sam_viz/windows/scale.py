"""The object scale: from a typical object diameter to the windows an image is embedded as.

The model sees a window of the image resized to its input (256 pixels for LiteMedSAM, 1024
for SAM). What decides the quality of a mask is the object's size in model-input pixels, so
windows are sized from the typical object ``diameter`` in image pixels (the ``diameter``
cellpose users know): an object of that diameter fills :data:`OBJECT_FRACTION` of a window's
side. The rule and its measurements are in the README and ``benchmarks/eval_scale.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sam_viz.models.registry import ModelSpec

# An object of the typical diameter spans this fraction of a window's side (chosen from
# measured box IoU against object size in model-input pixels; README, "Object scale").
OBJECT_FRACTION = 0.2
# Objects whose box spans between these fractions of a window are answered in it well.
GOOD_FRACTIONS = (0.15, 0.3)
# Windows are never magnified more than this (upsampling adds no detail past it).
MAX_ZOOM = 4.0
# Context beyond a window's inner region, in typical diameters: objects up to twice the
# typical diameter lie whole in the window that owns their centre.
HALO_DIAMETERS = 1.0
# Window sides snap to this ladder (ratio between steps), so prompts of similar size share
# windows and their cached embeddings.
SIDE_LADDER = 2**0.25


@dataclass(frozen=True)
class Scale:
    """How an image is cut into windows for one typical object diameter.

    Attributes:
        diameter: Typical object diameter in image pixels.
        side: Window side in image pixels.
        halo: Context around each window's inner region, image pixels.
        zoom: Model-input pixels per image pixel inside a window.
        whole_image: Whether one window holds the whole image (SAM's usual way).
    """

    diameter: float
    side: int
    halo: int
    zoom: float
    whole_image: bool

    def __str__(self) -> str:
        if self.whole_image:
            return f"diameter {self.diameter:.0f} px: the whole image, zoom {self.zoom:.2f}"
        return f"diameter {self.diameter:.0f} px: windows of {self.side} px, zoom {self.zoom:.2f}"


def ladder_side(side: float) -> int:
    """The smallest side of the ladder (powers of :data:`SIDE_LADDER` times 8) >= ``side``."""
    steps = math.ceil(math.log(max(side, 8.0) / 8.0, SIDE_LADDER) - 1e-9)
    return math.ceil(8.0 * SIDE_LADDER**steps - 1e-6)


def window_side_for(spec: ModelSpec, object_side: float, fraction: float = OBJECT_FRACTION) -> int:
    """Window side (image pixels) that shows an object of ``object_side`` pixels at
    ``fraction`` of the model input, never magnified beyond :data:`MAX_ZOOM`."""
    side = max(object_side / fraction, spec.image_size / MAX_ZOOM)
    return ladder_side(side)


def scale_for(
    spec: ModelSpec,
    image_hw: tuple[int, int],
    diameter: float,
    fraction: float = OBJECT_FRACTION,
) -> Scale:
    """The windows an image of shape (H, W) is embedded as, for objects of ``diameter``.

    Windows of :func:`window_side_for` show such objects at ``fraction`` of the model
    input; when that takes the whole image, it is one window.

    Raises:
        ValueError: For a diameter or fraction that is not a positive number.
    """
    if not (isinstance(diameter, (int, float)) and math.isfinite(diameter) and diameter > 0):
        raise ValueError(f"diameter must be a positive number of pixels, got {diameter!r}.")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    longest = max(image_hw)
    side = window_side_for(spec, diameter, fraction)
    if side >= longest:
        return Scale(float(diameter), longest, 0, spec.image_size / longest, True)
    halo = min(math.ceil(HALO_DIAMETERS * diameter), side // 4)
    return Scale(float(diameter), side, halo, spec.image_size / side, False)
