"""The SQLite store: round trips, review status, soft delete, export/import, atomicity, concurrency, kill -9."""

import json
import math
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
    report = other.import_file(path)
    assert report.new == ["add-17-25", "weather-paris"] and report.queued == []
    assert report.message() == "2 records: 2 new, 0 kept as they were, 0 added as revisions (the reviewed records " \
                               "are unchanged)"
    assert [r.id for r in other.records("accepted")] == [r.id for r in store.records("accepted")]
    assert [h.status for r in other.records() for h in r.hints] == ["accepted"]
    again = other.import_file(path)  # the same file twice: nothing changes
    assert again.kept == ["add-17-25", "weather-paris"] and other.revisions("add-17-25").shape[0] == 1


def test_bad_import_changes_nothing(store, tmp_path):
    store.save(Record.from_dict(ADD), "accepted")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(MULTI_TURN) + "\n" + "{broken\n")
    with pytest.raises(RecordError, match="bad.jsonl, line 2: not valid JSON"):
        store.import_file(bad)
    assert store.table().id.tolist() == ["add-17-25"]
    with pytest.raises(RecordError, match="the limit is"):
        store.import_file(bad, max_bytes=10)


def _reviewed_store(store):
    """Four records as a reviewer left them: one accepted with an edited hint, one rejected, one kept as right,
    one still pending."""
    edited = Record.from_dict(ADD)
    edited.hints[0].text = " (Hint: 7 + 5 = 12; write the carry.) "
    store.save(edited, "accepted", reviewer="ana")
    store.save(Record.from_dict(MULTI_TURN), "rejected", reviewer="ana")
    store.save(Record.from_dict({**ADD, "id": "right", "hints": [], "error": None}), "accepted", reviewer="ana")
    store.save(Record.from_dict({**ADD, "id": "queued", "hints": []}))
    return {r.id: r.to_dict() for r in store.records(None)}


def test_importing_plain_rollouts_over_reviewed_records_changes_none_of_them(store, tmp_path):
    before = _reviewed_store(store)
    statuses = dict(zip(store.table().id, store.table().status))
    plain = tmp_path / "rollouts.jsonl"  # the same ids, as a rollout file (not an export): fresh proposals
    plain.write_text("".join(json.dumps({**raw, "hints": [{**h, "status": "proposed"} for h in raw.get("hints", [])]})
                             + "\n" for raw in [ADD, MULTI_TURN, {**ADD, "id": "right"},
                                                {**ADD, "id": "queued", "hints": []},
                                                {**ADD, "id": "brand-new"}]))
    report = store.import_file(plain)
    assert {r.id: r.to_dict() for r in store.records(None) if r.id != "brand-new"} == before
    assert dict(zip(store.table().id, store.table().status)) == {**statuses, "brand-new": "pending"}
    assert report.new == report.queued == ["brand-new"]
    # the same rollout without hints has nothing to add; with other hints it is kept as a revision to look at
    assert sorted(report.revisions) == ["add-17-25", "right"] and sorted(report.kept) == ["queued", "weather-paris"]
    assert "1 new (1 to the review queue: not exported as curated), 2 kept as they were, 2 added as revisions" \
        in report.message()
    revisions = store.revisions("add-17-25")
    assert revisions.current.tolist() == [True, False]  # the upload is kept beside it, not applied
    assert "not applied" in revisions.note.iloc[1]


def test_an_upload_replaces_only_pending_records_and_keeps_their_old_version(store):
    store.save(Record.from_dict({**ADD, "hints": []}))
    report = store.add([Record.from_dict(ADD)], origin="uploaded")
    assert report.updated == ["add-17-25"] and len(store.get("add-17-25").hints) == 1
    assert store.revisions("add-17-25").note.tolist() == ["reviewed", "uploaded"]
    assert store.add([Record.from_dict(ADD)], origin="uploaded").kept == ["add-17-25"]


def test_every_review_keeps_the_previous_revision_and_any_can_be_restored(store):
    record = Record.from_dict(ADD)
    store.save(record, "pending", reviewer="ana", note="generated")
    record.hints[0].text = " (Hint: carry the 1.) "
    store.save(record, "accepted", reviewer="ana")
    store.set_status(ADD["id"], "rejected", reviewer="ben")
    table = store.revisions(ADD["id"])
    assert table.rev.tolist() == [1, 2, 3] and table.status.tolist() == ["pending", "accepted", "rejected"]
    assert table.current.tolist() == [False, False, True] and table.reviewer.tolist() == ["ana", "ana", "ben"]
    assert store.restore_revision(ADD["id"], 2, reviewer="ana") == 4
    restored = store.get(ADD["id"])
    assert store.status_of(ADD["id"]) == "accepted" and restored.hints[0].text == " (Hint: carry the 1.) "
    assert [h.status for h in restored.hints] == ["accepted"]
    assert store.revisions(ADD["id"]).note.iloc[-1] == "restored from revision 2"
    with pytest.raises(KeyError, match="no revision 9"):
        store.restore_revision(ADD["id"], 9)


def test_status_and_hints_never_disagree(store):
    record = Record.from_dict(ADD)
    store.save(record, "rejected")
    assert [h.status for h in store.get(ADD["id"]).hints] == ["rejected"]
    store.set_status(ADD["id"], "accepted")
    assert [h.status for h in store.get(ADD["id"]).hints] == ["accepted"]
    store.set_status(ADD["id"], "pending")
    assert [h.status for h in store.get(ADD["id"]).hints] == ["edited"]


def test_a_store_written_by_the_first_release_opens_migrated(tmp_path):
    """tests/fixtures/store_v0.sqlite was written by the release before schema versions (user_version 0)."""
    import shutil
    import sqlite3
    from pathlib import Path

    from opd_studio.metrics import load_history
    from opd_studio.migrations import MIGRATIONS
    from opd_studio.workspace import Workspace

    path = tmp_path / "old.sqlite"
    shutil.copy(Path(__file__).parent / "fixtures" / "store_v0.sqlite", path)
    store = Store(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    table = store.table()
    assert dict(zip(table.id, table.status)) == {"add-17-25": "accepted", "weather-paris": "rejected",
                                                 "arith-001-s0-t0": "pending"}
    assert store.table(deleted=True).id.tolist() == ["deleted-one"]
    assert table.set_index("id").loc["add-17-25", "tokenizer"].startswith("SmolLM2")  # no cache path
    assert store.get("add-17-25").hints[0].text == " (Hint: 7 + 5 = 12, so carry the 1.) "
    assert store.revisions("add-17-25").note.tolist() == ["before revisions were kept"]
    assert store.runs().id.tolist() == [1, 2] and store.active_run() == 1
    history = load_history(store.run(1)["metrics"])  # rows without the keys later releases added
    assert [row.step for row in history] == [0, 3] and history[-1].records["add-17-25"].logp_error == -1.6
    runs = Workspace(store).runs_table()
    assert runs.drift.tolist()[0] == 0.001 and runs["mean p(error)"].tolist()[0] == round(math.exp(-1.6), 4)
    Store(path)  # opening again runs no migration twice
    store.save(Record.from_dict({**ADD, "id": "new-one"}), "accepted")
    assert store.counts()["accepted"] == 2


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
