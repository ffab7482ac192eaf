"""The dock's embedding controls: the window embedder of the current image and model, its
progress bar and Cancel button, and the object diameter it embeds at.

One :class:`~sam_viz._napari._embedder.WindowEmbedder` serves one (image, predictor,
diameter); :meth:`EmbeddingPanel.discard` drops it when any of them changes, and the next
prompt makes a new one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QDoubleSpinBox, QProgressBar, QPushButton

from sam_viz._napari._embedder import WindowEmbedder
from sam_viz._napari._scale import DiameterControl
from sam_viz._napari._slicing import Plane
from sam_viz._napari._workers import WorkerPool
from sam_viz.windows.scaled import ScaledImage

if TYPE_CHECKING:  # imports torch, which is imported when the model loads
    from sam_viz.predictor import Predictor

NOT_COMPUTED = "embedding: not computed"


class EmbeddingPanel(QObject):
    """Drives the embedding progress bar, its Cancel button and the diameter field.

    Signals:
        ready(plane): a plane was prepared or the windows asked for are embedded.
        failed(error): embedding stopped (a ``Cancelled`` error when the user cancelled).
        diameter_changed(): the user set another diameter.

    Args:
        progress: The embedding progress bar (0..1000).
        cancel_button: Its Cancel button.
        diameter_spin: The diameter field (0 means auto).
        pool: The thread pool embedding workers run on.
        parent: Qt parent.
    """

    ready = Signal(object)
    failed = Signal(object)
    diameter_changed = Signal()

    def __init__(
        self,
        progress: QProgressBar,
        cancel_button: QPushButton,
        diameter_spin: QDoubleSpinBox,
        pool: WorkerPool,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._pool = pool
        self._progress = progress
        self._cancel_button = cancel_button
        self._diameter = DiameterControl(diameter_spin, self)
        self._diameter.changed.connect(self.diameter_changed.emit)
        self._embedder: WindowEmbedder | None = None
        cancel_button.clicked.connect(self.cancel)

    # ------------------------------------------------------------------ the embedder
    def embedder(self, predictor: Predictor, data: object, rgb: bool) -> WindowEmbedder:
        """The embedder of the current image and model, made on first use."""
        if self._embedder is None:
            embedder = WindowEmbedder(predictor, data, rgb, self.diameter, self._pool, self)
            embedder.ready.connect(self._on_ready)
            embedder.failed.connect(self.failed.emit)
            embedder.progress.connect(self.set_progress)
            embedder.progress.connect(lambda *_: self._cancel_button.setEnabled(True))
            embedder.idle.connect(lambda: self._cancel_button.setEnabled(False))
            embedder.idle.connect(lambda: self.show_diameter(None))
            self._embedder = embedder
        return self._embedder

    def discard(self) -> None:
        """Drop the embedder and its queue (the image, model, device or scale changed)."""
        if self._embedder is not None:
            self._embedder.discard()
            self._embedder = None
        self.set_progress(0, NOT_COMPUTED)
        self._cancel_button.setEnabled(False)

    def cancel(self) -> None:
        """Stop the running embedding (and a precomputation of all planes)."""
        if self._embedder is not None:
            self._embedder.cancel()

    @property
    def running(self) -> bool:
        """Whether planes are being prepared or windows embedded."""
        return self._embedder is not None and self._embedder.running

    @property
    def embedded_planes(self) -> set[Plane]:
        """The planes with at least one window embedded."""
        return self._embedder.embedded_planes if self._embedder is not None else set()

    def image(self, plane: Plane | None) -> ScaledImage | None:
        """The plane's scaled image, once prepared."""
        if self._embedder is None or plane is None:
            return None
        return self._embedder.image(plane)

    def _on_ready(self, plane: Plane) -> None:
        self.show_diameter(None)
        self.ready.emit(plane)

    # ------------------------------------------------------------------ what is shown
    def set_progress(self, value: int, text: str, busy: bool = False) -> None:
        """Show ``value`` (0..1000) and ``text``; ``busy`` shows an endless bar."""
        self._progress.setRange(0, 0 if busy else 1000)
        self._progress.setValue(value)
        self._progress.setFormat(text)

    @property
    def diameter(self) -> float | None:
        """The diameter the user set, or None for the estimate."""
        return self._diameter.value

    @property
    def known_diameter(self) -> float | None:
        """The diameter in use: the user's, else the estimate once there is one."""
        estimate = self._embedder.diameter if self._embedder is not None else None
        return self.diameter or estimate

    def set_diameter(self, diameter: float | None) -> None:
        """Set the diameter field (None: auto)."""
        self._diameter.set(diameter)

    def show_diameter(self, scaled: ScaledImage | None) -> None:
        """Show the estimate beside "auto", and ``scaled``'s scale in the tooltip."""
        estimate = self._embedder.diameter if self._embedder is not None else None
        self._diameter.show(estimate, scaled)
