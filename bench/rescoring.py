"""Full vs incremental rescoring after a hint edit: the incremental cost should follow the suffix after the hint.

For responses of 256, 1024 and 2048 tokens with the hint at 75 % of the response, each measurement is one edit of
the hint's text followed by rescoring. *full* runs the hinted sequence from token 0; *incremental* reuses the
original pass's key/value cache up to the hint and runs only the hint and the suffix. Both compute logits only at
student positions after the hint, and both already hold the original pass (it is computed once per rollout).

Two numbers per path: the whole rescoring (what a click costs), and the decoder pass alone (where the reuse acts).
The difference between them — full-vocabulary log-probabilities, ranks, entropies, top-k and KL at every student
position after the hint — is the same work in both paths, so it bounds the whole-rescoring speed-up.
Medians of interleaved repeats, in one process, so the ratios are measured side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


from bench.common import median_seconds, rollout_of_length
from opd_studio.model import load_model
from opd_studio.records import Hint
from opd_studio.alignment import splice
from opd_studio.scoring import HintScorer, forward_reusing
from opd_studio.trajectory import build_trajectory

LENGTHS = (256, 1024, 2048)
REPEATS = 5


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, tokenizer = load_model("default")
    rows = []
    for length in LENGTHS:
        record = rollout_of_length(tokenizer, length)
        trajectory = build_trajectory(tokenizer, record)
        first, last = trajectory.student_token_spans[1]
        at = first + int(0.75 * (last - first))
        scorers = {"full": HintScorer(model, tokenizer, trajectory, reuse_cache=False),
                   "incremental": HintScorer(model, tokenizer, trajectory)}
        edits = iter(range(10_000))

        def edit(scorer, edits=edits, at=at):
            hints = [Hint(text=f" (Hint {next(edits)}: check the carry.) ", token=at)]
            return lambda: scorer.score(hints)

        for scorer in scorers.values():  # warm-up: the original pass, computed once per rollout
            edit(scorer)()
        times = {name: [] for name in scorers}
        for _ in range(REPEATS):  # interleaved, so machine noise hits both alike
            for name, scorer in scorers.items():
                times[name].append(median_seconds(edit(scorer), 1))
        full, incremental = (sorted(times[n])[REPEATS // 2] for n in ("full", "incremental"))
        # the decoder pass alone, on the same hinted sequence
        scorer = scorers["incremental"]
        hinted_ids, _ = splice(trajectory.input_ids, scorer.place([Hint(text=" (Hint: check the carry.) ", token=at)]))
        original = scorer.original_pass()
        forward = {"full": [], "incremental": []}
        with torch.no_grad():
            for _ in range(REPEATS):
                forward["full"].append(median_seconds(lambda: forward_reusing(model, hinted_ids), 1))
                forward["incremental"].append(median_seconds(lambda: forward_reusing(model, hinted_ids, original), 1))
        forward_full, forward_inc = (sorted(forward[n])[REPEATS // 2] for n in ("full", "incremental"))
        rows.append({"response_tokens": length, "trajectory_tokens": len(trajectory), "hint_at": at,
                     "full_s": full, "incremental_s": incremental, "speedup": full / incremental,
                     "forward_full_s": forward_full, "forward_incremental_s": forward_inc,
                     "forward_speedup": forward_full / forward_inc})
    device = f"{model.device.type}, {torch.get_num_threads()} threads, {str(model.dtype).removeprefix('torch.')}"
    print(f"Rescoring after a hint edit (hint at 75 % of the response; median of {REPEATS}; {device})")
    print("| response tokens | full rescoring | incremental | speed-up | decoder pass: full | incremental | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['response_tokens']} | {r['full_s'] * 1000:.0f} ms | {r['incremental_s'] * 1000:.0f} ms "
              f"| {r['speedup']:.1f}× | {r['forward_full_s'] * 1000:.0f} ms | {r['forward_incremental_s'] * 1000:.0f} ms"
              f" | {r['forward_speedup']:.1f}× |")
    out = Path(__file__).parent / "results" / "rescoring.json"
    out.write_text(json.dumps({"device": device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
