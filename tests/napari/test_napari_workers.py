"""The prediction thread: one long-lived thread, jobs in order, results on the UI thread."""

from __future__ import annotations

import threading

import pytest

from sam_viz._napari._workers import Failed, SerialWorker


def test_jobs_run_in_order_on_one_thread_and_report_on_the_ui_thread(qtbot):
    worker = SerialWorker("test worker")
    ran_on: list[str] = []
    results: list[object] = []
    delivered_on: list[threading.Thread] = []

    def job(value: int) -> int:
        ran_on.append(threading.current_thread().name)
        if value == 2:
            raise ValueError("no good")
        return value * 10

    def done(result: object) -> None:
        delivered_on.append(threading.current_thread())
        results.append(result)

    for value in range(4):
        worker.submit(job, value, on_done=done)
    assert worker.pending == 4
    qtbot.waitUntil(lambda: len(results) == 4, timeout=5000)

    assert worker.pending == 0
    assert ran_on == ["test worker"] * 4  # one thread, not the UI thread
    assert all(thread is threading.main_thread() for thread in delivered_on)
    assert results[:2] == [0, 10] and results[3] == 30
    assert isinstance(results[2], Failed) and str(results[2].error) == "no good"

    worker.close()  # the thread ends; a later job starts a new one
    worker.submit(job, 5, on_done=done)
    qtbot.waitUntil(lambda: len(results) == 5, timeout=5000)
    assert results[4] == 50
    worker.close()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_no_delivery_once_the_parent_is_deleted(qtbot):
    from qtpy.QtCore import QObject

    parent = QObject()
    worker = SerialWorker("test worker", parent=parent)
    release = threading.Event()
    finished = threading.Event()
    delivered: list[object] = []

    def job() -> str:
        release.wait(5)
        return "late"

    def last() -> None:
        finished.set()

    worker.submit(job, on_done=delivered.append)
    worker.submit(last, on_done=delivered.append)
    parent.deleteLater()
    qtbot.waitUntil(lambda: not _alive(worker), timeout=5000)
    release.set()
    qtbot.wait(200)
    assert delivered == []  # neither result reached a callback of the deleted widget
    assert not finished.is_set()  # the thread stopped at the first undeliverable result


def _alive(qobject) -> bool:
    try:
        qobject.objectName()
    except RuntimeError:
        return False
    return True
