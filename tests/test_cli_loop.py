"""`opd-studio loop`: rounds from the command line, on the store like any run, resumable after a kill."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from opd_studio.cli import main
from opd_studio.records import Record, read_records
from opd_studio.store import Store
from tests.conftest import ADD
from tests.test_cli_workspace import model_dir  # noqa: F401 - the tiny model saved as a directory
from tests.test_cli_workspace import trackio_project

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--steps", "1", "--lr", "5e-3", "--drift_threshold", "none", "--batch_size", "4", "--max-new-tokens", "6"]


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("OPD_STUDIO_DATA", str(tmp_path / "data"))
    Store(tmp_path / "data" / "opd_studio.sqlite").save(Record.from_dict(ADD), "accepted")
    return tmp_path / "data"


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{n}", "messages": [{"role": "user", "content": q}]}) + "\n"
                            for n, q in enumerate(["What is 12 + 30?", "What is 7 * 8?"])))
    return path


def cli(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_the_loop_runs_rounds_that_resume_after_a_kill(data, prompts, model_dir, tmp_path, capsys):
    store = Store(data / "opd_studio.sqlite")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPD_STUDIO_DATA": str(data)}
    command = [sys.executable, "-m", "opd_studio", "loop", "--model", str(model_dir), "--input", str(prompts),
               "--rounds", "3", "--accept", "verifier", *QUICK]
    # Killed during round 2: round 1 is finished and stays the active weights.
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen = ""
    for line in process.stderr:
        seen += line
        if line.startswith("[2/3]"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert "[1/3] round 1 → run 1 (parent base)" in seen, seen
    assert store.active_run() == 1 and len(store.runs()) == 1

    output = tmp_path / "final.jsonl"
    code, err = cli(capsys, "loop", "--model", model_dir, "--input", prompts, "--rounds", 3, "--accept", "verifier",
                    "--output", output, *QUICK)
    assert code == 0, err
    assert "resuming after round 1 (run 1)" in err and "[1/3]" not in err
    assert "round 2 → run 2 (parent 1)" in err and "round 3 → run 3 (parent 2)" in err
    runs = store.runs()
    assert list(runs.parent.fillna(0).astype(int)) == [0, 1, 2] and store.active_run() == 3
    final = read_records(output)
    assert [r.messages[0]["content"] for r in final] == ["What is 12 + 30?", "What is 7 * 8?"]
    assert all(r.messages[-1]["role"] == "assistant" for r in final)

    code, err = cli(capsys, "loop", "--model", model_dir, "--input", prompts, "--rounds", 3, *QUICK)
    assert code == 0 and "3 of 3 rounds are done already" in err and len(store.runs()) == 3


def test_the_loop_refuses_bad_input_in_one_line(data, tmp_path, model_dir, capsys):
    code, err = cli(capsys, "loop", "--model", model_dir, "--input", tmp_path / "missing.jsonl", "--rounds", 1)
    assert code == 2 and "missing.jsonl: no such file" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit:  # argparse: usage and the valid choices
        main(["loop", "--input", "p.jsonl", "--rounds", "1", "--hint-model", "nope"])
    assert exit.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "q", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}) + "\n")
    code, err = cli(capsys, "loop", "--model", model_dir, "--input", prompts, "--rounds", 0)
    assert code == 2 and "--rounds must be at least 1" in err


def test_loop_rounds_appear_in_a_local_trackio_project(data, prompts, model_dir, tmp_path):
    """`loop --report-to trackio`, offline: each round's training is a trackio run ("NAME round N") with its config
    (the store's run, its parent) and every step's metrics, as the store recorded them (read back by trackio's own
    storage API in a separate process)."""
    pytest.importorskip("trackio")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPD_STUDIO_DATA": str(data),
           "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "opd_studio", "loop", "--model", str(model_dir), "--input",
                           str(prompts), "--rounds", "2", "--accept", "verifier", *QUICK, "--report-to", "trackio",
                           "--trackio-project", "opd-loop", "--run-name", "loop"],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "each round reported to trackio (trackio show --project 'opd-loop')" in done.stderr
    found = trackio_project("opd-loop", env)
    assert sorted(found["runs"]) == ["loop round 1", "loop round 2"]
    store = Store(data / "opd_studio.sqlite")
    for number in (1, 2):
        config, logs = found["config"][f"loop round {number}"], found["logs"][f"loop round {number}"]
        assert config["run"] == number and config["run_name"] == f"round {number}"
        assert config["parent_run"] == (None if number == 1 else 1) and config["steps"] == 1
        stored = store.run(number)["metrics"]
        assert [row["step"] for row in logs] == [step["step"] for step in stored] == [0, 1]
        for row, step in zip(logs, stored):
            assert row["loss"] == pytest.approx(step["loss"]) and row["drift"] == pytest.approx(step["drift"])
