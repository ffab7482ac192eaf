"""The teaching views: moving the point updates what they show; static figures render."""

from __future__ import annotations

import numpy as np

from sam_viz.jupyter import anatomy
from sam_viz.jupyter.display import mosaic, png_bytes, png_to_array, strip
from sam_viz.jupyter.explorer import PromptEncoderExplorer
from sam_viz.jupyter.figures import figure_html, token_strips


def test_explorer_follows_the_point(tiny_predictor, non_square_image, mouse, monkeypatch):
    view = PromptEncoderExplorer(non_square_image, tiny_predictor, box=(4, 10, 50, 80))
    assert view.trace is not None
    assert [t.kind for t in view.trace.sparse] == [
        "positive point",
        "box top-left",
        "box bottom-right",
    ]
    before_similarity = view.similarity.image.value
    before_tokens = view.tokens.children[0].children[1].value
    before_trace = view.trace

    view.x.value = 10  # a slider move
    assert view.similarity.image.value != before_similarity
    assert view.tokens.children[0].children[1].value != before_tokens
    assert view.trace is not before_trace
    assert view.trace.sparse[0].xy_model[0] == (10 * view.embedding.frame.scale_xy[0])

    # A click on the image moves the point there, with one update.
    traces = []
    trace = anatomy.decoder_trace
    monkeypatch.setattr(
        anatomy, "decoder_trace", lambda *a, **k: traces.append(1) or trace(*a, **k)
    )
    mouse.click(view.image_canvas, *view.frame.to_display(np.array([30.0, 60.0])))
    assert view.point_xy == (30.0, 60.0) and len(traces) == 1

    # Negative point, no box: a padding token joins and the learned part changes.
    view.use_box.value = False
    view.positive.value = False
    assert [t.kind for t in view.trace.sparse] == ["negative point", "padding (not a point)"]


def test_explorer_shows_the_mask_path_when_fed_back(tiny_predictor, non_square_image):
    view = PromptEncoderExplorer(non_square_image, tiny_predictor, box=(4, 10, 50, 80))
    assert len(view.mask_path.children) == 1  # no mask: the no_mask_embed strip
    view.feed_mask.value = True
    assert [s.maps.shape[0] for s in view.stages] == [1, 4, 4, 4, 16, 16, 16, 256]
    # The shown steps skip the LayerNorms: input, conv, GELU, conv, GELU, conv 1x1.
    assert len(view.mask_path.children) == 6
    assert np.abs(view.trace.dense - anatomy.no_mask_dense(tiny_predictor.model)).max() > 0


def test_static_pictures():
    picture = strip(np.linspace(-1, 1, 256), height=5, cell=2)
    assert picture.shape == (5, 512, 3)
    assert tuple(picture[0, 0]) == (33, 102, 172) and tuple(picture[0, -1]) == (178, 24, 43)
    tiles = mosaic(np.ones((16, 8, 8)))
    assert tiles.shape == (4 * 9 - 1, 4 * 9 - 1, 3)
    html = figure_html([("a <caption>", picture)], title="T")
    assert "&lt;caption&gt;" in html and html.count("data:image/png;base64,") == 1


def test_token_strips_stack_three_rows():
    tokens = [anatomy.SparseToken("positive point", (1.0, 2.0), np.ones(256), -np.ones(256))]
    ((caption, picture),) = token_strips(tokens)
    assert "positive point" in caption and picture.shape == (3 * 14 + 2 * 4, 512, 3)
    assert np.array_equal(png_to_array(png_bytes(picture)), picture)
    # positional (all +1) red, learned (all -1) blue, sum (0) white
    assert tuple(picture[0, 0]) == (178, 24, 43) and tuple(picture[20, 0]) == (33, 102, 172)
    assert tuple(picture[-1, 0]) == (247, 247, 247)
