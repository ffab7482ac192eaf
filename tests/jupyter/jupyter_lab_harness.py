"""Run JupyterLab on 127.0.0.1 and drive it with headless Chromium through playwright.

Shared by the browser test and ``benchmarks/bench_jupyter.py``. Everything JupyterLab
writes (config, data, runtime, workspaces) goes to a temporary directory; the widget
front-end extensions still come from this interpreter's ``share/jupyter/labextensions``.
Every wait is bounded, and the server is always shut down (its kernels with it).
"""

from __future__ import annotations

import base64
import io
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
CANVAS = "canvas.sam-viz-canvas"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Lab:
    """A running JupyterLab server."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def request(self, method: str, path: str, timeout: float = 10) -> int:
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextmanager
def jupyter_lab(root: Path, state: Path, *, start_timeout: float = 90) -> Iterator[Lab]:
    """Start JupyterLab serving ``root``, with its own config/data/runtime under ``state``.

    Raises:
        RuntimeError: If the server does not answer within ``start_timeout`` seconds.
    """
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for name in ("config", "data", "runtime", "ipython"):
        (state / name).mkdir(parents=True, exist_ok=True)
    env.update(
        JUPYTER_CONFIG_DIR=str(state / "config"),
        JUPYTER_DATA_DIR=str(state / "data"),
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
        IPYTHONDIR=str(state / "ipython"),
        JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.terminals_enabled=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers often run as root
        command.append("--allow-root")
    log = state / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    lab = Lab(f"http://127.0.0.1:{port}", token, root, process, log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early:\n{lab.log_tail()}")
            try:
                if lab.request("GET", "/api/status", timeout=2) == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"JupyterLab did not start in {start_timeout} s:\n{lab.log_tail()}"
                )
            time.sleep(0.3)
        yield lab
    finally:
        _shutdown(lab)


def _shutdown(lab: Lab) -> None:
    """Ask the server to stop (it shuts its kernels down), then make sure it has."""
    if lab.process.poll() is None:
        with suppress(Exception):
            lab.request("POST", "/api/shutdown", timeout=5)
        try:
            lab.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.process.pid, signal.SIGTERM)
            try:
                lab.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(lab.process.pid, signal.SIGKILL)
                lab.process.wait(timeout=10)


@contextmanager
def chromium_page(*, width: int = 1400, height: int = 1100, timeout_ms: int = 30_000):
    """A headless Chromium page (the system's Chromium; nothing is downloaded)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=timeout_ms
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()


def open_and_run_notebook(page, lab: Lab, name: str, *, timeout_s: float = 150) -> None:
    """Open ``name`` in JupyterLab, run all cells, wait until every code cell has run."""
    page.goto(lab.notebook_url(name), wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # JupyterLab may ask which kernel to use (a fresh workspace does, even after starting
    # the notebook's own): accept its choice, the notebook's kernelspec.
    deadline, quiet = time.monotonic() + 90, 0
    while quiet < 3:
        quiet = 0 if _accept_dialog(page) or not _kernel_idle(page) else quiet + 1
        if time.monotonic() > deadline:
            raise TimeoutError("the notebook's kernel did not become idle in 90 s")
        time.sleep(0.5)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
    prompt = ".jp-CodeCell .jp-InputArea-prompt"
    started, stalled = time.monotonic(), 0
    while True:
        _accept_dialog(page)
        prompts = [p.strip() for p in page.locator(prompt).all_inner_texts()]
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            break
        # Run All stops at a failing cell: the cells after it are left unrun.
        ran = any(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
        stalled = stalled + 1 if ran and not any("*" in p for p in prompts) else 0
        if stalled >= 4:
            outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
            raise AssertionError("a notebook cell failed:\n" + "\n".join(outputs)[-3000:])
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"cells still running after {timeout_s} s: {prompts}")
        time.sleep(0.5)
    page.wait_for_selector(CANVAS, timeout=30_000)


def _accept_dialog(page) -> bool:
    """Click the accept button of an open JupyterLab dialog; True if there was one."""
    button = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    if not button.count():
        return False
    button.first.click()
    return True


def _kernel_idle(page) -> bool:
    return bool(
        page.evaluate(
            "() => { const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
            " return !!s && s.getAttribute('data-status') === 'idle'; }"
        )
    )


def run_new_cell(page, code: str) -> None:
    """Add a code cell at the end of the open notebook and run it."""
    page.locator(".jp-Notebook .jp-Cell").last.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type(code)
    page.keyboard.press("Shift+Enter")


def run_cell_output(page, code: str, *, timeout_s: float = 60) -> str:
    """Run one line of ``code`` in a new cell at the end of the open notebook and return
    what it printed (the text of its output)."""
    marker = secrets.token_hex(4)
    run_new_cell(page, f"print('<{marker}>'); {code}; print('</{marker}>')")
    pattern = re.compile(rf"<{marker}>\n?(.*?)</{marker}>", re.S)
    deadline = time.monotonic() + timeout_s
    while True:
        for text in page.locator(".jp-OutputArea-output").all_inner_texts():
            found = pattern.search(text)
            if found:
                return found.group(1).strip()
            if f"<{marker}>" in text and "Error" in text:
                raise AssertionError(f"the cell failed:\n{text[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no output from {code!r} within {timeout_s} s")
        time.sleep(0.2)


def write_notebook(path: Path, cells: list[str]) -> None:
    """Write a notebook of these code cells for the ``python3`` kernel (no outputs)."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(code) for code in cells]
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nbformat.write(notebook, path)


def element_box(page, selector: str, index: int = 0) -> dict[str, float]:
    """The page rectangle (left, top, right, bottom, width, height, CSS px) of an element."""
    return (
        page.locator(selector)
        .nth(index)
        .evaluate(
            "e => { const r = e.getBoundingClientRect(); return {left: r.left, top: r.top,"
            " right: r.right, bottom: r.bottom, width: r.width, height: r.height}; }"
        )
    )


def save_notebook(page) -> None:
    """Save the open notebook (so a reload shows its widget outputs again)."""
    page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=15_000)


def canvas_pixels(page, selector: str = CANVAS, index: int = 0) -> np.ndarray:
    """The (H, W, 4) RGBA pixels of a canvas on the page, read losslessly (PNG)."""
    from PIL import Image

    url = page.locator(selector).nth(index).evaluate("c => c.toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def canvas_origin(page, selector: str = CANVAS) -> tuple[float, float, float, float]:
    """(left, top, x scale, y scale): page position of canvas pixel (0, 0) and CSS pixels
    per canvas pixel."""
    page.locator(selector).first.scroll_into_view_if_needed()
    box = page.eval_on_selector(
        selector,
        "c => { const r = c.getBoundingClientRect();"
        " return [r.left, r.top, r.width / c.width, r.height / c.height]; }",
    )
    return tuple(box)  # type: ignore[return-value]


def drag(
    page,
    start_xy: tuple[float, float],
    end_xy: tuple[float, float],
    *,
    steps: int = 8,
    selector: str = CANVAS,
    release: bool = True,
) -> None:
    """Drag with the real mouse between two canvas-pixel positions."""
    left, top, sx, sy = canvas_origin(page, selector)
    page.mouse.move(float(left + start_xy[0] * sx), float(top + start_xy[1] * sy))
    page.mouse.down()
    page.mouse.move(float(left + end_xy[0] * sx), float(top + end_xy[1] * sy), steps=steps)
    if release:
        page.mouse.up()


def wait_for_change(
    page,
    before: np.ndarray,
    region: tuple[slice, slice] | np.ndarray,
    *,
    timeout_s: float = 30,
    selector: str = CANVAS,
    min_fraction: float = 0.0,
) -> np.ndarray:
    """Poll the canvas until pixels in ``region`` differ from ``before``.

    Args:
        region: (rows, cols) slices or a boolean mask of the canvas.
        min_fraction: Wait until more than this fraction of the region's pixels changed
            (0: any pixel), e.g. to tell a filled mask from a rubber band crossing it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        now = canvas_pixels(page, selector)
        changed = np.any(now[..., :3] != before[..., :3], axis=-1)[region]
        if changed.size and changed.mean() > min_fraction and changed.any():
            return now
        if time.monotonic() > deadline:
            raise TimeoutError(f"the canvas did not change within {timeout_s} s")
        time.sleep(0.1)
