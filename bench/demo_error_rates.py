"""How often the default model errs on the bundled demo tasks, as the family's verifier sees it.

Every task in assets/demo_tasks.jsonl is rolled out greedily and with 3 sampling seeds (temperature 0.7); the
family's verifier (arithmetic → arithmetic, tools → tools, qa → reference) reads the generated turn. A rollout is
*flagged* when the verifier proposes a hint there, *verified right* when it checked something and found it
correct, and *nothing to check* when it found nothing (no `a + b = c` written, no tool call made). Only the
generated turn counts: the tool tasks show the model one worked example call, which is always valid. Arithmetic
rollouts are also held against their reference answer, which catches wrong answers written without an `=`.

The rollouts go to assets/demo_rollouts.jsonl with the proposals as hints (status "proposed") and the first
proposal's error span, ready to load in the studio; the table goes to stdout and bench/results/.
`--rejudge` re-reads the saved rollouts and only re-runs the verifiers (generation takes most of the time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]

from opd_studio.hints import HINT_MODELS, VERIFIER_OF_FAMILY
from opd_studio.records import Record, read_records, write_records

TASKS = ROOT / "assets" / "demo_tasks.jsonl"
ROLLOUTS = ROOT / "assets" / "demo_rollouts.jsonl"
RESULTS = ROOT / "bench" / "results" / "demo_error_rates.json"
SEEDS = (1, 2, 3)
MAX_NEW_TOKENS = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rejudge", action="store_true", help="re-run the verifiers on the saved rollouts")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.rejudge:
        rollouts = read_records(ROLLOUTS)
        source = f"{rollouts[0].meta.get('model')}, re-judged from {ROLLOUTS.name}"
    else:
        rollouts, source = generate_rollouts()
    verifiers = {name: HINT_MODELS[name]() for name in set(VERIFIER_OF_FAMILY.values())}
    rows = [judge(record, verifiers) for record in rollouts]
    write_records(ROLLOUTS, rollouts)
    table = summarize(pd.DataFrame(rows))
    print(f"Demo error rates ({source}; {len(rollouts)} rollouts, {time.perf_counter() - started:.0f} s; "
          f"sampled = seeds {', '.join(map(str, SEEDS))} at T=0.7)")
    print(table.to_string(index=False))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"source": source, "rows": table.to_dict("records")}, indent=2))


def generate_rollouts() -> tuple[list[Record], str]:
    from opd_studio.model import load_model
    from opd_studio.rollout import SamplingConfig, generate

    model, tokenizer = load_model("default")
    runs = {"greedy": SamplingConfig(max_new_tokens=MAX_NEW_TOKENS)} | {
        f"seed-{seed}": SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=0.7, seed=seed) for seed in SEEDS}
    rollouts = []
    for task in read_records(TASKS):
        for run, config in runs.items():
            record, _ = generate(model, tokenizer, task.messages, config, tools=task.tools,
                                 record_id=f"{task.id}.{run}", meta={**task.meta, "task": task.id, "run": run})
            record.reference = task.reference
            rollouts.append(record)
        print(f"{task.id}: generated", file=sys.stderr, flush=True)
    source = f"{model.config.name_or_path} on {model.device.type}, {torch.get_num_threads()} threads"
    return rollouts, source


def judge(record: Record, verifiers: dict) -> dict:
    """Put the family verifier's proposals on `record` (as proposed hints) and say what it made of the last turn."""
    family = record.meta["family"]
    verifier = verifiers[VERIFIER_OF_FAMILY[family]]
    result = verifier.propose(record)
    record.hints = [p.to_hint() for p in result.proposals]
    record.error = result.proposals[0].to_error() if result.proposals else None
    last = len(record.messages) - 1
    generated = Record(record.id, record.messages[last - 1:], tools=record.tools, reference=record.reference)
    turn = verifier.propose(generated) if family == "tools" else result
    record.meta["verifier_reason"] = turn.reason
    if any(p.message == last for p in result.proposals):
        verdict = "wrong"
    else:
        verdict = "unchecked" if turn.reason.startswith(("no arithmetic", "no tool calls")) else "right"
    answer_wrong = bool(verifiers["reference"].propose(record).proposals) if record.reference else None
    mode = "greedy" if record.meta["run"] == "greedy" else "sampled"
    return {"family": family, "mode": mode, "verdict": verdict, "answer_wrong": answer_wrong}


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per family and mode: share of rollouts the verifier flags, finds right, or cannot check."""
    out = []
    for (family, mode), group in rows.groupby(["family", "mode"], sort=False):
        share = group["verdict"].value_counts(normalize=True)
        line = {"family": family, "mode": mode, "rollouts": len(group),
                "flagged": f"{share.get('wrong', 0):.0%}", "verified right": f"{share.get('right', 0):.0%}",
                "nothing to check": f"{share.get('unchecked', 0):.0%}"}
        known = group["answer_wrong"].dropna()
        line["final answer wrong"] = f"{known.astype(bool).mean():.0%}" if len(known) else "-"
        out.append(line)
    return pd.DataFrame(out)


if __name__ == "__main__":
    main()
