"""The optional encoder backends: the exported LiteMedSAM encoder run by ONNX Runtime or
OpenVINO must give PyTorch's embeddings and masks, be cached, and fail safe."""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sam_viz.image import to_rgb01
from sam_viz.predictor import backends
from sam_viz.predictor.backends import BackendWarning, load_encoder_backend
from sam_viz.predictor.cache import ImageEmbedding
from sam_viz.predictor.transforms import ImageFrame

RUNTIMES = [r for r in backends.RUNTIMES if importlib.util.find_spec(r) is not None]
# (x0, y0, x1, y1) in the window's pixels: coins and a box across two of them.
BOXES = [(20, 100, 85, 170), (150, 20, 225, 95), (95, 160, 175, 240), (10, 10, 120, 120)]


def _needs_export() -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    if not RUNTIMES:
        pytest.skip("neither onnxruntime nor openvino is installed")


def _load(predictor, directory, backend):
    encoder = predictor.model.image_encoder
    return load_encoder_backend(
        encoder,
        predictor.model_key,
        predictor.spec.image_size,
        backend=backend,
        directory=directory,
    )


@pytest.fixture(scope="module")
def exported(lite_predictor, tmp_path_factory):
    """A folder holding LiteMedSAM's exported encoder, checked by the first runtime."""
    _needs_export()
    directory = tmp_path_factory.mktemp("exported")
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendWarning)
        engine = _load(lite_predictor, directory, RUNTIMES[0])
    assert engine is not None
    return directory


@pytest.fixture(scope="module")
def window(lite_predictor, coins):
    """A real 256 x 256 window of the coins, as pixels, frame and normalised model input."""
    rgb = to_rgb01(coins)[40:296, 60:316]
    frame = ImageFrame(rgb.shape[:2], lite_predictor.spec.image_size)
    with torch.inference_mode():
        x = lite_predictor.preprocess(rgb, frame)
    return rgb, frame, x


def _copy(directory, tmp_path):
    target = tmp_path / "exported"
    shutil.copytree(directory, target)
    return target


def _graph(directory):
    (graph,) = directory.glob("*.onnx")
    return graph


def _record(directory):
    return json.loads(_graph(directory).with_suffix(".json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("runtime", backends.RUNTIMES)
def test_backend_matches_pytorch_embeddings_and_masks(lite_predictor, exported, window, runtime):
    pytest.importorskip(runtime)
    engine = _load(lite_predictor, exported, runtime)
    assert engine is not None and engine.runtime == runtime
    _, frame, x = window
    with torch.inference_mode():
        expected = lite_predictor.model.image_encoder(x)
    got = engine(x)
    assert got.shape == expected.shape == (1, *lite_predictor.embedding_shape[1:])
    assert got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= backends.TOLERANCE
    # The graph has a batch axis: a batch of two windows gives each one's embedding.
    pair = torch.cat([x, x.flip(-1)])
    with torch.inference_mode():
        expected_pair = lite_predictor.model.image_encoder(pair)
    assert (engine(pair) - expected_pair).abs().max().item() <= backends.TOLERANCE

    # The same masks: embeddings a few 1e-6 apart may flip a pixel whose logit is ~0, so a
    # mask may differ in a handful of boundary pixels (at most 0.1% of its area), no more.
    key, model_key = "coins-window", lite_predictor.model_key
    eager = ImageEmbedding(expected.float(), frame, key, model_key)
    fast = ImageEmbedding(got, frame, key, model_key)
    for box in BOXES:
        a = lite_predictor.predict(box_xyxy=box, embedding=eager)
        b = lite_predictor.predict(box_xyxy=box, embedding=fast)
        assert a.masks.shape == b.masks.shape
        for mask_a, mask_b in zip(a.masks, b.masks, strict=True):
            assert mask_a.any()
            assert np.count_nonzero(mask_a != mask_b) <= max(2, mask_a.sum() // 1000)
        np.testing.assert_allclose(a.iou_scores, b.iou_scores, atol=1e-4)


@pytest.mark.slow
def test_cached_graph_is_reused_without_exporting(lite_predictor, exported, monkeypatch):
    graph = _graph(exported)
    before = graph.stat().st_mtime_ns

    def no_export(*_args, **_kwargs):
        raise AssertionError("the cached graph should have been reused")

    monkeypatch.setattr(backends, "export_onnx", no_export)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendWarning)
        engine = _load(lite_predictor, exported, RUNTIMES[0])
    assert engine is not None
    assert graph.stat().st_mtime_ns == before


@pytest.mark.slow
def test_corrupt_graph_is_exported_again(lite_predictor, exported, window, tmp_path):
    directory = _copy(exported, tmp_path)
    graph = _graph(directory)
    data = bytearray(graph.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\xff" * 4096
    graph.write_bytes(bytes(data))
    with pytest.warns(BackendWarning, match="damaged"):
        engine = _load(lite_predictor, directory, RUNTIMES[0])
    assert engine is not None
    assert _record(directory)["graph_sha256"] == backends._graph_digest(graph)
    x = window[2]
    with torch.inference_mode():
        expected = lite_predictor.model.image_encoder(x)
    assert (engine(x) - expected).abs().max().item() <= backends.TOLERANCE


@pytest.mark.slow
def test_graph_without_record_is_exported_again(lite_predictor, exported, tmp_path):
    directory = _copy(exported, tmp_path)
    _graph(directory).with_suffix(".json").unlink()
    _graph(directory).write_bytes(b"not an onnx file")
    with pytest.warns(BackendWarning, match="damaged"):
        engine = _load(lite_predictor, directory, RUNTIMES[0])
    assert engine is not None


@pytest.mark.slow
def test_a_runtime_that_differs_is_refused(lite_predictor, exported, tmp_path, monkeypatch):
    directory = _copy(exported, tmp_path)
    runtime = RUNTIMES[-1]
    monkeypatch.setattr(backends, "TOLERANCE", 0.0)  # no runtime matches float32 bit for bit
    record = _record(directory)
    record["runtimes"].pop(backends.runtime_id(runtime), None)
    _graph(directory).with_suffix(".json").write_text(json.dumps(record))
    with pytest.warns(BackendWarning, match="differs"):
        assert _load(lite_predictor, directory, runtime) is None
    assert _record(directory)["runtimes"][backends.runtime_id(runtime)]["ok"] is False
    # Remembered: refused again without running the check.
    monkeypatch.setattr(backends, "evaluate", None)
    with pytest.warns(BackendWarning, match="refused"):
        assert _load(lite_predictor, directory, runtime) is None


@pytest.mark.slow
def test_auto_uses_a_runtime_only_where_measured_faster(
    lite_predictor, exported, tmp_path, monkeypatch
):
    directory = _copy(exported, tmp_path)
    monkeypatch.setattr(backends, "RUNTIMES", (RUNTIMES[0],))
    monkeypatch.setattr(backends, "TIMED_ROUNDS", 1)
    monkeypatch.setattr(backends, "SPEEDUP_NEEDED", 0.0)  # nothing is that fast
    assert _load(lite_predictor, directory, "auto") is None
    entry = _record(directory)["runtimes"][backends.runtime_id(RUNTIMES[0])]
    assert entry["faster"] is False
    assert entry["seconds"] > 0 and entry["torch_seconds"] > 0
    # The timing is remembered: no new one, even where it would now pass.
    monkeypatch.setattr(backends, "SPEEDUP_NEEDED", 1e9)
    assert _load(lite_predictor, directory, "auto") is None
    # A fresh timing that is fast enough selects the runtime.
    record = _record(directory)
    record["runtimes"] = {}
    _graph(directory).with_suffix(".json").write_text(json.dumps(record))
    engine = _load(lite_predictor, directory, "auto")
    assert engine is not None and engine.runtime == RUNTIMES[0]


def test_torch_backend_disables_export(monkeypatch, tmp_path):
    monkeypatch.setenv(backends.BACKEND_ENV, "torch")
    directory = tmp_path / "exported"
    assert load_encoder_backend(nn.Identity(), "key", 64, directory=directory) is None
    assert not directory.exists()
    # The argument wins over the environment.
    monkeypatch.setenv(backends.BACKEND_ENV, "onnxruntime")
    assert load_encoder_backend(nn.Identity(), "key", 64, backend="torch") is None


def test_unknown_backend_values(monkeypatch):
    monkeypatch.setenv(backends.BACKEND_ENV, "tensorrt")
    with pytest.warns(BackendWarning, match="tensorrt"):
        assert backends.resolve_choice() == "torch"
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.resolve_choice("tensorrt")
    monkeypatch.delenv(backends.BACKEND_ENV)
    assert backends.resolve_choice() == backends.DEFAULT_BACKEND
    assert backends.resolve_choice(" OpenVINO ") == "openvino"


def test_failed_export_is_remembered_and_pytorch_stays(tiny_model, tmp_path, monkeypatch):
    _needs_export()
    calls = []

    def failing_export(*_args, **_kwargs):
        calls.append(1)
        raise RuntimeError("unsupported operator\nmore detail")

    monkeypatch.setattr(backends, "export_onnx", failing_export)
    encoder = tiny_model.image_encoder.eval()
    with pytest.warns(BackendWarning, match="unsupported operator"):
        assert (
            load_encoder_backend(encoder, "tiny", 128, backend="auto", directory=tmp_path) is None
        )
    with pytest.warns(BackendWarning, match="failed before"):
        assert (
            load_encoder_backend(encoder, "tiny", 128, backend=RUNTIMES[0], directory=tmp_path)
            is None
        )
    assert calls == [1]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", backends.RUNTIMES)
def test_vit_encoder_exports_with_a_batch_axis(tiny_model, tmp_path, runtime):
    """SAM's ViT (here a tiny random one): windowed and global blocks, relative positions."""
    _needs_export()
    pytest.importorskip(runtime)
    encoder = tiny_model.image_encoder.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendWarning)
        engine = load_encoder_backend(encoder, "tiny", 128, backend=runtime, directory=tmp_path)
    assert engine is not None
    x = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = encoder(x)
    assert (engine(x) - expected).abs().max().item() <= backends.TOLERANCE


@pytest.mark.slow
def test_the_predictor_runs_a_named_backend_with_the_same_masks(
    lite_predictor, exported, coins, monkeypatch
) -> None:
    from sam_viz.predictor import EmbeddingCache, Predictor

    monkeypatch.setattr(backends, "default_directory", lambda: exported)
    runtime = RUNTIMES[0]
    fast = Predictor(
        lite_predictor.model,
        lite_predictor.spec,
        device="cpu",
        cache=EmbeddingCache(4),
        model_key=lite_predictor.model_key,
        backend=runtime,
    )
    plain = Predictor(
        lite_predictor.model,
        lite_predictor.spec,
        device="cpu",
        cache=EmbeddingCache(4),
        model_key=lite_predictor.model_key,
    )
    assert fast.backend == "torch"  # chosen on first use
    fast.set_image(coins)
    plain.set_image(coins)
    assert fast.backend == runtime and plain.backend == "torch"
    assert isinstance(fast.image_encoder(), backends.ExportedEncoder)
    for box in BOXES:
        a = fast.predict(box_xyxy=np.array(box, float))
        b = plain.predict(box_xyxy=np.array(box, float))
        differ = np.count_nonzero(a.masks != b.masks, axis=(1, 2))
        assert (differ <= np.maximum(2, 0.001 * b.masks.sum(axis=(1, 2)))).all()


@pytest.mark.slow
def test_the_cli_passes_its_backend_choice_on(lite_predictor, exported, monkeypatch) -> None:
    from sam_viz import cli
    from sam_viz.predictor import Predictor

    chosen: list[str | None] = []
    original = Predictor.from_pretrained.__func__

    def spy(cls, *args, backend=None, **kwargs):
        chosen.append(backend)
        return original(cls, *args, backend=backend, **kwargs)

    monkeypatch.setattr(Predictor, "from_pretrained", classmethod(spy))
    args = cli.build_parser().parse_args(["embed", "sample:coins", "--cache-dir", "x"])
    assert args.backend is None  # $SAM_VIZ_BACKEND, else auto
    args = cli.build_parser().parse_args(
        ["embed", "sample:coins", "--cache-dir", "x", "--backend", "torch"]
    )
    cli._load_predictor(args)
    assert chosen == ["torch"]


@pytest.fixture
def backend_from_environment(exported, tmp_path, monkeypatch) -> str:
    """$SAM_VIZ_BACKEND names the first runtime; the export made above is in the cache."""
    shutil.copytree(exported, tmp_path / backends.SUBDIR)
    monkeypatch.setenv("SAM_VIZ_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(backends.BACKEND_ENV, RUNTIMES[0])
    return RUNTIMES[0]


@pytest.mark.slow
def test_napari_loads_its_model_with_the_environment_backend(
    backend_from_environment, coins
) -> None:
    from sam_viz._napari._models import default_predictor_factory

    predictor = default_predictor_factory("lite_medsam", "cpu")
    predictor.set_image(coins)
    assert predictor.backend == backend_from_environment


@pytest.mark.slow
def test_the_jupyter_widget_loads_its_model_with_the_environment_backend(
    backend_from_environment, coins
) -> None:
    from sam_viz.jupyter import SamWidget

    widget = SamWidget(coins)
    widget.wait(timeout=300)
    assert widget._predictor is not None
    encoder = widget._predictor.image_encoder()  # what the widget's embeddings run through
    assert isinstance(encoder, backends.ExportedEncoder)
    assert widget._predictor.backend == backend_from_environment
