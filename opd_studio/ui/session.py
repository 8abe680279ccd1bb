"""One user's working state in the studio and the actions on it, as plain functions (no Gradio here).

A `Session` holds the open record, its scorer (with the cached key/value passes that make edits cheap), the hints
being edited, and an undo stack. Nothing in it is shared: unsaved edits live here until `review` writes them to the
store. Every action raises `ValueError` (or a subclass) with a message for the user when its input is wrong, and
leaves the session as it was.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from ..alignment import LOSS_SPANS
from ..hints.base import HintProposal
from ..hints.propose import locate
from ..records import (MAX_UPLOAD_BYTES, MAX_UPLOAD_RECORDS, ErrorSpan, Hint, Record, check_count,
                       parse_records, placebo_for)
from ..rollout import SamplingConfig, generate
from ..scoring import GradientMap, HintScorer, ScoreResult, check_trajectory_length
from ..served import generate_served, is_served, make_scorer
from ..targets import NEEDS_PLACEBO, TargetSpec
from ..workspace import RunTimeline, Store, TrainConfig, Workspace, demo_records, rollout_id
from ..trajectory import build_trajectory
from . import incremental

DEFAULT_HINT = " (Hint: check this step again.)"


@dataclass
class Session:
    record: Record | None = None
    scorer: HintScorer | None = None
    hints: list[Hint] = field(default_factory=list)  # the working hints, not yet saved
    proposals: list[HintProposal] = field(default_factory=list)
    proposal_reason: str = ""
    span: str = TrainConfig.span  # the loss span the strip marks "in the loss": training's default to begin with
    scores: ScoreResult | None = None  # the open record scored with the working hints
    notice: str = ""
    undo_stack: list[tuple[list[Hint], ErrorSpan | None, str]] = field(default_factory=list)
    opened_at: float = 0.0
    base_weights: bool = False  # score with the weights before training (the adapter disabled)
    weights_version: tuple | int = 0  # which weights the scorer's cached passes belong to (`Weights.version`)
    cancel: threading.Event | None = None  # set by the Cancel button to stop a training run between steps
    speculator: incremental.Speculator | None = None  # likely next tables, scored while the user reads
    hint_model_name: str = "manual"  # the hint model that runs on every record this session opens
    prefetched: "Session | None" = None  # the next record of the queue, opened in the background (`speculate`)
    user: str | None = None  # the signed-in name on a Space (whose workspace and weights this session uses)
    placebo_on: bool = False  # score a placebo beside the hint (the placebo lane: `scoring.PLACEBO_COLUMNS`)
    placebo_default: str | None = None  # the placebo of hints without their own (None: `records.default_placebo`)
    gradient: GradientMap | None = None  # the gradient map of the hints as they are (`gradient_map`)
    timeline: "RunTimeline | None" = None  # the step timeline the Train tab shows
    opening: str | None = None  # a long record opening in stages: "sampled", then "window" (`continue_opening`)

    @property
    def error(self) -> ErrorSpan | None:
        return self.record.error if self.record else None


# ------------------------------------------------------------------------------------------------------------------
# Demo tasks


def demo_tasks() -> list[Record]:
    return demo_records("demo_tasks.jsonl")


def hint_model_for(name: str, record: Record, chat=None):
    """The hint model called `name`; "auto" picks the verifier of the record's demo family."""
    from ..hints import HINT_MODELS, auto_verifier, needs_model

    if name == "auto":
        name = auto_verifier(record)
    if name == "manual":
        return None
    if name not in HINT_MODELS:
        raise ValueError(f"unknown hint model {name!r}; choose one of auto, {', '.join(HINT_MODELS)}, manual")
    return HINT_MODELS[name](chat) if needs_model(name) else HINT_MODELS[name]()


# ------------------------------------------------------------------------------------------------------------------
# Opening records


def open_record(session: Session, model, tokenizer, record: Record, hint_model=None,
                scorer: HintScorer | None = None, staged: bool = False) -> Session:
    """Tokenize and score `record`; run `hint_model` when the record has no hints yet. `scorer`: one already made
    for this record (its cached passes are used). `staged`: a record longer than
    `incremental.OPEN_WINDOW_MIN_TOKENS` opens without a forward pass (its sampled log-probabilities, when it has
    them); `continue_opening` then brings the window around the hint, then the whole table."""
    trajectory = build_trajectory(tokenizer, record)
    check_trajectory_length(model, len(trajectory), record.id)  # the model's context is the only limit
    record = copy.deepcopy(record)
    proposals, reason = [], ""
    if hint_model is not None and not record.hints:
        result = hint_model.propose(record)
        proposals, reason = locate(result.proposals, trajectory), result.reason
        record.hints = [p.to_hint() for p in proposals[:1]]
        if proposals and record.error is None:
            record.error = proposals[0].to_error()
    scorer = scorer or make_scorer(model, tokenizer, trajectory, base_weights=session.base_weights)
    new = Session(record=record, scorer=scorer,
                  span=session.span, base_weights=session.base_weights, weights_version=session.weights_version,
                  hints=copy.deepcopy(record.usable_hints), proposals=proposals,
                  proposal_reason=reason or (f"{len(proposals)} proposal(s)" if proposals else ""),
                  opened_at=time.time(), hint_model_name=session.hint_model_name, user=session.user)
    stop_speculating(session)
    if not staged or len(trajectory) <= incremental.OPEN_WINDOW_MIN_TOKENS:
        return rescore(new)
    new.opening = "sampled"
    sampled = incremental.sampled_logprobs(trajectory, record)
    return _show(new, incremental.sampled_table(scorer, new.hints, new.span, new.error, sampled))


def continue_opening(session: Session) -> Session:
    """The next stage of a staged open: the window around the hint and the error span, then the whole table (the
    passes continue from the window's)."""
    if session.opening == "sampled":
        sampled = incremental.sampled_logprobs(session.scorer.trajectory, session.record)
        scores = incremental.open_window(session.scorer, session.hints, session.span, session.error, sampled)
        session.opening = "window" if scores.pending_from is not None else None
        return _show(session, scores)
    if session.opening == "window":
        session.opening = None
        return rescore(session)
    return session


def speculate(session: Session, first=None) -> Session:
    """Start scoring, in the background, the hint positions the user is likely to click next (after `first(stop)`,
    see `incremental.Speculator.start`). Tables already speculated for this record are kept."""
    stop_speculating(session)
    if session.record is None or session.scorer.model is None:  # served: each table is one request, not worth it
        return session
    sets = []
    if session.hints and not session.placebo_on:  # positions fixed by the record, so each is scored once (their
        # tables have no placebo lane: with the lane on, a click is scored when it comes)
        error = session.scores.error_span
        sets = incremental.candidate_hints(session.hints, [p.to_hint() for p in session.proposals[1:4]],
                                           error[0] if error else None, session.scorer.trajectory)
    kept = session.speculator.results if session.speculator is not None else None
    session.speculator = incremental.Speculator(session.scorer, results=kept).start(
        [(h, session.span, session.error) for h in sets], first=first)
    return session


def stop_speculating(session: Session) -> None:
    if session.speculator is not None:
        session.speculator.stop.set()


def use_weights(session: Session, model, tokenizer, base: bool, version: int) -> Session:
    """Score the open record with `model` (its base weights when `base`); cached passes start over."""
    session.base_weights, session.weights_version = base, version
    stop_speculating(session)
    session.speculator = None
    if session.record is None:
        return session
    session.scorer = make_scorer(model, tokenizer, session.scorer.trajectory, base_weights=base)
    return rescore(session)


def generate_and_open(session: Session, model, tokenizer, source: Record, sampling: SamplingConfig,
                      hint_model=None, workspace: Workspace | None = None) -> Session:
    """Roll out the assistant's answer to `source`'s conversation, then open it.

    The rollout's id comes from its content (`workspace.rollout_id`). When the workspace already holds it (the same
    prompt, weights and sampling give the same rollout), the stored record opens, with the reviewer's hints:
    generating again never replaces reviewed work. Otherwise the new rollout goes to the review queue (when the
    workspace may be written), with the hint model's proposal."""
    if is_served(model):
        record = generate_served(model, tokenizer, source.messages, sampling, tools=source.tools,
                                 record_id=source.id, meta=source.meta)
    else:
        record, _ = generate(model, tokenizer, source.messages, sampling, tools=source.tools, record_id=source.id,
                             meta=source.meta)
    record.reference = source.reference
    record.id = rollout_id(source.id, record)
    stored = workspace.store.get(record.id) if workspace is not None else None
    if stored is not None:
        session = open_record(session, model, tokenizer, stored, hint_model)
        status = workspace.store.status_of(record.id)
        session.notice = (f"this rollout is already in the workspace ({status}); it opened as stored"
                          + (", with the reviewed hints" if status != "pending" and stored.hints else ""))
        return session
    session = open_record(session, model, tokenizer, record, hint_model)
    if workspace is not None and workspace.writable:
        proposed = copy.deepcopy(session.record)
        proposed.hints = copy.deepcopy(session.hints)
        workspace.add_rollouts([proposed], origin="generated", model=model)
    return session


def parse_upload(path: str | None, max_bytes: int = MAX_UPLOAD_BYTES,
                 max_records: int = MAX_UPLOAD_RECORDS) -> list[Record]:
    """The records of an uploaded JSONL file, refused (naming the limit) over `max_bytes` or `max_records`."""
    if not path:
        raise ValueError("choose a JSONL file to upload")
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise ValueError(f"the file is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB per upload. "
                         "Split it into smaller files")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text; upload JSONL (one JSON record per line)") from None
    records = parse_records(text.splitlines(), source=Path(path).name)
    if not records:
        raise ValueError("the file holds no records")
    check_count(records, max_records, "the file")
    return records


# ------------------------------------------------------------------------------------------------------------------
# Editing


def placebo_arg(session: Session) -> str | None:
    """What `HintScorer.score(placebo=…)` gets: None with the lane off; else each hint's stored placebo, falling
    back to the session's default text (or `records.default_placebo`)."""
    if not session.placebo_on:
        return None
    return session.placebo_default or "default"


def rescore(session: Session) -> Session:
    """The whole table: served from the speculated tables when the user clicked a position scored in advance (they
    carry no placebo lane, so with the lane on the table is scored here)."""
    placebo = placebo_arg(session)
    scores = (session.speculator.get(session.hints, session.span, session.error)
              if session.speculator and placebo is None else None)
    if scores is None:
        scores = session.scorer.score(session.hints, span=session.span, error=session.error, placebo=placebo)
    return _show(session, scores)


def rescore_window(session: Session) -> Session:
    """The first update after an edit: exact numbers from the hint to just past the error span, the rest pending
    (`incremental.window_table`). A speculated table is served whole instead. The placebo lane comes with the
    second (whole) update only; when the window is the whole strip, the whole table is scored at once."""
    if session.placebo_on:
        scores = incremental.window_table(session.scorer, session.hints, session.span, session.error)
        return _show(session, scores) if scores.pending_from is not None else rescore(session)
    scores = session.speculator.get(session.hints, session.span, session.error) if session.speculator else None
    if scores is None:
        scores = incremental.window_table(session.scorer, session.hints, session.span, session.error)
    return _show(session, scores)


def _show(session: Session, scores: ScoreResult) -> Session:
    snapped = any(h.snapped for h in scores.hints)
    session.scores = scores
    session.gradient = None  # it belonged to the hints before this change
    session.notice = ("the hint's character offset fell inside a token and was moved to the token's start"
                      if snapped else "")
    return session


def _checkpoint(session: Session) -> None:
    session.undo_stack.append((copy.deepcopy(session.hints), copy.deepcopy(session.record.error), session.span))
    del session.undo_stack[:-50]


def require_open(session: Session) -> None:
    if session.record is None:
        raise ValueError("open a rollout first: pick a demo task or write a prompt, then Generate")


def _apply(session: Session, change, score=None) -> Session:
    """Run `change(session)` and rescore (with `score`, default `rescore`); on a bad edit, put everything back and
    re-raise."""
    require_open(session)
    saved = (copy.deepcopy(session.hints), copy.deepcopy(session.record.error), session.span)
    _checkpoint(session)
    session.opening = None  # an edit scores what it needs: a staged open stops here
    try:
        change(session)
        return (score or rescore)(session)
    except Exception:
        session.hints, session.record.error, session.span = saved
        session.undo_stack.pop()
        raise


def move_hint(session: Session, token: int, hint_index: int = 0, score=None) -> Session:
    """Put hint `hint_index` before trajectory token `token` (creating a manual hint if there is none)."""
    def change(s: Session) -> None:
        trajectory = s.scorer.trajectory
        trajectory.anchor_token(Hint(text=DEFAULT_HINT, token=int(token)))  # refuses context tokens, with a reason
        message, char = trajectory.token_to_char(int(token))
        if not s.hints:
            s.hints.append(Hint(text=DEFAULT_HINT, token=int(token), message=message, char=char, source="manual"))
        else:
            hint = s.hints[hint_index]
            hint.token, hint.message, hint.char, hint.status = int(token), message, char, "edited"

    return _apply(session, change, score)


def edit_hint(session: Session, text: str, placement: str = "inline", template: str | None = None,
              hint_index: int = 0, score=None) -> Session:
    def change(s: Session) -> None:
        if not s.hints:
            raise ValueError("there is no hint to edit yet: click a token to place one")
        if not text or not text.strip():
            raise ValueError("the hint text is empty; write a hint or reject the record")
        old = s.hints[hint_index]
        s.hints[hint_index] = Hint(text=text, message=old.message, char=old.char, token=old.token,
                                   placement=placement, template=template if placement == "template" else None,
                                   source=old.source, status="edited", rationale=old.rationale, placebo=old.placebo)

    return _apply(session, change, score)


def set_span(session: Session, span: str) -> Session:
    if span not in LOSS_SPANS:
        raise ValueError(f"loss span {span!r} is not one of {', '.join(LOSS_SPANS)}")

    def change(s: Session) -> None:
        s.span = span

    return _apply(session, change)


def use_proposal(session: Session, index: int) -> Session:
    def change(s: Session) -> None:
        if not 0 <= index < len(s.proposals):
            raise ValueError(f"there is no proposal {index + 1}")
        proposal = s.proposals[index]
        s.hints = [proposal.to_hint()]
        s.record.error = proposal.to_error()

    return _apply(session, change)


def undo(session: Session) -> Session:
    require_open(session)
    if not session.undo_stack:
        raise ValueError("nothing to undo")
    session.hints, session.record.error, session.span = session.undo_stack.pop()
    return rescore(session)


# ------------------------------------------------------------------------------------------------------------------
# The placebo lane and the gradient map


def placebo_shown(session: Session) -> str:
    """The placebo text of the first hint as it will be scored: its stored placebo, else the default."""
    if session.record is None or not session.hints:
        return ""
    return placebo_for(session.hints[0], session.placebo_default).text


def set_placebo(session: Session, on: bool, text: str | None = None, default: str | None = None) -> Session:
    """Turn the placebo lane on or off; `text`: the first hint's own placebo (stored with the record when it is
    reviewed; empty or equal to the default: the default); `default`: the session's placebo for hints without
    their own (empty: `records.default_placebo`). A placebo that does not fit the model's context is refused."""
    require_open(session)
    saved = (session.placebo_on, session.placebo_default)

    def change(s: Session) -> None:
        s.placebo_on = bool(on)
        s.placebo_default = default if default and default.strip() else None
        if text is not None and s.hints:
            hint = s.hints[0]
            own = text if text.strip() and text != placebo_for(replace(hint, placebo=None), s.placebo_default).text \
                else None
            s.hints[0] = replace(hint, placebo=own)

    try:
        return _apply(session, change)
    except Exception:
        session.placebo_on, session.placebo_default = saved
        raise


def gradient_map(session: Session, target: str = "hinted", alpha: float = 1.0) -> GradientMap:
    """Where the target construction `target` pushes at each target position, before training
    (`HintScorer.gradient_map`); kept on the session so the strip's token details show it."""
    require_open(session)
    if not session.hints:
        raise ValueError("place a hint first: the gradient map shows where the target pushes after it")
    alpha = 1.0 if alpha is None else float(alpha)
    spec = TargetSpec(kind=target or "hinted", alpha=alpha)  # a bad target or α: its own one-line message
    if spec.needs_placebo and not session.placebo_on:
        raise ValueError(f"the {spec.kind} target needs a placebo: tick 'Placebo lane' under the hint text, or "
                         "choose the hinted or unleaked target")
    session.gradient = session.scorer.gradient_map(session.hints, spec, placebo=placebo_arg(session),
                                                   span=session.span, error=session.error)
    return session.gradient


def _tops(pairs) -> str:
    return " · ".join(f"{json.dumps(text)[1:-1]} {p:.2f}" for text, p in pairs[:3])


def gradient_table(gradient: GradientMap | None) -> pd.DataFrame:
    """The gradient map, readable: per target token its weight, p under the student and the target, the push, and
    the top tokens of both."""
    columns = ["i", "token", "weight", "trained", "p student", "p target", "push (nats)", "student's top",
               "target's top"]
    if gradient is None or gradient.frame.empty:
        return pd.DataFrame(columns=columns)
    frame = gradient.frame
    return pd.DataFrame({"i": frame.i, "token": [json.dumps(t)[1:-1] for t in frame.text],
                         "weight": frame.weight.round(3), "trained": frame.trained,
                         "p student": frame.p_student.round(3), "p target": frame.p_target.round(3),
                         "push (nats)": frame.push.round(2), "student's top": frame.top_student.map(_tops),
                         "target's top": frame.top_target.map(_tops)}, columns=columns)


def require_placebos(records: list[Record], target: str, placebo: str) -> None:
    """Training with placebo policy "stored" and a target that needs a placebo: every hint must carry its own. Said
    here in the studio's words (the library's message names the CLI flag)."""
    if placebo != "stored" or target not in NEEDS_PLACEBO:
        return
    for record in records:
        missing = [n for n, h in enumerate(record.hints) if h.placebo is None]
        if missing:
            raise ValueError(f"record {record.id!r} has no placebo of its own (hint {missing[0]}), and the {target} "
                             "target with placebo 'stored' needs one: open it on Inspect, write its Placebo, accept "
                             "it again, or choose placebo 'default'")


# ------------------------------------------------------------------------------------------------------------------
# The step timeline of a run


def run_timeline(workspace: Workspace, tokenizer, run_number, record_id: str | None = None) -> RunTimeline:
    """`Workspace.run_timeline`: the step timeline the Train tab shows."""
    return workspace.run_timeline(tokenizer, run_number, record_id)


# ------------------------------------------------------------------------------------------------------------------
# Reviewing


def reviewed_record(session: Session) -> Record:
    """The record as it will be stored: the working hints, positions as message + char (the store makes their
    statuses agree with the record's)."""
    record = copy.deepcopy(session.record)
    record.hints = copy.deepcopy(session.hints)
    return record


def review(session: Session, workspace: Workspace | Store, status: str, reviewer: str | None = None,
           as_right: bool = False) -> Record:
    """Save the open record with `status` (accepted / rejected / pending) through the workspace, which keeps the
    previous version as a revision; returns what was stored.

    `as_right`: the reviewer found nothing wrong. The record is accepted without hints or error span, so in training
    it only anchors its tokens to the base model (the drift guard holds it in place)."""
    require_open(session)
    workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    record = workspace.review(reviewed_record(session), status, model=session.scorer.model, reviewer=reviewer,
                              span=session.span, seconds=time.time() - session.opened_at, as_right=as_right)
    session.record = record
    session.opened_at = time.time()
    return record


def proposals_markdown(session: Session) -> str:
    if session.record is None:
        return ""
    lines = [f"**Hint model:** {session.proposal_reason or 'none run (manual)'}"]
    for n, p in enumerate(session.proposals, start=1):
        lines.append(f"{n}. `{p.source}` · confidence {p.confidence:.2f} · tokens {p.token_start}–{p.token_end} · "
                     f"{md_escape(p.rationale)}  \n   hint: `{md_escape(p.text.strip())}`")
    return "\n".join(lines)


def md_escape(text: str) -> str:
    # Markdown in Gradio is sanitized HTML, but keep model text from forming links, tags or code fences.
    return json.dumps(text)[1:-1].replace("`", "'").replace("<", "&lt;").replace(">", "&gt;")
