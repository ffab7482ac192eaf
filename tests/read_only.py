"""A read-only folder for tests, also when they run as root (where chmod does not stop writes)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """Make ``directory`` read-only for the block: chmod, or as root the immutable flag."""
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_root and shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: no way to make a folder read-only")
    if as_root:
        done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i failed here: {done.stderr.decode().strip()}")
    else:
        directory.chmod(0o555)
    try:
        try:
            (directory / ".probe").touch()
        except OSError:
            pass
        else:
            (directory / ".probe").unlink()
            pytest.skip("this file system lets writes through a read-only folder")
        yield directory
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(directory)], check=False)
        else:
            directory.chmod(0o755)
