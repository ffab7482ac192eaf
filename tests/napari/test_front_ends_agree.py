"""The command line, napari and Jupyter refuse the prompts a model cannot answer with one
message (:func:`sam_viz.prompts.prompt_problem`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tifffile
from napari_test_helpers import wait_idle

from sam_viz.predictor import Predictor
from sam_viz.prompts import PromptSet, prompt_problem


@pytest.fixture
def box_only(tiny_model, tiny_spec):
    spec = dataclasses.replace(tiny_spec, prompt_kinds=frozenset({"box", "mask"}))
    return Predictor(tiny_model, spec, device="cpu")


def test_one_message_in_every_front_end(
    box_only, non_square_image, make_widget, qtbot, tmp_path, capsys, monkeypatch
):
    from sam_viz import cli
    from sam_viz.jupyter.widget import SamWidget

    expected = prompt_problem(box_only.spec, PromptSet().add_point(20, 50))
    assert expected is not None and "draw a box" in expected

    # Command line: refused before anything is embedded, exit status 2.
    monkeypatch.setattr(cli, "_load_predictor", lambda args: box_only)
    tifffile.imwrite(tmp_path / "image.tif", non_square_image)
    # (--model names a clicks model, whose registry entry passes the check made before
    # loading; the box-only stand-in that loads then refuses.)
    argv = ["segment", str(tmp_path / "image.tif"), "-o", str(tmp_path / "o"), "--point", "20,50"]
    code = cli.main([*argv, "--model", "lite_medsam_clicks"])
    assert code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    # napari: the status line says it and nothing is predicted.
    _viewer, widget = make_widget(non_square_image, box_only)
    widget.points_layer.add([50, 20])  # (row, col)
    wait_idle(qtbot, widget)
    assert expected in widget.status and not any(
        layer.data.any() for layer in widget.candidate_layers
    )

    # Jupyter: the status line says it (as a warning) and the prompts are unchanged.
    jupyter = SamWidget(non_square_image, box_only, background=False)
    with pytest.raises(ValueError, match="draw a box"):
        jupyter.add_point(20, 50)
    assert expected in jupyter.status.value.replace("&#x27;", "'")
    assert jupyter.prompts.empty and jupyter.candidates is None
    jupyter.close()


def test_several_boxes_mean_one_object_each_in_every_front_end(
    tiny_predictor, non_square_image, make_widget, qtbot, tmp_path, capsys, monkeypatch
):
    from sam_viz import cli

    boxes = [(5, 10, 30, 40), (35, 50, 60, 90)]
    monkeypatch.setattr(cli, "_load_predictor", lambda args: tiny_predictor)
    tifffile.imwrite(tmp_path / "image.tif", non_square_image)
    argv = ["segment", str(tmp_path / "image.tif"), "-o", str(tmp_path / "o"), "--diameter", "30"]
    for box in boxes:
        argv += ["--box", ",".join(map(str, box))]
    assert cli.main([*argv, "--point", "10,20"]) == 0
    err = capsys.readouterr().err
    assert "one object per box" in err and "unused" in err
    labels = tifffile.imread(tmp_path / "o" / "labels.tif")
    assert set(np.unique(labels)) <= {0, 1, 2}

    _viewer, widget = make_widget(non_square_image, tiny_predictor)
    for x0, y0, x1, y1 in boxes:
        widget.shapes_layer.add_rectangles(
            np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float) - 0.5
        )
    wait_idle(qtbot, widget, lambda: widget.session.candidates is not None)
    assert widget.session.candidates.n_objects == 2 and "one object per box" in widget.status
