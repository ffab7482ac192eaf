"""What the dock widget predicts and shows, as plain Python (no Qt): tests drive it directly.

The widget hands the session the prompts of the plane on screen and reports what its
workers did; the session decides the next step and holds what is shown. Its names:

* ``context``: a number that changes with the image, the model, the device or the object
  scale; work started under an older context is dropped when it returns.
* ``wanted``: the prompts (context, plane, signature) waiting for their windows to be
  embedded; ``halted``: prompts whose embedding was cancelled or failed, not tried again
  until the prompts change.
* ``requested``: the prompts whose prediction runs or is shown.
* ``candidates``, ``shown_plane``: what the candidate layers show; ``choice``: the candidate
  the user picked (the best-ranked one is shown until they pick, and whenever their pick
  is not among the candidates offered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sam_viz._napari._scheduling import LatestWins, Ticket
from sam_viz._napari._slicing import Plane
from sam_viz.models.registry import ModelSpec
from sam_viz.prompts import PromptSet, prompt_problem
from sam_viz.windows.geometry import Window

if TYPE_CHECKING:  # the predictor (and torch) is imported once a model is loaded
    from sam_viz.predictor.candidates import Candidates
    from sam_viz.windows.scaled import ScaledImage

Key = tuple[int, Plane, str]
Region = tuple[Window, int]  # a window and its side: one embedding
Step = Literal["nothing", "clear", "refuse", "prepare", "embed", "predict"]


@dataclass(frozen=True)
class Request:
    """One prediction to run: the prompts of a plane and that plane's scaled image."""

    context: int
    plane: Plane
    prompts: PromptSet
    image: ScaledImage


@dataclass(frozen=True)
class Decision:
    """The next step for the prompts on screen.

    Attributes:
        step: ``"nothing"`` (up to date, or waiting), ``"clear"`` (no prompts),
            ``"refuse"`` (the model cannot answer them: ``message`` says why),
            ``"prepare"`` (the plane's contrast and scale are needed first), ``"embed"``
            (``regions`` must be embedded first) or ``"predict"`` (start ``ticket``, if it
            is not None: otherwise it waits for the running prediction).
        changed: False when nothing changed since the last decision.
    """

    step: Step
    changed: bool = True
    message: str = ""
    regions: tuple[Region, ...] = ()
    ticket: Ticket[Request] | None = None


class PredictionSession:
    """The prediction state of the dock widget (see the module docstring for its names)."""

    def __init__(self) -> None:
        self.context = 0
        self.wanted: Key | None = None
        self.halted: Key | None = None
        self.requested: Key | None = None
        self.candidates: Candidates | None = None
        self.shown_plane: Plane = ()
        self.choice: int | None = None
        self._scheduler: LatestWins[Request] = LatestWins()

    def new_context(self) -> None:
        """The image, model, device or scale changed: forget pending work."""
        self.context += 1
        self.wanted = self.halted = None
        self.clear()

    def decide(
        self,
        plane: Plane,
        prompts: PromptSet,
        spec: ModelSpec,
        image: ScaledImage | None,
    ) -> Decision:
        """The next step for ``prompts`` on ``plane``.

        Args:
            plane: The plane on screen.
            prompts: Its prompts, validated.
            spec: The model that answers them.
            image: The plane's scaled image, or None while it is not prepared.
        """
        if prompts.empty:
            changed = self.candidates is not None or self.requested is not None
            self.clear()
            return Decision("clear", changed=changed)
        problem = prompt_problem(spec, prompts)
        if problem is not None:
            self.clear()
            return Decision("refuse", message=problem)
        key = (self.context, plane, prompts.signature())
        missing: tuple[Region, ...] = ()
        if image is not None:
            missing = tuple(r for r in image.windows_for(prompts) if not image.is_embedded(*r))
        if image is None or missing:
            if key == self.halted:
                return Decision("nothing", changed=False)  # wait for an edit
            self.wanted = key
            return Decision("embed" if missing else "prepare", regions=missing)
        if key == self.requested:
            return Decision("nothing", changed=False)
        self.requested = key
        ticket = self._scheduler.submit(Request(self.context, plane, prompts, image))
        return Decision("predict", ticket=ticket)

    def embedding_stopped(self) -> None:
        """The embedding the wanted prompts waited for was cancelled or failed."""
        self._scheduler.invalidate()
        self.requested = None
        self.halted = self.wanted

    def finish(self, ticket: Ticket[Request]) -> tuple[bool, Ticket[Request] | None]:
        """A prediction returned: (whether to show its result, the next ticket to start)."""
        current, following = self._scheduler.finish(ticket)
        return current and ticket.request.context == self.context, following

    def show(self, candidates: Candidates, plane: Plane) -> int:
        """``candidates`` are on show for ``plane``; returns the candidate shown."""
        self.candidates = candidates
        self.shown_plane = plane
        return self.chosen  # type: ignore[return-value]

    @property
    def chosen(self) -> int | None:
        """The candidate on show: the user's choice if it is offered, else the best-ranked
        one (None while there are no candidates)."""
        if self.candidates is None:
            return None
        if self.choice in self.candidates.offered:
            return self.choice
        return self.candidates.best

    def choose(self, index: int) -> str | None:
        """The user picked candidate ``index``; returns why it cannot be shown, or None."""
        candidates = self.candidates
        if candidates is None:
            return "No candidates yet: draw a box (or click) on an object first."
        if index not in candidates.offered:
            return not_offered(candidates, index)
        self.choice = index
        return None

    def clear(self) -> None:
        """No candidates: drop the running prediction's result and what is shown."""
        self._scheduler.invalidate()
        self.requested = None
        self.candidates = None

    def forget_choice(self) -> None:
        """The next object starts with the best-ranked candidate on show."""
        self.choice = None

    @property
    def predicting(self) -> bool:
        """Whether a prediction runs."""
        return self._scheduler.busy


def not_offered(candidates: Candidates, index: int) -> str:
    """Why candidate ``index`` is not offered."""
    name = candidates.names[index]
    if candidates.n_objects > 1:
        return (
            f"With {candidates.n_objects} boxes each box has one mask: there is no "
            f"{name} to choose."
        )
    note = candidates.offer_note or candidates.describe(index)
    keys = "/".join(str(i + 1) for i in candidates.offered)
    return f"The {name} candidate is not offered. {note} Keys: {keys}."
