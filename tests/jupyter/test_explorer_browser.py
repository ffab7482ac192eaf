"""The prompt-encoder explorer in a real JupyterLab + Chromium at a normal width.

Issue 19, bug 10: the dense-path row (six panels when the best mask is fed back) was one
HBox, so at 1280 px every panel got its own scrollbar, the mask prompt shrank to ~80 px, the
last panel was cut off and the "feed the best mask back (...)" label was truncated. This
checks the laid-out page: no panel scrolls or is clipped, pictures keep their size, and no
label is cut.

Set ``SAM_VIZ_SCREENSHOTS`` to a folder to keep the screenshot (``explorer_1280.png``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("playwright")
import jupyter_lab_harness as harness

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(harness.CHROMIUM).exists(), reason="needs /usr/bin/chromium"),
]

NOTEBOOK = "explorer.ipynb"
SIDE = 192  # the explorer's default map size, in CSS pixels
CODE = f"""\
import skimage.data
from sam_viz.jupyter.explorer import PromptEncoderExplorer

explorer = PromptEncoderExplorer(
    skimage.data.coins(), point=(160, 195), box=(136, 172, 185, 220), feed_mask=True,
    side={SIDE},
)
explorer
"""

# For every panel of the dense row and every label: how it is laid out on the page.
MEASURE = """
() => {
  const root = document.querySelector('.sam-viz-explorer');
  const row = root.querySelector('.sam-viz-dense-row');
  const area = root.closest('.jp-OutputArea-output') || document.body;
  const limit = area.getBoundingClientRect();
  const cut = el => el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1;
  const panels = [...row.children].map(panel => {
    const r = panel.getBoundingClientRect();
    const img = panel.querySelector('img');
    return {
      caption: panel.innerText.trim().slice(0, 40),
      overflows: cut(panel),
      left: r.left, right: r.right, top: r.top, bottom: r.bottom,
      img_width: img ? img.getBoundingClientRect().width : null,
      img_natural: img ? img.naturalWidth : null,
    };
  });
  const labels = [...root.querySelectorAll('.widget-checkbox, .widget-label, .widget-html')]
    .flatMap(w => [w, ...w.querySelectorAll('span, label, div')])
    .filter(el => el.offsetParent !== null && el.innerText && el.innerText.trim())
    .filter(el => cut(el) && getComputedStyle(el).overflowX !== 'visible')
    .map(el => el.innerText.trim().slice(0, 60));
  // Every other panel of the view (tokens, decoder, ...) neither scrolls nor is cut off.
  const others = [...root.querySelectorAll('.sam-viz-panel')]
    .filter(p => cut(p) || p.getBoundingClientRect().right > limit.right + 1)
    .map(p => p.innerText.trim().slice(0, 40));
  return {
    panels, labels, others,
    row_overflows: cut(row),
    limit: {left: limit.left, right: limit.right},
    feed_label: [...root.querySelectorAll('.widget-checkbox span')]
      .filter(el => el.textContent.startsWith('feed the best mask'))
      .map(el => ({text: el.textContent, cut: cut(el), right: el.getBoundingClientRect().right})),
  };
}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    import nbformat

    root = tmp_path_factory.mktemp("lab_root")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(CODE)]
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nbformat.write(notebook, root / NOTEBOOK)
    with harness.jupyter_lab(root, tmp_path_factory.mktemp("lab_state")) as server:
        yield server


@pytest.mark.timeout(240)
def test_dense_row_fits_at_1280(lab, tmp_path, monkeypatch):
    # The harness waits for a canvas once the cells ran: here, the explorer's.
    monkeypatch.setattr(harness, "CANVAS", "canvas.sam-viz-explorer-canvas")
    with harness.chromium_page(width=1280, height=800) as page:
        harness.open_and_run_notebook(page, lab, NOTEBOOK)
        page.wait_for_selector(".sam-viz-dense-row img", timeout=60_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.sam-viz-dense-row img')]"
            ".every(i => i.complete && i.naturalWidth > 0)",
            timeout=30_000,
        )
        page.wait_for_timeout(500)  # let the layout settle
        layout = page.evaluate(MEASURE)
        # The screenshot: the same width, tall enough for the notebook to draw the whole view
        # (JupyterLab renders only what its scrolled panel shows), without the news toast.
        no_news = page.get_by_role("button", name="No", exact=True)
        if no_news.count():
            no_news.first.click()
        page.set_viewport_size({"width": 1280, "height": 2600})
        page.wait_for_timeout(500)
        shot = tmp_path / "explorer_1280.png"
        page.locator(".sam-viz-explorer").screenshot(path=str(shot))
        if os.environ.get("SAM_VIZ_SCREENSHOTS"):
            shutil.copy(shot, Path(os.environ["SAM_VIZ_SCREENSHOTS"]) / shot.name)

    panels = layout["panels"]
    assert len(panels) == 6, [p["caption"] for p in panels]  # input, conv, GELU, conv, GELU, 1x1
    assert not layout["row_overflows"], "the dense row scrolls sideways"
    for panel in panels:
        name = panel["caption"]
        assert not panel["overflows"], f"panel {name!r} has its own scrollbar"
        assert panel["left"] >= layout["limit"]["left"] - 1, f"panel {name!r} is cut on the left"
        assert panel["right"] <= layout["limit"]["right"] + 1, f"panel {name!r} is cut off"
        # Every picture is shown at its own size (the mask prompt was squeezed to ~80 px).
        assert panel["img_width"] == pytest.approx(panel["img_natural"], abs=1), name
    assert panels[0]["img_width"] >= SIDE - 1, "the mask prompt keeps its size"
    (feed,) = layout["feed_label"]
    assert feed["text"] == "feed the best mask back (mask prompt)"
    assert not feed["cut"] and feed["right"] <= layout["limit"]["right"], "the label is cut"
    assert not layout["labels"], f"truncated labels: {layout['labels']}"
    assert not layout["others"], f"panels that scroll or are cut: {layout['others']}"
