"""Does the loop earn its place? Rounds against training longer on the first round's hints (issue 18).

Prompts that are not in the repository: `arithmetic_prompts(seed)` draws a + b, a − b and a × b with 2-digit
numbers (seeded), as the demo tasks are written ("What is 48 + 37?", `reference` the result, family arithmetic).
The *curated* family (seed 0) is what the rounds regenerate and train on; the *held-out* family (seed 1, no prompt
in common) is only measured. *Unrelated*: the demo QA tasks (what bench/effect.py uses), answered greedily.

Side by side, from the default model, each in a fresh store (`opd_studio.rounds`, greedy, the hint model's proposals
accepted as proposed, right answers kept as anchors, every other setting the library default):

- base;
- 1 round × S steps;
- 3 rounds × S steps (regenerate → propose → train from the last weights; its first round is the row above);
- 1 round × 3S steps (the same number of steps, no regeneration).

Per row: right answers on the curated and the held-out prompts (an answer is right when the prompt's verifiers —
arithmetic, and the reference result — find nothing wrong: `rounds.is_right`), unrelated answers unchanged (whole
answer, and first sentence), looping answers (curated + held-out), drift = mean KL(trained ‖ base) per token on the
base's unrelated QA answers, and per round what the hint model flagged and what it *missed* (wrong answers it
proposed nothing for: what the loop cannot fix). Writes bench/results/loop.json.

    python -m bench.loop --output bench/results/loop_feedback.json   # the defaults: feedback hints, error span, S = 20
    python -m bench.loop --steps 8 --hint-placement inline --span turn   # the earlier defaults → loop.json
    python -m bench.loop --quick              # 4 prompts, 1 step, 32 tokens: a smoke test
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

from bench.effect import first_sentence, neighbourhood_kl, tasks, unrelated_answers
from opd_studio.alignment import LOSS_SPANS
from opd_studio.fix_rate import FixRateConfig, loops, regenerate
from opd_studio.hints import HINT_MODELS
from opd_studio.model import load_model
from opd_studio.records import PROPOSAL_PLACEMENTS, Record
from opd_studio.rounds import RoundConfig, RoundProgress, is_right, prompt_key, run_round
from opd_studio.store import Store
from opd_studio.train import TrainConfig
from opd_studio.workspace import Weights, Workspace

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def arithmetic_prompts(seed: int, count: int = 16, exclude: set[str] = frozenset()) -> list[Record]:
    """`count` prompts "What is a op b?" with a, b in 10..99 and op cycling +, −, × — drawn with `seed`, none of
    `exclude` (prompt texts), none twice."""
    rng, prompts, seen = random.Random(seed), [], set(exclude)
    while len(prompts) < count:
        op = "+-*"[len(prompts) % 3]
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        text = f"What is {a} {op} {b}?"
        if text in seen:
            continue
        seen.add(text)
        prompts.append(Record(f"loop-s{seed}-{len(prompts):02d}", [{"role": "user", "content": text}],
                              reference=str(OPS[op](a, b)), meta={"family": "arithmetic", "split": f"seed{seed}"}))
    return prompts


def right_count(prompts: list[Record], answers: list[str], hint_model) -> int:
    return sum(bool(is_right(p, a, hint_model)) for p, a in zip(prompts, answers))


def evaluate(weights: Weights, curated, heldout, curated_answers, heldout_answers, unrelated, base_unrelated,
             neighbourhood, hint_model) -> dict:
    """A row of the table, from the greedy answers the weights gave (the last round's regenerated answers)."""
    now = unrelated_answers(weights.model, weights.tokenizer, unrelated)
    answers = curated_answers + heldout_answers
    return {"curated_right": right_count(curated, curated_answers, hint_model), "curated_n": len(curated),
            "heldout_right": right_count(heldout, heldout_answers, hint_model), "heldout_n": len(heldout),
            "unrelated_unchanged": sum(a == b for a, b in zip(now, base_unrelated)) / len(unrelated),
            "unrelated_first_sentence_unchanged":
                sum(first_sentence(a) == first_sentence(b) for a, b in zip(now, base_unrelated)) / len(unrelated),
            "looping": sum(map(loops, answers)) / len(answers),
            "drift": neighbourhood_kl(weights.model, weights.tokenizer, neighbourhood)
            if weights.trained is not None else 0.0,
            "answers": {"curated": curated_answers, "heldout": heldout_answers}}


def run_rounds(label, rounds, steps, args, model, tokenizer, curated, heldout, measure, add) -> None:
    """`rounds` rounds of `steps` steps in a fresh store; a row per round (`measure` turns a round into a row), handed
    to `add` as soon as it is measured (so a killed run leaves the rows it finished)."""
    directory = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    workspace = Workspace(Store(directory / "store.sqlite"))
    weights = Weights(model, tokenizer)
    config = RoundConfig(hint_model=args.hint_model, accept="verifier", max_new_tokens=args.max_new_tokens,
                         hint_placement=args.hint_placement,
                         train=TrainConfig(steps=steps, seed=args.seed, span=args.span))
    try:
        for number in range(1, rounds + 1):
            started = time.perf_counter()
            last = None
            try:
                for progress in run_round(workspace, weights, config, curated, heldout):
                    last = progress
                    if not progress.history or progress.outcome is not None:
                        print(f"  {label} · {progress.status}", flush=True)
            except ValueError as exc:  # a round with nothing to train on: the row says so
                last = RoundProgress(str(exc), [])
            if last.round is None:
                add({"label": f"{label}, round {number}", "stopped": last.status})
                print(f"  {label} · stopped: {last.status}", flush=True)
                break
            outcome = last.round
            row = measure(weights, [outcome.answers["curated"][prompt_key(p)] for p in curated],
                          [outcome.answers["heldout"][prompt_key(p)] for p in heldout])
            row.update({"label": f"{number} round{'s' if number > 1 else ''} × {steps} steps", "rounds": number,
                        "steps_per_round": steps, "seconds": round(time.perf_counter() - started, 1),
                        "round": {k: v for k, v in outcome.to_dict().items() if k != "answers"}})
            add(row)
            print(f"  {row['label']}: curated right {row['curated_right']}/{row['curated_n']}, held-out right "
                  f"{row['heldout_right']}/{row['heldout_n']}, flagged {outcome.proposed}, missed {outcome.missed}",
                  flush=True)
    finally:
        weights.reset()  # the next setting starts from the base weights


def table(rows: list[dict]) -> str:
    lines = ["| setting | curated right | held-out right | unrelated unchanged: whole / 1st sentence | looping | "
             "drift | flagged / missed (last round) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "curated_right" not in r:
            lines.append(f"| {r['label']} | {r.get('stopped', '')} | | | | | |")
            continue
        flagged = f"{r['round']['proposed']} / {r['round']['missed']}" if "round" in r else ""
        lines.append(f"| {r['label']} | {r['curated_right']}/{r['curated_n']} | {r['heldout_right']}/{r['heldout_n']}"
                     f" | {r['unrelated_unchanged']:.0%} / {r['unrelated_first_sentence_unchanged']:.0%} | "
                     f"{r['looping']:.0%} | {r['drift']:.4f} | {flagged} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help="S: steps per round")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per family (curated, held-out)")
    parser.add_argument("--hint-model", default="answer", choices=list(HINT_MODELS))
    parser.add_argument("--hint-placement", choices=list(PROPOSAL_PLACEMENTS), default=RoundConfig.hint_placement,
                        help="where accepted hints go (default: the rounds' default, a feedback turn)")
    parser.add_argument("--span", default=TrainConfig.span, choices=list(LOSS_SPANS),
                        help="loss span after the hint")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--quick", action="store_true", help="4 prompts, 1 step, 32 tokens, 2 unrelated: a smoke test")
    parser.add_argument("--output", default=str(RESULTS / "loop.json"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 does more per second on a machine shared by many processes)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.prompts, args.max_new_tokens = 1, 4, 32
        args.output = str(RESULTS / "loop_quick.json")
    started = time.perf_counter()
    model, tokenizer = load_model("default", device="cpu")
    hint_model = HINT_MODELS[args.hint_model]()
    curated = arithmetic_prompts(0, args.prompts)
    heldout = arithmetic_prompts(1, args.prompts, exclude={p.messages[0]["content"] for p in curated})
    unrelated = tasks("qa", "curation") + tasks("qa", "heldout")
    unrelated = unrelated[:2] if args.quick else unrelated
    base_unrelated = unrelated_answers(model, tokenizer, unrelated)
    neighbourhood = [Record(t.id, [*t.messages, {"role": "assistant", "content": a}])
                     for t, a in zip(unrelated, base_unrelated)]

    def measure(weights, curated_answers, heldout_answers):
        return evaluate(weights, curated, heldout, curated_answers, heldout_answers, unrelated, base_unrelated,
                        neighbourhood, hint_model)

    base_weights = Weights(model, tokenizer)
    config = FixRateConfig(samples=0, max_new_tokens=args.max_new_tokens)
    greedy = [runs[0][2] for runs in regenerate(model, tokenizer, [(p.messages, None) for p in curated + heldout],
                                                config)]
    rows = [{"label": "base", "rounds": 0, **measure(base_weights, greedy[: len(curated)], greedy[len(curated):])}]
    print(f"base: curated right {rows[0]['curated_right']}/{len(curated)}, held-out right "
          f"{rows[0]['heldout_right']}/{len(heldout)}", flush=True)

    def write(finished: bool) -> str:
        report = table(rows)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({
            "steps": args.steps, "hint_model": args.hint_model, "hint_placement": args.hint_placement,
            "span": args.span, "max_new_tokens": args.max_new_tokens,
            "finished": finished, "prompts": {"curated": [p.to_dict() for p in curated],
                                              "heldout": [p.to_dict() for p in heldout]},
            "rows": rows, "table": report, "seconds": round(time.perf_counter() - started, 1)}, indent=1,
            default=str))
        return report

    def add(row: dict) -> None:
        rows.append(row)
        write(False)

    write(False)
    run_rounds("rounds", 3, args.steps, args, model, tokenizer, curated, heldout, measure, add)
    run_rounds("longer", 1, 3 * args.steps, args, model, tokenizer, curated, heldout, measure, add)
    report = write(True)
    print(f"\n{len(curated)} curated and {len(heldout)} held-out prompts (seeded, not in the repository), "
          f"{len(unrelated)} unrelated QA prompts; hint model {args.hint_model}, proposals accepted as proposed\n"
          f"{report}\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
