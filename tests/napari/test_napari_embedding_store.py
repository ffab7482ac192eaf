"""The shared embedding store on disk: ``sam-viz embed --shared-cache`` fills it, and the
dock with "Keep embeddings on disk" ticked finds every window there (run under xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from napari_test_helpers import wait_idle

from sam_viz import cli
from sam_viz.files import shared_store
from sam_viz.synthetic.microscopy import make_field

pytestmark = pytest.mark.gui


def _fresh_predictor():
    """The embedded model with an empty in-memory cache, counting encoder runs."""
    from sam_viz.predictor import Predictor

    predictor = Predictor.from_pretrained(device="cpu", progress=False)
    runs: list[int] = []
    predictor.model.image_encoder.register_forward_hook(lambda *_: runs.append(1))
    return predictor, runs


def _embed_in_dock(make_widget, qtbot, image, keep_on_disk: bool) -> tuple[int, int]:
    """(encoder runs, windows) of "Embed all" in a new dock over a new predictor."""
    predictor, runs = _fresh_predictor()
    _viewer, widget = make_widget(image, predictor)
    widget.controls.disk_cache_check.setChecked(keep_on_disk)
    widget.embed_all_planes()
    wait_idle(qtbot, widget, timeout=120_000)
    scaled = widget._embedder_for(predictor).image(())
    assert scaled is not None and not scaled.missing_windows()
    return len(runs), len(scaled.grid)


def test_embedding_once_on_the_command_line_serves_the_dock(
    make_widget, qtbot, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SAM_VIZ_CACHE_DIR", str(tmp_path / "cache"))
    image = make_field("nuclei", 21, (256, 320)).image
    tifffile.imwrite(tmp_path / "field.tif", image)
    assert (
        cli.main(["embed", str(tmp_path / "field.tif"), "--shared-cache", "--device", "cpu"]) == 0
    )
    assert str(shared_store()) in capsys.readouterr().out

    store = zarr.open_group(str(shared_store()), mode="r")  # a zarr hierarchy
    (model,) = store.group_keys()
    (image_group,) = store[model].group_keys()
    windows = list(store[model][image_group].array_keys())
    first = store[model][image_group][windows[0]]
    assert first.dtype == np.float32 and first.attrs["model_key"] and first.attrs["digest"]

    runs, count = _embed_in_dock(make_widget, qtbot, image, keep_on_disk=True)
    assert count == len(windows) and runs == 0, "the dock encoded windows the store holds"
    runs, count = _embed_in_dock(make_widget, qtbot, image, keep_on_disk=False)
    assert runs == count  # unticked: memory only, every window encoded
