"""Object scale with the real embedded model: a small object in a large image gets the
magnified answer through the Python API and the command line."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scale_fixtures import iou, small_object_in_a_large_field

from sam_viz.prompts import PromptSet
from sam_viz.windows.scaled import ScaledImage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_object():
    return small_object_in_a_large_field()


def test_python_api_answers_a_small_object_in_a_magnified_window(lite_predictor, small_object):
    scaled = ScaledImage(lite_predictor, small_object.image)  # the diameter is estimated
    assert 14 <= scaled.diameter <= 26 and not scaled.scale.whole_image
    prompts = PromptSet(boxes_xyxy=np.array([small_object.box_xyxy], float))
    _window, side = scaled.route(prompts)
    assert side < 1536 / 2  # magnified: a window, not the whole field
    answer = scaled.answer(prompts)
    zoomed = iou(answer.masks[answer.best], small_object.truth)
    # The same box on the whole field, fitted to the model's 256 pixels.
    embedding = lite_predictor.embed(small_object.image)
    flat = lite_predictor.predict_boxes(prompts.boxes_xyxy, embedding=embedding)
    unzoomed = iou(flat.masks[0], small_object.truth)
    assert zoomed >= 0.75 and zoomed >= unzoomed + 0.1, (zoomed, unzoomed)


def test_cli_takes_the_diameter(lite_predictor, small_object, tmp_path, monkeypatch, capsys):
    from sam_viz import cli

    monkeypatch.setattr(cli, "_load_predictor", lambda args: lite_predictor)
    tifffile.imwrite(tmp_path / "field.tif", small_object.image)
    box = ",".join(str(int(v)) for v in small_object.box_xyxy)
    argv = ["segment", str(tmp_path / "field.tif"), "--box", box, "-o", str(tmp_path / "o")]
    assert cli.main([*argv, "--diameter", "20"]) == 0
    assert "windows of" in capsys.readouterr().err  # the scale in use is reported
    import json

    summary = json.loads((tmp_path / "o" / "scores.json").read_text())
    best = tifffile.imread(tmp_path / "o" / f"{summary['objects'][0]['best']}.tif") > 0
    assert summary["diameter"] == 20
    assert iou(best, small_object.truth) >= 0.75
