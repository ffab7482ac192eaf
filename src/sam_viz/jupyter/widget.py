"""The interactive SAM widget: drag a box or click on an image, see SAM's candidates (those
worth offering: no empty one, no near-duplicate), switch between them, commit the chosen one
into a label image; or segment every object at once ("Everything", in a background thread)
and commit all or some of what it found.

The state (prompts, candidates, committed objects, undo history) lives in Python, in a
:class:`~sam_viz.jupyter.session.Session`; the canvas (:mod:`sam_viz.jupyter.canvas`) is
drawn from it and redraws itself when a page (re)connects. Coordinates in the Python API
are ``(x, y)`` pixels of the original image.

Negative points come from the "Click adds" toggle: ipycanvas reports no mouse button, and a
right click opens the page's context menu, so right-click is not used.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets
import numpy as np
from ipycanvas import hold_canvas

from sam_viz.automatic.everything import EverythingSettings, MaskGenerator
from sam_viz.automatic.results import Segmentation
from sam_viz.automatic.tiled import segment_image
from sam_viz.image import Contrast, to_rgb01, validate_image
from sam_viz.jupyter.canvas import CANDIDATE, PROMPTS, PromptCanvas
from sam_viz.jupyter.controls import WidgetControls
from sam_viz.jupyter.display import DisplayFrame
from sam_viz.jupyter.everything_panel import EverythingPanel
from sam_viz.jupyter.session import EverythingRun, FoundObjects, Session
from sam_viz.models.registry import DEFAULT_MODEL, MODELS
from sam_viz.objects import ObjectLabels
from sam_viz.predictor import Cancelled, Candidates, Predictor, ProgressCallback
from sam_viz.prompts import (
    POSITIVE,
    PromptProblem,
    PromptSet,
    check_answerable,
    prompt_guide,
)
from sam_viz.render import candidate_color, to_display_rgb
from sam_viz.windows.scaled import ScaledImage

# What the mouse does, after the model's own guide (prompt_guide).
MOUSE_GUIDE = (
    "Mouse: drag on the image for a box; a click adds the point chosen under \u201cClick "
    "adds\u201d."
)

# Images of at most this many windows are embedded whole when the widget starts; larger
# ones window by window as prompts reach them.
EMBED_AT_START = 4


class SamWidget(widgets.VBox):
    """Segment Anything on one image, in a notebook.

    Drag a box around an object (or click, with a model trained with clicks: the guide
    under the controls says what this model answers), switch between the candidates
    offered (subpart / part / whole), and commit the chosen one into :attr:`labels`.
    Every action is also a method, so a notebook can drive the widget without a mouse.

    The canvas fills the output's width, and no more of the window's height than leaves
    room for the notebook's bars; the controls sit beside it, or under it in a narrow
    output.

    The image embedding is computed in a background thread when ``background`` is True
    (the default), so the widget shows up at once with a progress bar; methods that need
    it wait for it (see :meth:`wait`).

    Example::

        widget = SamWidget(skimage.data.coins())   # the embedded default model
        widget                                     # show it
        widget.add_box(20, 10, 80, 70)             # what a drag does
        widget.select("whole")
        widget.commit()                            # -> object id 1 in widget.labels
    """

    def __init__(
        self,
        image: object,
        predictor: Predictor | None = None,
        *,
        contrast: Contrast = "auto",
        labels: np.ndarray | None = None,
        max_display_size: int = 640,
        alpha: float = 0.45,
        background: bool = True,
        everything_settings: EverythingSettings | None = None,
        diameter: float | None = None,
    ) -> None:
        """Args:
        image: 2-D grayscale, RGB or RGBA array of any numeric dtype
            (see :mod:`sam_viz.image`).
        predictor: The predictor to use (it may be shared with napari or another
            widget); the embedded default model is loaded when None.
        contrast: Contrast rule for display and for the model (:func:`sam_viz.image.to_rgb01`).
        labels: An (H, W) integer label image to add objects to; a new one when None.
        max_display_size: Longest side of the canvas in canvas pixels; larger images are
            drawn downscaled (prompts are still in full-resolution pixels). The page then
            scales the canvas to fit the output.
        alpha: Opacity of the mask overlays.
        background: Compute the image embedding in a background thread.
        everything_settings: Settings of "Everything" (the generator's defaults when None).
        diameter: Typical object diameter in image pixels; estimated from the image when
            None. Windows of the image are magnified so such objects fill a good part of
            the model's input (:mod:`sam_viz.windows.scale`); the *Diameter* slider changes
            it.

        Raises:
            ValueError / TypeError: For an image or labels of an unsupported shape or dtype.
        """
        self._image = validate_image(image)
        self._contrast = contrast
        height, width = self._image.shape[:2]
        if labels is not None and np.shape(labels) != (height, width):
            raise ValueError(
                f"labels have shape {np.shape(labels)}; they must match the image's "
                f"(height, width) = {(height, width)}."
            )
        self._objects = ObjectLabels(labels if labels is not None else (height, width))
        self._frame = DisplayFrame.fit((height, width), max_display_size)
        display_rgb = self._frame.resample_rgb(
            to_display_rgb(to_rgb01(self._image, contrast=contrast))
        )

        self._predictor = predictor
        self._diameter = diameter
        self._scaled: ScaledImage | None = None
        self._failure: str | None = None
        self._ready = threading.Event()
        self._cancel = threading.Event()
        self._session = Session(self._predict, self._objects)
        self._everything_settings = everything_settings

        self._canvas = PromptCanvas(
            self._frame,
            display_rgb,
            on_click=self._on_click,
            on_box=self._on_box,
            alpha=float(alpha),
            on_drag_left=self._on_drag_left,
        )
        self._canvas.show_objects(self._objects.labels)
        self.canvas = self._canvas.widget
        self._build_controls()
        super().__init__(
            children=self._controls.layout(self.canvas, self.everything_panel.box),
            layout=widgets.Layout(width="100%"),
        )
        self.add_class("sam-viz-widget")

        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._prepare, name="sam-viz-embed", daemon=True)
            self._thread.start()
        else:
            self._prepare()

    # ------------------------------------------------------------------------ views
    def _build_controls(self) -> None:
        """Build the controls, keep them as the widget's attributes and wire their events."""
        self._controls = controls = WidgetControls(self._image.shape[:2])
        self.point_mode = controls.point_mode
        self.candidate_buttons = controls.candidate_buttons
        self.legend = controls.legend
        self.undo_button = controls.undo_button
        self.clear_button = controls.clear_button
        self.commit_button = controls.commit_button
        self.overwrite_check = controls.overwrite_check
        self.progress = controls.progress
        self.diameter_slider = controls.diameter_slider
        self.scale_info = controls.scale_info
        self.status = controls.status
        self.objects_info = controls.objects_info
        self.guide = controls.guide
        spec = self._predictor.spec if self._predictor is not None else MODELS[DEFAULT_MODEL]
        controls.show_guide(f"{prompt_guide(spec)} {MOUSE_GUIDE}")
        self.candidate_buttons.observe(self._on_candidate_toggle, names="value")
        self.undo_button.on_click(lambda _: self._from_ui(self.undo))
        self.clear_button.on_click(lambda _: self._from_ui(self.clear))
        self.commit_button.on_click(
            lambda _: self._from_ui(self.commit, self.overwrite_check.value)
        )
        self.diameter_slider.observe(self._on_diameter_slider, names="value")
        self.everything_panel = EverythingPanel(
            self._generate_everything,
            self._show_found,
            lambda message, kind: self._set_status(message, kind=kind),
            _describe,
            lambda labels, ids, overwrite: self._act(
                self._session.commit_objects, labels, ids, overwrite, status=None
            ),
            lambda: self.overwrite_check.value,
        )
        self.everything_button = self.everything_panel.button
        self.everything_button.on_click(lambda _: self._from_ui(self.segment_everything))
        self._update_controls()
        self._update_objects_info()

    # ------------------------------------------------------------------ background work
    def _prepare(self) -> None:
        """Load the default model if needed, find the object scale and embed the image's
        windows (all of them when there are few, else on demand); report in the status."""
        try:
            if self._predictor is None:
                self._set_status(f"Loading the default model ({MODELS[DEFAULT_MODEL].title})\u2026")
                self._predictor = Predictor.from_pretrained(None, progress=False)
            self._set_status("Finding the object scale\u2026")
            self._scaled = ScaledImage(
                self._predictor, self._image, diameter=self._diameter, contrast=self._contrast
            )
            self._show_scale()
            if len(self._scaled.grid) <= EMBED_AT_START:
                self._set_status("Computing the image embedding\u2026")
                self._scaled.embed_all(progress=self._on_progress, cancel=self._cancel)
        except Cancelled:
            self._failure = "The image embedding was cancelled."
        except Exception as err:  # shown in the widget, not as a traceback
            self._failure = _describe(err)
            self._set_status(f"Cannot segment: {html.escape(self._failure)}", kind="error")
        else:
            self.progress.value = 1.0
            self._set_status(self._ready_message())
        finally:
            self._ready.set()

    def _show_scale(self) -> None:
        """Put the scale in use on the diameter slider (without acting on the change)."""
        if self._scaled is not None:
            self._controls.show_scale(self._scaled)

    def set_diameter(self, diameter: float) -> None:
        """Use objects of ``diameter`` image pixels: later prompts are answered in windows
        magnified for them (the current candidates stay until the next prompt).

        Raises:
            ValueError: For a diameter that is not a positive number.
        """
        self.wait()
        assert self._scaled is not None
        self._scaled = self._scaled.with_diameter(float(diameter))
        self._show_scale()

    @property
    def scale(self) -> ScaledImage | None:
        """The image with its object scale and windows (None until it is ready)."""
        return self._scaled

    def _on_diameter_slider(self, change: dict[str, Any]) -> None:
        if not self._controls.updating and self._ready.is_set():
            self._from_ui(self.set_diameter, float(change["new"]))

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.value = done / max(total, 1)

    def _ready_message(self) -> str:
        assert self._predictor is not None
        spec = self._predictor.spec
        self._controls.show_guide(f"{prompt_guide(spec)} {MOUSE_GUIDE}")
        if spec.trained_with_points:
            return "Ready: click on an object or drag a box around it."
        return "Ready: drag a box around an object."

    def wait(self, timeout: float | None = None) -> None:
        """Block until the image embedding is ready.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Raises:
            TimeoutError: If it is not ready after ``timeout`` seconds.
            RuntimeError: If the model could not be loaded or the embedding failed
                (the message says why).
        """
        if not self._ready.wait(timeout):
            raise TimeoutError(f"The image embedding was not ready after {timeout} s.")
        if self._failure is not None:
            raise RuntimeError(self._failure)

    @property
    def ready(self) -> bool:
        """True once the image embedding is computed (and did not fail)."""
        return self._ready.is_set() and self._failure is None

    @property
    def predictor(self) -> Predictor | None:
        """The predictor in use (None until the default one has loaded)."""
        return self._predictor

    def close(self) -> None:
        """Stop a running embedding and close the widget and its children."""
        self._cancel.set()
        self.everything_panel.close()
        self._canvas.close()
        self._controls.close()
        for child in self.children:
            child.close()
        super().close()

    # ---------------------------------------------------------------------- public API
    @property
    def image(self) -> np.ndarray:
        """The image being segmented, as given."""
        return self._image

    @property
    def display_frame(self) -> DisplayFrame:
        """Mapping between image pixels and canvas pixels."""
        return self._frame

    @property
    def prompts(self) -> PromptSet:
        """The current object's prompts (points and box, image pixels)."""
        return self._session.prompts

    @property
    def candidates(self) -> Candidates | None:
        """The current candidates: ``masks`` (3, H, W) bool, ``names``
        ("subpart", "part", "whole"), ``iou_scores``; None when there are no prompts."""
        return self._session.prediction

    @property
    def selected(self) -> str | None:
        """Name of the candidate shown and committed by :meth:`commit`, or None."""
        return self._session.selected

    @property
    def mask(self) -> np.ndarray | None:
        """The shown candidate mask (H, W) bool, or None."""
        return self._session.mask

    @property
    def labels(self) -> np.ndarray:
        """The (H, W) label image of committed objects (0 is background); the live array."""
        return self._objects.labels

    @property
    def objects(self) -> ObjectLabels:
        """The committed objects."""
        return self._objects

    def add_point(self, x: float, y: float, positive: bool = True) -> Candidates:
        """Add a point prompt at image pixel (x, y) and predict.

        Args:
            x: Column coordinate in original-image pixels.
            y: Row coordinate in original-image pixels.
            positive: True marks the object, False marks background to exclude.

        Returns:
            The new candidates.

        Raises:
            ValueError: If the point lies outside the image, or the model cannot answer a
                point without a box (:class:`~sam_viz.prompts.PromptProblem`); the message
                is also shown in the status line.
            RuntimeError: If the model or embedding is not available.
        """
        return self._act(self._session.add_point, x, y, positive)

    def add_box(self, x0: float, y0: float, x1: float, y1: float) -> Candidates:
        """Set the box prompt (x0, y0, x1, y1) in image pixels and predict.

        A new box replaces the previous one (SAM takes one box per object); :meth:`undo`
        brings the previous one back. Corners may come in any order; a box reaching past
        the image is clipped to it.

        Raises:
            ValueError: If the box has no area or lies outside the image.
            RuntimeError: If the model or embedding is not available.
        """
        return self._act(self._session.add_box, x0, y0, x1, y1)

    def select(self, name_or_index: str | int) -> None:
        """Show an offered candidate: ``"subpart"``, ``"part"``, ``"whole"`` or its index.

        Raises:
            ValueError: If there are no candidates, no such candidate, or it is not offered
                (empty, or a near-duplicate of a better one).
        """
        self._act(self._session.select, name_or_index, layers=(CANDIDATE,))

    def commit(self, overwrite: bool = False) -> int:
        """Add the shown candidate to :attr:`labels` as a new object and start a new one.

        Args:
            overwrite: Also take the pixels of objects committed earlier (the "Overwrite"
                box does this for the Commit button); by default they are kept and the new
                object fills the rest. :meth:`undo` gives them back exactly.

        Returns:
            The new object's label id.

        Raises:
            ValueError: If there is no candidate, it is empty, or it would add no pixel.
        """
        label = self._act(self._session.commit, bool(overwrite), status=None)
        area = int(np.count_nonzero(self._objects.labels == label))
        self._set_status(
            f"Committed object {label} ({area} px). Drag a box around the next object."
        )
        return label

    def undo(self) -> bool:
        """Undo the last action: a prompt, a clear or a commit (exactly).

        Returns:
            False if there was nothing to undo.
        """
        what = self._session.undo_description()
        if what is None:
            self._set_status("Nothing to undo.")
            return False
        self._act(self._session.undo, status=None)
        shown = self._session.describe()
        self._set_status(f"Undid {html.escape(what)}." + (f" {shown}." if shown else ""))
        return True

    def clear(self) -> None:
        """Remove all prompts of the current object (undoable); committed objects stay."""
        if self._act(self._session.clear, status=None):
            self._set_status("Prompts cleared; Undo brings them back.")
        else:
            self._set_status("There are no prompts to clear.")

    def segment_everything(self, background: bool = True) -> EverythingRun:
        """Find every object in the image
        (:class:`~sam_viz.automatic.everything.MaskGenerator`), in a background thread by
        default, as the "Everything" button does.

        The progress bar follows the run and Stop cancels it. The objects found are
        outlined on the canvas (not over committed objects) and kept in :attr:`everything`;
        :meth:`commit_everything` adds them to :attr:`labels`.

        Args:
            background: Run in a background thread (the call returns at once).

        Returns:
            The run: ``run.wait()`` blocks until it ends and returns the segmentation.

        Raises:
            ValueError: If a run is going on already.
        """
        return self.everything_panel.start(background)

    @property
    def everything(self) -> Segmentation | None:
        """What "Everything" found last: ``labels`` (H, W) int32 and ``table()``; None
        before the first run and after :meth:`clear_everything`."""
        return self.everything_panel.result

    def everything_table(self) -> Any:
        """One row per object "Everything" found (``Segmentation.table``): a pandas
        DataFrame indexed by label where pandas is installed, else a list of dicts.

        Raises:
            ValueError: If nothing was found yet.
        """
        return self.everything_panel.table()

    def show_everything(self, visible: bool = True) -> None:
        """Show or hide the objects "Everything" found (they are kept either way)."""
        self.everything_panel.set_visible(visible)

    def clear_everything(self) -> None:
        """Forget the objects "Everything" found; committed objects stay."""
        self.everything_panel.clear()

    @property
    def everything_picked(self) -> tuple[int, ...]:
        """Labels (in :attr:`everything`) of the found objects picked so far."""
        found = self.everything_panel.found
        return () if found is None else tuple(sorted(found.picked))

    def pick_everything(self, x: float, y: float) -> int | None:
        """Pick the found object under image pixel (x, y), or drop it if it was picked (what
        a click does while "Pick" is on).

        Returns:
            Its label in :attr:`everything`, or None where nothing was found.

        Raises:
            ValueError: If "Everything" has found nothing yet.
        """
        return self.everything_panel.pick(x, y)

    def commit_everything(
        self, labels: Iterable[int] | None = None, overwrite: bool = False
    ) -> tuple[int, ...]:
        """Add found objects to :attr:`labels`, one new object each, in one undoable step
        (the prompts and candidates stay).

        Args:
            labels: Their labels in :attr:`everything`; None commits every one.
            overwrite: Also take the pixels of objects committed earlier (by default found
                objects only fill the background).

        Returns:
            The new objects' ids (objects that would add no pixel are left out).

        Raises:
            ValueError: If nothing was found, or no object would add a pixel.
        """
        return self.everything_panel.commit(labels, overwrite)

    def redraw(self) -> None:
        """Send every layer to the page again (done automatically on reconnect)."""
        self._canvas.redraw()

    def candidate_rgba(self) -> np.ndarray | None:
        """The RGBA picture (canvas size) of the shown candidate, as sent to the page."""
        return self._canvas.candidate_rgba

    # ------------------------------------------------------------------- prediction
    def _generate_everything(
        self, progress: ProgressCallback, cancel: threading.Event
    ) -> Segmentation:
        self.wait()
        assert self._predictor is not None and self._scaled is not None
        scaled = self._scaled  # the diameter on the slider, and the windows embedded so far
        generator = MaskGenerator(
            self._predictor, self._everything_settings, diameter=scaled.diameter
        )
        # A large image goes tile by tile (segment_image), not through its windows.
        return segment_image(
            generator, self._image, progress=progress, cancel=cancel, scaled=scaled
        )

    def _predict(self, prompts: PromptSet) -> Candidates:
        self.wait()
        assert self._predictor is not None and self._scaled is not None
        check_answerable(self._predictor.spec, prompts)
        return self._scaled.answer(prompts, progress=self._on_progress, cancel=self._cancel)

    def _act(
        self,
        action: Callable[..., Any],
        *args: Any,
        status: str | None = "shown",
        layers: tuple[int, ...] = (CANDIDATE, PROMPTS),
    ) -> Any:
        """Run a session action, then redraw ``layers`` (and the objects if they changed).

        With ``status="shown"`` the status line then says which candidate is shown; with
        None it is left to the caller. An error is shown in the status line, the prompts
        layer is redrawn (no rubber band left) and the error re-raised.
        """
        objects_version = self._session.objects_version
        try:
            result = action(*args)
        except Exception as err:
            self._show_error(err)
            with hold_canvas():
                self._canvas.show_prompts(self.prompts)
            raise
        with hold_canvas():
            if self._session.objects_version != objects_version:
                self._canvas.show_objects(self._objects.labels)
                self._show_found(self.everything_panel.found)
                self._update_objects_info()
            if CANDIDATE in layers:
                self._canvas.show_candidate(self.mask, candidate_color(self.selected or ""))
            if PROMPTS in layers:
                self._canvas.show_prompts(self.prompts)
        self._update_controls()
        if status == "shown":
            self._say_shown()
        return result

    def _say_shown(self) -> None:
        """Say which candidate is shown, honestly (an empty one is called empty)."""
        shown = self._session.describe()
        if shown is None:
            return
        if self._session.can_commit:
            self._set_status(f"{html.escape(shown)}. Commit keeps it.")
        else:
            self._set_status(html.escape(shown), kind="warning")

    def _show_found(self, found: FoundObjects | None) -> None:
        """Draw what "Everything" found (if shown), leaving committed objects uncovered."""
        if found is None or not found.visible:
            self._canvas.show_everything(None)
        else:
            self._canvas.show_everything(
                found.labels, committed=self._objects.labels, picked=found.picked
            )

    # ------------------------------------------------------------------------ controls
    def _update_controls(self) -> None:
        """Show the session's candidates and which actions can act."""
        prediction = self.candidates
        self._controls.show_candidates(prediction, self._session.selected_index)
        self._controls.show_actions(
            can_undo=self._session.can_undo,
            has_prompts=not self.prompts.empty,
            can_commit=self._session.can_commit,
        )
        what = self._session.undo_description()
        self.undo_button.tooltip = f"Undo {what}" if what else "Nothing to undo"

    def _update_objects_info(self) -> None:
        self._controls.show_objects(self._objects.object_count)

    def _on_candidate_toggle(self, change: dict[str, Any]) -> None:
        if self._controls.updating or change["new"] is None or change["new"] < 0:
            return
        self._from_ui(self.select, int(change["new"]))

    def _set_status(self, message: str, kind: str = "info") -> None:
        """Show ``message`` (HTML) in the status line; kind is info, warning or error."""
        self._controls.set_status(message, kind)

    def _show_error(self, err: BaseException) -> None:
        kind = "warning" if isinstance(err, PromptProblem) else "error"
        self._set_status(html.escape(_describe(err)), kind=kind)

    def _from_ui(self, action: Callable[..., Any], *args: Any) -> None:
        """Run an action started from the page: errors go to the status line, not a traceback."""
        try:
            action(*args)
        except Exception as err:
            self._show_error(err)

    # ------------------------------------------------------------------------ mouse
    def _on_click(self, x: float, y: float) -> None:
        if self.everything_panel.picking:
            with hold_canvas():
                self._canvas.show_prompts(self.prompts)
            self._from_ui(self.pick_everything, x, y)
        elif self._page_ready():
            self._from_ui(self.add_point, x, y, self.point_mode.value == POSITIVE)

    def _on_drag_left(self) -> None:
        self._set_status(
            "The box follows the mouse until you release the button over the image (or "
            "click there, if you released it outside); Esc drops it."
        )

    def _on_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        if self._page_ready():
            self._from_ui(self.add_box, x0, y0, x1, y1)

    def _page_ready(self) -> bool:
        """Whether a gesture can be answered; if not, say why and drop the rubber band."""
        if self._ready.is_set():
            return True
        with hold_canvas():
            self._canvas.show_prompts(self.prompts)
        self._set_status(
            f"Still computing the image embedding ({self.progress.value:.0%}); "
            "try again in a moment.",
            kind="warning",
        )
        return False


def _describe(err: BaseException) -> str:
    """A one-line description of an error for the status line."""
    message = str(err) or type(err).__name__
    if not isinstance(err, (ValueError, TypeError, RuntimeError, KeyError)):
        message = f"{type(err).__name__}: {message}"
    return message
