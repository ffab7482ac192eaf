"""The dock widget's prediction state, driven without Qt or a viewer."""

from __future__ import annotations

import dataclasses

import numpy as np

from sam_viz._napari._session import PredictionSession
from sam_viz.prompts import PromptSet
from sam_viz.windows.scaled import ScaledImage


def _box(x0=12.0, y0=30.0, x1=40.0, y1=70.0) -> PromptSet:
    return PromptSet(boxes_xyxy=np.array([[x0, y0, x1, y1]]))


def test_prompts_ask_for_the_plane_then_its_windows_then_a_prediction(
    tiny_predictor, tiny_spec, non_square_image
):
    session = PredictionSession()
    decision = session.decide((), _box(), tiny_spec, None)
    assert decision.step == "prepare" and session.wanted is not None
    scaled = ScaledImage(tiny_predictor, non_square_image, diameter=30)
    decision = session.decide((), _box(), tiny_spec, scaled)
    assert decision.step == "embed" and decision.regions == (scaled.route(_box()),)
    scaled.embedding(*decision.regions[0])
    decision = session.decide((), _box(), tiny_spec, scaled)
    assert decision.step == "predict" and decision.ticket is not None
    assert session.decide((), _box(), tiny_spec, scaled).changed is False  # nothing new
    request = decision.ticket.request
    show, following = session.finish(decision.ticket)
    assert show and following is None
    chosen = session.show(request.image.answer(request.prompts), ())
    assert chosen == session.candidates.best == session.chosen
    offered = session.candidates.offered
    for index in offered:  # the user's pick is shown...
        assert session.choose(index) is None and session.chosen == index
    for index in set(range(3)) - set(offered):  # ...if it is offered; else they are told why
        assert "not offered" in session.choose(index) and session.chosen == offered[-1]


def test_a_cancelled_embedding_waits_for_new_prompts(tiny_spec):
    session = PredictionSession()
    assert session.decide((), _box(), tiny_spec, None).step == "prepare"
    session.embedding_stopped()
    assert session.decide((), _box(), tiny_spec, None).changed is False  # halted
    assert session.decide((), _box(x1=41.0), tiny_spec, None).step == "prepare"


def test_a_new_context_drops_the_running_prediction(tiny_predictor, tiny_spec, non_square_image):
    session = PredictionSession()
    scaled = ScaledImage(tiny_predictor, non_square_image, diameter=30)
    scaled.embedding(*scaled.route(_box()))
    decision = session.decide((), _box(), tiny_spec, scaled)
    session.new_context()  # e.g. the model changed while it ran
    show, _ = session.finish(decision.ticket)
    assert not show and session.candidates is None


def test_latest_request_wins(tiny_predictor, tiny_spec, non_square_image):
    session = PredictionSession()
    scaled = ScaledImage(tiny_predictor, non_square_image, diameter=30)
    scaled.embedding(*scaled.route(_box()))
    first = session.decide((), _box(), tiny_spec, scaled).ticket
    assert session.decide((), _box(x1=41.0), tiny_spec, scaled).ticket is None  # waits
    newest = session.decide((), _box(x1=42.0), tiny_spec, scaled)
    show, following = session.finish(first)
    assert not show and following is not None
    assert following.request.prompts.boxes_xyxy[0, 2] == 42.0
    assert session.finish(following)[0] and newest.step == "predict"


def test_no_prompts_clear_and_box_only_models_refuse_points(tiny_spec):
    session = PredictionSession()
    assert session.decide((), PromptSet(), tiny_spec, None).step == "clear"
    box_only = dataclasses.replace(tiny_spec, prompt_kinds=frozenset({"box", "mask"}))
    decision = session.decide((), PromptSet().add_point(10, 10), box_only, None)
    assert decision.step == "refuse" and "draw a box" in decision.message
    assert session.decide((), _box().add_point(20, 40), box_only, None).step == "prepare"
