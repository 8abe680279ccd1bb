"""Served scoring throughput and agreement: the same records scored in-process (batched) and through servers, in one
run (issue 20).

Data: the hinted records of assets/demo_rollouts.jsonl (`--family`, default arithmetic), each scored under its hints
as `opd-studio score` does (the original and the hinted sequence of every record). Measured, interleaved, medians of
`--repeats`:

- *in-process (batched)*: `batching.score_records`, `opd-studio score`'s local path, `--batch-size` sequences a pass.
- *our serve*: `opd-studio serve` started as a second process on loopback; `served.score_served` with
  `--concurrency` requests in flight (`opd-studio score --base-url`'s path). Same weights, fp32 on the CPU.
- *llama.cpp* (when .venv-llama exists: `make llama-server`): llama-cpp-python's server on the default model's GGUF,
  the same client (echo + logprobs; it computes in the GGUF's quantized arithmetic).

tokens = the tokens of all the sequences scored. Agreement with the in-process scores, over every student position
(before and after the hint): max and mean |Δ log p| of the written token, the share of positions whose rank agrees
(where the server gives one: inside its top k), and of top-k sets that are equal (top-1 agreement too).

    python -m bench.served [--quick] [--repeats 3] [--records 6 (0: all)] [--concurrency 8] [--no-llama]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

from opd_studio.batching import prepare_scoring, score_records
from opd_studio.model import default_gguf_path, load_model
from opd_studio.records import read_records
from opd_studio.served import score_served, served_client

RESULTS = ROOT / "bench" / "results" / "served.json"
LLAMA_PYTHON = ROOT / ".venv-llama" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], port: int, log: Path, wait_s: float = 300) -> subprocess.Popen:
    """Start a server process (its output to `log`) and wait until /v1/models answers."""
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ})
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{command[2]} exited: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"{command[2]} did not answer in {wait_s:.0f} s: {log.read_text(errors='replace')[-2000:]}")


def agreement(served: dict, local: dict) -> dict:
    """|Δ log p| of the written token, rank and top-k agreement over every student position of every record."""
    deltas, ranks, rank_known, sets, top1 = [], 0, 0, 0, 0
    for record_id, mine in served.items():
        theirs = local[record_id]
        rows = theirs.student.to_numpy()
        for side in ("before", "after", "placebo")[: 3 if "logp_placebo" in theirs else 2]:
            for a, b in zip(mine[f"logp_{side}"][rows], theirs[f"logp_{side}"][rows]):
                deltas.append(abs(a - b))
            for a, b in zip(mine[f"rank_{side}"][rows], theirs[f"rank_{side}"][rows]):
                if not pd.isna(a):
                    rank_known += 1
                    ranks += int(a) == int(b)
            for a, b in zip(mine[f"top_{side}"][rows], theirs[f"top_{side}"][rows]):
                sets += {t for t, _ in a} == {t for t, _ in b}
                top1 += bool(a) and bool(b) and a[0][0] == b[0][0]
    n = len(deltas)
    return {"positions": n, "max_abs_dlogp": max(deltas), "mean_abs_dlogp": statistics.fmean(deltas),
            "rank_agreement": ranks / rank_known if rank_known else None, "rank_known_share": rank_known / n,
            "topk_set_agreement": sets / n, "top1_agreement": top1 / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 records, 1 repeat: a smoke test")
    parser.add_argument("--repeats", type=int, default=3)
    # 6 records: llama-cpp-python's echo sorts the whole vocabulary in Python for every prompt token, so its runs
    # dominate the time; 6 records × 3 repeats (and a one-record warm-up) keep the default run bounded.
    parser.add_argument("--records", type=int, default=6, help="at most this many records (0: all)")
    parser.add_argument("--family", default="arithmetic", help="arithmetic, tools, qa or all")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--no-llama", action="store_true", help="leave llama.cpp's server out")
    args = parser.parse_args()
    if args.quick:
        args.records, args.repeats = args.records or 4, 1

    model, tokenizer = load_model("default")
    records = [r for r in read_records(ROOT / "assets" / "demo_rollouts.jsonl")
               if r.hints and (args.family == "all" or r.meta.get("family") == args.family)]
    records = records[: args.records] if args.records else records
    jobs = prepare_scoring(tokenizer, records)
    tokens = sum(len(s) for job in jobs for s in job.sequences)

    logs = Path(tempfile.mkdtemp(prefix="bench-served-"))
    servers: dict[str, str] = {}
    processes = []
    try:
        port = free_port()
        processes.append(start_server([sys.executable, "-m", "opd_studio", "serve", "--port", str(port),
                                        "--dtype", "float32"], port, logs / "serve.log"))
        servers["our serve"] = f"http://127.0.0.1:{port}/v1"
        if not args.no_llama and LLAMA_PYTHON.is_file():
            port = free_port()
            processes.append(start_server([str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model",
                                           str(default_gguf_path()), "--host", "127.0.0.1", "--port", str(port),
                                           "--n_ctx", "2048", "--logits_all", "true"], port, logs / "llama.log"))
            servers["llama.cpp"] = f"http://127.0.0.1:{port}/v1"

        def local_run(some) -> dict:
            return {r.id: s.table for r, s in score_records(model, tokenizer, some, top_k=args.top_k,
                                                            batch_size=args.batch_size)}

        def served_run(url: str):
            client = served_client(url, tokenizer, args.top_k, concurrency=args.concurrency)
            return lambda some: {r.id: s.table for r, s in score_served(client, tokenizer, some)}

        runs = {"in-process (batched)": local_run, **{name: served_run(url) for name, url in servers.items()}}
        for name, run in runs.items():  # warm-up on one record (and each client finds its server's protocol)
            started = time.perf_counter()
            run(jobs[:1])
            print(f"warm-up {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        times: dict[str, list[float]] = {name: [] for name in runs}
        tables = {}  # the first repeat's tables, compared below
        for repeat in range(args.repeats):
            for name, run in runs.items():
                started = time.perf_counter()
                result = run(jobs)
                times[name].append(time.perf_counter() - started)
                tables.setdefault(name, result)
                print(f"repeat {repeat + 1} {name}: {times[name][-1]:.1f} s", file=sys.stderr, flush=True)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)

    local = tables["in-process (batched)"]
    agree = {name: agreement(tables[name], local) for name in servers}
    medians = {name: statistics.median(t) for name, t in times.items()}
    rates = {name: tokens / m for name, m in medians.items()}
    import torch

    label = f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"Served scoring, {len(records)} hinted {args.family} records, {tokens:,} tokens; {label}; in-process "
             f"batch {args.batch_size}, served concurrency {args.concurrency}, top-{args.top_k}; medians of "
             f"{args.repeats}",
             f"{'':<24}{'seconds':>10}{'tokens/s':>12}{'min–max s':>16}{'vs in-process':>16}"]
    for name in runs:
        lines.append(f"{name:<24}{medians[name]:>10.2f}{rates[name]:>12,.0f}"
                     f"{min(times[name]):>8.2f}–{max(times[name]):.2f}"
                     f"{rates[name] / rates['in-process (batched)']:>15.2f}×")
    for name, a in agree.items():
        rank = "n/a" if a["rank_agreement"] is None else f"{a['rank_agreement']:.1%}"
        lines.append(f"{name} vs in-process over {a['positions']} positions: |Δ log p| max {a['max_abs_dlogp']:.2e} "
                     f"mean {a['mean_abs_dlogp']:.2e} nats; rank agrees {rank} (known at "
                     f"{a['rank_known_share']:.0%}); top-{args.top_k} sets equal {a['topk_set_agreement']:.1%}; "
                     f"top-1 {a['top1_agreement']:.1%}")
    print("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"device": label, "records": len(records), "tokens": tokens, "quick": args.quick,
                                   "batch_size": args.batch_size, "concurrency": args.concurrency,
                                   "top_k": args.top_k, "repeats": args.repeats, "seconds": times,
                                   "medians": medians, "tokens_per_s": rates, "agreement": agree}, indent=1))


if __name__ == "__main__":
    main()
