"""The teaching views: moving the point updates what they show; static figures render."""

from __future__ import annotations

import itertools
from dataclasses import replace

import ipywidgets as widgets
import numpy as np
import pytest
import torch

from sam_viz.jupyter import anatomy, explorer
from sam_viz.jupyter.display import colorize, mosaic, png_bytes, png_to_array, strip
from sam_viz.jupyter.explorer import PromptEncoderExplorer, click_trained_variant
from sam_viz.jupyter.figures import (
    decoder_figure,
    encoding_strip,
    figure_html,
    offset_similarity_figure,
    token_scale_note,
    token_strips,
)
from sam_viz.models.build import build_sam
from sam_viz.models.registry import MODELS
from sam_viz.predictor import Predictor

BOX = (4, 10, 50, 80)


@pytest.fixture
def box_only_predictor(tiny_model, tiny_spec):
    """The tiny model, declared as trained with boxes only (as the embedded LiteMedSAM)."""
    spec = replace(
        tiny_spec, name="tiny_boxes", prompt_kinds=frozenset({"box", "mask"}), multimask="none"
    )
    return Predictor(tiny_model, spec, device="cpu")


def _images(widget: widgets.Widget) -> list[widgets.Image]:
    """Every image widget inside ``widget``."""
    if isinstance(widget, widgets.Image):
        return [widget]
    return [i for child in getattr(widget, "children", ()) for i in _images(child)]


def test_explorer_follows_the_point(tiny_predictor, non_square_image, mouse, monkeypatch):
    view = PromptEncoderExplorer(non_square_image, tiny_predictor, box=BOX)
    assert view.trace is not None
    assert [t.kind for t in view.trace.sparse] == [
        "positive point",
        "box top-left",
        "box bottom-right",
    ]
    before_similarity = view.similarity.image.value
    before_offsets = view.offset_kernel.image.value
    before_tokens = view.tokens.children[0].children[1].value
    before_trace = view.trace

    view.x.value = 10  # a slider move
    assert view.similarity.image.value != before_similarity
    assert view.offset_kernel.image.value == before_offsets  # the same for every point
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
    view = PromptEncoderExplorer(non_square_image, tiny_predictor, box=BOX)
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


def test_explorer_updates_all_panels_together_while_busy(
    tiny_predictor, non_square_image, monkeypatch
):
    view = PromptEncoderExplorer(non_square_image, tiny_predictor, box=BOX, feed_mask=True)
    assert "up to date" in view.busy.value
    events: list[tuple[str, str]] = []
    for image in _images(view):
        image.observe(lambda _change: events.append(("show", view.busy.value)), names="value")

    def spy(module, name):
        real = getattr(module, name)

        def call(*args, **kwargs):
            events.append(("compute", view.busy.value))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, call)

    for name in ("frequency_figure", "token_strips", "mask_path_figure", "decoder_figure"):
        spy(explorer, name)
    spy(anatomy, "similarity_map")
    spy(anatomy, "decoder_trace")

    view.x.value = 20
    kinds = [kind for kind, _ in events]
    assert kinds.count("compute") >= 6 and kinds.count("show") >= 6
    # Every number is computed before the first panel changes; the busy sign is on meanwhile.
    assert kinds.index("show") > max(i for i, kind in enumerate(kinds) if kind == "compute")
    assert all("computing" in busy for _, busy in events)
    assert "up to date" in view.busy.value


def test_explorer_shows_a_legend_and_the_token_lengths(tiny_predictor, non_square_image):
    view = PromptEncoderExplorer(non_square_image, tiny_predictor, box=BOX)
    # A colour key: the diverging scale's ends, the markers and the mask.
    legend = view.legend.value
    for words in ("blue &lt; 0", "red &gt; 0", "positive point", "negative point", "box"):
        assert words in legend
    low, high = colorize(np.array([[-1.0, 1.0]]))[0]
    assert f"rgb({low[0]},{low[1]},{low[2]})" in legend
    assert f"rgb({high[0]},{high[1]},{high[2]})" in legend
    assert "best offered mask" in legend and view.legend in view.children

    # The positional part dwarfs the learned one: both lengths, computed from this model.
    point = view.trace.sparse[0]
    learned = [
        np.linalg.norm(anatomy.learned_embeddings(view.model)[name])
        for name in anatomy.POINT_EMBEDDING_NAMES
    ]
    note = view.token_note.value
    assert f"length {np.linalg.norm(point.positional):.1f}" in note
    assert f"{min(learned):.1f}-{max(learned):.1f}" in note and "small signal" in note
    caption = view.tokens.children[0].children[0].value
    assert f"learned (middle, length {np.linalg.norm(point.learned):.1f})" in caption
    assert token_scale_note(view.trace.sparse, view.model) in note

    # A model that answers clicks is offered no other one.
    assert view.model_choice.layout.display == "none"


def test_click_trained_variant_comes_from_the_registry():
    assert click_trained_variant(MODELS["lite_medsam"]) == "lite_medsam_clicks"
    assert click_trained_variant(MODELS["lite_medsam_clicks"]) is None  # answers clicks
    assert click_trained_variant(MODELS["vit_b"]) is None


def test_box_only_model_explains_a_lone_point_and_offers_the_click_model(
    box_only_predictor, tiny_spec, non_square_image
):
    torch.manual_seed(1)
    clicks = Predictor(build_sam(tiny_spec), tiny_spec, device="cpu")
    view = PromptEncoderExplorer(
        non_square_image, box_only_predictor, box=BOX, click_predictor=clicks
    )
    assert view.model_choice.options == ("tiny_boxes", "tiny_test")
    assert view.model_choice.layout.display != "none"
    assert "trained with boxes only" not in view.note.value  # the box is used

    view.use_box.value = False
    note = view.note.value
    assert "trained with boxes only" in note and "meaningless" in note
    assert "tiny_test" in note  # the click-trained model is offered right there
    boxes_trace = view.trace

    view.model_choice.value = "tiny_test"
    assert view.predictor is clicks and view.model is clicks.model
    assert "trained with boxes only" not in view.note.value
    assert not np.allclose(view.trace.low_res_logits, boxes_trace.low_res_logits)
    view.use_model("tiny_boxes")
    assert view.predictor is box_only_predictor and view.model_choice.value == "tiny_boxes"
    with pytest.raises(ValueError, match="this view offers"):
        view.use_model("vit_h")


def test_mask_tokens_say_which_are_offered_and_why(
    box_only_predictor, tiny_predictor, non_square_image
):
    # A model whose ambiguity-aware tokens were not trained: token 0 plus the best two.
    view = PromptEncoderExplorer(non_square_image, box_only_predictor, box=BOX)
    trace = view.trace
    assert 0 in trace.offered_tokens and len(trace.offered_tokens) == 3
    captions = [panel.caption.value for panel in view.decoder]
    assert "single-mask output: offered as" in captions[0]
    assert all("ambiguity-aware output" in c for c in captions[1:])
    assert sum("not offered" in c for c in captions) == 1
    note = view.decoder_note.value
    assert "Mask token 0 is SAM&#x27;s single-mask output" in note
    (left_out,) = set(range(1, 4)) - set(trace.offered_tokens)
    assert f"token {left_out} is not offered" in note
    assert "trained with the single-mask output only" in note

    # SAM's own training: tokens 1-3 are the candidates and token 0 is not offered.
    view = PromptEncoderExplorer(non_square_image, tiny_predictor, box=BOX)
    assert view.trace.offered_tokens == (1, 2, 3)
    captions = [caption for caption, _ in decoder_figure(view.trace)]
    assert captions[0].startswith("mask token 0, single-mask output: not offered")
    assert all("offered as" in c for c in captions[1:])
    assert "token 0 is not offered" in view.decoder_note.value


def test_encoding_strip_sorts_channels_by_frequency(tiny_model):
    # Moving a point a little changes the long waves (left of each half) least.
    size = anatomy.input_size(tiny_model)[0]
    strips = [
        encoding_strip(tiny_model, (x, size / 2), height=1)[0].astype(float)
        for x in np.linspace(0.3, 0.7, 9) * size
    ]
    change = np.mean([np.abs(b - a).sum(axis=-1) for a, b in itertools.pairwise(strips)], axis=0)
    width = change.shape[0] // 2  # the sin half
    quarter = width // 4
    assert change[:quarter].mean() < 0.5 * change[width - quarter : width].mean()
    order = anatomy.frequency_order(tiny_model)
    raw = anatomy.point_positional_encoding(tiny_model, np.array([[10.0, 20.0]]))[0]
    np.testing.assert_array_equal(
        encoding_strip(tiny_model, (10.0, 20.0), height=1)[0, ::2],
        strip(raw[order], height=1, limit=1.0)[0, ::2],
    )


def test_the_bump_is_drawn_against_the_offset_with_its_radii(tiny_model):
    caption, picture = offset_similarity_figure(tiny_model, reach=24, side=98)
    radii = [anatomy.half_similarity_radius(tiny_model, a) for a in range(0, 180, 15)]
    assert f"after {min(radii):.1f}-{max(radii):.1f} px depending on the direction" in caption
    assert picture.shape == (98, 98, 3)
    assert (picture == 0).all(axis=-1).any()  # the half-way contour
