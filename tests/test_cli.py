"""The sam-viz command line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from sam_viz.cli import main


@pytest.mark.slow
def test_segment_writes_label_images_scores_and_overlay(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            "sample:coins",
            "-o",
            str(out),
            "--device",
            "cpu",
            "--box",
            "10,15,68,80",
            "--box",
            "105,15,160,75",
        ]
    )
    assert code == 0, capsys.readouterr().err
    # Several boxes: one object per box, as in napari.
    labels = tifffile.imread(out / "labels.tif")
    assert labels.shape == (303, 384) and set(np.unique(labels)) == {0, 1, 2}
    assert (labels == 1).sum() > 500 and (labels == 2).sum() > 500
    summary = json.loads((out / "scores.json").read_text())
    assert [o["id"] for o in summary["objects"]] == [1, 2]
    assert "one object per box" in capsys.readouterr().err
    import imageio.v3 as iio

    picture = iio.imread(out / "overlay.png")
    assert picture.shape == (303, 384, 3)


def test_segment_reads_a_16bit_tiff(tmp_path, tiny_model, tiny_spec, monkeypatch):
    from sam_viz import cli
    from sam_viz.predictor import Predictor

    monkeypatch.setattr(
        cli, "_load_predictor", lambda args: Predictor(tiny_model, tiny_spec, device="cpu")
    )
    image = np.zeros((96, 64), np.uint16)
    image[30:70, 12:40] = 40000
    tifffile.imwrite(tmp_path / "cells.tif", image)
    code = main(
        [
            "segment",
            str(tmp_path / "cells.tif"),
            "-o",
            str(tmp_path / "o"),
            "--point",
            "20,50",
            "--point",
            "5,5,0",
            "--model",
            "lite_medsam_clicks",  # answers clicks (the tiny model stands in for it)
        ]
    )
    assert code == 0
    assert tifffile.imread(tmp_path / "o" / "whole.tif").shape == (96, 64)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["segment", "sample:coins", "-o", "x"], "at least one --box"),
        (["segment", "sample:nope", "-o", "x", "--box", "1,2,3,4"], "Unknown sample"),
        (["segment", "missing.png", "-o", "x", "--box", "1,2,3,4"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_a_message(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_bad_box_syntax_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "sample:coins", "-o", "x", "--box", "1,2,3"])
    assert "X0,Y0,X1,Y1" in capsys.readouterr().err


def test_models_lists_variants_and_where_weights_are(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for name in ("vit_b", "vit_l", "vit_h", "mobile_sam", "lite_medsam"):
        assert name in text
    assert "embedded: " in text and "lite_medsam.pth" in text


@pytest.mark.slow
def test_embed_writes_a_reusable_cache(tmp_path):
    code = main(["embed", "sample:coins", "--cache-dir", str(tmp_path), "--device", "cpu"])
    assert code == 0
    files = list(tmp_path.rglob("*.pt"))
    assert files and all("-w" in f.name for f in files)  # one file per window
    # A second run finds them all on disk (and embeds nothing again).
    assert main(["embed", "sample:coins", "--cache-dir", str(tmp_path), "--device", "cpu"]) == 0
    assert sorted(tmp_path.rglob("*.pt")) == sorted(files)


def test_import_sam_viz_loads_no_ui_toolkit():
    code = (
        "import sys, sam_viz, sam_viz.predictor, sam_viz.cli; "
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'magicgui', 'ipywidgets', 'ipycanvas') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
