"""The notebooks run top to bottom in a fresh kernel (this interpreter's), headless."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_prompt_encoder.ipynb", "03_microscopy.ipynb"]


def run_notebook(path: Path, workdir: Path, timeout: int = 300):
    """Execute a copy of ``path`` in ``workdir`` with a kernel on ``sys.executable``."""
    import json

    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    copy = workdir / path.name
    shutil.copy(path, copy)
    notebook = nbformat.read(copy, as_version=4)
    # A kernel on this very interpreter, whatever kernelspecs the user has installed.
    spec_dir = workdir / "kernels" / "sam_viz_test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "sam_viz tests",
                "language": "python",
            }
        )
    )
    specs = KernelSpecManager(kernel_dirs=[str(workdir / "kernels")], ensure_native_kernel=False)
    manager = KernelManager(kernel_name="sam_viz_test", kernel_spec_manager=specs)
    client = NotebookClient(
        notebook,
        km=manager,
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    return notebook


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    notebook = run_notebook(NOTEBOOKS / name, tmp_path)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "every code cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    outputs = [o for c in code for o in c.outputs]
    widgets = [
        o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets, "the notebook shows a widget"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    pages = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    # Numbers are printed as numbers, not as NumPy scalar reprs ("np.float32(0.23)").
    assert "np.float" not in text and "np.int" not in text
    if name == NAMES[0]:
        assert "object 1:" in text and "objects: [1 2]" in text
    elif name == NAMES[1]:
        assert "conv 1x1 stride 1" in text and "mask token 3" in text
        # Token 0 is explained, and the captions say which tokens are offered.
        assert "Mask token 0 is SAM's single-mask output" in text
        assert "single-mask output: offered as" in pages and pages.count("not offered") == 1
        # The bump's radius depends on the direction; lengths are computed, not quoted.
        assert text.count("similarity falls to 1/2 after") == 4
        assert re.search(r"positional encoding +length +\d+\.\d\d", text)
        assert "positional (top, length" in pages
        # A point alone: the box-only model and the click-trained one it is offered.
        assert re.search(r"^lite_medsam +point alone", text, re.MULTILINE)
        assert re.search(r"^lite_medsam_clicks +point alone", text, re.MULTILINE)
    else:
        assert "nuclei_labels.tif" in text and "objects:" in text
        for caption in ("full 16-bit range:", "min-max:", "percentile stretch (auto"):
            assert caption in pages
        # "One more nucleus" boxes one that is not committed yet.
        assert re.search(r"not committed yet; .* committed pixels on it: 0\n", text)
