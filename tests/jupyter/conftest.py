"""Fixtures for the Jupyter side: a recorder of what ipycanvas sends to the page, and
helpers that send mouse events the way the front end does."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("ipycanvas", reason="the Jupyter side needs the 'jupyter' extra")

from ipycanvas.canvas import _CMD_LIST

from sam_viz.jupyter.display import png_to_array


@dataclass
class Drawn:
    """One drawing command as the page receives it."""

    canvas: str
    name: str
    args: list
    buffers: list = field(default_factory=list)


class CanvasLog:
    """Decodes the messages ipycanvas' shared manager sends, per target canvas."""

    def __init__(self) -> None:
        self.commands: list[Drawn] = []
        self.messages = 0
        self._current: str | None = None

    def record(self, command: list, buffers: list | tuple = ()) -> None:
        self.messages += 1
        self._walk(command, [bytes(b) for b in buffers])

    def _walk(self, command: list, buffers: list) -> None:
        if command and isinstance(command[0], list):
            for item in command:
                count = item[2] if len(item) > 2 else 0
                self._walk(item, buffers[:count])
                buffers = buffers[count:]
            return
        name, args = _CMD_LIST[command[0]], command[1]
        if name == "switchCanvas":
            self._current = args[0]
        self.commands.append(Drawn(self._current or "?", name, args, buffers))

    def clear(self) -> None:
        self.commands.clear()
        self.messages = 0

    def on(self, canvas) -> list[Drawn]:
        """Commands drawn on ``canvas`` (an ipycanvas Canvas)."""
        key = f"IPY_MODEL_{canvas.model_id}"
        return [c for c in self.commands if c.canvas == key and c.name != "switchCanvas"]

    def names(self, canvas) -> list[str]:
        return [c.name for c in self.on(canvas)]

    def pictures(self, canvas) -> list[np.ndarray]:
        """Every picture put on ``canvas``, decoded (PNG only: a JPEG fails the test)."""
        out = []
        for command in self.on(canvas):
            if command.name == "putImageData":
                (data,) = command.buffers
                assert data[:8] == b"\x89PNG\r\n\x1a\n", "canvas pictures must be lossless PNG"
                out.append(png_to_array(data))
        return out

    def switched_to(self, canvas) -> bool:
        key = f"IPY_MODEL_{canvas.model_id}"
        return any(c.name == "switchCanvas" and c.args[0] == key for c in self.commands)


@pytest.fixture
def canvas_log(monkeypatch) -> CanvasLog:
    """Record everything ipycanvas sends to the page from now on."""
    from ipycanvas.canvas import _CANVAS_MANAGER

    log = CanvasLog()
    monkeypatch.setattr(_CANVAS_MANAGER, "_send_custom", log.record)
    # Make the next batch name its canvas, as it would for a page that just connected.
    monkeypatch.setattr(_CANVAS_MANAGER, "_current_canvas", None)
    return log


def send_mouse(canvas, event: str, x: float, y: float) -> None:
    """Deliver a mouse event to a (Multi)Canvas exactly as a front-end message would."""
    canvas._handle_custom_msg({"event": event, "x": float(x), "y": float(y)}, [])


def drag(canvas, start: tuple[float, float], end: tuple[float, float], steps: int = 5) -> None:
    """Press at ``start``, move in ``steps`` to ``end``, release (canvas pixels)."""
    send_mouse(canvas, "mouse_down", *start)
    for t in np.linspace(0, 1, steps + 1)[1:]:
        send_mouse(
            canvas,
            "mouse_move",
            start[0] + t * (end[0] - start[0]),
            start[1] + t * (end[1] - start[1]),
        )
    send_mouse(canvas, "mouse_up", *end)


def click(canvas, x: float, y: float) -> None:
    send_mouse(canvas, "mouse_down", x, y)
    send_mouse(canvas, "mouse_up", x, y)


def client_ready(canvas) -> None:
    """What a (re)connected page's canvas model sends when it is ready to draw."""
    canvas._handle_custom_msg({"event": "client_ready"}, [])


class AnswerSpy:
    """Records every prompt set the widget asks its scaled image to answer, in image pixels
    (``box_xyxy``, ``points_xy``, ``point_labels``)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def record(self, prompts) -> None:
        self.calls.append(
            {
                "box_xyxy": prompts.box,
                "points_xy": prompts.points_xy if len(prompts.points_xy) else None,
                "point_labels": prompts.point_labels if len(prompts.points_xy) else None,
            }
        )

    @property
    def count(self) -> int:
        return len(self.calls)


@pytest.fixture
def spy(monkeypatch):
    """``spy(predictor)`` records the prompts answered from now on (see :class:`AnswerSpy`)."""
    from sam_viz.windows.scaled import ScaledImage

    def make(_predictor=None) -> AnswerSpy:
        recorder = AnswerSpy()
        real = ScaledImage.answer

        def answer(image, prompts, **kwargs):
            recorder.record(prompts)
            return real(image, prompts, **kwargs)

        monkeypatch.setattr(ScaledImage, "answer", answer)
        return recorder

    return make


@pytest.fixture
def mouse() -> SimpleNamespace:
    """Front-end events: ``mouse.drag``, ``mouse.click``, ``mouse.send``, ``mouse.client_ready``."""
    return SimpleNamespace(drag=drag, click=click, send=send_mouse, client_ready=client_ready)
