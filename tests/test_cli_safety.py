"""The command line never half-writes an output, never replaces one silently, and says what
is wrong before the work (issue: never a wrong mask, never a half-written file)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from read_only import read_only

from sam_viz import cli
from sam_viz.cli import main


@pytest.fixture
def tiny_cli(monkeypatch, tiny_model, tiny_spec):
    """The CLI with the tiny random model instead of a checkpoint (counts the loads)."""
    from sam_viz.predictor import Predictor

    loads = []

    def load(args):
        from sam_viz.predictor.cache import EmbeddingCache

        loads.append(args.model)
        cache_dir = getattr(args, "cache_dir", None)
        cache = EmbeddingCache(directory=cache_dir) if cache_dir else None
        return Predictor(tiny_model, tiny_spec, device="cpu", cache=cache)

    monkeypatch.setattr(cli, "_load_predictor", load)
    return loads


@pytest.fixture
def image_file(tmp_path):
    image = np.zeros((120, 160), np.uint8)
    image[40:80, 50:100] = 200
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, image)
    return path


def _segment(image_file, out, *extra):
    return main(["segment", str(image_file), "-o", str(out), "--box", "45,35,105,85", *extra])


def test_an_existing_output_is_replaced_only_with_overwrite_and_then_whole(
    tiny_cli, image_file, tmp_path, capsys
):
    out = tmp_path / "out"
    assert _segment(image_file, out) == 0
    (out / "mine.txt").write_text("the user's notes")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _segment(image_file, out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _segment(image_file, out, "--overwrite") == 0
    assert "replaced the earlier" in capsys.readouterr().out
    assert not (out / "mine.txt").exists()  # all new: nothing of the old folder is mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.tif", "out"]


def test_a_run_failing_while_writing_leaves_the_old_output_whole(
    tiny_cli, image_file, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    assert _segment(image_file, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(path, *args):
        path.write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(cli, "_write_overlay", disk_full)
    assert _segment(image_file, out, "--box", "0,0,30,30", "--overwrite") == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.tif", "out"]


def test_everything_writes_the_format_its_suffix_names(tiny_cli, image_file, tmp_path):
    tif, png = tmp_path / "labels.tif", tmp_path / "labels.png"
    args = ["--prompts", "boxes", "--diameter", "40"]
    assert main(["everything", str(image_file), "-o", str(tif), *args]) == 0
    assert main(["everything", str(image_file), "-o", str(png), "--overwrite", *args]) == 0
    assert iio.imread(png, extension=".png").dtype == np.uint16
    np.testing.assert_array_equal(iio.imread(png, extension=".png"), tifffile.imread(tif))
    table = tmp_path / "objects.json"
    assert main(["everything", str(image_file), "-o", str(tif), "--table", str(table),
                 "--overwrite", *args]) == 0  # fmt: skip
    assert isinstance(json.loads(table.read_text()), list)


@pytest.mark.parametrize(
    ("output", "table", "words"),
    [
        ("x.jpg", None, "name it .tif"),
        ("x.tif", "t.xlsx", "name it .csv or .json"),
        ("cells.tif", None, "is the input image"),
    ],
)
def test_everything_refuses_outputs_before_loading_the_model(
    tiny_cli, image_file, tmp_path, capsys, output, table, words
):
    argv = ["everything", str(image_file), "-o", str(tmp_path / output), "--overwrite"]
    if table is not None:
        argv += ["--table", str(tmp_path / table)]
    original = image_file.read_bytes()
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert tiny_cli == []  # refused before any work
    assert image_file.read_bytes() == original


def test_an_existing_label_image_is_not_replaced_without_overwrite(
    tiny_cli, image_file, tmp_path, capsys
):
    out = tmp_path / "labels.tif"
    out.write_bytes(b"the user's earlier result")
    assert main(["everything", str(image_file), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and tiny_cli == []
    assert out.read_bytes() == b"the user's earlier result"


def test_boxes_past_the_image_edge_may_start_with_a_minus(tiny_cli, image_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(image_file), "-o", str(out), "--box", "-10,-10,68,80"]) == 0
    summary = json.loads((out / "scores.json").read_text())
    assert summary["objects"][0]["box_xyxy"] == [0.0, 0.0, 68.0, 80.0]  # clipped to the image
    # A point must lie inside: argparse reads it, and the prompt check says so.
    assert main(["segment", str(image_file), "-o", str(tmp_path / "p"), "--point", "-5,20,0",
                 "--box", "0,0,50,50"]) == 2  # fmt: skip
    assert "Point 0 at (x=-5, y=20) lies outside" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "sample:coins", "-o", "x", "--box", "1,2,3,4", "--tile-size", "0"],
        ["train-clicks", "--threads", "0"],
        ["train-clicks", "--steps", "-3"],
    ],
)
def test_options_that_would_be_ignored_or_meaningless_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err


def test_embed_reports_a_bad_image_and_goes_on(tiny_cli, image_file, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    cache = tmp_path / "cache"
    assert main(["embed", str(bad), str(image_file), "--cache-dir", str(cache)]) == 1
    err = capsys.readouterr().err
    assert "notes.png" in err and "1 of 2 images were not embedded" in err
    assert list(cache.rglob("*.pt"))  # the good image after the bad one was embedded


def test_prompts_are_checked_before_the_model_loads(tiny_cli, image_file, tmp_path, capsys):
    out = str(tmp_path / "o")
    # The default model answers boxes only; a point alone is refused before loading it.
    assert main(["segment", str(image_file), "-o", out, "--point", "20,20"]) == 2
    assert "boxes only" in capsys.readouterr().err
    assert main(["segment", str(image_file), "-o", out, "--box", "500,500,600,600"]) == 2
    assert "outside" in capsys.readouterr().err
    assert tiny_cli == []


def test_an_unwritable_output_is_an_error_before_the_work(tiny_cli, image_file, tmp_path, capsys):
    folder = tmp_path / "shared"
    folder.mkdir()
    with read_only(folder):
        assert _segment(image_file, folder / "out") == 2
        assert "Cannot create files in the output's folder" in capsys.readouterr().err
    assert tiny_cli == []
    (tmp_path / "file").write_text("x")
    assert _segment(image_file, tmp_path / "file" / "out") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "file" in err
    (tmp_path / "dir.tif").mkdir()
    assert main(["everything", str(image_file), "-o", str(tmp_path / "dir.tif"),
                 "--overwrite"]) == 2  # fmt: skip
    assert "Is a directory" in capsys.readouterr().err
    assert tiny_cli == []


def test_scores_json_is_strict_json_when_a_score_is_not_finite(
    tiny_cli, tiny_model, image_file, tmp_path
):
    import torch

    with torch.no_grad():
        for parameter in tiny_model.mask_decoder.iou_prediction_head.parameters():
            parameter.fill_(float("nan"))
    out = tmp_path / "out"
    assert _segment(image_file, out) == 0

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    summary = json.loads((out / "scores.json").read_text(), parse_constant=refuse)
    assert summary["objects"][0]["candidates"]["whole"]["iou_score"] is None


def test_writing_a_large_answer_takes_at_most_twice_the_image(tmp_path):
    import tracemalloc

    from sam_viz.predictor.candidates import Candidates
    from sam_viz.prompts import CANDIDATE_NAMES, PromptSet

    side = 6000
    image = np.full((side, side), 90, np.uint8)
    labels = np.zeros((3, side, side), np.uint8)
    for index, size in enumerate((40, 60, 80)):
        labels[index, 3000 : 3000 + size, 3000 : 3000 + size] = 1
    answer = Candidates(
        labels=labels,
        iou_scores=np.array([0.8, 0.9, 0.7], np.float32),
        stability_scores=np.ones(3, np.float32),
        names=CANDIDATE_NAMES,
        n_objects=1,
    )
    prompts = PromptSet(boxes_xyxy=np.array([[2990.0, 2990, 3090, 3090]]))
    tracemalloc.start()
    try:
        cli._write_answer(tmp_path, answer, prompts)
        cli._write_overlay(tmp_path / "overlay.png", image, labels[answer.best], prompts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 2 * image.nbytes, f"{peak / 2**20:.0f} MiB for a {image.nbytes >> 20} MiB image"
    assert tifffile.imread(tmp_path / "whole.tif").sum() == 80 * 80
    assert max(iio.imread(tmp_path / "overlay.png").shape[:2]) <= cli.OVERLAY_MAX_SIDE


def test_a_read_only_cache_is_read_with_one_warning_and_embed_refuses_it(
    tiny_cli, image_file, tmp_path, capsys
):
    cache = tmp_path / "shared_cache"
    cache.mkdir()
    with read_only(cache):
        with pytest.warns(UserWarning, match="not writable") as caught:
            assert _segment(image_file, tmp_path / "out", "--cache-dir", str(cache)) == 0
        assert len([w for w in caught if "not writable" in str(w.message)]) == 1
        assert (tmp_path / "out" / "whole.tif").is_file()
        loads = len(tiny_cli)
        assert main(["embed", str(image_file), "--cache-dir", str(cache)]) == 2
        assert "Cannot write embeddings into the cache folder" in capsys.readouterr().err
        assert len(tiny_cli) == loads  # refused before loading the model
