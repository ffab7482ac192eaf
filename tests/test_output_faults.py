"""Fault injection on the command line's outputs: a run killed (SIGTERM or SIGKILL) at a
random moment leaves the earlier output whole or none at all, and the next run is correct."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

TESTS = Path(__file__).resolve().parent
EXPECTED = {"subpart.tif", "part.tif", "whole.tif", "scores.json", "overlay.png"}

# Segments again and again into one folder with the tiny model, printing a line per run.
DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import torch
from conftest import TINY_SPEC
from sam_viz import cli
from sam_viz.models.build import build_sam
from sam_viz.predictor import Predictor

torch.manual_seed(0)
predictor = Predictor(build_sam(TINY_SPEC), TINY_SPEC, device="cpu")
cli._load_predictor = lambda args: predictor
argv = ["segment", {image!r}, "-o", {out!r}, "--box", "900,900,1100,1100", "--overwrite"]
while True:
    print("run", flush=True)
    assert cli.main(argv) == 0
"""


def _check_whole(out: Path, shape: tuple[int, int]) -> None:
    """The output folder is absent, or holds every file of one complete run."""
    if not out.exists():
        return
    assert {p.name for p in out.iterdir()} == EXPECTED
    summary = json.loads((out / "scores.json").read_text())
    assert summary["objects"][0]["best"] in ("subpart", "part", "whole")
    for name in ("subpart", "part", "whole"):
        assert tifffile.imread(out / f"{name}.tif").shape == shape


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM, signal.SIGKILL])
def test_a_killed_run_leaves_the_output_whole_and_the_next_run_cleans_up(
    tmp_path, kill, tiny_model, tiny_spec, monkeypatch
):
    image = np.random.default_rng(0).integers(0, 255, (2000, 2000), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "field.tif", image)
    out = tmp_path / "out"
    script = DRIVER.format(tests=str(TESTS), image=str(tmp_path / "field.tif"), out=str(out))
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert process.stdout is not None
        runs = 0
        while runs < 2:  # one run done: the kill then lands anywhere in the next ones
            line = process.stdout.readline()
            assert line, "the driver stopped"
            runs += line == "run\n"
        time.sleep(np.random.default_rng().uniform(0.0, 1.5))
        process.send_signal(kill)
        process.wait(timeout=60)
    finally:
        process.kill()
    _check_whole(out, image.shape)
    if kill == signal.SIGTERM:
        assert _partials(tmp_path) == []  # cleaned on the way out
    # The next run removes what a killed run left, and answers as an unkilled run does.
    from sam_viz import cli
    from sam_viz.predictor import Predictor

    monkeypatch.setattr(
        cli, "_load_predictor", lambda args: Predictor(tiny_model, tiny_spec, device="cpu")
    )
    argv = ["segment", str(tmp_path / "field.tif"), "-o", str(out), "--overwrite"]
    assert cli.main([*argv, "--box", "900,900,1100,1100"]) == 0
    _check_whole(out, image.shape)
    assert _partials(tmp_path) == []
    first = tifffile.imread(out / "whole.tif")
    assert cli.main([*argv, "--box", "900,900,1100,1100"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "whole.tif"), first)
