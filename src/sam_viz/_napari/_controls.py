"""The dock widget's Qt controls: layout only, no behaviour (see ``_widget``)."""

from __future__ import annotations

from typing import TypeVar

from qtpy.QtCore import QEvent, QObject, QSize, Qt, Signal
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from sam_viz.files import shared_store
from sam_viz.prompts import CANDIDATE_NAMES

# Characters a combo box shows before eliding: long model, image or checkpoint names must
# not widen the dock (the full name is in the list and the tooltip).
COMBO_CHARS = 14

KEYS_HELP = (
    "Keys (in the SAM layers): 1/2/3 choose subpart/part/whole, C commits, N toggles "
    "negative points; Shift+click adds a negative point; R draws a box, P a polygon, "
    "E an ellipse in the boxes layer. Shift+P (also in the objects layer) propagates the "
    "selected object through the stack. Ctrl+Z in the objects layer undoes a commit."
)


class Controls(QWidget):
    """Every control of the dock widget, laid out top to bottom."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.addLayout(self._model_form())
        self.guide_label = _wrapped_label()
        layout.addWidget(self.guide_label)
        layout.addLayout(self._prompt_row())
        layout.addLayout(self._embedding_row())
        self.embed_all_button = QPushButton("Embed all")
        self.embed_all_button.setToolTip(
            "Precompute the embedding of every window of the image (of every plane of a stack)."
        )
        self.disk_cache_check = QCheckBox("Keep embeddings on disk")
        self.disk_cache_check.setToolTip(
            f"Keep window embeddings in {shared_store()} and read them back: a reopened "
            "image needs no encoding. `sam-viz embed IMAGE --shared-cache` fills the same "
            "store, so embedding once serves both."
        )
        embed_row = QHBoxLayout()
        embed_row.addWidget(self.embed_all_button)
        embed_row.addWidget(self.disk_cache_check)
        layout.addLayout(embed_row)
        layout.addWidget(self._candidates_box())
        layout.addLayout(self._commit_form())
        layout.addLayout(self._commit_row())
        self._status(layout)  # under the candidates and Commit it speaks of
        layout.addWidget(self._automatic_box())
        keys = _wrapped_label(KEYS_HELP)
        keys.setStyleSheet("color: gray;")
        layout.addWidget(keys)
        layout.addStretch(1)

    def _model_form(self) -> QFormLayout:
        """The image, model, device and object diameter."""
        form = QFormLayout()
        self.image_combo = _narrow_combo(QComboBox())
        self.image_combo.setToolTip("The image to segment: 2-D gray or RGB, or a stack.")
        self.model_combo = _narrow_combo(QComboBox())
        self.device_combo = _narrow_combo(PopupCombo())
        self.diameter_spin = QDoubleSpinBox()
        self.diameter_spin.setRange(0, 10_000)
        self.diameter_spin.setDecimals(1)
        self.diameter_spin.setSuffix(" px")
        self.diameter_spin.setSpecialValueText("auto")  # 0: estimated from the image
        self.diameter_spin.setKeyboardTracking(False)
        self.diameter_spin.setToolTip("Typical object diameter, image pixels; 'auto' estimates it.")
        self.diameter_from_box_button = QPushButton("From box")
        self.diameter_from_box_button.setToolTip("Set the diameter from the boxes drawn.")
        scale = QHBoxLayout()
        scale.addWidget(self.diameter_spin, 1)
        scale.addWidget(self.diameter_from_box_button)
        form.addRow("Image", self.image_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Diameter", scale)
        return form

    def _prompt_row(self) -> QHBoxLayout:
        """The buttons that pick the prompt layers, and the negative-point switch."""
        prompts = QHBoxLayout()
        self.box_button = QPushButton("Draw box (R)")
        self.box_button.setToolTip("Select the boxes layer in rectangle mode.")
        self.points_button = QPushButton("Add points")
        self.points_button.setToolTip("Select the points layer in add mode.")
        self.negative_check = QCheckBox("Negative (N)")
        self.negative_check.setToolTip("New points mark background; Shift+click adds one too.")
        prompts.addWidget(self.box_button)
        prompts.addWidget(self.points_button)
        prompts.addWidget(self.negative_check)
        return prompts

    def _embedding_row(self) -> QHBoxLayout:
        """The embedding's progress bar and its cancel button."""
        embedding = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("embedding: not computed")
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        embedding.addWidget(self.progress, 1)
        embedding.addWidget(self.cancel_button)
        return embedding

    def _candidates_box(self) -> QGroupBox:
        """One radio button per candidate mask (subpart, part, whole)."""
        candidates = QGroupBox("Candidate (keys 1/2/3)")
        candidates_layout = QVBoxLayout(candidates)
        self.candidate_group = QButtonGroup(self)
        self.candidate_buttons: list[QRadioButton] = []
        for index, name in enumerate(CANDIDATE_NAMES):
            button = QRadioButton(f"{index + 1}  {name}")
            button.setEnabled(False)  # until there are candidates
            self.candidate_group.addButton(button, index)
            self.candidate_buttons.append(button)
            candidates_layout.addWidget(button)
        return candidates

    def show_candidates(self, texts: list[str], offered: set[int], chosen: int | None) -> None:
        """Label the candidate buttons, enable the ``offered`` ones and check ``chosen``
        (None: no candidates, every button unchecked)."""
        self.candidate_group.setExclusive(False)  # an exclusive group cannot uncheck all
        for index, button in enumerate(self.candidate_buttons):
            button.setText(texts[index])
            button.setEnabled(index in offered)
            button.setChecked(index == chosen)
        self.candidate_group.setExclusive(True)

    def _commit_form(self) -> QFormLayout:
        """The object id to commit as, and whether to overwrite other objects."""
        commit_form = QFormLayout()
        self.label_spin = QSpinBox()
        self.label_spin.setRange(0, 2**31 - 1)
        self.label_spin.setSpecialValueText("new")
        self.label_spin.setToolTip("Object id to commit as; 'new' gives the next free id.")
        self.overwrite_check = QCheckBox("Overwrite other objects")
        commit_form.addRow("Object id", self.label_spin)
        commit_form.addRow("", self.overwrite_check)
        return commit_form

    def _commit_row(self) -> QHBoxLayout:
        """Commit, undo and clear."""
        actions = QHBoxLayout()
        self.commit_button = QPushButton("Commit (C)")
        self.undo_button = QPushButton("Undo")
        self.clear_button = QPushButton("Clear prompts")
        actions.addWidget(self.commit_button)
        actions.addWidget(self.undo_button)
        actions.addWidget(self.clear_button)
        return actions

    def _automatic_box(self) -> QGroupBox:
        """Segment everything, propagate, and the progress of the task running."""
        automatic = QGroupBox("Automatic")
        automatic_layout = QVBoxLayout(automatic)
        buttons = QHBoxLayout()
        self.everything_button = QPushButton("Segment everything")
        self.everything_button.setToolTip(
            "Find every object on the plane on screen, into the 'SAM everything' layer."
        )
        self.propagate_button = QPushButton("Propagate (Shift+P)")
        self.propagate_button.setToolTip(
            "Carry the object selected in 'SAM objects' from this slice to the neighbouring "
            "slices of the stack, until it ends."
        )
        buttons.addWidget(self.everything_button)
        buttons.addWidget(self.propagate_button)
        automatic_layout.addLayout(buttons)
        task = QHBoxLayout()
        self.task_progress = QProgressBar()
        self.task_progress.setRange(0, 1000)
        self.task_progress.setValue(0)
        self.task_progress.setFormat("no task running")
        self.task_progress.setTextVisible(True)
        self.task_cancel_button = QPushButton("Cancel")
        self.task_cancel_button.setEnabled(False)
        task.addWidget(self.task_progress, 1)
        task.addWidget(self.task_cancel_button)
        automatic_layout.addLayout(task)
        return automatic

    def _status(self, layout: QVBoxLayout) -> None:
        """The status line, added to ``layout``."""
        self.status_label = _wrapped_label()
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status_label)


class ScrollingControls(QScrollArea):
    """The controls in a vertical scroll area: a short window scrolls them rather than
    squeezing them, and the dock is as wide as the controls need, no wider."""

    def __init__(self, controls: Controls, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(controls)
        controls.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the controls' size changed (napari's style, longer text)
        return super().eventFilter(obj, event)

    def _width(self, content: QSize) -> int:
        # The scroll bar and what the style puts around the viewport (2 px with napari's).
        around = self.width() - self.viewport().width() if self.isVisible() else 0
        return content.width() + max(around, self.verticalScrollBar().sizeHint().width() + 2)

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        return QSize(self._width(self.widget().minimumSizeHint()), hint.height())

    def sizeHint(self) -> QSize:
        content = self.widget().sizeHint()
        return QSize(self._width(content), content.height())


def _wrapped_label(text: str = "") -> QLabel:
    """A label that wraps its text to the dock's width instead of widening the dock (a
    wrapped label asks for a width that suits its text, 550 px for the keys' help)."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


class PopupCombo(QComboBox):
    """A combo box that says when its list is about to open (to fill it then).

    Signals:
        about_to_show(): the list is about to open (handlers run before it does).
    """

    about_to_show = Signal()

    def showPopup(self) -> None:
        self.about_to_show.emit()
        super().showPopup()


Combo = TypeVar("Combo", bound=QComboBox)


def _narrow_combo(combo: Combo) -> Combo:
    """Make ``combo`` as wide as :data:`COMBO_CHARS` characters, whatever its entries."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(COMBO_CHARS)
    return combo
