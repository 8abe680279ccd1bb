"""Behaviour check for refactors of the alignment code (issue 19): record, then compare, every number that depends on
which row predicts which token.

With the tiny random Llama of tests/conftest.py over the default tokenizer and fixed seeds, on a fixed set of records
(one hint; a hint at the first response token; several hints over a multi-turn tool conversation, one of them a
feedback turn; a template hint), it records: `HintScorer.score` tables (with the placebo lane), `score_window`
tables, `gradient_map` for every target construction, batched `score_records` tables, the teacher top-k export
rows, the leak flags and position sweep, and short training runs (several target constructions, a moving teacher)
with their histories (wall-clock fields dropped) and trained weights.

    python -m bench.alignment_golden --save /work/golden-before.pt     # before the change
    python -m bench.alignment_golden --compare /work/golden-before.pt  # after it: exact equality, or the differences

Runs in about a minute on two CPU cores; exact comparison (torch.equal, DataFrame.equals), no tolerance.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys

import pandas as pd
import torch

from tests.conftest import ADD, FIRST_TOKEN, SEVERAL_HINTS, random_llama

RECORDS = [ADD, FIRST_TOKEN, SEVERAL_HINTS]
TARGET_KINDS = ["hinted", "contrast", "evidence", "unleaked", "guided"]


def frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.reset_index(drop=True)


def collect() -> dict:
    from opd_studio.batching import prepare_scoring, score_records
    from opd_studio.diagnostics import hint_flags, position_sweep
    from opd_studio.model import load_model
    from opd_studio.records import Record
    from opd_studio.scoring import HintScorer
    from opd_studio.targets import TargetSpec
    from opd_studio.teacher_topk import teacher_topk_rows
    from opd_studio.train import TrainConfig, train
    from opd_studio.trajectory import build_trajectory

    _, tokenizer = load_model("default", device="cpu")
    tiny = random_llama(tokenizer, 40)
    small = random_llama(tokenizer, 4)
    records = [Record.from_dict(r) for r in RECORDS]
    out: dict = {}
    for record in records:
        trajectory = build_trajectory(tokenizer, record)
        for span in ("turn", "error", "response"):
            scorer = HintScorer(tiny, tokenizer, trajectory)
            out[f"score/{record.id}/{span}"] = frame(scorer.score(record.hints, span=span, error=record.error,
                                                                  placebo="default").table)
        scorer = HintScorer(tiny, tokenizer, trajectory)
        window = scorer.score_window(record.hints, "turn", record.error)
        out[f"window/{record.id}"] = (frame(window.table), window.pending_from, window.pending_before)
        out[f"window-then-score/{record.id}"] = frame(scorer.score(record.hints, "turn", record.error).table)
        for kind in TARGET_KINDS:
            spec = TargetSpec(kind=kind, alpha=2.0)
            for model_name, model in (("tiny", tiny), ("small", small)):
                gmap = HintScorer(model, tokenizer, trajectory).gradient_map(record.hints, spec, placebo="default",
                                                                            error=record.error)
                out[f"gradient_map/{record.id}/{kind}/{model_name}"] = frame(gmap.frame)
        scorer = HintScorer(tiny, tokenizer, trajectory)
        scores = scorer.score(record.hints, error=record.error)
        out[f"flags/{record.id}"] = frame(hint_flags(scorer, scores))
        error = trajectory.error_token_span(record.error)
        out[f"sweep/{record.id}"] = frame(position_sweep(scorer, " (Hint: carry the 1.) ", error, window=4))
    jobs = prepare_scoring(tokenizer, records, placebo="default")
    out["batched"] = {r.id: frame(s.table) for r, s in score_records(tiny, tokenizer, jobs, batch_size=2)}
    out["teacher_topk"] = teacher_topk_rows(small, tokenizer, records, top_k=5, batch_size=2)

    for kind, teacher in [("hinted", "frozen"), ("contrast", "frozen"), ("unleaked", "frozen"), ("guided", "frozen"),
                          ("evidence", "frozen"), ("contrast", "live")]:
        torch.manual_seed(0)
        config = TrainConfig(steps=2, lr=5e-3, target=kind, teacher=teacher, drift_threshold=None, batch_size=2,
                             seed=0)
        result = train(copy.deepcopy(small), tokenizer, records, config)
        history = []
        for row in result.history:
            values = dataclasses.asdict(row)
            history.append({k: v for k, v in values.items() if "seconds" not in k})
        weights = {name: p.detach().clone() for name, p in result.model.named_parameters() if p.requires_grad}
        out[f"train/{kind}/{teacher}"] = {"history": history, "weights": weights,
                                          "teacher_logits": [None if ex.teacher_logits is None
                                                             else ex.teacher_logits.clone()
                                                             for ex in result.examples]}
    return out


def differences(a, b, path: str = "") -> list[str]:
    """Where `a` and `b` differ, exactly (NaN equals NaN)."""
    if type(a) is not type(b):
        return [f"{path}: {type(a).__name__} vs {type(b).__name__}"]
    if isinstance(a, torch.Tensor):
        return [] if a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) else [f"{path}: tensors differ"]
    if isinstance(a, pd.DataFrame):
        if list(a.columns) != list(b.columns) or a.shape != b.shape:
            return [f"{path}: frame shape/columns differ"]
        return [f"{path}.{c}: column differs" for c in a.columns if not a[c].equals(b[c])]
    if isinstance(a, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))} differ"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [d for n, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{n}]")]
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", help="write the recorded numbers here")
    group.add_argument("--compare", help="compare against numbers saved with --save")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = collect()
    if args.save:
        torch.save(out, args.save)
        print(f"saved {len(out)} entries to {args.save}")
        return 0
    before = torch.load(args.compare, weights_only=False)
    diffs = differences(before, out)
    print(f"{len(out)} entries compared: " + ("identical" if not diffs else f"{len(diffs)} differences"))
    for d in diffs[:50]:
        print("  " + d)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
