"""Does training remove the curated errors, generalise, and leave the rest alone? (SPEC §5 "Effect", issue 5.)

Data, from the bundled demo tasks (assets/demo_tasks.jsonl) and the default model:
- *curated*: greedy rollouts of the arithmetic tasks of the curation split that a verifier flags (arithmetic
  verifier, else the reference answer), with the proposed hint accepted and its error span (the records of
  assets/demo_rollouts.jsonl when that file exists, else rolled out here and cached in bench/results/);
- *held-out*: greedy rollouts of the arithmetic tasks of the held-out split — same family, never trained on; the
  flagged ones get both verdicts, the others only "corrected";
- *unrelated*: the QA tasks (capitals, dates…) — the collateral-damage check.

For each training setting: train on the curated set, then measure
- p(error tokens) before → after, mean over curated records (the curve the studio shows),
- fix rate (`opd_studio.fix_rate`): greedy and 2 sampled answers per prompt; *suppressed* (the flagged text is gone)
  and *corrected* (the verifiers pass), curated vs held-out, next to the base model's rates,
- collateral: the share of unrelated prompts whose greedy answer is unchanged, and drift = mean KL(trained ‖ base)
  on the untouched student tokens of the curated set and on the held-out / unrelated greedy rollouts.
Writes bench/results/effect.json, an HTML plot (and a PNG when kaleido is installed), and prints a table.

Target constructions (`--targets`, issue 10; `opd_studio/targets.py`) are compared in the columns knowledge-editing
work uses: *efficacy* = curated greedy answers corrected (beside suppressed), *generalization* = held-out greedy
answers corrected (and held-out answers the base got right that break), *specificity* = unrelated greedy answers
unchanged (whole / first sentence) and the neighbourhood KL (mean KL(trained ‖ base) per token on the unrelated QA
rollouts), *loops* = curated and held-out answers (greedy, and sampled when asked for) that loop (`loops`: a run of ≥
4 words repeated 3 times, or a stretch of ≥ 2 characters repeated 5 times in a row), *drift* = KL on the curated
records' untouched tokens. Written to bench/results/effect_targets.json.

    python -m bench.effect                 # the default setting
    python -m bench.effect --sweep         # every setting in SWEEP (slow on CPU: minutes per setting)
    python -m bench.effect --targets --samples 0    # every construction in TARGET_SWEEP, greedy answers only
    python -m bench.effect --targets --family --samples 0 --only hinted "guided α=0.5"   # on the held-out family

`--family` swaps the demo arithmetic tasks for the held-out prompt family of bench/families.py (seeded arithmetic in
other phrasings and operand ranges, never used to pick a setting before): *curated* = the flagged greedy answers of
its curation split (arithmetic verifier, else the answer verifier), *held-out* = its held-out split (other
templates); the unrelated QA prompts stay. The defaults are chosen on this table (issue 18, item 4).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore")

from opd_studio.fix_rate import (FixRateConfig, corrected, fix_rate, loops, regenerate, summarize,
                                 verifiers_for)
from opd_studio.hints import HINT_MODELS
from opd_studio.model import load_model
from opd_studio.objective import cache_targets, heldout_drift, heldout_example
from opd_studio.records import Record, read_records, write_records
from opd_studio.rollout import SamplingConfig, generate
from opd_studio.train import TrainConfig, base_weights, train

TASKS = ROOT / "assets" / "demo_tasks.jsonl"
DEMO_ROLLOUTS = ROOT / "assets" / "demo_rollouts.jsonl"
RESULTS = ROOT / "bench" / "results"
MAX_NEW_TOKENS = 64

# The training budget every setting below starts from: the library's default (rest of the turn, 10 steps) until the
# held-out family chose the error span and 20 steps (issue 18, README "Defaults chosen on a held-out family"). Kept so
# that each setting's name stays what it changes, and the earlier results can be rerun as they were measured.
SWEEP_BUDGET = {"span": "turn", "steps": 10}

# name → changes to TrainConfig(**SWEEP_BUDGET); "default" is that budget itself. The others each change one thing
# (or, for "prototype", reproduce the unguarded prototype) so that their effect can be read off against it.
SWEEP = {
    "default": {},
    "prototype: no guard, fwd KL, error span, lr 3e-4, 20 steps": {
        "drift_weight": 0.0, "drift_threshold": None, "loss": "forward_kl", "span": "error", "lr": 3e-4, "steps": 20},
    "no drift guard": {"drift_weight": 0.0, "drift_threshold": None},
    "drift weight 1": {"drift_weight": 1.0},
    "error span": {"span": "error"},
    "error span, lr 3e-4": {"span": "error", "lr": 3e-4},
    "error span, 20 steps": {"span": "error", "steps": 20},
    "lr 5e-5": {"lr": 5e-5},
    "lr 3e-4": {"lr": 3e-4},
    "5 steps": {"steps": 5},
    "20 steps": {"steps": 20},
    "forward KL": {"loss": "forward_kl"},
    "reverse KL top-20": {"loss": "reverse_kl", "top_k": 20},
    "attention-only LoRA": {"target_modules": "q_proj,k_proj,v_proj,o_proj"},
    # Records without hints only add anchors (objective.py): replay of another family's rollouts (tool calls, never
    # evaluated here) widens what the guard holds in place beyond the curated arithmetic answers.
    "+ tool-call rollouts as replay anchors": {"anchors": [("tools", "curation")]},
}

# Target constructions at SWEEP_BUDGET (rest of the turn, 10 steps; JSD, drift weight 3), most telling first (a run
# on a shared CPU may be cut short; results are written after every setting), then the contrast trained harder and
# under another loss.
TARGET_SWEEP = {
    "hinted": {"target": "hinted"},
    "contrast α=2": {"target": "contrast", "alpha": 2.0},
    "contrast α=1": {"target": "contrast", "alpha": 1.0},
    "evidence (τ=0.5)": {"target": "evidence"},
    "unleaked": {"target": "unleaked"},
    "contrast α=2, lr 3e-4": {"target": "contrast", "alpha": 2.0, "lr": 3e-4},
    "contrast α=2, forward KL": {"target": "contrast", "alpha": 2.0, "loss": "forward_kl"},
    "contrast α=0.5": {"target": "contrast", "alpha": 0.5},
    "guided α=0.5": {"target": "guided", "alpha": 0.5},  # RLCSD's defaults: floor −5, τ = 1
    "guided α=1": {"target": "guided", "alpha": 1.0},
    "hinted, error span, 20 steps": {"target": "hinted", "span": "error", "steps": 20},
    # bench/teacher_top.py: with the hint as a feedback turn the teacher's top token at the error is the right
    # result's first digit in 13 of 19 family answers (inline: 4 of 19; a line break in 12)
    "feedback hints, contrast α=2": {"placement": "feedback", "target": "contrast", "alpha": 2.0},  # default budget
    "feedback hints, hinted": {"placement": "feedback", "target": "hinted"},
    "feedback hints, hinted, error span, 20 steps": {"placement": "feedback", "target": "hinted", "span": "error",
                                                      "steps": 20},
    "feedback hints, contrast α=2, error span, 20 steps": {"placement": "feedback", "target": "contrast",
                                                            "alpha": 2.0, "span": "error", "steps": 20},
}
FAMILY_ROLLOUTS = ROOT / "bench" / "data" / "family_greedy.jsonl"  # bench/families.py's greedy answers (48 tasks)


# ------------------------------------------------------------------------------------------------------------------
# Data


def tasks(family: str, split: str) -> list[Record]:
    return [t for t in read_records(TASKS) if t.meta.get("family") == family and t.meta.get("split") == split]


def greedy(model, tokenizer, task: Record) -> Record:
    record, _ = generate(model, tokenizer, task.messages, SamplingConfig(max_new_tokens=MAX_NEW_TOKENS),
                         tools=task.tools, record_id=task.id, meta=dict(task.meta))
    record.reference = task.reference
    return record


def flag(record: Record, verifiers: tuple[str, ...] = ("arithmetic", "reference")) -> Record:
    """The record with the first verifier proposal as an accepted hint and its error span (unchanged if right)."""
    for name in verifiers:
        result = HINT_MODELS[name]().propose(record)
        if result.proposals:
            proposal = result.proposals[0]
            return dataclasses.replace(record, hints=[proposal.to_hint(status="accepted")],
                                       error=proposal.to_error())
    return record


def greedy_rollouts(model, tokenizer, family: str, split: str) -> list[Record]:
    """Greedy rollouts of a family's tasks, flagged: from assets/demo_rollouts.jsonl when it has them, else rolled
    out here (slow on CPU) and cached under bench/results/."""
    if DEMO_ROLLOUTS.is_file():
        rollouts = [r for r in read_records(DEMO_ROLLOUTS) if r.meta.get("family") == family
                    and r.meta.get("split") == split and r.meta.get("run") == "greedy"]
        if rollouts:
            for r in rollouts:
                r.hints = [dataclasses.replace(h, status="accepted") for h in r.hints[:1]]
            return rollouts
    cache = RESULTS / f"effect_rollouts_{family}_{split}.jsonl"
    if cache.is_file():
        return read_records(cache)
    rollouts = [flag(greedy(model, tokenizer, t)) for t in tasks(family, split)]
    RESULTS.mkdir(exist_ok=True)
    write_records(cache, rollouts)
    return rollouts


def family_rollouts_flagged(model, tokenizer, split: str, limit: int) -> list[Record]:
    """The held-out family's greedy answers of `split` (bench/data/family_greedy.jsonl, rolled out and written there
    when missing), flagged by the arithmetic verifier, else the answer verifier; the first `limit` flagged ones for
    the curation split, the first `limit` answers for the held-out one."""
    from bench.families import arithmetic_family, family_rollouts

    if not FAMILY_ROLLOUTS.is_file():
        FAMILY_ROLLOUTS.parent.mkdir(parents=True, exist_ok=True)
        write_records(FAMILY_ROLLOUTS, family_rollouts(model, tokenizer, arithmetic_family(48)))
    rollouts = [flag(r, ("arithmetic", "answer")) for r in read_records(FAMILY_ROLLOUTS) if r.meta["split"] == split]
    return [r for r in rollouts if r.hints][:limit] if split == "curation" else rollouts[:limit]


# ------------------------------------------------------------------------------------------------------------------
# One setting


def unrelated_answers(model, tokenizer, unrelated_tasks) -> list[str]:
    config = FixRateConfig(samples=0, max_new_tokens=MAX_NEW_TOKENS)
    return [a[0][2] for a in regenerate(model, tokenizer, [(t.messages, t.tools) for t in unrelated_tasks], config)]


def first_sentence(answer: str) -> str:
    """The answer up to its first sentence end: the part that carries a short QA answer. A long answer that only
    diverges after it (64 greedy tokens of a 135M model ramble) has kept its answer."""
    ends = [i for i in (answer.find(". "), answer.find(".\n"), answer.find("\n")) if i >= 0]
    return answer[: min(ends) + 1].strip() if ends else answer.strip()


def is_right(task: Record, answer: str) -> bool | None:
    return corrected(Record(task.id, [*task.messages, {"role": "assistant", "content": answer}],
                            reference=task.reference), verifiers_for(task))


def evaluate(model, tokenizer, curated, heldout, unrelated_tasks, base_unrelated, samples: int = 2) -> dict:
    rows = fix_rate(model, tokenizer, curated, heldout, FixRateConfig(samples=samples, max_new_tokens=MAX_NEW_TOKENS))
    now = unrelated_answers(model, tokenizer, unrelated_tasks)
    unchanged = [a == b for a, b in zip(now, base_unrelated)]
    first_unchanged = [first_sentence(a) == first_sentence(b) for a, b in zip(now, base_unrelated)]
    right = [bool(is_right(t, a)) for t, a in zip(unrelated_tasks, now)]
    was_right = [bool(is_right(t, a)) for t, a in zip(unrelated_tasks, base_unrelated)]
    share = lambda flags: sum(flags) / len(flags) if flags else math.nan  # noqa: E731 - no unrelated prompts: NaN
    return {"fix_rate": summarize(rows).to_dict("records"), "unrelated_unchanged": share(unchanged),
            "unrelated_first_sentence_unchanged": share(first_unchanged), "unrelated_right": share(right),
            "unrelated_broken": sum(w and not r for w, r in zip(was_right, right)),
            "unrelated_fixed": sum(r and not w for w, r in zip(was_right, right)),
            "answers": rows[["record", "split", "mode", "answer", "suppressed", "corrected"]].to_dict("records"),
            "unrelated": [{"task": t.id, "answer": a} for t, a in zip(unrelated_tasks, now)]}


def neighbourhood_kl(model, tokenizer, records: list[Record], batch_size: int = 8) -> float:
    """Mean KL(model ‖ base) per student token of `records` (the unrelated QA rollouts): the base is the model with
    its adapter disabled."""
    examples = [heldout_example(tokenizer, r) for r in records]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad(), base_weights(model):
        cache_targets(model, examples, 64, torch.float32, teacher=False)
    total, count = heldout_drift(model, examples, pad, model.device, batch_size)
    return total / max(count, 1)


def run_setting(name, changes, model, tokenizer, curated, heldout, unrelated_tasks, base_unrelated,
                drift_records, neighbourhood=None, samples: int = 2) -> dict:
    changes = dict(changes)
    curated_ids = {r.id for r in curated}
    anchors = [dataclasses.replace(r, hints=[], error=None) for family, split in changes.pop("anchors", [])
               for r in greedy_rollouts(model, tokenizer, family, split) if r.id not in curated_ids]
    placement = changes.pop("placement", None)  # the curated hints placed another way (records.PLACEMENTS)
    if placement:
        curated = [dataclasses.replace(r, hints=[dataclasses.replace(h, placement=placement) for h in r.hints])
                   for r in curated]
    records = curated + anchors
    config = TrainConfig(**{"batch_size": len(records), **SWEEP_BUDGET, **changes})  # full-batch steps
    started = time.perf_counter()
    result = train(copy.deepcopy(model), tokenizer, records, config, heldout=drift_records)
    seconds = time.perf_counter() - started
    frame = result.records_frame()
    first, last = frame[frame.step == 0], frame[frame.step == result.steps]
    out = {"name": name, "changes": changes, "anchor_records": len(anchors), "steps": result.steps,
           "stopped": result.stopped, "train_seconds": seconds, "p_error_before": float(first.p_error.mean()),
           "p_error_after": float(last.p_error.mean()), "p_teacher": float(first.p_teacher.mean()),
           "drift": result.final.drift, "drift_heldout": result.final.drift_heldout,
           "curve": frame.to_dict("records"), "steps_curve": result.steps_frame().to_dict("records")}
    out.update(evaluate(result.model, tokenizer, curated, heldout, unrelated_tasks, base_unrelated, samples))
    if neighbourhood:
        out["neighbourhood_kl"] = neighbourhood_kl(result.model, tokenizer, neighbourhood)
    return out


def rate(summary: list[dict], split: str, mode: str, column: str) -> float:
    for line in summary:
        if line["split"] == split and line["mode"] == mode:
            return line[column] if line[column] is not None else math.nan
    return math.nan


# ------------------------------------------------------------------------------------------------------------------
# Report


def table(settings: list[dict], base: dict) -> str:
    lines = ["| setting | steps | p(err) before → after (teacher) | curated greedy suppressed / corrected | "
             "curated sampled supp. / corr. | held-out suppressed / corrected (greedy) | held-out corrected (sampled) | "
             "unrelated right (broken, fixed) | unrelated unchanged: whole / 1st sentence | drift curated / held-out |",
             "|---|---:|---|---|---|---|---|---|---|---|"]
    b = base["fix_rate"]
    lines.append(f"| base model | 0 | | {rate(b, 'curated', 'greedy', 'suppressed'):.0%} / "
                 f"{rate(b, 'curated', 'greedy', 'corrected'):.0%} | {rate(b, 'curated', 'sampled', 'suppressed'):.0%}"
                 f" / {rate(b, 'curated', 'sampled', 'corrected'):.0%} | {rate(b, 'heldout', 'greedy', 'suppressed'):.0%}"
                 f" / {rate(b, 'heldout', 'greedy', 'corrected'):.0%} | {rate(b, 'heldout', 'sampled', 'corrected'):.0%}"
                 f" | {base['unrelated_right']:.0%} | 100% / 100% | 0 / 0 |")
    for s in settings:
        f = s["fix_rate"]
        lines.append(
            f"| {s['name']} | {s['steps']}{' (' + s['stopped'] + ')' if s['stopped'] != 'steps' else ''} | "
            f"{s['p_error_before']:.3f} → {s['p_error_after']:.3f} ({s['p_teacher']:.3f}) | "
            f"{rate(f, 'curated', 'greedy', 'suppressed'):.0%} / {rate(f, 'curated', 'greedy', 'corrected'):.0%} | "
            f"{rate(f, 'curated', 'sampled', 'suppressed'):.0%} / {rate(f, 'curated', 'sampled', 'corrected'):.0%} | "
            f"{rate(f, 'heldout', 'greedy', 'suppressed'):.0%} / {rate(f, 'heldout', 'greedy', 'corrected'):.0%} | "
            f"{rate(f, 'heldout', 'sampled', 'corrected'):.0%} | {s['unrelated_right']:.0%} (−{s['unrelated_broken']}, "
            f"+{s['unrelated_fixed']}) | {s['unrelated_unchanged']:.0%} / {s['unrelated_first_sentence_unchanged']:.0%} | "
            f"{s['drift']:.4f} / {s['drift_heldout']:.4f} |")
    return "\n".join(lines)


def greedy_verdicts(setting: dict, split: str) -> dict[str, dict]:
    return {a["record"]: a for a in setting["answers"] if a["split"] == split and a["mode"] == "greedy"}


def editing_metrics(setting: dict, base: dict) -> dict:
    """The knowledge-editing columns of one setting (see the module docstring), as numbers."""
    f = setting["fix_rate"]
    base_held = greedy_verdicts(base, "heldout")
    held = greedy_verdicts(setting, "heldout")
    answers = [a for a in setting["answers"] if a["split"] in ("curated", "heldout")]
    suppressed = rate(f, "curated", "greedy", "suppressed")
    efficacy = rate(f, "curated", "greedy", "corrected")
    return {"efficacy": efficacy, "suppressed": suppressed,
            "corrected_per_suppressed": efficacy / suppressed if suppressed else math.nan,
            "generalization": rate(f, "heldout", "greedy", "corrected"),
            "heldout_broken": sum(bool(base_held[r]["corrected"]) and not held[r]["corrected"] for r in held),
            "unrelated_unchanged": setting.get("unrelated_unchanged", 1.0),
            "unrelated_first_sentence_unchanged": setting.get("unrelated_first_sentence_unchanged", 1.0),
            "unrelated_broken": setting.get("unrelated_broken", 0),
            "neighbourhood_kl": setting.get("neighbourhood_kl", 0.0),
            "loops": sum(loops(a["answer"]) for a in answers) / len(answers),
            "drift": setting.get("drift", 0.0)}


def editing_table(settings: list[dict], base: dict) -> str:
    lines = ["| target | steps | p(err) before → after (target) | efficacy: curated corrected (suppressed) | "
             "generalization: held-out corrected (right answers broken) | specificity: unrelated unchanged, whole / "
             "1st sentence (right broken) | neighbourhood KL | loops | drift |",
             "|---|---:|---|---|---|---|---:|---:|---:|"]

    def line(name, steps, p_err, m):
        return (f"| {name} | {steps} | {p_err} | {m['efficacy']:.0%} ({m['suppressed']:.0%}) | "
                f"{m['generalization']:.0%} ({m['heldout_broken']}) | {m['unrelated_unchanged']:.0%} / "
                f"{m['unrelated_first_sentence_unchanged']:.0%} ({m['unrelated_broken']}) | "
                f"{m['neighbourhood_kl']:.4f} | {m['loops']:.0%} | {m['drift']:.4f} |")

    lines.append(line("base model", 0, "", editing_metrics(base, base)))
    for s in settings:
        steps = f"{s['steps']}{' (' + s['stopped'] + ')' if s['stopped'] != 'steps' else ''}"
        p_err = f"{s['p_error_before']:.3f} → {s['p_error_after']:.3f} ({s['p_teacher']:.3f})"
        lines.append(line(s["name"], steps, p_err, editing_metrics(s, base)))
    return "\n".join(lines)


def plot(settings: list[dict], path: Path) -> list[str]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, subplot_titles=("mean p(error tokens), student vs teacher (dashed)",
                                                           "drift: mean KL(trained ‖ base), untouched tokens"))
    for n, s in enumerate(settings):
        color = f"hsl({(n * 67) % 360},60%,45%)"
        curve = {}
        for row in s["curve"]:
            curve.setdefault(row["step"], []).append((row["p_error"], row["p_teacher"]))
        steps = sorted(curve)
        figure.add_trace(go.Scatter(x=steps, y=[sum(p for p, _ in curve[k]) / len(curve[k]) for k in steps],
                                    name=s["name"], line={"color": color}, legendgroup=s["name"]), 1, 1)
        figure.add_trace(go.Scatter(x=steps, y=[sum(t for _, t in curve[k]) / len(curve[k]) for k in steps],
                                    line={"color": color, "dash": "dash"}, showlegend=False,
                                    legendgroup=s["name"]), 1, 1)
        figure.add_trace(go.Scatter(x=[r["step"] for r in s["steps_curve"]], y=[r["drift"] for r in s["steps_curve"]],
                                    line={"color": color}, showlegend=False, legendgroup=s["name"]), 1, 2)
    figure.update_xaxes(title_text="step")
    figure.update_yaxes(type="log", row=1, col=1)
    figure.update_layout(height=450, width=1100, template="plotly_white")
    written = [str(path.with_suffix(".html"))]
    figure.write_html(written[0], include_plotlyjs="cdn")
    try:
        import kaleido  # noqa: F401

        figure.write_image(str(path.with_suffix(".png")))
        written.append(str(path.with_suffix(".png")))
    except Exception:  # kaleido (and a browser for it) is optional; the HTML has everything
        pass
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="run every setting in SWEEP")
    parser.add_argument("--targets", action="store_true", help="run every construction in TARGET_SWEEP")
    parser.add_argument("--samples", type=int, default=2, help="sampled answers per prompt besides the greedy one")
    parser.add_argument("--only", nargs="*", help="names of SWEEP (or, with --targets, TARGET_SWEEP) settings")
    parser.add_argument("--stem", help="name of the results under bench/results/ (default: effect, or "
                                       "effect_sweep for several settings; with --family, effect_family)")
    parser.add_argument("--family", action="store_true", help="the held-out prompt family (bench/families.py) "
                                                              "instead of the demo arithmetic tasks")
    parser.add_argument("--records", type=int, default=8, help="with --family: curated and held-out records each")
    args = parser.parse_args()
    sweep = TARGET_SWEEP if args.targets else SWEEP
    names = args.only or (list(sweep) if args.sweep or args.targets else ["default"])

    torch.manual_seed(0)
    model, tokenizer = load_model("default")
    if args.family:
        curated = family_rollouts_flagged(model, tokenizer, "curation", args.records)
        heldout = family_rollouts_flagged(model, tokenizer, "heldout", args.records)
    else:
        curated = [r for r in greedy_rollouts(model, tokenizer, "arithmetic", "curation") if r.hints and r.error]
        heldout = greedy_rollouts(model, tokenizer, "arithmetic", "heldout")
    # The QA prompts (specificity) are left out with --family: the demo table measures them, and each setting's
    # regeneration of them costs as much as the family's own.
    unrelated_tasks = [] if args.family else tasks("qa", "curation") + tasks("qa", "heldout")
    # Drift is measured on rollouts never trained on: the held-out arithmetic and (demo tasks) the QA answers, as
    # they are; with --family only its held-out split, to keep a setting's steps affordable on a shared CPU.
    drift_records = [dataclasses.replace(r, hints=[], error=None) for r in heldout + ([] if args.family else
                     greedy_rollouts(model, tokenizer, "qa", "curation") + greedy_rollouts(model, tokenizer, "qa",
                                                                                           "heldout"))]
    base_unrelated = unrelated_answers(model, tokenizer, unrelated_tasks)
    print(f"{len(curated)} curated records: " + "; ".join(
        f"{r.id}: {r.messages[-1]['content'][:60]!r}" for r in curated), flush=True)

    base = evaluate(model, tokenizer, curated, heldout, unrelated_tasks, base_unrelated, args.samples)
    device = f"{model.device.type}, {torch.get_num_threads()} threads"
    stem = args.stem or ("effect_family" if args.family else "effect_targets" if args.targets
                         else "effect_sweep" if len(names) > 1 else "effect")
    # The neighbourhood: the unrelated QA rollouts, as they are (specificity's KL).
    neighbourhood = [dataclasses.replace(r, hints=[], error=None) for r in greedy_rollouts(
        model, tokenizer, "qa", "curation") + greedy_rollouts(model, tokenizer, "qa", "heldout")] \
        if args.targets and not args.family else None
    RESULTS.mkdir(exist_ok=True)
    settings = []
    render = editing_table if args.targets else table
    for name in names:
        setting = run_setting(name, sweep[name], model, tokenizer, curated, heldout, unrelated_tasks,
                              base_unrelated, drift_records, neighbourhood, args.samples)
        settings.append(setting)
        print(render([setting], base).splitlines()[-1], flush=True)
        # Written after every setting: a sweep takes long on CPU, and what is done is kept if it is stopped.
        report = render(settings, base)
        (RESULTS / f"{stem}.json").write_text(json.dumps(
            {"device": device, "default_config": TrainConfig(**SWEEP_BUDGET).to_dict(),
             "curated": [r.id for r in curated], "base": base, "settings": settings, "table": report,
             "editing": {s["name"]: editing_metrics(s, base) for s in settings}}, indent=1, default=str))

    print(f"\nEffect on the {'held-out family' if args.family else 'demo arithmetic tasks'} ({model.config.name_or_path}, {device}; {len(curated)} curated, "
          f"{len(heldout)} held-out, {len(unrelated_tasks)} unrelated prompts)\n{report}")
    print("plot:", ", ".join(plot(settings, RESULTS / stem)))


if __name__ == "__main__":
    main()
