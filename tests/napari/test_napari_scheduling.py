"""Debounce, latest-wins and the embedding queue, driven with a fake clock (no Qt)."""

from __future__ import annotations

import itertools
import threading

import pytest

from sam_viz._napari._scheduling import Debouncer, LatestWins, PlaneQueue


def test_first_edit_after_quiet_runs_at_once_and_a_burst_is_coalesced():
    debounce = Debouncer(delay_s=0.05, max_wait_s=0.2)
    assert debounce.poke(10.0) == 0.0  # leading edge: no added latency
    assert debounce.poke(10.001) == 0.0  # a second event of the same edit joins that run
    debounce.fired()
    # A burst every 10 ms: each edit pushes the run to 50 ms after it.
    assert debounce.poke(10.01) == pytest.approx(0.05)
    assert debounce.poke(10.02) == pytest.approx(0.05)
    assert debounce.waiting
    debounce.fired()
    assert not debounce.waiting
    # After a quiet period the next edit runs at once again.
    assert debounce.poke(11.0) == 0.0


def test_a_long_drag_still_runs_by_max_wait():
    """Edits every 10 ms for half a second, with a simulated single-shot timer."""
    debounce = Debouncer(delay_s=0.05, max_wait_s=0.2)
    due: float | None = None
    runs: list[float] = []
    edits = [0.01 * i for i in range(50)]
    clock = 0.0
    while clock < 1.0:
        if edits and clock >= edits[0] - 1e-9:
            due = clock + debounce.poke(edits.pop(0))
        if due is not None and clock >= due - 1e-9:
            debounce.fired()
            runs.append(clock)
            due = None
        clock = round(clock + 0.001, 6)
    assert runs[0] == 0.0  # the first edit ran at once
    assert len(runs) >= 3  # the drag updated on the way, not only at its end
    assert max(b - a for a, b in itertools.pairwise(runs)) <= 0.2 + 0.01 + 1e-9
    assert runs[-1] == pytest.approx(0.49 + 0.05)  # and once more after the last edit


def test_an_event_that_changed_nothing_does_not_hold_back_the_next_edit():
    debounce = Debouncer(delay_s=0.05, max_wait_s=0.2)
    assert debounce.poke(1.0) == 0.0
    debounce.fired()
    debounce.reset()  # e.g. a redraw event: the prompts were the same
    assert debounce.poke(1.005) == 0.0  # the real edit right after still runs at once


def test_debouncer_rejects_bad_settings():
    with pytest.raises(ValueError, match="delay_s"):
        Debouncer(delay_s=0.3, max_wait_s=0.1)


def test_latest_wins_runs_one_at_a_time_and_drops_superseded_results():
    scheduler: LatestWins[str] = LatestWins()
    first = scheduler.submit("a")
    assert first is not None and first.request == "a"
    assert scheduler.submit("b") is None  # waits
    assert scheduler.submit("c") is None  # replaces "b": no queue of stale requests
    show, following = scheduler.finish(first)
    assert not show  # "a" was superseded while it ran
    assert following is not None and following.request == "c"
    assert scheduler.busy
    show, following = scheduler.finish(following)
    assert show and following is None
    assert not scheduler.busy


def test_invalidate_makes_the_running_result_stale():
    scheduler: LatestWins[str] = LatestWins()
    ticket = scheduler.submit("a")
    scheduler.invalidate()  # e.g. the prompts were cleared by a commit
    show, following = scheduler.finish(ticket)
    assert not show and following is None
    assert scheduler.submit("b") is not None


def test_plane_queue_puts_the_wanted_plane_first_and_needs_one_worker():
    queue = PlaneQueue()
    assert queue.extend([(0,), (1,), (2,)])  # caller must start the worker
    assert not queue.want((2,))  # a worker is already running
    assert queue.pop() == (2,)
    assert queue.pop() == (0,)
    queue.mark_done()
    queue.clear()  # cancel: the rest is dropped
    assert queue.pop() is None
    assert not queue.worker_running
    assert queue.want((5,))  # a new worker is needed again


def test_plane_queue_never_strands_a_plane_between_threads():
    """Planes added while the worker drains the queue are taken by it or by a new worker."""
    queue = PlaneQueue()
    taken: list[tuple[int, ...]] = []
    workers: list[threading.Thread] = []

    def work() -> None:
        while (plane := queue.pop()) is not None:
            taken.append(plane)

    for i in range(300):
        if queue.want((i,)):
            worker = threading.Thread(target=work)
            workers.append(worker)
            worker.start()
    for worker in workers:
        worker.join()
    assert sorted(taken) == [(i,) for i in range(300)]
