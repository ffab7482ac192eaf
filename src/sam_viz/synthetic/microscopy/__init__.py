"""Synthetic microscopy fields that imitate real acquisitions, with exact instance labels.

The training scenes (:mod:`sam_viz.synthetic.scenes`) are small and stylised. These fields
are what a microscope hands a user: 512-4096 px, many 10-80 px objects, crowded regions
where objects touch, and the acquisition's defects. Five kinds:

* ``"nuclei"``: a DNA stain (Hoechst/DAPI, as in BBBC039 or the fluorescence part of
  DSB2018): dim 16-bit counts on a camera offset, nuclei of uneven brightness with chromatin
  texture and darker nucleoli, a few small bright mitotic figures, some out of focus,
  point-spread blur, scattered light, uneven illumination, shot and read noise.
* ``"cells_fluorescence"``: a cytoplasm stain: sheets of touching cells and isolated ones,
  brightest over the nucleus, dim at the borders between neighbours.
* ``"cells_phase"``: phase contrast: grey background, dark cells with bright halos, rounded
  phase-bright cells.
* ``"cells_brightfield"``: bright field: faint, slightly darker cells with darker rims,
  8- or 16-bit.
* ``"histology"``: H&E-like RGB: hematoxylin nuclei (labelled) in eosin stroma.

Objects are wobbly ellipses; where two overlap, each pixel goes to the object it lies deeper
in, so touching objects share a flattened border, as annotated ones do. Every label is one
4-connected region; objects left with too few of their pixels are dropped.

Modules: :mod:`.fields` (the :class:`Field` record, kinds, seed streams, tiling),
:mod:`.geometry` (outlines, placement, labels), :mod:`.noise` (random fields),
:mod:`.optics` (blur, illumination, camera), and one per kind family: :mod:`.nuclei`,
:mod:`.cells`, :mod:`.histology`.
"""

from __future__ import annotations

from sam_viz.synthetic.microscopy.cells import cell_field
from sam_viz.synthetic.microscopy.fields import (
    FIELD_KINDS,
    HELD_OUT_SEEDS,
    TUNING_SEEDS,
    Field,
    tiled,
)
from sam_viz.synthetic.microscopy.histology import histology_field
from sam_viz.synthetic.microscopy.nuclei import nuclei_field

__all__ = [
    "FIELD_KINDS",
    "HELD_OUT_SEEDS",
    "TUNING_SEEDS",
    "Field",
    "cell_field",
    "histology_field",
    "make_field",
    "nuclei_field",
    "tiled",
]


def make_field(kind: str, seed: int, shape: tuple[int, int] = (512, 512), **kwargs) -> Field:
    """A field of the named kind (one of :data:`FIELD_KINDS`); keyword arguments go to the
    kind's generator (``diameter``, and ``density`` for nuclei)."""
    if kind == "nuclei":
        return nuclei_field(seed, shape, **kwargs)
    if kind.startswith("cells_") and kind in FIELD_KINDS:
        return cell_field(seed, shape, modality=kind.removeprefix("cells_"), **kwargs)
    if kind == "histology":
        return histology_field(seed, shape, **kwargs)
    raise ValueError(f"kind must be one of {FIELD_KINDS}, got {kind!r}")
