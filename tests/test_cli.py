"""The CLI, invoked as a user would: `python -m opd_studio …`."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ADD


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "opd_studio", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_generate_then_score(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "add", "messages": [ADD["messages"][0]]}) + "\n")
    rollouts = tmp_path / "rollouts.jsonl"
    done = run_cli("generate", "--input", str(prompts), "--output", str(rollouts), "--max-new-tokens", "16")
    assert done.returncode == 0, done.stderr
    record = json.loads(rollouts.read_text())
    assert record["messages"][-1]["content"] == "17 + 25 = 32."
    record["hints"] = [{"message": 1, "char": 10, "text": " (Hint: 17 + 25 = 42.) "}]
    rollouts.write_text(json.dumps(record) + "\n")

    for name in ("scores.jsonl", "scores.parquet"):
        done = run_cli("score", "--input", str(rollouts), "--output", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    three = next(r for r in rows if r["hint"])
    assert three["text"] == "3" and three["logp_after"] < three["logp_before"] - 2
    table = pd.read_parquet(tmp_path / "scores.parquet")
    assert table.loc[table.hint, "logp_after"].item() == pytest.approx(three["logp_after"], abs=1e-5)
    assert json.loads(table.loc[table.hint, "top_before"].item())[0][0] == "3"


@pytest.mark.parametrize("content, message", [
    ("{\"id\": \"a\", \"messages\": [{\"role\": \"user\"", "line 1: not valid JSON"),
    (json.dumps({**ADD, "hints": [{"message": 0, "char": 2, "text": "x"}]}),
     "record 'add-17-25': hint 0: a hint must stand before a token the model generated"),
    (json.dumps({**ADD, "hints": [{"message": 1, "char": 99, "text": "x"}]}), "character 99 is outside message 1"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, content, message):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(content + "\n")
    done = run_cli("score", "--input", str(source), "--output", str(output))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    # The error is one line. On a machine whose model cache is still empty, the one-time dequantization's progress
    # comes before it, and that is not part of the error.
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [done.stderr.splitlines()[-1]] and message in errors[0]
    assert not output.exists() and list(tmp_path.iterdir()) == [source]


def test_missing_input_file():
    done = run_cli("generate", "--input", "/nonexistent.jsonl", "--output", "/tmp/never.jsonl")
    assert done.returncode == 2 and "no such file" in done.stderr
