"""The object diameter control of the dock: the user's value, or "auto" with the estimate."""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QDoubleSpinBox

from sam_viz.windows.scaled import ScaledImage

HELP = (
    "Typical object diameter in image pixels; windows are magnified so such objects fill a "
    "good part of the model's input. 'auto' estimates it from the image."
)


class DiameterControl(QObject):
    """Reads and shows the object diameter on a spin box whose 0 means "auto".

    Signals:
        changed(): the user set another diameter (or went back to auto).
    """

    changed = Signal()

    def __init__(self, spin: QDoubleSpinBox, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.spin = spin
        spin.valueChanged.connect(lambda *_: self.changed.emit())

    @property
    def value(self) -> float | None:
        """The diameter the user set (image pixels), or None for the estimate."""
        value = self.spin.value()
        return float(value) if value > 0 else None

    def set(self, diameter: float | None) -> None:
        """Set the diameter (None: estimate it)."""
        self.spin.setValue(0 if diameter is None else float(diameter))

    def show(self, estimate: float | None, scaled: ScaledImage | None) -> None:
        """Show the estimate beside "auto", and the scale in use in the tooltip."""
        auto = "auto" if estimate is None or self.value else f"auto ({estimate:.0f} px)"
        if self.spin.specialValueText() != auto:
            self.spin.setSpecialValueText(auto)
        now = f"\nNow: {scaled.scale} ({scaled.diameter_source})." if scaled is not None else ""
        self.spin.setToolTip(HELP + now)
