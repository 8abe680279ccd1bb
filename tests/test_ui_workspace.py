"""A reviewer's work is never lost, through the studio's API (gradio_client): regenerating a reviewed task from
another session, uploading over reviewed records, a run trained from the command line used in the studio, and on a
Space, visitors who are not signed in changing nothing."""

import json
import os
import subprocess
import sys

import pytest

from opd_studio.store import Store
from tests.conftest import ADD
from tests.ui_server import ROOT, StudioServer

pytestmark = pytest.mark.integration

EDITED = " (Hint: 7 + 5 = 12; write 2 and carry 1.) "


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    server = StudioServer(tmp_path_factory.mktemp("ws-data")).start()
    yield server
    server.stop()


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def shown(result):
    strip, status, _logprob, _kl, hint_text, *_ = result
    return {"strip": strip, "status": status, "hint": hint_text}


def generate(session, task="arith-001"):
    return shown(session.predict("Demo task", task, "", 0, 1, 48, 0, "auto", "delta", api_name="/generate"))


def test_an_accepted_edited_hint_survives_regenerating_the_task_elsewhere(studio):
    store = Store(studio.data_dir / "opd_studio.sqlite")
    first = client(studio.url)
    opened = generate(first)
    record_id = opened["status"].split("**")[1]
    assert record_id.startswith("arith-001-") and store.status_of(record_id) == "pending"
    first.predict(EDITED, "inline", "", "delta", api_name="/edit_hint")
    first.predict("ana", EDITED, "inline", "", "auto", "delta", api_name="/accept")
    assert store.status_of(record_id) == "accepted" and store.get(record_id).hints[0].text == EDITED

    again = generate(client(studio.url))  # another browser session, same task, seed and temperature
    assert again["status"].split("**")[1] == record_id
    assert again["hint"] == EDITED and "already in the workspace (accepted)" in again["status"]
    stored = store.get(record_id)
    assert store.status_of(record_id) == "accepted" and stored.hints[0].text == EDITED
    assert [h.status for h in stored.hints] == ["accepted"]


def test_an_upload_over_a_reviewed_record_keeps_it_and_says_so(studio, tmp_path):
    store = Store(studio.data_dir / "opd_studio.sqlite")
    session = client(studio.url)
    generate(session, "arith-002")
    session.predict("ana", "", "inline", "", "auto", "delta", api_name="/reject")
    rejected = store.table(status="rejected").id.tolist()
    assert len(rejected) == 1
    before = store.get(rejected[0]).to_dict()
    upload = tmp_path / "upload.jsonl"  # the same id with a fresh proposal, and one new record
    fresh = {**before, "hints": [{**h, "status": "proposed", "text": " (Hint: look again.) "} for h in before["hints"]]}
    if not fresh["hints"]:
        fresh["hints"] = [{"message": 1, "char": 0, "text": " (Hint: look again.) "}]
    upload.write_text(json.dumps(fresh) + "\n" + json.dumps({**ADD, "id": "uploaded-new"}) + "\n")
    from gradio_client import handle_file

    result = shown(session.predict(handle_file(str(upload)), "manual", "delta", api_name="/upload"))
    assert "2 records: 1 new, 0 kept as they were, 1 added as revisions" in result["status"]
    assert store.get(rejected[0]).to_dict() == before and store.status_of(rejected[0]) == "rejected"
    revisions, restorable = session.predict(rejected[0], api_name="/revisions")
    assert [row[-2] for row in revisions["data"]][-1] is False  # the upload is kept, not current
    assert restorable == revisions["data"][-1][0]  # offered for restore: the newest version that is not current


def test_a_run_trained_from_the_command_line_is_used_in_the_studio(studio, tmp_path):
    session = client(studio.url)
    generate(session, "arith-003")
    session.predict("ana", "", "inline", "", "auto", "delta", api_name="/accept")  # whatever was proposed
    store = Store(studio.data_dir / "opd_studio.sqlite")
    if not store.records("accepted"):
        pytest.skip("no accepted record to train on")
    env = {**os.environ, "OPD_STUDIO_DATA": str(studio.data_dir)}
    done = subprocess.run([sys.executable, "-m", "opd_studio", "train", "--steps", "1", "--no-heldout",
                           "--keep-weights", "--drift_threshold", "none"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = subprocess.run([sys.executable, "-m", "opd_studio", "runs", "list"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    run = int(listed.stdout.splitlines()[1].split()[0])
    status, runs = session.predict(run, api_name="/use_run")
    assert status == f"using the weights of run {run}"
    row = next(r for r in runs["data"] if r[0] == run)
    assert row[-1] == "✓" and store.active_run() == run
    status, runs = session.predict(api_name="/reset")
    assert status == "weights reset to base" and store.active_run() is None
    # its step timeline, read from the store and the run's run.json: the slider's steps redraw the record's strip
    _picker, slider, last, _plot = session.predict(run, None, api_name="/timeline")
    assert "data-step='1'" in last and "opd-target" in last
    first, _plot = session.predict(0, api_name="/timeline_step")
    assert "data-step='0'" in first and first.split("data-render", 1)[1] != last.split("data-render", 1)[1]


def test_the_train_tab_runs_each_construction_and_refuses_bad_input_in_one_line(studio):
    from gradio_client.exceptions import AppError

    session = client(studio.url)
    generate(session, "arith-004")
    session.predict("ana", "", "inline", "", "auto", "delta", api_name="/accept")
    if not Store(studio.data_dir / "opd_studio.sqlite").records("accepted"):
        pytest.skip("no accepted record to train on")

    def train(target, alpha=1.0, placebo="default"):
        return session.predict(1, 1e-4, "jsd", "turn", 3, None, 4, False, target, alpha, placebo,
                               api_name="/train")

    store = Store(studio.data_dir / "opd_studio.sqlite")
    for target, alpha in (("contrast", 2.0), ("evidence", 1.0), ("unleaked", 1.0)):
        _status, _plot, _loss, runs, run, _next = train(target, alpha)
        row = next(r for r in runs["data"] if r[0] == run)
        assert row[3] == "steps" and store.run(run)["config"]["target"] == target, (target, row)
    # (α past the slider's range is refused by the slider itself, naming its maximum)
    for bad, says in (({"target": "contrast", "alpha": 5}, "greater than maximum value 4"),
                      ({"target": "evidence", "placebo": "stored"}, "write its Placebo")):
        with pytest.raises(AppError) as refused:
            train(**bad)
        assert says in str(refused.value) and "\n" not in str(refused.value).strip(), str(refused.value)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """The studio as a Space runs it for visitors who are not signed in (per-user workspaces)."""
    data = tmp_path_factory.mktemp("space-data")
    shared = Store(data / "opd_studio.sqlite")
    from opd_studio.records import Record

    shared.save(Record.from_dict(ADD), "accepted", reviewer="owner")
    previous = os.environ.get("OPD_STUDIO_WRITERS")
    os.environ["OPD_STUDIO_WRITERS"] = "per-user"
    try:
        server = StudioServer(data).start()
    finally:
        if previous is None:
            del os.environ["OPD_STUDIO_WRITERS"]
        else:
            os.environ["OPD_STUDIO_WRITERS"] = previous
    yield server, shared
    server.stop()


def test_on_a_space_visitors_who_are_not_signed_in_change_nothing(space, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    server, shared = space
    visitor = client(server.url)
    before = shared.table()[["id", "status", "revision", "deleted"]].to_dict("records")
    generated = generate(visitor, "arith-004")  # exploring works, and stores nothing
    assert "arith-004" in generated["status"]
    exported = tmp_path / "in.jsonl"
    exported.write_text(json.dumps({**ADD, "id": "import-me"}) + "\n")
    attempts = {
        "accept": lambda: visitor.predict("x", "", "inline", "", "auto", "delta", api_name="/accept"),
        "delete": lambda: visitor.predict(ADD["id"], False, "accepted", "", False, api_name="/delete"),
        "import": lambda: visitor.predict(handle_file(str(exported)), "accepted", "", False,
                                          api_name="/import_curated"),
        "train": lambda: visitor.predict(1, 1e-4, "jsd", "turn", 3, 0.05, 4, False, "hinted", 1.0, "default",
                                         api_name="/train"),
        "reset": lambda: visitor.predict(api_name="/reset"),
        "restore": lambda: visitor.predict(ADD["id"], 1, "accepted", "", False, api_name="/restore_revision"),
    }
    for action, attempt in attempts.items():
        with pytest.raises(AppError, match="sign in with Hugging Face") as info:
            attempt()
        assert "\n" not in str(info.value), action
    assert shared.table()[["id", "status", "revision", "deleted"]].to_dict("records") == before
    assert not (server.data_dir / "users").exists()
