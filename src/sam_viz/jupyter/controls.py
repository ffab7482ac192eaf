"""The Jupyter widget's controls: built, laid out and updated from plain values.

:class:`WidgetControls` holds the ipywidgets of :class:`~sam_viz.jupyter.widget.SamWidget`
(the point toggle, the candidate buttons and their legend, undo/clear/commit with the
overwrite box, the embedding progress, the diameter slider, the status, objects and guide
lines). It knows no session and no model: the widget wires the controls' events and tells
them what to show, as the napari dock widget does with its ``_controls``.

Layout: the canvas first, the controls in a column beside it, or under it where the output
is too narrow for both. Nothing above the canvas changes height, and the status line and the
progress bar keep a fixed height, so neither the canvas nor the buttons move under the mouse.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets
import numpy as np

from sam_viz.predictor import Candidates
from sam_viz.prompts import NEGATIVE, POSITIVE
from sam_viz.render import candidate_color
from sam_viz.windows.scaled import ScaledImage

NO_CANDIDATES = "none yet"
STATUS_COLORS = {"info": "inherit", "warning": "#9a6700", "error": "#c62828"}
STATUS_PREFIXES = {"info": "", "warning": "\u26a0 ", "error": "\u2716 "}
# Width of the controls column: three candidate buttons and the commit row fit in it.
PANEL_WIDTH = "360px"
# The canvas goes beside the controls while it gets at least this width, else above them.
CANVAS_MIN_WIDTH = "360px"
# Four lines: the longest status (an error naming a checkpoint) scrolls rather than grows.
STATUS_HEIGHT = "6em"
# Page styles the ipywidgets Layout cannot express: crisp magnified pixels, a scrolling
# status line, one legend entry per line.
STYLE = """<style>
.sam-viz-widget canvas.sam-viz-canvas { image-rendering: pixelated; }
.sam-viz-widget .sam-viz-status-box .widget-html-content,
.sam-viz-widget .sam-viz-legend-box .widget-html-content { line-height: 1.5em; }
.sam-viz-widget .sam-viz-legend > .sam-viz-cand { white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.sam-viz-widget .sam-viz-guide { color: var(--jp-ui-font-color2, #616161);
  font-size: 0.92em; line-height: 1.35em; }
</style>"""


def button(description: str, icon: str, tooltip: str, *, width: str = "auto", **options: Any):
    """An ipywidgets Button with an icon and a tooltip, ``width`` wide."""
    return widgets.Button(
        description=description,
        icon=icon,
        tooltip=tooltip,
        layout=widgets.Layout(width=width),
        **options,
    )


def checkbox(description: str, tooltip: str, *, value: bool = False):
    """An ipywidgets Checkbox without the indent, as wide as its text."""
    return widgets.Checkbox(
        value=value,
        description=description,
        indent=False,
        tooltip=tooltip,
        layout=widgets.Layout(width="auto"),
    )


class WidgetControls:
    """Every control of the widget but the canvas and the "Everything" panel.

    Args:
        image_hw: (H, W) of the image, for the diameter slider's range.
    """

    def __init__(self, image_hw: tuple[int, int]) -> None:
        # True while the controls are set from Python: their observers ignore those changes.
        self.updating = False
        self.style = widgets.HTML(STYLE, layout=widgets.Layout(display="none"))
        self.point_mode = widgets.ToggleButtons(
            options=[("+ point", POSITIVE), ("\u2212 point", NEGATIVE)],
            value=POSITIVE,
            description="Click adds",
            tooltips=["A click marks the object", "A click marks background to exclude"],
            style={"button_width": "80px", "description_width": "initial"},
        )
        self.candidate_buttons = widgets.ToggleButtons(
            options=[(NO_CANDIDATES, -1)],
            value=-1,
            disabled=True,
            description="Candidate",
            style={"button_width": "auto", "description_width": "initial"},
        )
        self.legend = widgets.HTML(layout=widgets.Layout(min_height="4.6em"))
        self.legend.add_class("sam-viz-legend-box")
        self.undo_button = button(
            "Undo",
            "undo",
            "Undo the last prompt, clear or commit",
            width="86px",
        )
        self.clear_button = button(
            "Clear",
            "eraser",
            "Remove all prompts of this object",
            width="86px",
        )
        self.commit_button = button(
            "Commit",
            "check",
            "Add the shown candidate to the labels",
            width="96px",
            button_style="success",
        )
        self.overwrite_check = checkbox(
            "Overwrite",
            "Commit also over objects committed earlier (Undo gives them back)",
            value=False,
        )
        self.progress = widgets.FloatProgress(
            value=0,
            min=0,
            max=1,
            description="Embedding",
            layout=widgets.Layout(width="320px", height="20px"),
        )
        self.diameter_slider = _diameter_slider(image_hw)
        self.scale_info = widgets.HTML()
        self.status = widgets.HTML(
            layout=widgets.Layout(height=STATUS_HEIGHT, min_height=STATUS_HEIGHT, overflow="auto")
        )
        self.status.add_class("sam-viz-status-box")
        self.objects_info = widgets.HTML()
        self.guide = widgets.HTML()

    def layout(self, canvas: widgets.Widget, everything: widgets.Widget) -> list[widgets.Widget]:
        """The widget's children: the ``canvas``, and beside it (or under it, in a narrow
        output) a column of controls ending with the ``everything`` panel."""
        buttons = widgets.HBox(
            [self.undo_button, self.clear_button, self.commit_button, self.overwrite_check],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        panel = widgets.VBox(
            [
                self.status,
                self.progress,
                buttons,
                self.objects_info,
                self.point_mode,
                self.candidate_buttons,
                self.legend,
                self.diameter_slider,
                self.scale_info,
                everything,
                self.guide,
            ],
            layout=widgets.Layout(flex=f"1 1 {PANEL_WIDTH}", max_width="560px", min_width="0"),
        )
        panel.add_class("sam-viz-controls")
        canvas_box = widgets.Box(
            [canvas],
            layout=widgets.Layout(
                flex=f"1000 1 {CANVAS_MIN_WIDTH}", min_width="0", align_items="flex-start"
            ),
        )
        main = widgets.Box(
            [canvas_box, panel],
            layout=widgets.Layout(
                flex_flow="row wrap", align_items="flex-start", width="100%", overflow="hidden"
            ),
        )
        self._boxes = (buttons, panel, canvas_box, main)
        return [self.style, main]

    @contextmanager
    def _setting(self) -> Iterator[None]:
        """Mark the changes made inside as the program's, not the user's."""
        self.updating = True
        try:
            yield
        finally:
            self.updating = False

    # ------------------------------------------------------------------------ updates
    def show_candidates(self, prediction: Candidates | None, selected_index: int | None) -> None:
        """The buttons and legend of the candidates ``prediction`` offers (none when None)."""
        with self._setting():
            if prediction is None:
                self.candidate_buttons.options = [(NO_CANDIDATES, -1)]
                self.candidate_buttons.value = -1
                self.candidate_buttons.disabled = True
                self.legend.value = ""
                return
            options = [
                (f"{prediction.names[i]} {prediction.iou_scores[i]:.2f}", i)
                for i in prediction.offered
            ]
            if list(self.candidate_buttons.options) != options:
                self.candidate_buttons.options = options
            self.candidate_buttons.value = (
                selected_index if selected_index in prediction.offered else None
            )
            self.candidate_buttons.disabled = len(options) < 2
            self.candidate_buttons.tooltips = [prediction.describe(i) for i in prediction.offered]
            self.legend.value = legend_html(prediction, selected_index)

    def show_actions(self, *, can_undo: bool, has_prompts: bool, can_commit: bool) -> None:
        """Enable undo, clear and commit where they can act."""
        self.undo_button.disabled = not can_undo
        self.clear_button.disabled = not has_prompts
        self.commit_button.disabled = not can_commit

    def show_scale(self, scaled: ScaledImage) -> None:
        """Put the scale in use on the diameter slider (without acting on the change)."""
        with self._setting():
            self.diameter_slider.value = scaled.diameter
        self.diameter_slider.tooltip = f"{scaled.scale} ({scaled.diameter_source})"
        self.scale_info.value = (
            f"<span class='sam-viz-scale'>{html.escape(str(scaled.scale))} "
            f"({html.escape(str(scaled.diameter_source))})</span>"
        )

    def show_objects(self, count: int) -> None:
        """How many objects are committed."""
        self.objects_info.value = (
            f"<span>{count} object{'s' if count != 1 else ''} committed</span>"
        )

    def show_guide(self, text: str) -> None:
        """What to draw for this model, and what the mouse does (plain text)."""
        self.guide.value = f"<div class='sam-viz-guide'>{html.escape(text)}</div>"

    def set_status(self, message: str, kind: str = "info") -> None:
        """Show ``message`` (HTML) in the status line; kind is info, warning or error."""
        color = STATUS_COLORS[kind]
        prefix = STATUS_PREFIXES[kind]
        self.status.value = (
            f"<div class='sam-viz-status sam-viz-{kind}' "
            f"style='color:{color}'>{prefix}{message}</div>"
        )

    def close(self) -> None:
        """Close every control and the boxes that lay them out."""
        for control in (
            self.style,
            self.point_mode,
            self.candidate_buttons,
            self.legend,
            self.undo_button,
            self.clear_button,
            self.commit_button,
            self.overwrite_check,
            self.progress,
            self.status,
            self.objects_info,
            self.guide,
            self.diameter_slider,
            self.scale_info,
            *getattr(self, "_boxes", ()),
        ):
            control.close()


def _diameter_slider(image_hw: tuple[int, int]) -> widgets.FloatLogSlider:
    """A log slider of object diameters from 2 pixels to the image's longer side."""
    height, width = image_hw
    return widgets.FloatLogSlider(
        value=max(2.0, min(height, width) / 8),
        base=2,
        min=1,
        max=np.log2(max(height, width)),
        step=0.05,
        description="Diameter",
        readout_format=".0f",
        continuous_update=False,
        tooltip="Typical object diameter in image pixels",
        layout=widgets.Layout(width="100%", max_width="340px"),
    )


def legend_html(prediction: Candidates, selected_index: int | None) -> str:
    """Each offered candidate's colour, name, predicted IoU and area (the shown one in
    bold), and why fewer than the model's candidates are offered."""
    items = []
    for i in prediction.offered:
        name = prediction.names[i]
        r, g, b = candidate_color(name)
        text = f"{html.escape(name)}: IoU {prediction.iou_scores[i]:.3f}, {prediction.areas[i]} px"
        if i == selected_index:
            text = f"<b>{text} (shown)</b>"
        swatch = (
            f"<span style='display:inline-block;width:0.9em;height:0.9em;"
            f"background:rgb({r},{g},{b});margin-right:0.3em'></span>"
        )
        items.append(f"<div class='sam-viz-cand'>{swatch}{text}</div>")
    notes = [prediction.offer_note, *prediction.notes]
    items += [f"<div class='sam-viz-note'>{html.escape(n)}</div>" for n in notes if n]
    return "<div class='sam-viz-legend'>" + "".join(items) + "</div>"
