"""When to run work, as plain Python state machines (no Qt): testable with a fake clock.

* :class:`Debouncer` turns a burst of prompt edits into few prediction requests.
* :class:`LatestWins` keeps at most one prediction running and one waiting; results of
  requests that were superseded while they ran are dropped, so stale masks never show.
* :class:`PlaneQueue` is the work list of the embedding thread: planes to embed, the one
  the user is looking at first, shared safely between the UI thread and the worker.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class Debouncer:
    """Leading- and trailing-edge debounce with a maximum wait.

    The first edit after a quiet period runs at once (no added latency for a single
    change); edits that follow within ``delay_s`` of each other are coalesced and run
    ``delay_s`` after the last one, but never later than ``max_wait_s`` after the first
    coalesced edit, so a long drag still updates now and then.

    Usage: on each edit call :meth:`poke` and (re)start a single-shot timer with the
    returned delay; when the timer fires call :meth:`fired` and do the work.
    """

    def __init__(self, delay_s: float = 0.06, max_wait_s: float = 0.25) -> None:
        """Args:
        delay_s: Quiet time that ends a burst of edits.
        max_wait_s: Longest time an edit waits while edits keep coming.
        """
        if delay_s < 0 or max_wait_s < delay_s:
            raise ValueError(
                f"Need 0 <= delay_s <= max_wait_s, got delay_s={delay_s}, max_wait_s={max_wait_s}."
            )
        self.delay_s = delay_s
        self.max_wait_s = max_wait_s
        self._last_poke: float | None = None
        self._first_waiting: float | None = None
        self._immediate = False

    def poke(self, now: float) -> float:
        """Register an edit at time ``now`` (seconds); returns the delay before running."""
        quiet = self._last_poke is None or now - self._last_poke >= self.delay_s
        self._last_poke = now
        if self._immediate:
            return 0.0  # an immediate run is pending: it will see this edit too
        if self._first_waiting is None:
            self._first_waiting = now
            if quiet:
                self._immediate = True
                return 0.0
        waited = now - self._first_waiting
        return max(0.0, min(self.delay_s, self.max_wait_s - waited))

    def fired(self) -> None:
        """The scheduled run happened: later edits start a new wait."""
        self._first_waiting = None
        self._immediate = False

    def reset(self) -> None:
        """Forget the last edit: it changed nothing, so the next edit runs at once."""
        self.fired()
        self._last_poke = None

    @property
    def waiting(self) -> bool:
        """Whether an edit is waiting for its run."""
        return self._first_waiting is not None


@dataclass(frozen=True)
class Ticket(Generic[T]):
    """A request admitted to run, numbered so its result can be matched to it."""

    generation: int
    request: T


class LatestWins(Generic[T]):
    """At most one request running and one waiting; newer requests replace the waiting one.

    Not thread-safe: call it from one thread (the UI thread) only.
    """

    def __init__(self) -> None:
        self._generation = 0
        self._running: Ticket[T] | None = None
        self._waiting: Ticket[T] | None = None

    def submit(self, request: T) -> Ticket[T] | None:
        """Ask for ``request`` to run; returns the ticket to start now, or None if it waits.

        A waiting request that had not started is dropped in favour of this one.
        """
        self._generation += 1
        ticket = Ticket(self._generation, request)
        if self._running is None:
            self._running = ticket
            return ticket
        self._waiting = ticket
        return None

    def finish(self, ticket: Ticket[T]) -> tuple[bool, Ticket[T] | None]:
        """Report that ``ticket`` finished (successfully or not).

        Returns:
            (whether its result is still the latest and should be shown,
            the waiting ticket to start now, if any).
        """
        if self._running is not None and self._running.generation == ticket.generation:
            self._running = None
        current = ticket.generation == self._generation
        following, self._waiting = self._waiting, None
        if following is not None:
            self._running = following
        return current, following

    def invalidate(self) -> None:
        """Drop the waiting request and make the running one's result stale."""
        self._generation += 1
        self._waiting = None

    @property
    def busy(self) -> bool:
        """Whether a request is running."""
        return self._running is not None


class PlaneQueue:
    """Planes waiting for their embedding, shared by the UI thread and one worker thread.

    The UI thread adds planes (:meth:`want` for the plane on screen, :meth:`extend` for
    "all planes"); the worker takes them with :meth:`pop` until it returns None. Whether a
    worker must be started is decided under the same lock, so no plane is ever left in the
    queue with no worker to take it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._planes: list[Hashable] = []
        self._worker_running = False
        self.done = 0
        self.total = 0

    def want(self, plane: Hashable) -> bool:
        """Put ``plane`` first in line; returns True if the caller must start a worker."""
        with self._lock:
            if plane in self._planes:
                self._planes.remove(plane)
            else:
                self.total += 1
            self._planes.insert(0, plane)
            return self._claim_start()

    def extend(self, planes: Iterable[Hashable]) -> bool:
        """Queue ``planes`` after those waiting; returns True if a worker must be started."""
        with self._lock:
            new = [plane for plane in planes if plane not in self._planes]
            self._planes.extend(new)
            self.total += len(new)
            return bool(self._planes) and self._claim_start()

    def _claim_start(self) -> bool:
        if self._worker_running:
            return False
        self._worker_running = True
        return True

    def pop(self) -> Hashable | None:
        """The next plane to embed (worker thread); None means the worker must stop."""
        with self._lock:
            if not self._planes:
                self._worker_running = False
                self.done = self.total = 0
                return None
            return self._planes.pop(0)

    def mark_done(self) -> tuple[int, int]:
        """Count one plane as embedded; returns (done, total) for a progress bar."""
        with self._lock:
            self.done += 1
            return self.done, max(self.total, self.done)

    def clear(self) -> None:
        """Forget the waiting planes (on cancel); the worker stops after its current one."""
        with self._lock:
            self._planes.clear()

    def worker_stopped(self) -> None:
        """The worker ended abnormally (cancelled or failed): allow a new one."""
        with self._lock:
            self._planes.clear()
            self._worker_running = False
            self.done = self.total = 0

    def __contains__(self, plane: Hashable) -> bool:
        with self._lock:
            return plane in self._planes

    @property
    def worker_running(self) -> bool:
        """Whether a worker is (or is about to be) taking planes."""
        with self._lock:
            return self._worker_running
