"""Workspace rules that need no model: ids that survive a restart, generation that never replaces reviewed work."""

import os
import subprocess
import sys

from opd_studio.records import Record
from opd_studio.workspace import Workspace, prompt_id, rollout_id
from tests.conftest import ADD

CODE = ("from opd_studio.workspace import prompt_id, rollout_id; from opd_studio.records import Record; "
        "from tests.conftest import ADD; print(prompt_id('What is 17 + 25?'), rollout_id('arith-001', "
        "Record.from_dict(ADD)))")


def test_ids_are_the_same_in_every_process():
    """Python's hash() changes with every process start (PYTHONHASHSEED); the ids must not."""
    ids = set()
    for seed in ("1", "2", "random"):
        done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        ids.add(done.stdout.strip())
    assert ids == {f"{prompt_id('What is 17 + 25?')} {rollout_id('arith-001', Record.from_dict(ADD))}"}
    assert prompt_id("What is 17 + 25?") != prompt_id("What is 17 + 26?")
    other = Record.from_dict({**ADD, "messages": [ADD["messages"][0], {"role": "assistant", "content": "42"}]})
    assert rollout_id("arith-001", other) != rollout_id("arith-001", Record.from_dict(ADD))


def test_adding_the_same_rollout_again_keeps_the_reviewed_record(tmp_path):
    workspace = Workspace.open(tmp_path / "s.sqlite")
    record = Record.from_dict(ADD)
    assert workspace.add_rollouts([record], origin="generated").new == [ADD["id"]]
    edited = Record.from_dict(ADD)
    edited.hints[0].text = " (Hint: mind the carry.) "
    workspace.review(edited, "accepted", reviewer="ana")
    report = workspace.add_rollouts([Record.from_dict(ADD)], origin="generated")
    assert report.revisions == [ADD["id"]]  # the fresh proposal is kept to look at, not applied
    stored = workspace.store.get(ADD["id"])
    assert stored.hints[0].text == " (Hint: mind the carry.) " and stored.hints[0].status == "accepted"
    assert workspace.store.status_of(ADD["id"]) == "accepted"
    assert workspace.revisions(ADD["id"]).note.tolist() == ["generated", "accepted",
                                                            "generated, not applied: the record was reviewed"]
