"""The dock's layout and the layers it makes: a narrow dock, point markers that do not hide
small objects, candidate layers made before the first mask is waited for (issue 19)."""

from __future__ import annotations

import html

import numpy as np
import pytest
from napari_test_helpers import click, drag_box, wait_idle
from qtpy.QtCore import Qt

from sam_viz.models.registry import MODELS
from sam_viz.prompts import prompt_guide

pytestmark = pytest.mark.gui


def test_the_model_list_has_short_names_and_the_dock_stays_narrow(
    make_widget, qtbot, non_square_image
):
    viewer, widget = make_widget(non_square_image)  # every registered model is listed
    combo = widget.controls.model_combo
    names = [combo.itemText(i) for i in range(combo.count() - 1)]  # the last: custom file
    assert names == list(MODELS)
    for index, spec in enumerate(MODELS.values()):
        assert spec.title in combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
    assert MODELS[combo.currentData()].title in combo.toolTip()
    # Long names elsewhere (an image, a checkpoint file) do not widen the dock either.
    viewer.add_image(non_square_image, name="a very long image name " * 4)
    qtbot.wait(50)
    assert widget.sizeHint().width() <= 400 and widget.minimumSizeHint().width() <= 400


def test_guide_shows_what_the_model_does_with_clicks(make_widget, tiny_predictor, non_square_image):
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    text = widget.controls.guide_label.text()
    assert text.startswith(html.escape(prompt_guide(tiny_predictor.spec)))
    assert "refine" not in text


def test_point_markers_are_sized_from_the_image(make_widget, qtbot, tiny_predictor):
    nuclei = np.zeros((1024, 1024), np.uint16)  # ~20 px nuclei: a marker must not hide one
    viewer, widget = make_widget(nuclei, tiny_predictor, layer_kwargs={"scale": (0.5, 0.5)})
    points = widget.points_layer
    widget.start_points()
    click(points, (100, 100))
    assert 2 <= points.size[0] <= 8  # image pixels (12 before: most of a nucleus)
    assert points.size[0] == pytest.approx(points.current_size)
    viewer.add_image(np.zeros((96, 64), np.uint8), name="small")
    combo = widget.controls.image_combo
    combo.setCurrentIndex(combo.findText("small"))
    wait_idle(qtbot, widget)
    assert points.current_size == pytest.approx(2.0)  # never below 2 px


def test_candidate_layers_are_made_before_the_first_mask_is_awaited(
    make_widget, qtbot, tiny_predictor, non_square_image
):
    viewer, widget = make_widget(non_square_image, tiny_predictor)
    assert [layer.name for layer in widget.candidate_layers] == [
        "SAM subpart",
        "SAM part",
        "SAM whole",
    ]
    assert viewer.layers.selection.active is widget.shapes_layer  # still ready for a box
    inserted = []
    viewer.layers.events.inserted.connect(lambda event: inserted.append(event.value.name))
    drag_box(qtbot, widget.shapes_layer, (30, 12), (70, 40))
    wait_idle(qtbot, widget, lambda: widget.session.candidates is not None)
    assert inserted == []  # no layer was added while the user waited for the mask
    # Another image re-places the same layers instead of making new ones.
    layers = widget.candidate_layers
    viewer.add_image(np.zeros((50, 70), np.uint8), name="other")
    combo = widget.controls.image_combo
    combo.setCurrentIndex(combo.findText("other"))
    wait_idle(qtbot, widget)
    assert widget.candidate_layers == layers
    assert all(layer.data.shape == (50, 70) for layer in layers)
