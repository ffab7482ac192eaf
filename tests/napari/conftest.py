"""Fixtures for the napari plugin's tests: a docked widget on a real viewer."""

from __future__ import annotations

import pytest
from napari_test_helpers import rectangle


@pytest.fixture
def make_widget(make_napari_viewer, qtbot):
    """``make_widget(image=None, predictor=None, **kwargs) -> (viewer, widget)``: a viewer with
    the image (if any) and the dock widget built around ``predictor`` (``show=True`` shows
    the window, for screenshots), once the widget has settled (its candidate layers are
    made just after it opens)."""
    from sam_viz._napari._widget import SamWidget

    def make(image=None, predictor=None, layer_kwargs=None, show=False, **kwargs):
        viewer = make_napari_viewer(show=show)
        if image is not None:
            viewer.add_image(image, name="image", **(layer_kwargs or {}))
        widget = SamWidget(viewer, predictor=predictor, **kwargs)
        viewer.window.add_dock_widget(widget, name="Segment Anything")
        qtbot.waitUntil(lambda: not widget.busy, timeout=10_000)
        return viewer, widget

    return make


@pytest.fixture
def coin_box(coins_reference):
    """(rectangle corners, reference mask) for one well-separated coin."""
    from skimage.measure import regionprops

    region = regionprops(coins_reference)[5]
    r0, c0, r1, c1 = region.bbox
    return rectangle(r0 - 3, c0 - 3, r1 + 2, c1 + 2), coins_reference == region.label
