"""Segment everything on dask.distributed: a local cluster of two worker processes on
loopback gives the labels of the in-process run, survives a killed worker, and the command
line's --scheduler/--workers are checked before any work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sam_viz import cli

FIELDS = 6
FIELD_SHAPE = (256, 256)


@pytest.fixture(scope="module")
def fields_folder(tmp_path_factory) -> Path:
    """Six generated nuclei fields saved as TIFFs."""
    from sam_viz.synthetic.microscopy import make_field

    folder = tmp_path_factory.mktemp("fields")
    for seed in range(FIELDS):
        tifffile.imwrite(folder / f"field{seed}.tif", make_field("nuclei", seed, FIELD_SHAPE).image)
    return folder


@pytest.fixture(scope="module")
def in_process_labels(fields_folder, tmp_path_factory) -> dict[str, np.ndarray]:
    """The labels of the default, in-process run of the command line, by file name."""
    out = tmp_path_factory.mktemp("in_process")
    assert cli.main(["everything", str(fields_folder), "-o", str(out), "--device", "cpu"]) == 0
    return {f"{p.stem}.tif": tifffile.imread(p) for p in sorted(out.glob("*.tif"))}


@pytest.fixture(scope="module")
def client():
    """A client of a local cluster of two worker processes (one thread each) on loopback."""
    pytest.importorskip("distributed")
    from sam_viz.cluster import connect

    with connect(workers=2) as client:
        yield client


def _labels_by_name(results) -> dict[str, np.ndarray]:
    by_name = {}
    for result in results:
        assert result.error is None, result.error
        by_name[Path(result.source).name] = result.segmentation.labels
    return by_name


def _assert_equal_labels(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, labels in expected.items():
        np.testing.assert_array_equal(got[name], labels, err_msg=name)


@pytest.mark.slow
def test_two_workers_give_the_labels_of_the_in_process_run(
    client, fields_folder, in_process_labels
):
    from sam_viz.cluster import EverythingOptions, ModelCache, segment_everything_on_cluster

    options = EverythingOptions(device="cpu")
    results = list(segment_everything_on_cluster([str(fields_folder)], client, options))
    _assert_equal_labels(_labels_by_name(results), in_process_labels)
    assert all(r.scheme == "seeds" for r in results)
    # Both workers took images, and each loaded the model once and kept it.
    loaded = client.run(lambda dask_worker: dask_worker.plugins[ModelCache.name].models_loaded)
    assert sorted(loaded.values()) == [1, 1]


@pytest.mark.slow
def test_a_killed_worker_s_image_is_segmented_by_another(client, fields_folder, in_process_labels):
    from sam_viz.cluster import EverythingOptions, segment_everything_on_cluster

    pids = client.run(os.getpid)
    results = segment_everything_on_cluster(
        [str(fields_folder)], client, EverythingOptions(device="cpu"), progress=False
    )
    collected = [next(results)]
    # Both workers are busy with the next images: kill one mid-task.
    killed = next(iter(pids.values()))
    os.kill(killed, signal.SIGKILL)
    collected.extend(results)
    _assert_equal_labels(_labels_by_name(collected), in_process_labels)
    assert killed not in client.run(os.getpid).values()  # the nanny started a new worker


@pytest.mark.slow
def test_cli_workers_writes_what_the_in_process_run_writes(
    fields_folder, in_process_labels, tmp_path, capsys
):
    pytest.importorskip("distributed")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("field0.tif", "field1.tif"):
        (images / name).write_bytes((fields_folder / name).read_bytes())
    out = tmp_path / "out"
    argv = ["everything", str(images), "-o", str(out), "--device", "cpu", "--workers", "2"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    for name in ("field0", "field1"):
        np.testing.assert_array_equal(
            tifffile.imread(out / f"{name}.tif"), in_process_labels[f"{name}.tif"]
        )
        assert (out / f"{name}.csv").read_text().startswith("label,area,")
    assert "on dask.distributed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "exclude each other"),
        (["--workers", "0"], "--workers must be 1 or more, got 0"),
        (["--scheduler", " "], "--scheduler needs an address"),
    ],
)
def test_cluster_options_are_checked_before_any_work(options, message, tmp_path, capsys):
    missing = tmp_path / "missing.tif"  # never read: the options are refused first
    assert cli.main(["everything", str(missing), "-o", str(tmp_path / "o.tif"), *options]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "o.tif").exists()


def test_cluster_options_without_distributed_say_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((32, 32), np.uint8))
    argv = ["everything", str(image), "-o", str(tmp_path / "o.tif"), "--workers", "2"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'sam-viz[cluster]'" in err


def test_the_in_process_default_imports_no_distributed(tmp_path):
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((64, 64), np.uint8))
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import TINY_SPEC
        from sam_viz import cli
        from sam_viz.models.build import build_sam
        from sam_viz.predictor import Predictor

        model = build_sam(TINY_SPEC)
        cli._load_predictor = lambda args: Predictor(model, TINY_SPEC, device="cpu")
        argv = ["everything", {str(image)!r}, "-o", {str(tmp_path / "o.tif")!r},
                "--prompts", "points", "--diameter", "30"]
        assert cli.main(argv) == 0
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_a_large_image_runs_one_task_per_tile(tmp_path, capsys):
    pytest.importorskip("distributed")
    from slide_fixtures import SIDE, SLIDE, TILE

    from sam_viz.automatic.scoring import cut_objects

    tifffile.imwrite(tmp_path / "slide.tif", np.asarray(SLIDE.image()), tile=(256, 256))
    alone, spread = tmp_path / "alone.tif", tmp_path / "spread.tif"
    argv = ["everything", str(tmp_path / "slide.tif"), "--tile", str(TILE), "--device", "cpu"]
    assert cli.main([*argv, "-o", str(alone)]) == 0
    assert cli.main([*argv, "-o", str(spread), "--workers", "2"]) == 0, capsys.readouterr().err
    assert f"tiles of {TILE} px on dask.distributed" in capsys.readouterr().out
    expected, labels = tifffile.imread(alone), tifffile.imread(spread)
    # Workers run torch on one thread: a sum in another order may move a pixel.
    assert np.mean(labels == expected) > 0.995
    assert abs(int(labels.max()) - int(expected.max())) <= 2
    truth = SLIDE.labels((0, 0, SIDE, SIDE))
    borders = cut_objects(truth, labels, [TILE], [TILE])
    assert borders.split == 0 and borders.once >= 0.85 * borders.total
