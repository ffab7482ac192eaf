"""The widget's "Everything" controls: segment every object in a background thread, with a
progress bar and a Stop button; show the result as an outlined label image, hide or clear
it, pick objects on it and commit them (or all) into the committed objects.

The run itself (:class:`~sam_viz.jupyter.session.EverythingRun`) and what it found
(:class:`~sam_viz.jupyter.session.FoundObjects`) know no widget. The run's end is shown from
the kernel's event loop when there is one (the thread that started it), so the canvas is
never drawn from two threads at once; in a plain script it is shown at once.
"""

from __future__ import annotations

import asyncio
import html
import threading
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets
import numpy as np

from sam_viz.automatic.results import Segmentation
from sam_viz.jupyter.controls import button, checkbox
from sam_viz.jupyter.session import EverythingRun, FoundObjects, GenerateFn

# Shows a status line: ``say(html_message, kind)`` with kind info, warning or error.
Say = Callable[[str, str], None]
# Commits objects of a label image: ``commit(labels, ids, overwrite)`` -> the new objects' ids
# (the widget's session does it, undoably, and redraws).
CommitFn = Callable[[np.ndarray, tuple[int, ...], bool], tuple[int, ...]]


class EverythingPanel:
    """An "Everything" button, a Stop button and a progress bar driving one run at a time,
    and the controls of what it found: Show, Pick, Commit and Clear.

    Attributes:
        box: The controls, to put in the widget's layout.
        found: What the last run found, as shown (None before the first run and after
            Clear; a failed or stopped run leaves it as it was).
    """

    def __init__(
        self,
        generate: GenerateFn,
        show: Callable[[FoundObjects | None], None],
        say: Say,
        describe: Callable[[BaseException], str],
        commit: CommitFn,
        overwrite: Callable[[], bool] = lambda: False,
    ) -> None:
        """Args:
        generate: Computes the segmentation in the run's thread.
        show: Draws what was found, or nothing for None (called in the kernel's thread).
        say: Shows a status line.
        describe: A one-line description of an error.
        commit: Commits objects of a label image.
        overwrite: Whether the Commit button overwrites committed objects.
        """
        self._generate, self._show, self._say, self._describe = generate, show, say, describe
        self._commit, self._overwrite = commit, overwrite
        self.found: FoundObjects | None = None
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
            layout=widgets.Layout(visibility="hidden", width="80px"),
        )
        self.progress = widgets.FloatProgress(
            value=0,
            min=0,
            max=1,
            layout=widgets.Layout(width="120px", visibility="hidden"),
        )
        self.show_check = checkbox(
            "Show",
            "Show the objects found on the image",
            value=True,
        )
        self.pick_button = widgets.ToggleButton(
            description="Pick",
            icon="hand-pointer-o",
            tooltip="While on, a click on the image picks (or drops) a found object to commit",
            layout=widgets.Layout(width="72px"),
        )
        self.commit_button = button(
            "Commit all",
            "check",
            "Add the found objects (the picked ones, if any) to the labels",
            width="auto",
        )
        self.clear_button = button(
            "Clear",
            "times",
            "Forget what Everything found (committed objects stay)",
            width="72px",
        )
        self.stop_button.on_click(lambda _: self.cancel())
        self.show_check.observe(lambda change: self.set_visible(change["new"]), names="value")
        # The Show box follows ``found.visible``; setting it calls set_visible, a no-op then.
        self.pick_button.observe(lambda _: self._refresh(), names="value")
        self.commit_button.on_click(lambda _: self._from_ui(self._commit_button))
        self.clear_button.on_click(lambda _: self.clear())
        self.found_row = widgets.HBox(
            [self.show_check, self.pick_button, self.commit_button, self.clear_button],
            layout=widgets.Layout(display="none", align_items="center", flex_flow="row wrap"),
        )
        self.box = widgets.VBox(
            [
                widgets.HBox(
                    [self.button, self.stop_button, self.progress],
                    layout=widgets.Layout(align_items="center"),
                ),
                self.found_row,
            ]
        )

    @property
    def result(self) -> Segmentation | None:
        """The segmentation found last (None before the first run and after Clear)."""
        return None if self.found is None else self.found.segmentation

    @property
    def picking(self) -> bool:
        """Whether a click on the image picks a found object (rather than adding a point)."""
        return self.pick_button.value and self.found is not None and self.found.visible

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
        self.stop_button.layout.visibility = "visible"
        self.progress.layout.visibility = "visible"
        self._say("Segmenting everything\u2026", "info")
        run.start(background)
        return run

    def cancel(self) -> None:
        """Stop the running run, if any; nothing it found is shown."""
        if self.run is not None:
            self.run.cancel()

    def set_visible(self, visible: bool) -> None:
        """Show or hide what was found (it is kept either way)."""
        if self.found is not None and self.found.visible != bool(visible):
            self.found.visible = bool(visible)
            self._refresh()

    def clear(self) -> None:
        """Forget what was found and take it off the image (committed objects stay)."""
        self.found = None
        self.pick_button.value = False
        self._refresh()
        self._say("The objects Everything found were cleared.", "info")

    def pick(self, x: float, y: float) -> int | None:
        """Pick or drop the found object under image pixel (x, y) (see
        ``SamWidget.pick_everything``)."""
        if self.found is None:
            raise ValueError("Nothing to pick: run Everything first.")
        label = self.found.pick(x, y)
        self._refresh()
        count = len(self.found.picked)
        if label is None:
            self._say("No found object there.", "info")
        else:
            self._say(f"{count} found object{'s' * (count != 1)} picked.", "info")
        return label

    def commit(self, labels: Iterable[int] | None, overwrite: bool) -> tuple[int, ...]:
        """Commit found objects (see ``SamWidget.commit_everything``); forget the picks."""
        if self.found is None:
            raise ValueError("Nothing found to commit: run Everything first.")
        ids = self.found.ids if labels is None else tuple(int(v) for v in labels)
        new = self._commit(self.found.labels, ids, bool(overwrite))
        self.found.picked.clear()
        self._refresh()
        count, left_out = len(new), len(ids) - len(new)
        self._say(
            f"Committed {count} found object{'s' * (count != 1)} "
            + (f"as object {new[0]}" if count == 1 else f"as objects {new[0]}\u2013{new[-1]}")
            + (f"; {left_out} lay entirely on committed objects" if left_out else "")
            + ". Undo takes them all back.",
            "info",
        )
        return new

    def table(self) -> Any:
        """What was found, one row per object: a pandas DataFrame indexed by label where
        pandas is installed, else ``Segmentation.table()``'s list of dicts."""
        if self.found is None:
            raise ValueError("Nothing found yet: run Everything (segment_everything) first.")
        rows = self.found.segmentation.table()
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows).set_index("label") if rows else pd.DataFrame(rows)

    def _commit_button(self) -> None:
        """Commit the picked objects, or every one when none is picked."""
        picked = sorted(self.found.picked) if self.found is not None else []
        self.commit(picked or None, self._overwrite())

    def _from_ui(self, action: Callable[[], object]) -> None:
        """Run a button's action: an error goes to the status line, not a traceback."""
        try:
            action()
        except Exception as err:
            self._say(html.escape(self._describe(err)), "error")

    def close(self) -> None:
        """Stop a run and close the controls."""
        self.cancel()
        for child in (
            self.button,
            self.stop_button,
            self.progress,
            self.show_check,
            self.pick_button,
            self.commit_button,
            self.clear_button,
            self.found_row,
            *self.box.children,
            self.box,
        ):
            child.close()

    def _refresh(self) -> None:
        """Show the controls and the overlay for the current state."""
        found = self.found
        self.found_row.layout.display = None if found is not None else "none"
        if found is not None:
            picked = len(found.picked)
            self.commit_button.description = f"Commit {picked} picked" if picked else "Commit all"
            self.show_check.value = found.visible
        self._show(found)

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.value = done / max(total, 1)

    def _ended(self, run: EverythingRun) -> None:
        self.button.disabled = False
        self.stop_button.layout.visibility = "hidden"
        self.progress.layout.visibility = "hidden"
        if run.result is not None:
            self.found = FoundObjects(run.result)
            self._refresh()
            count = run.result.num_objects
            self._say(
                f"Found {count} object{'s' * (count != 1)}, outlined on the image. Commit adds "
                "them all to the labels; with Pick on, a click picks the ones to commit "
                "(<code>widget.everything_table()</code> lists them).",
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
