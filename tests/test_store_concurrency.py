"""Many readers and writers on one store file (store.py's module docstring): the studio's request threads, its
background read-ahead and other processes, at once. Real SQLite files, real threads and processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from opd_studio import store as store_module
from opd_studio.access import Access
from opd_studio.records import Record
from opd_studio.store import Store, StoreBusyError, open_store

ROOT = Path(__file__).resolve().parents[1]


def rollout(n: int) -> Record:
    return Record.from_dict({"id": f"r{n}", "messages": [{"role": "user", "content": f"What is {n} + 1?"},
                                                         {"role": "assistant", "content": f"{n} + 1 = {n + 2}."}],
                             "hints": [{"message": 1, "char": 0, "text": f" (Hint {n}) "}]})


def run_threads(targets) -> list[str]:
    """Start every target at once; the errors they raised, as text."""
    errors: list[str] = []
    barrier = threading.Barrier(len(targets))

    def guarded(target):
        barrier.wait()
        try:
            target()
        except Exception as exc:  # noqa: BLE001 - the test reports every error, whatever its kind
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_requests_and_background_work_share_one_store_without_errors(tmp_path):
    """Every request asks `Access.workspace` for its workspace (as the studio does) and writes; background threads
    read (the read-ahead's queue, counts, active run) and write (runs) on the same file at the same time."""
    access = Access("local", root=tmp_path)

    def reviewer(first: int):
        def work():
            for n in range(first, first + 15):
                workspace = access.workspace(None)
                workspace.add_rollouts([rollout(n)], origin="generated")
                workspace.review(rollout(n), "accepted", reviewer=f"reviewer-{first}")
        return work

    def read_ahead():
        for _ in range(40):
            store = access.workspace(None).store
            store.table(status="pending"), store.counts(), store.active_run(), store.get("r0")

    def trainer():
        for step in range(10):
            store = access.workspace(None).store
            run = store.add_run({"steps": step}, [{"step": 0, "loss": 1.0}], adapter_path=str(tmp_path / "a"))
            store.set_active_run(run)

    errors = run_threads([reviewer(0), reviewer(100), reviewer(200), read_ahead, read_ahead, trainer])
    assert errors == []
    store = access.workspace(None).store
    assert store is open_store(tmp_path / "opd_studio.sqlite")  # one Store per file and process
    table = store.table(status="accepted").set_index("id")
    assert len(table) == 45
    for n in (0, 14, 100, 114, 200, 214):
        assert store.get(f"r{n}").hints[0].text == f" (Hint {n}) "
        assert table.loc[f"r{n}", "reviewer"] == f"reviewer-{(n // 100) * 100}"
    assert len(store.runs()) == 10


def test_a_new_file_opened_by_many_threads_at_once(tmp_path):
    """Today's failure mode: every request opened the file anew, and switching a new file to WAL met a busy
    database without waiting ("database is locked"). Many first opens of new files, all at once."""
    for trial in range(25):
        access = Access("local", root=tmp_path / str(trial))
        assert run_threads([lambda: access.workspace(None).store.counts()] * 8) == []


OPEN_AND_WRITE = """
import sys
from opd_studio.records import Record
from opd_studio.store import Store
store = Store(sys.argv[1])
for n in range(10):
    store.save(Record.from_dict({"id": f"p{sys.argv[2]}-{n}", "messages": [{"role": "user", "content": "q"},
               {"role": "assistant", "content": "a"}]}), "rejected")
"""


def test_processes_that_open_and_write_one_new_file_at_once(tmp_path):
    """Another process (the CLI beside the studio) prepares the same new file at the same moment: retried."""
    for trial in range(2):
        path = tmp_path / f"{trial}.sqlite"
        workers = [subprocess.Popen([sys.executable, "-c", OPEN_AND_WRITE, str(path), str(k)], cwd=ROOT,
                                    stderr=subprocess.PIPE, text=True) for k in range(3)]
        failures = [w.stderr.read()[-500:] for w in workers if w.wait() != 0]
        assert failures == []
        assert Store(path).counts()["rejected"] == 30


def test_a_write_waits_for_a_busy_database_then_says_so_in_one_line(tmp_path, monkeypatch):
    store = Store(tmp_path / "s.sqlite")
    store.save(rollout(1), "pending")
    blocker = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    release = threading.Timer(1.0, lambda: blocker.execute("COMMIT"))
    release.start()
    store.save(rollout(1), "accepted")  # waits, then writes
    release.join()
    assert store.status_of("r1") == "accepted"

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(store_module, "BUSY_RETRY_S", 1.0)
    blocker.execute("BEGIN IMMEDIATE")  # held for good now
    try:
        with pytest.raises(StoreBusyError) as refused:
            store.save(rollout(1), "rejected")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    message = str(refused.value)
    assert "\n" not in message and "busy" in message and "not saved" in message and "try again" in message
    assert store.status_of("r1") == "accepted"  # nothing half-written


def test_a_file_made_again_is_prepared_again(tmp_path):
    path = tmp_path / "s.sqlite"
    open_store(path).save(rollout(1), "pending")
    for leftover in tmp_path.glob("s.sqlite*"):
        leftover.unlink()
    assert open_store(path).counts()["total"] == 0  # migrated anew, not a stale "already prepared"
