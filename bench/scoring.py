"""Headless scoring throughput: `score`'s batched path vs a batched forward-pass floor, in the same run (issue 13).

Data: the hinted records of assets/demo_rollouts.jsonl (their families as chosen by `--family`, default
arithmetic), each scored under its hints as `python -m opd_studio score` does. Three measurements over the same
sequences (every record's original trajectory and its hinted one), interleaved, medians of `--repeats`:

- *floor*: the model's forward pass alone (decoder + output projection, logits at every position) over those
  sequences in right-padded, length-bucketed batches of `--batch-size`; nothing else. Scoring cannot be faster than
  the passes it needs, so `score tokens/s ÷ floor tokens/s` is the share of the floor that scoring reaches
  (goal ≥ 0.9).
- *score (batched)*: `batching.score_records`, the CLI's path: the same passes (logits only at student positions)
  plus every column of the table (log-softmax, rank, entropy, top-k, KL).
- *score (one at a time)*: `scoring.score_record` per record, the path before batching, for reference.

tokens = the tokens of all those sequences. On CUDA the model runs in bf16, on the CPU in fp32.

    python -m bench.scoring [--batch-size 16] [--repeats 3] [--records 0 (all)] [--family arithmetic|all]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from opd_studio.batching import length_batches, prepare_scoring, score_records
from opd_studio.model import load_model
from opd_studio.records import read_records
from opd_studio.scoring import score_record

RESULTS = ROOT / "bench" / "results" / "scoring.json"


def hinted_records(family: str, limit: int):
    records = [r for r in read_records(ROOT / "assets" / "demo_rollouts.jsonl")
               if r.hints and (family == "all" or r.meta.get("family") == family)]
    return records[:limit] if limit else records


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def floor(model, sequences: list[tuple[int, ...]], batch_size: int, pad_id: int) -> None:
    for batch in length_batches([len(s) for s in sequences], batch_size, 32768):
        seqs = [sequences[n] for n in batch]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(s)
            mask[b, : len(s)] = 1
        model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=False).logits.float()
    sync(model.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=int, default=0, help="at most this many records (0: all)")
    parser.add_argument("--family", default="arithmetic", help="arithmetic, tools, qa or all")
    parser.add_argument("--no-single", action="store_true", help="skip the one-at-a-time reference")
    args = parser.parse_args()

    model, tokenizer = load_model("default")
    device = model.device
    records = hinted_records(args.family, args.records)
    jobs = prepare_scoring(tokenizer, records)
    sequences = [s for job in jobs for s in job.sequences]
    tokens = sum(len(s) for s in sequences)
    pad_id = tokenizer.pad_token_id

    def batched():
        for _ in score_records(model, tokenizer, jobs, batch_size=args.batch_size):
            pass
        sync(device)

    def single():
        for record in records:
            score_record(model, tokenizer, record)
        sync(device)

    runs = {"floor": lambda: floor(model, sequences, args.batch_size, pad_id), "score_batched": batched}
    if not args.no_single:
        runs["score_single"] = single
    runs["floor"]()  # warm-up: allocator, kernels, caches
    batched()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)

    medians = {name: statistics.median(t) for name, t in times.items()}
    rates = {name: tokens / m for name, m in medians.items()}
    ratio = rates["score_batched"] / rates["floor"]
    label = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"Scoring throughput, {len(records)} hinted {args.family} records, {len(sequences)} sequences, "
             f"{tokens:,} tokens; {label}, {next(model.parameters()).dtype}; batch {args.batch_size}; medians of "
             f"{args.repeats}",
             f"{'':<24}{'seconds':>10}{'tokens/s':>12}{'min–max s':>16}"]
    for name in runs:
        lines.append(f"{name:<24}{medians[name]:>10.2f}{rates[name]:>12,.0f}"
                     f"{min(times[name]):>8.2f}–{max(times[name]):.2f}")
    lines.append(f"score (batched) / floor, tokens/s: {ratio:.2f}× (goal ≥ 0.9×)")
    if "score_single" in rates:
        lines.append(f"batched / one at a time: {rates['score_batched'] / rates['score_single']:.2f}×")
    print("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"device": label, "dtype": str(next(model.parameters()).dtype),
                                   "records": len(records), "sequences": len(sequences), "tokens": tokens,
                                   "batch_size": args.batch_size, "repeats": args.repeats, "seconds": times,
                                   "medians": medians, "tokens_per_s": rates, "ratio_to_floor": ratio}, indent=1))


if __name__ == "__main__":
    main()
