"""Faults: a training process killed with SIGKILL mid-run, a data directory that cannot be written (read-only,
full), and uploads over the studio's limits. Real processes, real file systems (a tmpfs mounted for the test:
as root, `chmod` cannot make a directory unwritable, so read-only is a read-only remount and full is a tmpfs of
a few hundred kB filled to the last byte)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ADD, random_llama
from opd_studio.records import MAX_UPLOAD_BYTES, MAX_UPLOAD_RECORDS, Record, RecordError
from opd_studio.store import Store, StoreWriteError
from opd_studio.ui.session import parse_upload
from opd_studio.workspace import Weights, Workspace

ROOT = Path(__file__).resolve().parents[1]

TRAIN_THEN_KEEP_TRAINING = """
import sys, threading
from tests.conftest import ADD, random_llama
from opd_studio.model import load_model
from opd_studio.records import Record
from opd_studio.train import TrainConfig
from opd_studio.workspace import Weights, Workspace

_, tokenizer = load_model("default", device="cpu")
workspace = Workspace.open(sys.argv[1])
workspace.store.save(Record.from_dict(ADD), status="accepted")
weights = Weights(random_llama(tokenizer, 4), tokenizer)
quick = dict(lr=5e-3, drift_threshold=None)
for update in workspace.train(weights, TrainConfig(steps=2, **quick), threading.Event(), use_heldout=False):
    pass
print("saved", workspace.store.active_run(), flush=True)
for update in workspace.train(weights, TrainConfig(steps=400, **quick), threading.Event(), use_heldout=False):
    if update.history:
        print("step", update.history[-1].step, flush=True)
"""


def test_kill_9_during_a_training_run(tmp_path, tokenizer):
    path = tmp_path / "opd_studio.sqlite"
    trainer = subprocess.Popen([sys.executable, "-c", TRAIN_THEN_KEEP_TRAINING, str(path)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen = []
    for line in trainer.stdout:
        seen.append(line.strip())
        if line.startswith("step 3"):  # the second run is training, two steps in
            break
    else:
        pytest.fail(f"the training process ended early: {seen} {trainer.stderr.read()[-2000:]}")
    assert seen[0] == "saved 1"
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()

    store = Store(path)  # this process's first open of the file: the next start of the studio
    runs = store.runs().set_index("id")
    assert list(runs.index) == [1, 2]
    assert runs.loc[2, "status"] == "interrupted" and runs.loc[1, "status"] != "interrupted"
    assert store.active_run() == 1  # the weights in use before the killed run
    assert store.run(2)["adapter_path"] is None  # nothing of the killed run is ever loaded
    assert not (store.runs_dir / "run-2").exists()
    weights = Weights(random_llama(tokenizer, 4), tokenizer)
    weights.sync(store)
    assert weights.run_id == 1 and weights.trained is not None
    assert "interrupted" in Workspace(store).runs_table().stopped.tolist()


# ------------------------------------------------------------------------------------------------------------------
# A data directory that cannot be written


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of its own (mounting needs root and a mount namespace that allows it; else skipped)."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}): run as root to test an unwritable dir")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def stored_before(store: Store) -> dict:
    for n in range(3):
        record = Record.from_dict({**ADD, "id": f"kept-{n}"})
        store.save(record, status="accepted", reviewer="ana")
    return {r.id: r.to_dict() for r in store.records("accepted")}


def one_line(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message


def test_a_read_only_data_directory(tmpfs):
    store = Store(tmpfs / "opd_studio.sqlite")
    before = stored_before(store)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        with pytest.raises(StoreWriteError) as refused:
            store.save(Record.from_dict({**ADD, "id": "new"}), status="accepted")
        assert one_line(str(refused.value)) and "read-only or full" in str(refused.value)
        assert "not saved" in str(refused.value) and "unchanged" in str(refused.value)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert {r.id: r.to_dict() for r in store.records("accepted")} == before
    assert store.get("new") is None


def test_a_full_data_directory(tmpfs):
    store = Store(tmpfs / "opd_studio.sqlite")
    before = stored_before(store)
    filler = tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # every free byte of the file system
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    big = Record.from_dict({**ADD, "id": "big", "meta": {"notes": "x" * 600_000}})
    with pytest.raises(StoreWriteError) as refused:
        store.save(big, status="accepted")
    assert one_line(str(refused.value)) and "read-only or full" in str(refused.value)
    filler.unlink()
    assert {r.id: r.to_dict() for r in store.records("accepted")} == before
    with store._connect() as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.save(Record.from_dict({**ADD, "id": "after"}), status="accepted")  # space again: writes work
    assert store.status_of("after") == "accepted"


# ------------------------------------------------------------------------------------------------------------------
# Upload limits (README "Limits")


def test_an_upload_over_the_record_limit_is_refused_naming_it(tmp_path):
    lines = [json.dumps({**ADD, "id": f"r{n}"}) for n in range(MAX_UPLOAD_RECORDS + 1)]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(RecordError, match=f"the limit is {MAX_UPLOAD_RECORDS} records per upload"):
        parse_upload(str(path))
    workspace = Workspace(Store(tmp_path / "s.sqlite"))
    with pytest.raises(RecordError, match=f"the limit is {MAX_UPLOAD_RECORDS} records per upload"):
        workspace.import_file(path, max_records=MAX_UPLOAD_RECORDS)  # the Curated tab's import
    assert workspace.store.counts()["total"] == 0
    path.write_text("\n".join(lines[:MAX_UPLOAD_RECORDS]))
    assert len(parse_upload(str(path))) == MAX_UPLOAD_RECORDS


def test_an_upload_over_the_size_limit_is_refused_naming_it(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as out:
        out.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: the size is what is checked, before reading
    with pytest.raises(ValueError, match=f"the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB per upload"):
        parse_upload(str(path))
