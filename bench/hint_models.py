"""Precision and recall of each hint model on a labelled set of the default model's own arithmetic answers (issue 18).

The set: the default model's greedy answers to the 48 tasks of the held-out family (bench/families.py: a + b, a − b,
a × b in bare, imperative and word-problem phrasings, seeded) and 2 sampled answers (temperature 0.7) to the first 12,
as bench/data/family_greedy.jsonl and bench/data/family_sampled.jsonl, and the default model's arithmetic answers of
the bundled demo rollouts (assets/demo_rollouts.jsonl: 18 tasks, greedy and 3 samples). Each answer is labelled in
bench/data/hint_labels.jsonl:

- `label`: "wrong" (the answer states a result and it is not the task's), "right" (every result it states is the
  task's) or "no result" (it states none: a refusal, an unfinished answer, a restatement of the question);
- `label_source`: "checker" — `math-verify` on the whole answer against the reference (its parser finds the final
  answer itself: the boxed value, else the last number), so the label does not come from any hint model — or
  "hand", where a hint model disagreed with the checker and the answer was read by hand (`note` says why).

For each hint model: *recall* = wrong answers it flags / wrong answers; *precision* = flagged answers that are wrong
/ flagged answers. A flag on a right answer, or on an answer without a result, counts against precision. Models
that need a language model (the critic) are left out: they are measured with the model they run on.

    python -m bench.hint_models            # the table, bench/results/hint_models.json
    python -m bench.hint_models --label    # (re)write the checker labels, keeping the hand labels
    python -m bench.hint_models --quick    # the first 16 labelled answers only (a smoke test)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from opd_studio.hints import HINT_MODELS, needs_model
from opd_studio.records import Record, read_records

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
ROLLOUTS = [DATA / "family_greedy.jsonl", DATA / "family_sampled.jsonl", ROOT / "assets" / "demo_rollouts.jsonl"]
LABELS = DATA / "hint_labels.jsonl"
RESULTS = ROOT / "bench" / "results"
# Families the arithmetic answers belong to; the tool-call verifier has nothing to check on them.
MODELS = [name for name in HINT_MODELS if not needs_model(name) and name != "tools"]


def checker_label(record: Record) -> str:
    """math-verify's verdict on the whole answer against the reference (its own final-answer extraction)."""
    from math_verify import parse, verify

    answer = record.messages[-1]["content"]
    parsed = parse(answer, parsing_timeout=None)
    if not parsed:
        return "no result"
    return "right" if verify(parse(f"${record.reference}$", parsing_timeout=None), parsed,
                             timeout_seconds=None) else "wrong"


def write_labels(rollouts: list[Record]) -> pd.DataFrame:
    """The checker's labels, with every hand label already in LABELS kept (a hand label wins)."""
    hand = {}
    if LABELS.is_file():
        for line in LABELS.read_text().splitlines():
            row = json.loads(line)
            if row["label_source"] == "hand":
                hand[row["id"]] = row
    rows = []
    for r in rollouts:
        row = {"id": r.id, "question": r.messages[0]["content"], "answer": r.messages[-1]["content"],
               "reference": r.reference, "run": r.meta.get("run"), "label": checker_label(r),
               "label_source": "checker", "note": ""}
        if r.id in hand:
            row.update(label=hand[r.id]["label"], label_source="hand", note=hand[r.id].get("note", ""))
        rows.append(row)
    LABELS.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return pd.DataFrame(rows)


def verdicts(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per (answer, hint model): flagged, and the flagged text."""
    rows = []
    for row in labels.itertuples():
        record = Record(row.id, [{"role": "user", "content": row.question},
                                 {"role": "assistant", "content": row.answer}], reference=row.reference,
                        meta={"family": "arithmetic"})
        for name in MODELS:
            result = HINT_MODELS[name]().propose(record)
            first = result.proposals[0] if result.proposals else None
            rows.append({"id": row.id, "model": name, "label": row.label, "flagged": first is not None,
                         "flagged_text": row.answer[first.char_start: first.char_end] if first else ""})
    return pd.DataFrame(rows)


def scores(table: pd.DataFrame) -> pd.DataFrame:
    out = []
    for name, group in table.groupby("model", sort=False):
        wrong = group[group.label == "wrong"]
        flagged = group[group.flagged]
        out.append({"model": name, "wrong answers": len(wrong), "flagged": len(flagged),
                    "recall": wrong.flagged.mean() if len(wrong) else float("nan"),
                    "precision": (flagged.label == "wrong").mean() if len(flagged) else float("nan"),
                    "false flags (right / no result)": f"{int((flagged.label == 'right').sum())} / "
                                                       f"{int((flagged.label == 'no result').sum())}"})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", action="store_true", help="(re)write the checker labels, keeping hand labels")
    parser.add_argument("--quick", action="store_true", help="the first 16 labelled answers only")
    args = parser.parse_args()
    if args.label or not LABELS.is_file():
        labels = write_labels([r for path in ROLLOUTS if path.is_file() for r in read_records(path)
                               if r.meta.get("family") == "arithmetic"])
    else:
        labels = pd.read_json(LABELS, lines=True, dtype=False)
    if args.quick:
        labels = labels.head(16)
    table = verdicts(labels)
    result = scores(table)
    # The answers where a hint model and the label disagree: what to read when checking the labels by hand.
    merged = table.merge(labels[["id", "answer", "label_source"]], on="id")
    disagreements = merged[merged.flagged != (merged.label == "wrong")]
    counts = labels.groupby(["label", "label_source"]).size().rename("answers").reset_index()
    print(f"{len(labels)} labelled answers:\n{counts.to_string(index=False)}\n")
    print(result.to_string(index=False, float_format=lambda v: f"{v:.1%}"))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hint_models.json").write_text(json.dumps(
        {"answers": len(labels), "labels": counts.to_dict("records"), "scores": result.to_dict("records"),
         "disagreements": disagreements[["id", "model", "label", "label_source", "flagged", "flagged_text",
                                         "answer"]].to_dict("records")}, indent=1, default=str))


if __name__ == "__main__":
    main()
