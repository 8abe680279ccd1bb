"""Where does the hinted teacher put its mass at the error? (issue 18: training suppresses errors without correcting)

On the held-out family's flagged curation answers (bench/effect.py's `family_rollouts_flagged`: greedy answers of
bench/families.py, hints from the arithmetic verifier, else the answer verifier, both revealing the right result),
each record is scored with its hint in each placement, and the first error token's row is read:

  right top-1 / top-3   the right result's first character is the teacher's top token / among its top 3
  newline top-1         the teacher's top token is a line break (the hint ended the sentence for it)
  p(right), p(error)    the teacher's probability of the right result's first token and of the written error token

A target built from a teacher whose top token at the error is not the right one can suppress the error but has
nothing to correct it with: this says which placement gives the student something to learn.

    python -m bench.teacher_top                 # inline and feedback, all flagged curation answers
    python -m bench.teacher_top --records 6     # the six bench.effect --family trains on
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import pandas as pd

from bench.effect import family_rollouts_flagged
from opd_studio.model import load_model
from opd_studio.records import PROPOSAL_PLACEMENTS, Record
from opd_studio.scoring import HintScorer
from opd_studio.trajectory import build_trajectory

ROOT = Path(__file__).resolve().parents[1]


def error_row(model, tokenizer, record: Record, placement: str) -> dict:
    """The teacher's numbers at the first error token of `record` with its hint placed as `placement`."""
    hint = dataclasses.replace(record.hints[0], placement=placement)
    trajectory = build_trajectory(tokenizer, record)
    scores = HintScorer(model, tokenizer, trajectory).score([hint], error=record.error)
    row = scores.table.loc[scores.table.i == scores.error_span[0]].iloc[0]
    right = str(record.reference).strip()[:1]
    top = [(text.strip(), p) for text, p in row.top_after]
    return {"record": record.id, "placement": placement, "hint": hint.text, "error_token": row.text,
            "right_first": right, "teacher_top": [text for text, _ in top[:3]],
            "right_top1": top[0][0] == right, "right_top3": right in [text for text, _ in top[:3]],
            "newline_top1": top[0][0] == "" and "\n" in row.top_after[0][0],  # a line break, stripped to ""
            "p_right": next((p for text, p in top if text == right), 0.0),  # 0 when outside the listed top k
            "p_error": math.exp(row.logp_after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=48, help="at most this many flagged curation answers")
    parser.add_argument("--placements", nargs="+", default=list(PROPOSAL_PLACEMENTS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "teacher_top.json"))
    args = parser.parse_args()
    model, tokenizer = load_model("default", device="cpu")
    records = [r for r in family_rollouts_flagged(model, tokenizer, "curation", args.records) if r.reference]
    rows = [error_row(model, tokenizer, r, placement) for r in records for placement in args.placements]
    frame = pd.DataFrame(rows)
    summary = frame.groupby("placement", sort=False).agg(
        records=("record", "size"), right_top1=("right_top1", "mean"), right_top3=("right_top3", "mean"),
        newline_top1=("newline_top1", "mean"), p_right=("p_right", "mean"), p_error=("p_error", "mean"))
    print(frame[["record", "placement", "error_token", "right_first", "teacher_top"]].to_string(index=False))
    print()
    print(summary.round(3).to_string())
    Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary.reset_index().to_dict("records")},
                                         indent=1, default=str))


if __name__ == "__main__":
    main()
