"""Prompting on a multiscale image layer (as napari-ome-zarr opens OME-Zarr images): the
plugin works at full resolution, and committed objects save back as OME-Zarr labels."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from napari_test_helpers import rectangle, wait_idle

pytestmark = pytest.mark.gui


def _pyramid(image: np.ndarray) -> list[da.Array]:
    """Two lazy levels, full resolution first, as napari-ome-zarr gives them."""
    return [da.from_array(image, chunks=64), da.from_array(image[::2, ::2], chunks=64)]


def test_a_box_on_a_multiscale_layer_is_answered_on_the_full_resolution_grid(
    make_widget, qtbot, tiny_predictor, non_square_image
):
    _viewer, widget = make_widget(_pyramid(non_square_image), tiny_predictor)
    assert widget.controls.image_combo.currentText() == "image"
    widget.shapes_layer.add_rectangles(rectangle(30, 12, 70, 40))
    wait_idle(qtbot, widget, lambda: widget.session.candidates is not None)
    assert widget.embedded_planes == {()}
    prepared = widget._embedding._embedder.image(())
    assert prepared.shape == non_square_image.shape[:2]  # level 0, not the coarse level
    assert all(layer.data.shape == non_square_image.shape[:2] for layer in widget.candidate_layers)


@pytest.mark.slow
def test_a_coin_on_a_multiscale_layer_commits_and_saves_as_ome_zarr_labels(
    make_widget, qtbot, lite_predictor, coins, coin_box, tmp_path
):
    import zarr
    from ome_zarr.writer import write_image

    from sam_viz.ome import write_labels

    _viewer, widget = make_widget(_pyramid(coins), lite_predictor)
    corners, reference = coin_box
    widget.shapes_layer.add_rectangles(corners)
    wait_idle(qtbot, widget, lambda: any(layer.data.any() for layer in widget.candidate_layers))
    chosen = widget.candidate_layers[widget.chosen].data > 0
    iou = (chosen & reference).sum() / (chosen | reference).sum()
    assert chosen.shape == coins.shape and iou >= 0.9
    assert widget.commit() == [1]

    # Saved back beside the image, as a napari user does from the console.
    path = tmp_path / "coins.zarr"
    write_image(coins, zarr.open_group(str(path), mode="w"), scale_factors=(2,), axes="yx")
    write_labels(path, widget.objects_layer.data, "napari")
    saved = zarr.open_group(str(path), mode="r")["labels/napari/s0"][:]
    np.testing.assert_array_equal(saved, widget.objects_layer.data)
