"""Rounds of the on-policy loop: regenerate, find the new mistakes, hint, train again from the weights in use.

One round, on the workspace's prompts (the prompts of its records, plus any the caller adds):

1. **regenerate** each prompt with the active weights: greedily, and `samples` sampled answers when asked — or take
   the answers the previous round regenerated after it trained (the same weights, so the same greedy answers);
2. **propose**: the chosen hint model (`hints.HINT_MODELS`, by name) reads each new answer;
3. **curate**: proposals go to the review queue, or are accepted as proposed (`accept="verifier"`); a right answer
   (below) is kept as an anchor (accepted without a hint) either way; a wrong one the hint model has nothing to say
   about is left in the queue and counted as *missed* — what the hint model cannot see, the loop cannot fix;
4. **train** from the active weights on the curated set (the new hints plus every earlier accepted record): the
   teacher and the anchors are the weights the round starts from (`train.py`), and the run names its parent;
5. **measure**: regenerate the prompts (and a held-out set, never trained on) with the new weights and compare each
   greedy answer with the one the round started from. The run becomes the active weights.

Per split (curated, held-out), a round counts over greedy answers:
- **right**: the answer is right now — the prompt's verifiers (`fix_rate.verifiers_for`, and the round's hint model)
  find nothing wrong and checked something (`fix_rate.corrected`);
- **suppressed**: of the answers that were flagged at the start, those whose flagged text is gone
  (`fix_rate.suppressed`);
- **corrected**: wrong at the start, right now; **broken**: right at the start, wrong now;
- **looping**: the answer repeats itself (`fix_rate.loops`).

A round is stored as its run (`runs.parent`, `runs.round`), so the history survives a restart and a killed loop
resumes after the last finished round. Nothing here imports Gradio.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Iterator

import pandas as pd

from .fix_rate import FixRateConfig, corrected, error_signature, loops, prompt_of, regenerate, suppressed, verifiers_for
from .records import PROPOSAL_PLACEMENTS, Record
from .tracking import TrackioTarget
from .train import TrainConfig
from .workspace import TrainProgress, Weights, Workspace, heldout_records, model_label, prompt_id, rollout_id

ACCEPT_POLICIES = (None, "verifier")
SPLITS = ("curated", "heldout")
COUNTS = ("answers", "right", "flagged", "suppressed", "corrected", "broken", "looping")
HISTORY_COLUMNS = ["round", "run", "parent", "split", "answers", "right", "suppressed", "corrected", "broken",
                   "looping", "proposed", "accepted", "anchors", "queued", "missed", "drift"]


@dataclass
class RoundConfig:
    hint_model: str = "answer"  # a name of `hints.HINT_MODELS`
    accept: str | None = None  # None: proposals go to the review queue; "verifier": accepted as proposed
    samples: int = 0  # sampled answers per prompt besides the greedy one (proposed on too, never measured)
    temperature: float = 0.7
    max_new_tokens: int = 64
    train: TrainConfig = field(default_factory=TrainConfig)
    # How the hint model's proposals are placed: "feedback" (the default) puts each hint in a turn before the answer,
    # where the teacher continues the student's own sentence: on the held-out family its top token at the error is
    # the right result's first digit in 13 of 19 answers, against 4 of 19 inline (bench/teacher_top.py), and three
    # rounds so corrected 2 of 6 answers where inline hints corrected 1. None keeps the hint model's own (inline).
    hint_placement: str | None = "feedback"
    report_to: str = "none"  # "trackio": the round's training reports each step, as `train --report-to trackio`
    trackio: TrackioTarget | None = None  # where (None: the local project opd-studio)

    def __post_init__(self) -> None:
        from .hints import HINT_MODELS

        if self.hint_model not in HINT_MODELS:
            raise ValueError(f"hint model {self.hint_model!r} is not one of {', '.join(HINT_MODELS)}")
        if self.accept not in ACCEPT_POLICIES:
            raise ValueError(f"accept {self.accept!r}: leave it out (proposals go to the review queue) or use "
                             "'verifier' (accepted as proposed)")
        if self.hint_placement not in (None, *PROPOSAL_PLACEMENTS):
            raise ValueError(f"hint placement {self.hint_placement!r} is not one of {', '.join(PROPOSAL_PLACEMENTS)}")
        if self.samples < 0 or self.max_new_tokens < 1:
            raise ValueError("samples must be >= 0 and max_new_tokens >= 1")


@dataclass
class RoundProgress(TrainProgress):
    """A round's report: a status line, the training's metric rows so far; the last one carries the run's outcome
    and, when the run was saved, the round's (`round`)."""

    round: "RoundOutcome | None" = None


@dataclass
class RoundOutcome:
    """What one round did; stored as the run's `round` JSON."""

    round: int
    run: int | None  # None: the run was not saved (drift over its threshold)
    parent: int | None
    hint_model: str
    accept: str | None
    proposed: int = 0  # answers the hint model flagged
    accepted: int = 0  # of them, accepted as proposed
    anchors: int = 0  # right answers kept as anchors
    queued: int = 0  # proposals left for review
    missed: int = 0  # greedy answers the prompt's verifiers find wrong and the hint model proposed nothing for
    drift: float | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split → COUNTS
    # The greedy answers regenerated after training, by prompt key and split: the next round starts from them.
    answers: dict[str, dict[str, str]] = field(default_factory=dict)
    message: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "RoundOutcome":
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})


# ------------------------------------------------------------------------------------------------------------------
# Prompts


def prompt_key(prompt: Record) -> str:
    return prompt_id(json.dumps([prompt.messages, prompt.tools], ensure_ascii=False))


def as_prompt(record: Record) -> Record:
    """The record cut before the assistant turn it answers (`fix_rate.prompt_of`), keeping its reference and meta."""
    messages, _ = prompt_of(record)
    meta = {k: v for k, v in (record.meta or {}).items() if not k.startswith(("proposal:", "raw:"))}
    return Record(record.id, messages, tools=record.tools, reference=record.reference, meta=meta)


def round_prompts(workspace: Workspace, extra: list[Record] | None = None) -> list[Record]:
    """The prompts a round regenerates: `extra` (a loop's input) then those of the workspace's records (every
    status), each once, in that order."""
    prompts: dict[str, Record] = {}
    for record in [*(extra or []), *workspace.store.records(None)]:
        prompt = as_prompt(record)
        prompts.setdefault(prompt_key(prompt), prompt)
    return list(prompts.values())


def answered(prompt: Record, text: str, mode: str = "greedy", seed: int | None = None) -> Record:
    """The prompt with `text` as its assistant turn, id'd by content (`workspace.rollout_id`)."""
    record = Record(prompt.id, [*prompt.messages, {"role": "assistant", "content": text}], tools=prompt.tools,
                    reference=prompt.reference, meta={**prompt.meta, "run": mode, **({"seed": seed} if seed else {})})
    record.id = rollout_id(prompt_key(prompt), record)
    return record


# ------------------------------------------------------------------------------------------------------------------
# Judging answers


def is_right(prompt: Record, text: str, hint_model) -> bool | None:
    """The answer is right: its verifiers find nothing wrong and checked something (None: nothing checked it)."""
    verifiers = verifiers_for(prompt)
    if all(getattr(v, "name", None) != hint_model.name for v in verifiers):
        verifiers.append(hint_model)
    return corrected(answered(prompt, text), verifiers)


def compare(prompts: list[Record], before: list[str], after: list[str], flagged: list[Record | None],
            hint_model) -> dict[str, int]:
    """COUNTS over greedy answers `before` → `after` (see the module docstring); `flagged[i]`: the start's answer
    with its proposed error span, or None when it was not flagged."""
    counts = dict.fromkeys(COUNTS, 0)
    for prompt, old, new, record in zip(prompts, before, after, flagged):
        was, now = is_right(prompt, old, hint_model), is_right(prompt, new, hint_model)
        counts["answers"] += 1
        counts["right"] += bool(now)
        counts["corrected"] += was is False and bool(now)
        counts["broken"] += bool(was) and now is False
        counts["looping"] += loops(new)
        signature = error_signature(record) if record is not None else None
        if signature is not None:
            counts["flagged"] += 1
            counts["suppressed"] += suppressed(signature, new)
    return counts


# ------------------------------------------------------------------------------------------------------------------
# One round


def _answers(weights: Weights, prompts: list[Record], config: RoundConfig, samples: int) -> list[list[tuple]]:
    regen = FixRateConfig(samples=samples, temperature=config.temperature, max_new_tokens=config.max_new_tokens)
    return regenerate(weights.model, weights.tokenizer, [(p.messages, p.tools) for p in prompts], regen)


def _previous(workspace: Workspace, run_id: int | None) -> RoundOutcome | None:
    run = workspace.store.run(run_id) if run_id is not None else None
    return RoundOutcome.from_dict(run["round"]) if run and run.get("round") else None


def active_round(workspace: Workspace) -> RoundOutcome | None:
    """The round whose run is the active weights (None: the base, or a run that was not a round)."""
    return _previous(workspace, workspace.store.active_run())


def rounds_done(workspace: Workspace) -> int:
    """How many rounds lead to the active weights."""
    active = active_round(workspace)
    return active.round if active else 0


def _curate(prompts: list[Record], greedy: list[str], sampled: list[list[tuple]], hint_model, config: RoundConfig,
            tokenizer, outcome: RoundOutcome) -> tuple[list[Record], dict[str, str], list[Record | None]]:
    """Propose on every answer and choose each record's status (module docstring, step 3); counts into `outcome`.
    Returns (records, status by id, per prompt the greedy answer with its proposal or None)."""
    from .hints.propose import propose_record

    records, statuses, flagged = [], {}, []
    for prompt, text, extra in zip(prompts, greedy, sampled):
        for mode, seed, answer in [("greedy", None, text), *extra]:
            record, result = propose_record(hint_model, answered(prompt, answer, mode, seed), tokenizer)
            if config.hint_placement:
                record.hints = [dataclasses.replace(h, placement=config.hint_placement) for h in record.hints]
            record.meta["round"] = outcome.round
            right = None if result.proposals else is_right(prompt, answer, hint_model)
            if result.proposals:
                outcome.proposed += 1
                statuses[record.id] = "accepted" if config.accept == "verifier" else "pending"
                outcome.accepted += config.accept == "verifier"
                outcome.queued += config.accept != "verifier"
            elif right:  # right: anchors the answer where it is
                record.hints, record.error = [], None
                statuses[record.id] = "accepted"
                outcome.anchors += 1
            else:  # wrong (or unchecked) and the hint model has nothing to say: left for a person to review
                statuses[record.id] = "pending"
                outcome.missed += mode == "greedy" and right is False
            if mode == "greedy":
                flagged.append(record if result.proposals else None)
            records.append(record)
    return records, statuses, flagged


def _round_target(target: TrackioTarget | None, number: int) -> TrackioTarget | None:
    """A named tracker run per round: "NAME round N" (trackio runs are one a name)."""
    if target is None or target.name is None:
        return target
    return dataclasses.replace(target, name=f"{target.name} round {number}")


def run_round(workspace: Workspace, weights: Weights, config: RoundConfig, prompts: list[Record] | None = None,
              heldout: list[Record] | None = None, stop=None) -> Iterator[RoundProgress]:
    """One round (module docstring) on `round_prompts(workspace, prompts)`, measured on `heldout` prompts (default:
    the demo held-out records of the curated families). Yields progress; the last report's `outcome` is the run's
    `RunOutcome` and its `round` attribute the `RoundOutcome`."""
    from .hints import HINT_MODELS
    from .hints.propose import propose_record

    workspace.require_write("run a round")
    weights.sync(workspace.store)
    parent = weights.run_id
    previous = _previous(workspace, parent)
    number = (previous.round if previous else 0) + 1
    hint_model = HINT_MODELS[config.hint_model]()
    prompts = round_prompts(workspace, prompts)
    if not prompts:
        raise ValueError("there are no prompts: generate or import some records first, or pass prompts")
    held = [as_prompt(r) for r in (heldout if heldout is not None else heldout_records(workspace.training_records()
                                                                                           or prompts))]
    curated_keys = {prompt_key(p) for p in prompts}
    held = [p for p in held if prompt_key(p) not in curated_keys]  # held out means never trained on

    # 1. the answers the round starts from
    start: dict[str, list[str]] = {}
    sampled: list[list[tuple]] = [[] for _ in prompts]
    for split, group in (("curated", prompts), ("heldout", held)):
        if not group:
            start[split] = []
            continue
        cached = (previous.answers.get(split, {}) if previous else {})
        keys = [prompt_key(p) for p in group]
        if previous and all(k in cached for k in keys) and not (split == "curated" and config.samples):
            start[split] = [cached[k] for k in keys]
            yield RoundProgress(f"round {number}: {len(group)} {split} prompts, answered by the {weights.label} "
                                f"weights after round {previous.round}", [])
            continue
        yield RoundProgress(f"round {number}: regenerating {len(group)} {split} prompts with the {weights.label} "
                            "weights…", [])
        generated = _answers(weights, group, config, config.samples if split == "curated" else 0)
        start[split] = [runs[0][2] for runs in generated]
        if split == "curated":
            sampled = [runs[1:] for runs in generated]

    # 2–3. propose on every new answer, then curate
    yield RoundProgress(f"round {number}: {config.hint_model} reads {len(prompts)} answers…", [])
    outcome = RoundOutcome(number, None, parent, config.hint_model, config.accept)
    records, statuses, flagged = _curate(prompts, start["curated"], sampled, hint_model, config, weights.tokenizer,
                                         outcome)
    workspace.store.add(records, origin=f"round {number} ({config.hint_model})", status=statuses,
                        model=model_label(weights.base))
    held_flagged = []
    for prompt, text in zip(held, start["heldout"]):
        record, result = propose_record(hint_model, answered(prompt, text), weights.tokenizer)
        held_flagged.append(record if result.proposals else None)

    # 4. train from the active weights
    if not any(r.hints for r in workspace.training_records()):
        raise ValueError(f"round {number}: nothing to train on — {outcome.proposed} answer(s) flagged "
                         f"({outcome.queued} in the review queue), {outcome.missed} wrong with nothing proposed, and "
                         "no accepted hint in the curated set: review the queue (or accept proposals as proposed), "
                         "then run the round again")
    final = None
    for progress in workspace.train(weights, config.train, stop, from_active=True, name=f"round {number}",
                                    report_to=config.report_to, trackio=_round_target(config.trackio, number)):
        final = progress
        yield RoundProgress(f"round {number}: {progress.status}", progress.history)
    run = final.outcome
    outcome.drift = final.history[-1].drift if final.history else None
    if not run.saved:
        outcome.message = f"round {number} stopped: {run.message}"
        yield RoundProgress(outcome.message, final.history, run)
        return

    # 5. measure with the new weights
    yield RoundProgress(f"round {number}: regenerating with run {run.run_id}'s weights…", final.history)
    outcome.run = run.run_id
    for split, group, marks in (("curated", prompts, flagged), ("heldout", held, held_flagged)):
        after = [runs[0][2] for runs in _answers(weights, group, config, 0)] if group else []
        outcome.answers[split] = {prompt_key(p): a for p, a in zip(group, after)}
        outcome.counts[split] = compare(group, start[split], after, marks, hint_model)
    workspace.store.set_round(run.run_id, outcome.to_dict())
    curated = outcome.counts["curated"]
    outcome.message = (f"round {number} → run {run.run_id} (parent {parent if parent is not None else 'base'}): "
                       f"{outcome.proposed} flagged, {outcome.accepted} accepted, {outcome.queued} queued, "
                       f"{outcome.anchors} anchors · right {curated['right']}/{curated['answers']}, corrected "
                       f"{curated['corrected']}, broken {curated['broken']}, looping {curated['looping']}")
    yield RoundProgress(outcome.message, final.history, run, outcome)


# ------------------------------------------------------------------------------------------------------------------
# History


def round_outcomes(workspace: Workspace) -> list[RoundOutcome]:
    """The rounds stored in the workspace, in run order."""
    runs = workspace.store.runs()
    return [RoundOutcome.from_dict(json.loads(r)) for r in runs["round"] if isinstance(r, str) and r]


def round_history(workspace: Workspace) -> pd.DataFrame:
    """One row per (round, split): HISTORY_COLUMNS, the counts as "k / n" shares' numerators (answers is n)."""
    rows = []
    for outcome in round_outcomes(workspace):
        for split in SPLITS:
            counts = outcome.counts.get(split)
            if not counts or not counts["answers"]:  # no held-out set was measured
                continue
            rows.append({"round": outcome.round, "run": outcome.run, "parent": outcome.parent, "split": split,
                         **{k: counts[k] for k in ("answers", "right", "suppressed", "corrected", "broken",
                                                   "looping")},
                         "proposed": outcome.proposed, "accepted": outcome.accepted, "anchors": outcome.anchors,
                         "queued": outcome.queued, "missed": outcome.missed,
                         "drift": round(outcome.drift, 4) if outcome.drift is not None else None})
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)
