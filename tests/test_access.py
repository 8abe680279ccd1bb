"""Who may write: locally everyone (no sign-in); on a Space anonymous visitors read, signed-in users write in their
own workspace, or only the owner writes. The rules are checked by the workspace, so no caller can skip them."""

import threading

import pytest

from opd_studio.access import Access
from opd_studio.records import Record
from opd_studio.train import TrainConfig
from opd_studio.workspace import ReadOnlyError
from tests.conftest import ADD


def test_local_is_single_user_and_writes(tmp_path, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    access = Access.from_env()
    assert access.mode == "local" and not access.signs_in
    workspace = Access("local", root=tmp_path).workspace(None)
    assert workspace.writable
    workspace.review(Record.from_dict(ADD), "accepted", reviewer="me")
    assert workspace.store.table().reviewer.tolist() == ["me"]


def _every_write(workspace, tmp_path):
    """Each write a visitor could attempt; every one must be refused and change nothing."""
    export = tmp_path / "some.jsonl"
    export.write_text(Record.from_dict({**ADD, "id": "x"}).to_json() + "\n")
    return {
        "accept": lambda: workspace.review(Record.from_dict(ADD), "accepted"),
        "add": lambda: workspace.add_rollouts([Record.from_dict(ADD)], origin="generated"),
        "delete": lambda: workspace.delete(ADD["id"]),
        "import": lambda: workspace.import_file(export),
        "restore": lambda: workspace.restore(ADD["id"], 1),
        "train": lambda: next(workspace.train(None, TrainConfig(steps=1), threading.Event())),
        "reset": lambda: workspace.use_run(None),
    }


@pytest.mark.parametrize("mode", ["per-user", "owner"])
def test_on_a_space_anonymous_visitors_change_nothing(tmp_path, mode):
    access = Access(mode, owner="ana", root=tmp_path)
    owner = access.workspace("ana")
    owner.review(Record.from_dict(ADD), "accepted")
    visitor = access.workspace(None)
    before = visitor.store.table()[["id", "status", "revision"]].to_dict("records")
    for action, write in _every_write(visitor, tmp_path).items():
        with pytest.raises(ReadOnlyError, match="sign in with Hugging Face") as info:
            write()
        assert "\n" not in str(info.value), action
    assert visitor.store.table()[["id", "status", "revision"]].to_dict("records") == before
    assert visitor.curated_table().shape[0] == (1 if mode == "owner" else 0)  # reading works


def test_per_user_workspaces_are_separate_and_record_the_signed_in_name(tmp_path):
    access = Access("per-user", root=tmp_path)
    ana, ben = access.workspace("ana"), access.workspace("ben")
    ana.review(Record.from_dict(ADD), "accepted", reviewer="someone else")
    assert ana.store.table().reviewer.tolist() == ["ana"]  # the signed-in name, not the text field
    assert ben.store.table().empty and ana.store.path != ben.store.path
    assert access.workspace("ana").store.counts()["accepted"] == 1  # the same workspace next time


def test_owner_mode_lets_only_the_owner_write(tmp_path, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "ana/opd-studio")
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "ana")
    monkeypatch.setenv("OPD_STUDIO_WRITERS", "owner")
    access = Access.from_env()
    assert access.mode == "owner" and access.owner == "ana"
    access = Access(access.mode, access.owner, root=tmp_path)
    with pytest.raises(ReadOnlyError, match=r"only the Space's owner \(ana\)"):
        access.workspace("ben").review(Record.from_dict(ADD), "rejected")
    access.workspace("ana").review(Record.from_dict(ADD), "rejected")
    assert access.workspace("ben").store.counts()["rejected"] == 1  # one shared workspace


def test_a_bad_setting_is_named():
    with pytest.raises(ValueError, match="OPD_STUDIO_WRITERS='everyone'"):
        Access("everyone")
