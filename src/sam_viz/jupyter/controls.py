"""The Jupyter widget's controls: built, laid out and updated from plain values.

:class:`WidgetControls` holds the ipywidgets of :class:`~sam_viz.jupyter.widget.SamWidget`
(the point toggle, the candidate buttons and their legend, undo/clear/commit, the embedding
progress, the diameter slider, the status and objects lines). It knows no session and no
model: the widget wires the controls' events and tells them what to show, as the napari
dock widget does with its ``_controls``.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager

import ipywidgets as widgets
import numpy as np

from sam_viz.predictor import Candidates
from sam_viz.prompts import NEGATIVE, POSITIVE
from sam_viz.render import candidate_color
from sam_viz.windows.scaled import ScaledImage

STATUS_COLORS = {"info": "inherit", "warning": "#9a6700", "error": "#c62828"}
STATUS_PREFIXES = {"info": "", "warning": "\u26a0 ", "error": "\u2716 "}


class WidgetControls:
    """Every control of the widget but the canvas and the "Everything" panel.

    Args:
        image_hw: (H, W) of the image, for the diameter slider's range.
    """

    def __init__(self, image_hw: tuple[int, int]) -> None:
        # True while the controls are set from Python: their observers ignore those changes.
        self.updating = False
        self.point_mode = widgets.ToggleButtons(
            options=[("+ point", POSITIVE), ("\u2212 point", NEGATIVE)],
            value=POSITIVE,
            description="Click adds",
            tooltips=["A click marks the object", "A click marks background to exclude"],
            style={"button_width": "70px"},
        )
        self.candidate_buttons = widgets.ToggleButtons(
            options=[("no candidates yet", -1)],
            value=-1,
            disabled=True,
            description="Candidate",
            style={"button_width": "110px"},
        )
        self.legend = widgets.HTML()
        self.undo_button = widgets.Button(
            description="Undo", icon="undo", tooltip="Undo the last prompt, clear or commit"
        )
        self.clear_button = widgets.Button(
            description="Clear", icon="eraser", tooltip="Remove all prompts of this object"
        )
        self.commit_button = widgets.Button(
            description="Commit",
            icon="check",
            button_style="success",
            tooltip="Add the shown candidate to the labels",
        )
        self.progress = widgets.FloatProgress(
            value=0, min=0, max=1, description="Embedding", layout=widgets.Layout(width="320px")
        )
        self.diameter_slider = _diameter_slider(image_hw)
        self.scale_info = widgets.HTML()
        self.status = widgets.HTML()
        self.objects_info = widgets.HTML()

    def layout(self, canvas: widgets.Widget, everything: widgets.Widget) -> list[widgets.Widget]:
        """The widget's children, top to bottom, with the ``canvas`` and the ``everything``
        panel in their places."""
        buttons = widgets.HBox(
            [self.undo_button, self.clear_button, self.commit_button, self.objects_info]
        )
        scale = widgets.HBox([self.diameter_slider, self.scale_info])
        return [
            self.status,
            self.progress,
            self.point_mode,
            scale,
            canvas,
            self.candidate_buttons,
            self.legend,
            buttons,
            everything,
        ]

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
        """The candidate buttons and legend for ``prediction`` (none when None)."""
        with self._setting():
            if prediction is None:
                self.candidate_buttons.options = [("no candidates yet", -1)]
                self.candidate_buttons.value = -1
                self.candidate_buttons.disabled = True
                self.legend.value = ""
            else:
                options = [
                    (f"{name} {score:.2f}", i)
                    for i, (name, score) in enumerate(
                        zip(prediction.names, prediction.iou_scores, strict=True)
                    )
                ]
                if list(self.candidate_buttons.options) != options:
                    self.candidate_buttons.options = options
                self.candidate_buttons.value = selected_index
                self.candidate_buttons.disabled = False
                self.legend.value = legend_html(prediction, selected_index)

    def show_actions(self, *, can_undo: bool, has_prompts: bool, has_candidates: bool) -> None:
        """Enable undo, clear and commit where they can act."""
        self.undo_button.disabled = not can_undo
        self.clear_button.disabled = not has_prompts
        self.commit_button.disabled = not has_candidates

    def show_scale(self, scaled: ScaledImage) -> None:
        """Put the scale in use on the diameter slider (without acting on the change)."""
        with self._setting():
            self.diameter_slider.value = scaled.diameter
        self.diameter_slider.description_tooltip = f"{scaled.scale} ({scaled.diameter_source})"
        self.scale_info.value = (
            f"<span class='sam-viz-scale'>{html.escape(str(scaled.scale))} "
            f"({html.escape(str(scaled.diameter_source))})</span>"
        )

    def show_objects(self, count: int) -> None:
        """How many objects are committed."""
        self.objects_info.value = (
            f"<span style='margin-left:1em'>{count} object{'s' if count != 1 else ''} "
            "committed</span>"
        )

    def set_status(self, message: str, kind: str = "info") -> None:
        """Show ``message`` (HTML) in the status line; kind is info, warning or error."""
        color = STATUS_COLORS[kind]
        prefix = STATUS_PREFIXES[kind]
        self.status.value = (
            f"<div class='sam-viz-status sam-viz-{kind}' "
            f"style='color:{color}'>{prefix}{message}</div>"
        )

    def close(self) -> None:
        """Close every control."""
        for control in (
            self.point_mode,
            self.candidate_buttons,
            self.legend,
            self.undo_button,
            self.clear_button,
            self.commit_button,
            self.progress,
            self.status,
            self.objects_info,
            self.diameter_slider,
            self.scale_info,
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
        description_tooltip="Typical object diameter in image pixels",
    )


def legend_html(prediction: Candidates, selected_index: int | None) -> str:
    """Each candidate's colour, name, predicted IoU and area; the shown one in bold."""
    items = []
    scores = zip(prediction.names, prediction.iou_scores, strict=True)
    for i, (name, score) in enumerate(scores):
        r, g, b = candidate_color(name)
        area = int(prediction.masks[i].sum())
        text = f"{html.escape(name)}: IoU {score:.3f}, {area} px"
        if i == selected_index:
            text = f"<b>{text} (shown)</b>"
        swatch = (
            f"<span style='display:inline-block;width:0.9em;height:0.9em;"
            f"background:rgb({r},{g},{b});margin-right:0.3em'></span>"
        )
        items.append(f"<span style='margin-right:1.2em'>{swatch}{text}</span>")
    return "<div class='sam-viz-legend'>" + "".join(items) + "</div>"
