"""The SQLite store: round trips, review status, soft delete, export/import, atomicity, concurrency, kill -9."""

import json
import subprocess
import sys
import threading

import pytest

from opd_studio.records import Record, RecordError
from opd_studio.store import Store
from tests.conftest import ADD, MULTI_TURN


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "store.sqlite")


def test_save_review_and_reload(store, tmp_path):
    record = Record.from_dict(ADD)
    store.save(record, model="SmolLM2", tokenizer="SmolLM2", reviewer="ana", review_seconds=3.5)
    store.save(Record.from_dict(MULTI_TURN))
    assert store.counts() == {"pending": 2, "accepted": 0, "rejected": 0, "total": 2, "reviewed": 0}
    record.hints[0].status = "accepted"
    store.save(record, "accepted", review_seconds=2.0)
    again = Store(tmp_path / "store.sqlite")  # a new process would see the same
    assert again.get("add-17-25").to_dict() == record.to_dict()
    row = again.table().set_index("id").loc["add-17-25"]
    assert (row.status, row.model, row.reviewer, row.review_seconds, row.hints) == ("accepted", "SmolLM2", "ana",
                                                                                  5.5, 1)
    assert again.counts()["reviewed"] == 1
    assert [r.id for r in again.records("accepted")] == ["add-17-25"]


def test_filters_delete_and_restore(store):
    record = Record.from_dict(ADD)
    record.hints[0].source = "verifier:arithmetic"
    store.save(record, "accepted")
    store.save(Record.from_dict(MULTI_TURN), "rejected")
    assert store.table(status="accepted").id.tolist() == ["add-17-25"]
    assert store.table(source="verifier:arithmetic").id.tolist() == ["add-17-25"]
    assert store.table(source="critic").empty
    store.delete("add-17-25")
    assert store.table().id.tolist() == ["weather-paris"] and store.table(deleted=True).id.tolist() == ["add-17-25"]
    assert store.records("accepted") == []
    store.restore("add-17-25")
    assert [r.id for r in store.records("accepted")] == ["add-17-25"]
    with pytest.raises(KeyError):
        store.delete("nope")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_export_then_import_round_trips(store, tmp_path, suffix):
    store.save(Record.from_dict(ADD), "accepted")
    store.save(Record.from_dict(MULTI_TURN), "accepted")
    store.save(Record.from_dict({**ADD, "id": "pending-one"}))
    path = tmp_path / f"curated{suffix}"
    assert store.export(path) == 2
    other = Store(tmp_path / "other.sqlite")
    assert other.import_file(path, status="accepted") == 2
    assert [r.to_dict() for r in other.records()] == [r.to_dict() for r in store.records()]


def test_bad_import_changes_nothing(store, tmp_path):
    store.save(Record.from_dict(ADD), "accepted")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(MULTI_TURN) + "\n" + "{broken\n")
    with pytest.raises(RecordError, match="bad.jsonl, line 2: not valid JSON"):
        store.import_file(bad)
    assert store.table().id.tolist() == ["add-17-25"]
    with pytest.raises(RecordError, match="the limit is"):
        store.import_file(bad, max_bytes=10)


def test_concurrent_writers_lose_nothing(store):
    def write(n):
        for k in range(10):
            store.save(Record.from_dict({**ADD, "id": f"w{n}-{k}"}), "accepted")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.counts()["accepted"] == 40


def test_a_killed_writer_leaves_the_store_consistent(store):
    store.save(Record.from_dict(ADD), "accepted")
    # A child process writes in a loop and is killed mid-way (SIGKILL: no cleanup runs).
    code = f"""
import sys; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parents[1])!r})
from opd_studio.store import Store
from opd_studio.records import Record
from tests.conftest import ADD
store = Store({str(store.path)!r})
print("ready", flush=True)
n = 0
while True:
    store.save(Record.from_dict({{**ADD, "id": f"k{{n}}", "hints": ADD["hints"] * 20}}), "accepted"); n += 1
"""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    import time
    time.sleep(1.0)
    child.kill()
    child.wait()
    again = Store(store.path)
    with again._connect() as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    table = again.table()
    # every record that is there is whole: its JSON parses and its hints table agrees with it
    for record in again.records(None):
        assert len(record.hints) == table.set_index("id").loc[record.id, "hints"]
    assert "add-17-25" in table.id.tolist() and len(table) > 2
