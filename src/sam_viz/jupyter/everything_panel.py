"""The widget's "Everything" controls: segment every object in a background thread, with a
progress bar and a Stop button, and show the result as an outlined label image.

The run itself (:class:`~sam_viz.jupyter.session.EverythingRun`) knows no widget. Its end is
shown from the kernel's event loop when there is one (the thread that started it), so the
canvas is never drawn from two threads at once; in a plain script it is shown at once.
"""

from __future__ import annotations

import asyncio
import html
import threading
from collections.abc import Callable

import ipywidgets as widgets

from sam_viz.automatic.results import Segmentation
from sam_viz.jupyter.session import EverythingRun, GenerateFn

# Shows a status line: ``say(html_message, kind)`` with kind info, warning or error.
Say = Callable[[str, str], None]


class EverythingPanel:
    """An "Everything" button, a Stop button and a progress bar driving one run at a time.

    Attributes:
        box: The controls, to put in the widget's layout.
        result: The last segmentation found (None before the first; a failed or stopped
            run leaves it as it was).
    """

    def __init__(
        self,
        generate: GenerateFn,
        show: Callable[[Segmentation], None],
        say: Say,
        describe: Callable[[BaseException], str],
    ) -> None:
        """Args:
        generate: Computes the segmentation in the run's thread.
        show: Draws a segmentation (called in the kernel's thread).
        say: Shows a status line.
        describe: A one-line description of an error.
        """
        self._generate, self._show, self._say, self._describe = generate, show, say, describe
        self.result: Segmentation | None = None
        self.run: EverythingRun | None = None
        self.button = widgets.Button(
            description="Everything",
            icon="th",
            tooltip="Segment every object in the image, in the background; outlined on it",
        )
        self.stop_button = widgets.Button(
            description="Stop",
            icon="stop",
            tooltip="Stop segmenting everything",
            layout=widgets.Layout(display="none"),
        )
        self.progress = widgets.FloatProgress(
            value=0,
            min=0,
            max=1,
            description="Everything",
            layout=widgets.Layout(width="320px", display="none"),
        )
        self.stop_button.on_click(lambda _: self.cancel())
        self.box = widgets.HBox([self.button, self.stop_button, self.progress])

    def start(self, background: bool = True) -> EverythingRun:
        """Start a run (see ``SamWidget.segment_everything``).

        Raises:
            ValueError: If a run is going on already.
        """
        if self.run is not None and self.run.running:
            raise ValueError("Segment everything is running already; wait for it or stop it.")
        call_here = _caller_in_this_thread()
        self.run = run = EverythingRun(
            self._generate,
            self._on_progress,
            lambda ended: call_here(lambda: self._ended(ended)),
        )
        self.button.disabled = True
        self.progress.value = 0
        self.stop_button.layout.display = None
        self.progress.layout.display = None
        self._say("Segmenting everything\u2026", "info")
        run.start(background)
        return run

    def cancel(self) -> None:
        """Stop the running run, if any; nothing it found is shown."""
        if self.run is not None:
            self.run.cancel()

    def close(self) -> None:
        """Stop a run and close the controls."""
        self.cancel()
        for child in (self.button, self.stop_button, self.progress, self.box):
            child.close()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.value = done / max(total, 1)

    def _ended(self, run: EverythingRun) -> None:
        self.button.disabled = False
        self.stop_button.layout.display = "none"
        self.progress.layout.display = "none"
        if run.result is not None:
            self.result = run.result
            self._show(run.result)
            count = run.result.num_objects
            self._say(
                f"Found {count} object{'s' * (count != 1)}, outlined on the image "
                "(<code>widget.everything</code> has the label image and its table).",
                "info",
            )
        elif run.cancelled:
            self._say("Segment everything was stopped; nothing changed.", "warning")
        else:
            assert run.error is not None
            message = html.escape(self._describe(run.error))
            self._say(f"Could not segment everything: {message}", "error")


def _caller_in_this_thread() -> Callable[[Callable[[], None]], None]:
    """A function that runs a callback in the calling thread's running event loop (the
    kernel's), whichever thread it is called from; without a running loop (a plain script)
    the callback runs at once, where it is called."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return lambda callback: callback()
    owner = threading.get_ident()

    def call(callback: Callable[[], None]) -> None:
        if threading.get_ident() == owner or not loop.is_running():
            callback()
        else:
            loop.call_soon_threadsafe(callback)

    return call
