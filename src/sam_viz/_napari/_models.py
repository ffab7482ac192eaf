"""Choosing the model and device, and loading the chosen model off the UI thread.

The model list shows registry names (short, so the dock stays narrow); each entry's tooltip
has the model's title and what it was trained with.

torch is imported when the model loads (on the loading thread), not when the dock opens.
Until then the device list holds "auto" (the best device here) and "cpu"; the GPUs torch
sees are added once it is loaded, or when the user opens the list.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QWidget

from sam_viz._napari._controls import PopupCombo
from sam_viz._napari._workers import Failed, SerialWorker
from sam_viz.models.registry import DEFAULT_MODEL, MODELS, ModelSpec

if TYPE_CHECKING:  # imports torch, which is imported when the model loads
    from sam_viz.predictor import Predictor

PredictorFactory = Callable[[str, str], "Predictor"]
"""Builds a predictor from (registry name or checkpoint path, device name)."""

CUSTOM_CHECKPOINT = "custom checkpoint..."
GIVEN = "given"
EMBEDDINGS_IN_MEMORY = 64
AUTO_DEVICE = "auto"
AUTO_DEVICE_TIP = "The best device here: a CUDA GPU, then Apple MPS, then the CPU."
Source = tuple[str, str]


def default_predictor_factory(source: str, device: str) -> Predictor:
    """Load ``source`` (a registry name or checkpoint path) on ``device``."""
    # Imported here, on the loading thread: they import torch, and the dock opens without it.
    from sam_viz.predictor import EmbeddingCache, Predictor

    cache = EmbeddingCache(max_items=EMBEDDINGS_IN_MEMORY)
    return Predictor.from_pretrained(source, device=device, cache=cache, progress=False)


def device_choices() -> list[str]:
    """The device list: "auto", then the devices torch sees here, best first, then "cpu"."""
    from sam_viz.device import available_devices  # imports torch (see the module docstring)

    return [AUTO_DEVICE, *available_devices()]


def model_tooltip(spec: ModelSpec) -> str:
    """The details of a registered model, for its entry in the model list."""
    prompts = "boxes, clicks and masks" if spec.trained_with_points else "boxes (and masks) only"
    return f"{spec.title} [{spec.name}]\nTrained with {prompts}."


class ModelChooser(QObject):
    """Drives the model and device combo boxes and loads the chosen model.

    Loading runs on a daemon thread of its own, not a napari worker: it cannot be cancelled,
    and a load still running when napari quits must neither delay the exit nor abort it.

    Signals:
        changed(): the choice changed; the previous predictor is no longer used.
        loaded(predictor): the chosen model is ready.
        failed(error): loading it failed (it is not retried until the choice changes).
    """

    changed = Signal()
    loaded = Signal(object)
    failed = Signal(object)

    def __init__(
        self,
        model_combo: QComboBox,
        device_combo: PopupCombo,
        given: Predictor | None,
        factory: PredictorFactory,
        parent: QWidget,
    ) -> None:
        super().__init__(parent)
        self._models, self._devices = model_combo, device_combo
        self._given = given
        self._factory = factory
        self._dialog_parent = parent
        self.predictor: Predictor | None = given
        self.loading = False
        self._failed_source: Source | None = None
        self._custom_path: str | None = None
        self._loader = SerialWorker("sam_viz model loading", parent=self)
        self._devices_listed = False  # whether the device list has the GPUs torch sees

        if given is not None:
            model_combo.addItem(f"{given.spec.name} (given)", GIVEN)
            _set_tooltip(model_combo, model_tooltip(given.spec))
        for name, spec in MODELS.items():
            model_combo.addItem(name, name)
            _set_tooltip(model_combo, model_tooltip(spec))
        model_combo.addItem(CUSTOM_CHECKPOINT, CUSTOM_CHECKPOINT)
        _set_tooltip(model_combo, "A SAM checkpoint file (.pth, .pt) of a registered variant.")
        model_combo.setCurrentIndex(model_combo.findData(GIVEN if given else DEFAULT_MODEL))
        self._index = model_combo.currentIndex()
        self._show_tooltip()
        if given is not None:
            device_combo.addItem(str(given.device))
            device_combo.setEnabled(False)
        else:
            device_combo.addItems([AUTO_DEVICE, "cpu"])  # the GPUs once torch is loaded
            device_combo.setItemData(0, AUTO_DEVICE_TIP, Qt.ItemDataRole.ToolTipRole)
            if "torch" in sys.modules:  # loaded already: listing the devices costs nothing
                self._list_devices()
        model_combo.currentIndexChanged.connect(self._on_model_index)
        device_combo.currentIndexChanged.connect(self._on_change)
        device_combo.about_to_show.connect(self._list_devices)

    @property
    def spec(self) -> ModelSpec | None:
        """The chosen model's variant, known before loading for registered models."""
        if self.predictor is not None:
            return self.predictor.spec
        return MODELS.get(self._models.currentData())

    def source(self) -> Source | None:
        """(registry name or checkpoint path, device) of the choice; None for the given one."""
        choice = self._models.currentData()
        if choice == GIVEN:
            return None
        path = self._custom_path if choice == CUSTOM_CHECKPOINT else choice
        return str(path), self._devices.currentText()

    def load(self) -> bool:
        """Start loading the chosen model unless it is loaded, loading, or failed to load.

        Returns:
            Whether a load is running now.
        """
        source = self.source()
        if self.predictor is not None or source is None or source == self._failed_source:
            return False
        if not self.loading:
            self.loading = True
            self._loader.submit(self._factory, *source, on_done=partial(self._on_loaded, source))
        return True

    def close(self, wait_s: float = 0.0) -> None:
        """Drop the result of a load still running (waiting up to ``wait_s`` for it to end)."""
        self._loader.shutdown(wait_s)
        self.loading = False

    def ask_checkpoint_path(self) -> str:
        """Ask the user for a checkpoint file (empty if cancelled)."""
        path, _ = QFileDialog.getOpenFileName(
            self._dialog_parent,
            "SAM checkpoint",
            "",
            "PyTorch checkpoints (*.pth *.pt *.ckpt);;All files (*)",
        )
        return path

    def _on_model_index(self, index: int) -> None:
        combo = self._models
        if combo.itemData(index) == CUSTOM_CHECKPOINT:
            path = self.ask_checkpoint_path()
            combo.blockSignals(True)
            if path:
                self._custom_path = path
                combo.setItemText(index, f"checkpoint: {Path(path).name}")
                combo.setItemData(index, path, Qt.ItemDataRole.ToolTipRole)
            else:
                combo.setCurrentIndex(self._index)  # cancelled: keep the previous model
            combo.blockSignals(False)
            if not path:
                return
        self._index = index
        self._show_tooltip()
        if self._given is not None and self.source() is not None and not self._devices.isEnabled():
            self._devices.blockSignals(True)
            self._devices.clear()
            self._devices.setEnabled(True)
            self._devices.blockSignals(False)
            self._list_devices()
        self._on_change()

    def _list_devices(self) -> None:
        """Put the devices torch sees in the device list, keeping the choice ("auto" or "cpu"
        until then). Imports torch if no model has loaded it yet (the user opened the list)."""
        combo = self._devices
        if self._devices_listed or not combo.isEnabled():
            return
        self._devices_listed = True
        current = combo.currentText()
        combo.blockSignals(True)  # the choice stays the same
        combo.clear()
        combo.addItems(device_choices())
        combo.setItemData(0, AUTO_DEVICE_TIP, Qt.ItemDataRole.ToolTipRole)
        combo.setCurrentIndex(max(combo.findText(current), 0))
        combo.blockSignals(False)

    def _show_tooltip(self) -> None:
        """The combo box's tooltip: the details of the model chosen."""
        combo = self._models
        details = combo.itemData(combo.currentIndex(), Qt.ItemDataRole.ToolTipRole)
        combo.setToolTip(f"{details}\nThe embedded models work offline." if details else "")

    def _on_change(self, *_: object) -> None:
        self.predictor = self._given if self.source() is None else None
        self._failed_source = None
        self.changed.emit()

    def _on_loaded(self, source: Source, result: object) -> None:
        self.loading = False
        if "torch" in sys.modules:  # loading imported it: listing the devices costs nothing
            self._list_devices()
        if source != self.source():
            self.changed.emit()  # the choice changed while loading: start again
            return
        if isinstance(result, Failed):
            self._failed_source = source
            self.failed.emit(result.error)
            return
        self.predictor = result  # type: ignore[assignment]
        self.loaded.emit(result)


def _set_tooltip(combo: QComboBox, text: str) -> None:
    """Give the combo box's last entry a tooltip."""
    combo.setItemData(combo.count() - 1, text, Qt.ItemDataRole.ToolTipRole)
