"""Generation through OpenAI-compatible servers: a real one this project did not write (llama-cpp-python's server on
the default GGUF, where installed), and the failures a user meets (nothing listening, a server without logprobs),
each one clear line with nothing left in the output."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from opd_studio.headless import generate_file
from opd_studio.records import Record
from opd_studio.remote import RemoteConfig, RemoteError
from opd_studio.rollout import SamplingConfig
from opd_studio.scoring import score_record

QUESTION = [{"role": "user", "content": "What is 17 + 25?"}]
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_one_clear_error_and_writes_nothing(tmp_path, tokenizer):
    url = f"http://127.0.0.1:{free_port()}/v1"
    output = tmp_path / "rollouts.jsonl"
    with pytest.raises(RemoteError, match=r"cannot reach .* is the server running"):
        generate_file([Record("a", QUESTION)], output, [SamplingConfig()], tokenizer=tokenizer,
                      remote=RemoteConfig(url))
    assert list(tmp_path.iterdir()) == []


class NoLogprobs(BaseHTTPRequestHandler):
    """A chat server that ignores logprobs (as some hosted APIs do)."""

    def log_message(self, *args):
        pass

    def _json(self, payload):
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._json({"data": [{"id": "plain"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._json({"choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "42"}}]})


def test_server_without_logprobs_is_one_clear_error_and_writes_nothing(tmp_path, tokenizer):
    server = ThreadingHTTPServer(("127.0.0.1", 0), NoLogprobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        output = tmp_path / "rollouts.jsonl"
        records = [Record(f"r{n}", QUESTION) for n in range(3)]
        with pytest.raises(RemoteError, match="returned no logprobs") as error:
            generate_file(records, output, [SamplingConfig()], tokenizer=tokenizer,
                          remote=RemoteConfig(f"http://127.0.0.1:{server.server_port}/v1"))
        assert "\n" not in str(error.value)
        assert list(tmp_path.iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------------------------------
# llama-cpp-python's OpenAI-compatible server (a separate virtualenv: `make llama-server`)


def llama_python() -> str | None:
    candidate = os.environ.get("LLAMA_SERVER_PYTHON") or str(ROOT / ".venv-llama" / "bin" / "python")
    if not Path(candidate).is_file():
        return None
    found = subprocess.run([candidate, "-c", "import llama_cpp.server"], capture_output=True)
    return candidate if found.returncode == 0 else None


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    python = llama_python()
    if python is None:
        pytest.skip("llama-cpp-python's server is not installed (make llama-server builds it; run by make bench)")
    from opd_studio.model import default_gguf_path

    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"  # a file, not a pipe: llama.cpp logs a lot
    with log.open("wb") as handle:
        process = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", str(default_gguf_path()),
                                    "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                                    "--logits_all", "true"], stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/models", timeout=1)
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail(f"llama_cpp.server did not answer in 120 s: {log.read_text(errors='replace')[-2000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.integration
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_llama_cpp_server_rollouts_score_exactly(llama_server, default_model, tmp_path, endpoint):
    model, tokenizer = default_model
    records = [Record("add", QUESTION),
               Record("emoji", [{"role": "user", "content": "Name three colours, with an emoji each 🌞."}])]
    output = tmp_path / "rollouts.jsonl"
    summary = generate_file(records, output, [SamplingConfig(max_new_tokens=24, temperature=0.8, seed=1)],
                            tokenizer=tokenizer,
                            remote=RemoteConfig(llama_server, endpoint=endpoint, top_logprobs=3, concurrency=1))
    assert summary.done == 2
    rollouts = [Record.from_dict(json.loads(line)) for line in output.read_text().splitlines()]
    for rollout in rollouts:
        remote = rollout.meta["remote"]
        # llama.cpp's server sends token text without bytes: ids from the bytes of the text, or, where a
        # character is split over tokens, the local tokenization checked token for token against its texts
        assert remote["token_ids"] in ("bytes", "matched"), remote["token_ids"]
        assert rollout.response_token_ids
        assert tokenizer.decode(rollout.response_token_ids) == rollout.messages[-1]["content"]
        # the server's log-probs of its own sampled tokens agree with the local model on the same ids
        # (same weights; llama.cpp runs them quantized, so within a tolerance), where the prompts agree
        table = score_record(model, tokenizer, rollout).table
        local = table[table.student].logp_before.tolist()[: len(remote["logprobs"])]
        close = sum(abs(a - b) < 0.5 for a, b in zip(local, remote["logprobs"]))
        assert close >= 0.8 * len(local), (local, remote["logprobs"])



@pytest.mark.integration
def test_opd_studio_score_through_the_llama_cpp_server(llama_server, default_model, tmp_path):
    """`opd-studio score --base-url` against llama.cpp's server (it takes text prompts only and names tokens by their
    text; echo + logprobs; the GGUF's Q4_1 arithmetic) on the two shortest hinted demo records, with the placebo
    lane: every token is scored as our token id, and the numbers are close to the in-process ones. The difference is
    measured, not bounded at 1e-3 (quantized weights): the bounds sit outside what was measured on these two records
    (before, hinted and placebo sides, 105 student positions: max |Δ log p| 0.32, mean 0.054, rank agreement 0.94
    where its top 5 holds the token, top-1 0.87; README "Served models")."""
    from bench.served import agreement
    from opd_studio.batching import prepare_scoring, score_records
    from opd_studio.records import read_records, write_records

    model, tokenizer = default_model
    hinted = [r for r in read_records(ROOT / "assets" / "demo_rollouts.jsonl")
              if r.hints and r.meta.get("family") == "arithmetic"]
    records = sorted(hinted, key=lambda r: len(json.dumps(r.messages)))[:2]
    write_records(tmp_path / "in.jsonl", records)
    output = tmp_path / "scores.jsonl"
    done = subprocess.run([sys.executable, "-m", "opd_studio", "score", "--input", str(tmp_path / "in.jsonl"),
                           "--output", str(output), "--base-url", llama_server, "--placebo", "default",
                           "--concurrency", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.DataFrame([json.loads(line) for line in output.read_text().splitlines()])
    served = {record_id: table.reset_index(drop=True) for record_id, table in rows.groupby("record_id")}
    local = {r.id: s.table for r, s in score_records(model, tokenizer, prepare_scoring(tokenizer, records,
                                                                                      placebo="default"))}
    assert served.keys() == local.keys()
    for record_id, table in served.items():
        # the same tokens, in the same places, each scored (no token the server tokenized otherwise was read)
        assert table.text.tolist() == local[record_id].text.tolist()
        assert table.logp_after[table.student].notna().all() and table.logp_placebo[table.student].notna().all()
        assert set(table.figures) == {"top-5+tail"}
    measured = agreement(served, local)
    print("llama.cpp vs in-process:", measured)
    assert measured["max_abs_dlogp"] < 1.0 and measured["mean_abs_dlogp"] < 0.15, measured
    assert measured["rank_agreement"] > 0.85 and measured["top1_agreement"] > 0.8, measured


@pytest.mark.integration
def test_a_llama_cpp_echo_without_a_leading_bos_is_refused(llama_server, default_model):
    """llama-cpp-python gives echoed token i the logits row i, which predicts token i + 1 unless a leading BOS was
    left out: a prompt that does not start with BOS would be scored one position off, so it is refused plainly;
    the same text after BOS (<|im_start|> for SmolLM2) is scored, close to the in-process numbers."""
    import torch

    from opd_studio.served import served_client

    model, tokenizer = default_model
    ids = tokenizer("The capital of France is Paris. The capital of Italy is Rome.").input_ids
    client = served_client(llama_server, tokenizer, concurrency=1)
    with pytest.raises(RemoteError, match="does not start with the model's BOS token"):
        client.fetch(ids)
    with_bos = [tokenizer.convert_tokens_to_ids("<|im_start|>")] + ids
    served = client.fetch(with_bos)
    with torch.no_grad():
        logp = model(torch.tensor([with_bos])).logits[0].log_softmax(-1)
    local = [float(logp[t - 1, with_bos[t]]) for t in range(2, len(with_bos))]  # the server nulls the first entry
    assert max(abs(served.hidden[t - 1].logp - v) for t, v in zip(range(2, len(with_bos)), local)) < 0.5
