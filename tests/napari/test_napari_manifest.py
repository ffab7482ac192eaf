"""The npe2 manifest: valid, where npe2 looks for it, shipped in the wheel, sample data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_MANIFEST = ROOT / "src" / "sam_viz" / "napari.yaml"
TOP_MANIFEST = ROOT / "napari.yaml"


def test_top_level_manifest_is_the_package_manifest():
    assert TOP_MANIFEST.read_bytes() == PACKAGE_MANIFEST.read_bytes()


def test_manifest_is_valid_and_its_python_names_import():
    manifest = PluginManifest.from_file(PACKAGE_MANIFEST)
    manifest.validate_imports()  # raises if a python_name does not resolve
    assert manifest.name == "sam-viz"
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert widgets == {"Segment Anything"}
    samples = {s.key for s in manifest.contributions.sample_data}
    assert samples == {"cell", "coins", "immunohistochemistry", "nuclei"}


def test_menu_entry_is_in_the_segment_menu():
    from napari._app_model.constants import MenuId

    manifest = PluginManifest.from_file(PACKAGE_MANIFEST)
    menus = manifest.contributions.menus
    assert MenuId.LAYERS_SEGMENT in MenuId.contributables()
    commands = [item.command for item in menus[str(MenuId.LAYERS_SEGMENT)]]
    assert commands == [manifest.contributions.widgets[0].command]


def test_npe2_finds_the_installed_plugin():
    """The entry point in pyproject.toml resolves to the package manifest."""
    manifest = PluginManifest.from_distribution("sam-viz")
    assert manifest.name == "sam-viz"
    assert manifest == PluginManifest.from_file(PACKAGE_MANIFEST)


def test_npe2_cli_validates_it():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2), "validate", str(TOP_MANIFEST)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


@pytest.mark.parametrize(
    ("key", "shape"),
    [("cell", (660, 550)), ("coins", (303, 384)), ("immunohistochemistry", (512, 512, 3))],
)
def test_sample_data(key, shape):
    from sam_viz._napari import _sample_data

    [(data, meta, kind)] = getattr(_sample_data, key)()
    assert data.shape == shape and data.dtype == np.uint8
    assert kind == "image" and meta["name"] == key


def test_generated_nuclei_sample_is_a_dim_16_bit_field():
    from sam_viz._napari import _sample_data
    from sam_viz.io import read_image

    [(data, meta, kind)] = _sample_data.nuclei()
    assert data.shape == (1024, 1024) and data.dtype == np.uint16 and kind == "image"
    assert "generated" in meta["name"]
    assert np.array_equal(data, read_image("sample:nuclei"))  # the CLI reads the same field


@pytest.mark.slow
def test_wheel_ships_the_manifest(tmp_path):
    """Build a real wheel from a copy of the sources: the manifest must be inside."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--skip-dependency-check",
            "--outdir",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "sam_viz/napari.yaml" in names
        assert archive.read("sam_viz/napari.yaml") == PACKAGE_MANIFEST.read_bytes()
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "[napari.manifest]" in text and "sam-viz = sam_viz:napari.yaml" in text
