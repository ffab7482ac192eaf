"""Fault injection for the on-disk embedding cache: killed writers, concurrent writers and
readers, a read-only (shared, precomputed) cache directory."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_viz.files import partial_path
from sam_viz.predictor.cache import EmbeddingCache, ImageEmbedding

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="writers are forked processes killed with SIGKILL (POSIX)"
)

# A parent process that imports torch once, then forks one writer per command, so a test can
# start and kill many writers cheaply. Commands on stdin, one per line:
#   "write DIRECTORY COUNT KEYS SIDE": fork a writer putting COUNT embeddings (forever if -1)
#       of (1, 256, SIDE, SIDE) features under keys img0..img{KEYS-1}; it prints its pid
#       after its first put.
#   "reap PID": wait for that writer and print "exit PID CODE" (-9 when SIGKILLed).
WRITERS = r"""
import os, sys, traceback, warnings
import torch
from sam_viz.predictor.cache import EmbeddingCache, ImageEmbedding
from sam_viz.predictor.transforms import ImageFrame


def write(directory, count, keys, side):
    warnings.simplefilter("error")  # a writer that warns (cannot write) fails
    torch.manual_seed(os.getpid())
    cache = EmbeddingCache(max_items=1, directory=directory)
    features = torch.randn(1, 256, side, side)
    frame = ImageFrame((96, 64), 128)
    i = 0
    while count < 0 or i < count:
        features[0, 0, 0, 0] = i
        cache.put(ImageEmbedding(features, frame, f"img{i % keys}", "model"))
        if i == 0:
            print(os.getpid(), flush=True)
        i += 1


print("ready", flush=True)
for line in iter(sys.stdin.readline, ""):
    command, *args = line.split()
    if command == "reap":
        _, status = os.waitpid(int(args[0]), 0)
        print("exit", args[0], os.waitstatus_to_exitcode(status), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            write(args[0], int(args[1]), int(args[2]), int(args[3]))
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
"""


class Writers:
    """Drives the writers' parent process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITERS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the writers' parent exited with {self.process.wait()}"
        return line.strip()

    def _send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def start(self, directory: Path, count: int, keys: int, side: int) -> int:
        """Start a writer (see :data:`WRITERS`); its pid, once it has put one embedding."""
        self._send(f"write {directory} {count} {keys} {side}")
        return int(self._line())

    def reap(self, pid: int) -> int:
        """Wait for a writer to end; its exit code (-9 when SIGKILLed)."""
        self._send(f"reap {pid}")
        word, reaped, code = self._line().split()
        assert (word, int(reaped)) == ("exit", pid)
        return int(code)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def writers():
    host = Writers()
    yield host
    host.close()


def _final_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*.pt") if not p.name.startswith(".")]


def test_killed_writers_leave_whole_files_and_their_partials_are_removed(tmp_path, writers):
    rng = random.Random()
    shape = (1, 256, 64, 64)  # large enough that a kill often lands mid-write
    kills, partials = 0, []
    while kills < 5 or (not partials and kills < 40):
        pid = writers.start(tmp_path, -1, 3, shape[-1])
        time.sleep(rng.uniform(0, 0.03))
        os.kill(pid, signal.SIGKILL)
        assert writers.reap(pid) == -signal.SIGKILL
        kills += 1
        partials = list(tmp_path.rglob(".*.partial"))
        # Whatever the moment of the kill, a file at a final name is whole.
        for path in _final_files(tmp_path):
            embedding = ImageEmbedding.load(
                path, image_key=path.stem, model_key="model", expected_shape=shape
            )
            assert embedding.features.shape == shape
    assert partials, f"no kill of {kills} landed during a write"
    assert len(_final_files(tmp_path)) >= 1
    # A partial of a live writer (this process) must survive the clean-up.
    live = partial_path(tmp_path / "model" / "img0.pt")
    live.write_bytes(b"being written")
    EmbeddingCache(directory=tmp_path)
    assert list(tmp_path.rglob(".*.partial")) == [live]


def test_concurrent_writers_of_one_key_and_a_reader(tmp_path, writers):
    shape = (1, 256, 16, 16)
    pids = [writers.start(tmp_path, 150, 1, shape[-1]) for _ in range(2)]
    codes: list[int] = []
    reaper = threading.Thread(target=lambda: codes.extend(writers.reap(pid) for pid in pids))
    reaper.start()
    valid = misses = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refused (corrupt) file warns: fail on it
        while reaper.is_alive() or not valid:
            # A fresh cache reads the disk (and runs the partial clean-up beside live writers).
            cache = EmbeddingCache(directory=tmp_path)
            embedding = cache.get("model", "img0", expected_shape=shape)
            if embedding is None:
                misses += 1
            else:
                valid += 1
                assert embedding.features.shape == shape
    reaper.join()
    assert codes == [0, 0], "a writer failed (its traceback is in the captured stderr)"
    assert valid >= 1
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["img0.pt"]


# ------------------------------------------------------------------- read-only directory
def _can_create_file_in(directory: Path) -> bool:
    probe = directory / "probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture
def make_read_only():
    """Make a directory tree read-only: chmod for a user, ``chattr +i`` for root (who writes
    through permissions); undone at teardown. Skips only if neither stops a write."""
    undo = []

    def lock(directory: Path) -> None:
        folders = [directory, *(p for p in directory.rglob("*") if p.is_dir())]
        if getattr(os, "geteuid", lambda: -1)() != 0:
            for folder in folders:
                folder.chmod(0o555)
                undo.append(lambda folder=folder: folder.chmod(0o755))
        elif shutil.which("chattr"):
            done = subprocess.run(["chattr", "-R", "+i", str(directory)], capture_output=True)
            if done.returncode == 0:
                undo.append(lambda: subprocess.run(["chattr", "-R", "-i", str(directory)]))
        if any(_can_create_file_in(folder) for folder in folders):
            pytest.skip("cannot make a directory read-only here (root without chattr +i)")

    yield lock
    for step in reversed(undo):
        step()


def test_read_only_cache_is_read_and_misses_stay_in_memory(
    tmp_path, tiny_model, tiny_spec, make_read_only
):
    from sam_viz.predictor import Predictor

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (40, 50), dtype=np.uint8) for _ in range(3)]
    filler = Predictor(
        tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path)
    )
    precomputed = filler.set_image(images[0])
    make_read_only(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    calls = [0]
    tiny_model.image_encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        predictor = Predictor(
            tiny_model, tiny_spec, device="cpu", cache=EmbeddingCache(directory=tmp_path)
        )
        read = predictor.set_image(images[0])
        assert calls[0] == 0, "the precomputed embedding was not read"
        torch.testing.assert_close(read.features, precomputed.features, rtol=0, atol=0)
        computed = predictor.set_image(images[1])
        assert calls[0] == 1
        assert predictor.set_image(images[1]) is computed  # kept in memory
        predictor.set_image(images[2])
        assert calls[0] == 2
    messages = [str(w.message) for w in record]
    assert len(messages) == 1, messages
    assert f"cache directory {tmp_path} is not writable" in messages[0]
    assert "read from it but not saved" in messages[0]
    assert sorted(tmp_path.rglob("*")) == before
