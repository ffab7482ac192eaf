"""A small lazily drawn slide shared by the tiled-run tests: two islands of nuclei
straddling the tile borders at x = 512 and y = 512 (tiles of TILE)."""

from __future__ import annotations

from sam_viz.synthetic.slide import Island, Slide

SIDE = 1024
TILE = 512
DIAMETER = 18.0
SLIDE = Slide(
    (SIDE, SIDE), (Island(330, 300, 384, 11), Island(160, 700, 320, 12)), DIAMETER, chunk=256
)
