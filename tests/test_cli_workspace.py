"""The command line on the studio's store: train → runs → score --run, and the curated set's export, import,
revisions and restore, as `opd-studio …` (its `main`, in this process: the store is the one OPD_STUDIO_DATA names)."""

import json
import math

import pandas as pd
import pytest

from opd_studio.cli import main
from opd_studio.records import Record
from opd_studio.store import Store
from opd_studio.workspace import Workspace
from tests.conftest import ADD, MULTI_TURN, random_llama


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("OPD_STUDIO_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny")
    random_llama(tokenizer, 4).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_run_trained_from_the_command_line_is_recorded_and_usable(data, capsys, model_dir, tmp_path):
    store = Store(data / "opd_studio.sqlite")
    store.save(Record.from_dict(ADD), "accepted", reviewer="ana")
    code, _, err = cli(capsys, "train", "--model", model_dir, "--steps", 2, "--lr", 5e-3, "--drift_threshold", "none",
                       "--no-heldout")
    assert code == 0, err
    assert "run 1 saved" in err and "active weights" in err
    code, out, _ = cli(capsys, "runs", "list")
    assert code == 0 and out.splitlines()[1].split()[0] == "1" and "✓" in out
    assert store.active_run() == 1 and (store.runs_dir / "run-1" / "adapter_config.json").is_file()

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(ADD) + "\n")
    scores = {}
    for name, flags in (("base", []), ("run", ["--run", 1]), ("adapter", ["--adapter", store.runs_dir / "run-1"])):
        code, _, err = cli(capsys, "score", "--model", model_dir, "--input", source,
                           "--output", tmp_path / f"{name}.jsonl", *flags)
        assert code == 0, err
        table = pd.read_json(tmp_path / f"{name}.jsonl", lines=True)
        scores[name] = table[table.student]
    assert scores["run"].logp_before.tolist() == pytest.approx(scores["adapter"].logp_before.tolist(), abs=1e-6)
    assert scores["run"].logp_before.tolist() != pytest.approx(scores["base"].logp_before.tolist(), abs=1e-4)

    assert cli(capsys, "runs", "reset")[0] == 0 and store.active_run() is None
    assert cli(capsys, "runs", "use", 1)[0] == 0 and store.active_run() == 1
    code, _, err = cli(capsys, "runs", "use", 7)
    assert code == 2 and err.strip() == "error: there is no run 7"
    code, _, err = cli(capsys, "score", "--model", model_dir, "--input", source, "--output", tmp_path / "x.jsonl",
                       "--run", 7)
    assert code == 2 and "run 7 has no saved weights" in err and not (tmp_path / "x.jsonl").exists()


def test_training_refuses_unreviewed_hints_from_a_file_unless_asked(data, capsys, model_dir, tmp_path):
    proposed = tmp_path / "proposed.jsonl"
    proposed.write_text(json.dumps(ADD) + "\n")  # its hint has status "proposed": no one accepted it
    code, _, err = cli(capsys, "train", "--model", model_dir, "--data", proposed, "--steps", 1, "--no-heldout")
    assert code == 2 and "1 hint(s) no one accepted" in err and "--unreviewed" in err
    assert len(err.strip().splitlines()) == 1 and Store(data / "opd_studio.sqlite").runs().empty
    code, _, err = cli(capsys, "train", "--model", model_dir, "--data", proposed, "--steps", 1, "--no-heldout",
                       "--unreviewed", "--drift_threshold", "none")
    assert code == 0, err
    code, _, err = cli(capsys, "train", "--model", model_dir, "--steps", 1)
    assert code == 2 and "the curated set" in err and "is empty" in err


def test_curated_export_import_revisions_and_restore(data, capsys, tmp_path):
    store = Store(data / "opd_studio.sqlite")
    edited = Record.from_dict(ADD)
    edited.hints[0].text = " (Hint: 7 + 5 = 12; write the carry.) "
    store.save(edited, "accepted", reviewer="ana")
    store.save(Record.from_dict(MULTI_TURN), "rejected", reviewer="ana")

    code, out, _ = cli(capsys, "curated", "list")
    assert code == 0 and "add-17-25" in out and "write the carry" in out and "weather-paris" not in out
    assert cli(capsys, "curated", "export", "--output", tmp_path / "curated.jsonl")[0] == 0
    exported = [json.loads(line) for line in (tmp_path / "curated.jsonl").read_text().splitlines()]
    assert [r["meta"]["opd_studio"]["status"] for r in exported] == ["accepted"]

    plain = tmp_path / "rollouts.jsonl"  # the same rollout with a fresh proposal, as a plain rollout file
    plain.write_text(json.dumps(ADD) + "\n" + json.dumps({**ADD, "id": "other"}) + "\n")
    code, _, err = cli(capsys, "curated", "import", plain)
    assert code == 0 and err.strip() == ("2 records: 1 new (1 to the review queue: not exported as curated), "
                                         "0 kept as they were, 1 added as revisions (the reviewed records are "
                                         "unchanged)")
    assert store.get("add-17-25").hints[0].text == " (Hint: 7 + 5 = 12; write the carry.) "
    assert store.status_of("other") == "pending"

    code, out, _ = cli(capsys, "curated", "revisions", "add-17-25")
    assert code == 0 and "not applied" in out and len(out.strip().splitlines()) == 3  # header + 2 revisions
    code, _, err = cli(capsys, "curated", "restore", "add-17-25", 2)  # take the uploaded version after all
    assert code == 0 and "restored as revision 3" in err
    assert store.get("add-17-25").hints[0].text == ADD["hints"][0]["text"]
    assert cli(capsys, "curated", "restore", "add-17-25", 1)[0] == 0  # and back: nothing was lost
    assert store.get("add-17-25").hints[0].text == " (Hint: 7 + 5 = 12; write the carry.) "

    fresh = tmp_path / "other-data"
    Workspace.open(fresh / "s.sqlite").import_file(tmp_path / "curated.jsonl")
    assert Store(fresh / "s.sqlite").status_of("add-17-25") == "accepted"

    code, _, err = cli(capsys, "curated", "restore", "add-17-25", 42)
    assert code == 2 and "no revision 42" in err
    code, _, err = cli(capsys, "curated", "export", "--output", tmp_path / "x.csv", "--format", "jsonl")
    assert code == 2 and "name the output accordingly" in err and not (tmp_path / "x.csv").exists()


def test_curated_exports_to_datasets_and_trl_and_back(data, capsys, tmp_path, model_dir):
    from datasets import load_from_disk

    store = Store(data / "opd_studio.sqlite")
    store.save(Record.from_dict(ADD), "accepted", reviewer="ana")
    store.save(Record.from_dict(MULTI_TURN), "rejected", reviewer="ana")
    code, _, err = cli(capsys, "curated", "export", "--format", "datasets", "--status", "all",
                       "--output", tmp_path / "all")
    assert code == 0, err
    assert load_from_disk(str(tmp_path / "all"))["id"] == ["add-17-25", "weather-paris"]
    other = Store(tmp_path / "other.sqlite")
    assert other.import_file(tmp_path / "all").new == ["add-17-25", "weather-paris"]
    assert [other.status_of(i) for i in ("add-17-25", "weather-paris")] == ["accepted", "rejected"]

    code, _, err = cli(capsys, "curated", "export", "--format", "trl-sdft", "--output", tmp_path / "trl",
                       "--model", model_dir)
    assert code == 0, err
    trl = load_from_disk(str(tmp_path / "trl"))
    assert trl["id"] == ["add-17-25"] and trl["privileged_context"] == [ADD["hints"][0]["text"].strip()]


def trackio_project(project: str, env: dict) -> dict:
    """A trackio project as trackio's own storage API reads it, in a separate process (TRACKIO_DIR from `env`):
    the projects, the project's runs, and each run's logged rows and config."""
    import subprocess
    import sys

    read_back = subprocess.run([sys.executable, "-c", (
        "import json; from trackio.sqlite_storage import SQLiteStorage as S; "
        f"runs = S.get_runs({project!r}); "
        f"print(json.dumps({{'projects': S.get_projects(), 'runs': runs, "
        f"'logs': {{r: S.get_logs({project!r}, r) for r in runs}}, "
        f"'config': {{r: S.get_run_config({project!r}, r) for r in runs}}}}, default=str))")],
                               capture_output=True, text=True, env=env, timeout=300)
    assert read_back.returncode == 0, read_back.stderr
    return json.loads(read_back.stdout.splitlines()[-1])


def test_a_cli_run_appears_in_a_local_trackio_project(tmp_path, model_dir):
    """`train --report-to trackio`, offline: the run, its config and every step's metrics read back through
    trackio's own storage API (a separate process, both with TRACKIO_DIR set)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("trackio")
    env = {**os.environ, "OPD_STUDIO_DATA": str(tmp_path / "data"), "TRACKIO_DIR": str(tmp_path / "trackio"),
           "HF_HUB_OFFLINE": "1"}
    Store(tmp_path / "data" / "opd_studio.sqlite").save(Record.from_dict(ADD), "accepted", reviewer="ana")
    done = subprocess.run([sys.executable, "-m", "opd_studio", "train", "--model", str(model_dir), "--steps", "2",
                           "--lr", "5e-3", "--drift_threshold", "none", "--no-heldout", "--report-to", "trackio",
                           "--trackio-project", "opd-test", "--run-name", "cli-run"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "reported to trackio run cli-run" in done.stderr
    found = trackio_project("opd-test", env)
    assert "opd-test" in found["projects"] and found["runs"] == ["cli-run"]
    config = found["config"]["cli-run"]
    assert config["steps"] == 2 and config["lr"] == 5e-3 and config["records"] == 1
    logs = found["logs"]["cli-run"]
    assert [row["step"] for row in logs] == [0, 1, 2]
    stored = Store(tmp_path / "data" / "opd_studio.sqlite").run(1)["metrics"]
    for row, step in zip(logs, stored):  # the tracker holds the numbers the store recorded
        assert row["loss"] == pytest.approx(step["loss"])
        assert row["drift"] == pytest.approx(step["drift"])
        logp = step["records"][ADD["id"]]["logp_error"]
        assert row[f"p_error/{ADD['id']}"] == pytest.approx(math.exp(logp))
