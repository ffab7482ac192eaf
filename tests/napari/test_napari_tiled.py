"""Segment everything on a large image from the dock: tile by tile, read lazily from a dask
layer (run under xvfb)."""

from __future__ import annotations

import pytest
from napari_test_helpers import wait_idle
from slide_fixtures import SIDE, SLIDE, TILE

import sam_viz.image
from sam_viz.automatic import tiled
from sam_viz.automatic.scoring import cut_objects

pytestmark = pytest.mark.gui


def test_a_large_lazy_image_is_segmented_tile_by_tile(
    make_widget, qtbot, lite_predictor, monkeypatch
):
    import dask.array as da

    monkeypatch.setattr(sam_viz.image, "TILED_ABOVE", 512 * 512)
    seen, reads = [], []
    real = tiled.segment_tiled

    def spy(generator, image, *args, **kwargs):
        reads.append(isinstance(image, da.Array))  # the layer's data, not read whole
        seen.append(real(generator, image, *args, **{**kwargs, "tile_side": TILE}))
        return seen[-1]

    monkeypatch.setattr(tiled, "segment_tiled", spy)
    viewer, widget = make_widget(SLIDE.image(), lite_predictor)
    assert widget.segment_everything()
    wait_idle(qtbot, widget, timeout=300_000)
    assert reads == [True]
    (found,) = seen
    layer = next(layer for layer in viewer.layers if layer.name.startswith("SAM everything"))
    assert (layer.data == found.labels).all()
    truth = SLIDE.labels((0, 0, SIDE, SIDE))
    borders = cut_objects(truth, layer.data, [TILE], [TILE])
    assert borders.split == 0 and borders.once >= 0.85 * borders.total
    assert f"Found {found.num_objects} objects" in widget.controls.status_label.text()
