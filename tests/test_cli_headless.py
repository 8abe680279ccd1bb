"""`generate` and `score` from the shell: through a server, from a `datasets` folder, resumed; bad input is one line."""

import json
import socket
import subprocess
import sys
import threading

import pytest

from opd_studio.records import Record, write_records
from opd_studio.serve import make_server
from tests.conftest import ADD


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "opd_studio", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def one_error_line(done) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert errors == [done.stderr.splitlines()[-1]]
    return errors[0]


@pytest.fixture
def tiny_server(tiny_model, tokenizer):
    server = make_server(tiny_model, tokenizer, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_generate_through_a_server_then_resume(tmp_path, tiny_server):
    prompts = tmp_path / "prompts.jsonl"
    write_records(prompts, [Record(f"q{n}", [{"role": "user", "content": q}])
                            for n, q in enumerate(["What is 2 + 2?", "Say hi."])])
    output = tmp_path / "rollouts.jsonl"
    args = ["generate", "--input", str(prompts), "--output", str(output), "--base-url", tiny_server,
            "--max-new-tokens", "8", "--temperature", "1", "--samples", "2"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert "generated 4 records" in done.stderr.splitlines()[-1]
    rollouts = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in rollouts] == ["q0#0", "q0#1", "q1#0", "q1#1"]
    assert all(r["meta"]["remote"]["token_ids"] == "server" and r["response_token_ids"] for r in rollouts)
    again = run_cli(*args)
    assert again.returncode == 0 and "(4 already there)" in again.stderr
    assert [json.loads(line) for line in output.read_text().splitlines()] == rollouts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_one_line_and_writes_nothing(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_records(prompts, [Record("q", [{"role": "user", "content": "Hi"}])])
    done = run_cli("generate", "--input", str(prompts), "--output", str(tmp_path / "out.jsonl"),
                   "--base-url", f"http://127.0.0.1:{free_port()}/v1")
    assert "cannot reach" in one_error_line(done)
    assert list(tmp_path.iterdir()) == [prompts]


def test_dataset_without_the_needed_columns_is_one_line(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"question": "Hi"}]).save_to_disk(str(tmp_path / "qa"))
    done = run_cli("score", "--input", str(tmp_path / "qa"), "--output", str(tmp_path / "s.parquet"))
    assert "no 'record' or 'messages' column" in one_error_line(done)
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.integration
def test_score_a_datasets_folder_batched_then_resume(tmp_path):
    from opd_studio.exports import export_curated

    records = [Record.from_dict(ADD), Record.from_dict({**ADD, "id": "other", "hints": [
        {"message": 1, "char": 10, "text": " (Hint: carry the one.) "}]})]
    export_curated(records[:1], "datasets", tmp_path / "first")
    export_curated(records, "datasets", tmp_path / "both")
    output = tmp_path / "scores.parquet"
    done = run_cli("score", "--input", str(tmp_path / "first"), "--output", str(output), "--batch-size", "4")
    assert done.returncode == 0, done.stderr
    done = run_cli("score", "--input", str(tmp_path / "both"), "--output", str(output), "--batch-size", "4")
    assert done.returncode == 0, done.stderr
    assert "scored 2 records (1 already there)" in done.stderr
    import pandas as pd

    table = pd.read_parquet(output)
    assert table.record_id.unique().tolist() == ["add-17-25", "other"]
    three = table[(table.record_id == "add-17-25") & table.hint]
    assert three.text.item() == "3" and three.logp_after.item() < three.logp_before.item() - 2


def test_score_through_a_server_equals_in_process_scores(tmp_path, tiny_server, tiny_model, tokenizer):
    from opd_studio.scoring import score_record

    records = [Record.from_dict({**ADD, "id": f"a{n}"}) for n in range(3)]
    write_records(tmp_path / "in.jsonl", records)
    output = tmp_path / "scores.jsonl"
    done = run_cli("score", "--input", str(tmp_path / "in.jsonl"), "--output", str(output), "--base-url", tiny_server,
                   "--placebo", "default", "--concurrency", "2")
    assert done.returncode == 0, done.stderr
    assert "scored 3 records" in done.stderr.splitlines()[-1]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    local = score_record(tiny_model, tokenizer, records[0], placebo="default").table
    mine = [r for r in rows if r["record_id"] == "a0"]
    assert len(mine) == len(local) and {r["figures"] for r in rows} == {"top-5+tail"}
    for row, expected in zip(mine, local.itertuples()):
        if expected.student:
            assert abs(row["logp_after"] - expected.logp_after) < 1e-3
            assert abs(row["logp_placebo"] - expected.logp_placebo) < 1e-3
            assert {t for t, _ in row["top_after"]} == {t for t, _ in expected.top_after}
    refused = run_cli("score", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "x.jsonl"),
                      "--base-url", tiny_server, "--run", "1")
    assert "with --base-url the server's model scores" in one_error_line(refused)
