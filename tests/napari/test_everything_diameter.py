"""The object diameter reaches segment everything from every front end."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari_test_helpers import wait_idle

from sam_viz.automatic.everything import EVERYTHING_FRACTION, MaskGenerator


@pytest.fixture
def seen(monkeypatch):
    """The diameter (and window fraction) of every scaled image everything segments at."""
    calls: list[tuple[float, float]] = []
    real = MaskGenerator.generate

    def generate(self, image, **kwargs):
        result = real(self, image, **kwargs)
        scaled = kwargs.get("scaled") or self.scaled(image)
        if scaled.fraction != EVERYTHING_FRACTION:
            scaled = scaled.with_scale(fraction=EVERYTHING_FRACTION)
        calls.append((self.settings.diameter or scaled.diameter, scaled.fraction))
        return result

    monkeypatch.setattr(MaskGenerator, "generate", generate)
    return calls


def test_cli_everything_takes_the_diameter(tiny_predictor, tmp_path, monkeypatch, seen):
    from sam_viz import cli

    monkeypatch.setattr(cli, "_load_predictor", lambda args: tiny_predictor)
    image = np.random.default_rng(0).integers(0, 255, (96, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", image)
    argv = ["everything", str(tmp_path / "a.tif"), "-o", str(tmp_path / "l.tif")]
    assert cli.main([*argv, "--diameter", "13"]) == 0
    assert seen == [(13.0, EVERYTHING_FRACTION)]


def test_napari_everything_takes_the_diameter(
    make_widget, qtbot, tiny_predictor, non_square_image, seen
):
    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    widget.set_diameter(17)
    assert widget.segment_everything()
    wait_idle(qtbot, widget)
    assert seen == [(17.0, EVERYTHING_FRACTION)]


def test_jupyter_everything_takes_the_diameter(tiny_predictor, non_square_image, seen):
    from sam_viz.jupyter.widget import SamWidget

    widget = SamWidget(non_square_image, tiny_predictor, background=False, diameter=15)
    widget.segment_everything(background=False).wait(60)
    widget.set_diameter(21)
    widget.segment_everything(background=False).wait(60)
    assert seen == [(15.0, EVERYTHING_FRACTION), (21.0, EVERYTHING_FRACTION)]
    widget.close()
