"""What the studio computes first after an edit, and what it computes before the user asks.

Window first. After a hint moves, a person looks at the hint and the error span. `window_table` scores only the
original positions before `upto` (the end of the error span plus a few tokens) with `HintScorer.score_window`: the
hinted pass runs from the first hint to `upto` and no further (causal attention: what comes later cannot change
those positions), and the vocabulary projections run only there. Rows at or after `upto` keep their before-values
and are marked pending (`ScoreResult.pending_from`). Rows before `upto` are the one-shot `HintScorer.score` rows
(tested equal); the full table still comes from `HintScorer.score`, unchanged, as a second update.

Opening a long record. A person who opens a record looks at the hint first. `sampled_table` paints the record's own
sampled log-probabilities (`Record.response_logprobs`) as the student's numbers before any forward pass (everything
pending). `open_window` then computes `HintScorer.window` (from a little before the first hint to just past the error
span) with `HintScorer.score_window`: the decoder over the original tokens only up to the window's end, the hinted
sequence from the hint to there, projections only inside the window. The whole table (`HintScorer.score`) then
extends the original pass the window made, so it costs about what a one-shot scoring would. The window rows equal the
one-shot rows (tested).

Speculation. While the user reads a freshly opened record, `Speculator` scores the likely next hint positions (the
proposal's, and a few tokens around the error's start) on a scorer of its own that shares the record's original
pass, and keeps the finished tables within a memory budget. A click on one of them is served from memory. Every
real action raises `Speculator.stop`, and a position is scored only while the model is idle (`turns.TURNS`: no
action running or waiting for it), so a click waits at most for the one position in flight.

Built on `HintScorer`; knows nothing about Gradio.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import asdict



from ..records import ErrorSpan, Hint, Record
from ..scoring import HintScorer, ScoreResult
from .turns import TURNS

OPEN_WINDOW_MIN_TOKENS = 1024  # shorter records open in one piece (the whole table costs well under a second)
SPECULATION_BUDGET_BYTES = 32_000_000  # per open record: the finished tables kept in memory
SPECULATION_START_S = 0.3  # speculation starts after this long without an action (the user reads first)
SPECULATION_MAX_TOKENS = 1024  # longer records: one position's pass costs seconds, so nothing is speculated


# ------------------------------------------------------------------------------------------------------------------
# Window first


def window_end(scorer: HintScorer, hints: list[Hint], error: ErrorSpan | None) -> int:
    """The first original position NOT in the first update: the error span's end (or the first hint's anchor + 1)
    plus `WINDOW_AFTER_ERROR` (`HintScorer.window`)."""
    if not scorer.place(hints):
        return len(scorer.trajectory)
    return scorer.window(hints, error)[1]


def window_table(scorer: HintScorer, hints: list[Hint], span: str = "turn", error: ErrorSpan | None = None,
                 upto: int | None = None) -> ScoreResult:
    """`scorer.score(hints, span, error)` for the original positions before `upto`; rows from `upto` on carry their
    before-values (after = before, KL 0) and are pending: `pending_from == upto` (`HintScorer.score_window`, from
    position 0: after an edit the student's rows are all known)."""
    if scorer.model is None:  # a served scorer: the server scores the whole sequence in the one request anyway
        return scorer.score(hints, span, error)
    upto = window_end(scorer, hints, error) if upto is None else upto
    return scorer.score_window(hints, span, error, start=0, end=upto)


# ------------------------------------------------------------------------------------------------------------------
# Opening a long record


def sampled_logprobs(trajectory, record: Record) -> dict[int, float]:
    """Trajectory position → the record's sampled log-probability of that token (`Record.response_logprobs`). A
    message whose ids are not where the trajectory has them gives nothing (it was re-tokenized)."""
    ids, logprobs = record.response_token_ids, record.response_logprobs
    if not ids or not logprobs:
        return {}
    assistants = record.assistant_indices
    pairs = ([(assistants[-1], ids, logprobs)] if all(isinstance(i, int) for i in ids)
             else [(m, i, lp) for m, i, lp in zip(assistants, ids, logprobs) if i is not None and lp is not None])
    out = {}
    for message, message_ids, message_logprobs in pairs:
        span = trajectory.student_token_spans[message]
        if span is None or trajectory.input_ids[span[0]: span[0] + len(message_ids)] != list(message_ids):
            continue
        out.update((span[0] + k, float(lp)) for k, lp in enumerate(message_logprobs))
    return out


def with_sampled(scores: ScoreResult, sampled: dict[int, float]) -> ScoreResult:
    """`scores` with the record's sampled log-probabilities in the student rows that have no numbers yet (no rank,
    entropy or alternatives; after = before there, as before any hint)."""
    table = scores.table
    missing = table.logp_before.isna() & table.i.isin(list(sampled))
    if missing.any():
        table = table.copy()
        values = table.loc[missing, "i"].map(sampled).astype(float)
        table.loc[missing, "logp_before"] = values
        table.loc[missing, "logp_after"] = values
        table.loc[missing, "kl"] = 0.0
        scores = scores.copy()
        scores.table = table
    return scores


def sampled_table(scorer: HintScorer, hints: list[Hint], span: str, error: ErrorSpan | None,
                  sampled: dict[int, float]) -> ScoreResult:
    """The table before any forward pass: the student's numbers from the record's sampled log-probabilities where it
    has them, the teacher's not yet: every row pending (`pending_from` 0)."""
    return with_sampled(scorer.score_window(hints, span, error, start=0, end=0), sampled)


def open_window(scorer: HintScorer, hints: list[Hint], span: str = "turn", error: ErrorSpan | None = None,
                sampled: dict[int, float] | None = None) -> ScoreResult:
    """The first numbers of a record just opened: `scorer.score`'s rows inside `scorer.window(hints, error)`;
    rows after it are pending (`pending_from`), rows before it carry `sampled` (exact: before the hint the teacher is
    the student) or nothing (`pending_before`). Without hints, or on a served model (one request scores the whole
    sequence anyway): the whole table."""
    if scorer.model is None or not scorer.place(hints):
        return scorer.score(hints, span=span, error=error)
    return with_sampled(scorer.score_window(hints, span, error), sampled or {})


# ------------------------------------------------------------------------------------------------------------------
# Speculation


def hints_key(hints: list[Hint], span: str, error: ErrorSpan | None) -> tuple:
    """What a table depends on besides the record and the weights."""
    scored = [tuple((k, repr(v)) for k, v in sorted(asdict(h).items()) if k not in ("status", "source", "rationale"))
              for h in hints]
    return (tuple(scored), span, None if error is None else (error.message, error.char_start, error.char_end))


def result_bytes(scores: ScoreResult) -> int:
    # the top-k lists dominate: 2 × k × (str + float) per row, ~100 bytes each
    return int(scores.table.memory_usage(deep=False).sum()) + len(scores.table) * 2 * 5 * 100


class Speculator:
    """Scores likely hint positions in a background thread; `get` serves a finished table, `stop` yields."""

    def __init__(self, scorer: HintScorer, budget_bytes: int = SPECULATION_BUDGET_BYTES,
                 results: dict[tuple, ScoreResult] | None = None):
        # A scorer of its own (its hinted-pass cache is its own), sharing the record's original pass and before-stats.
        self.scorer = scorer.fork()
        self.results: dict[tuple, ScoreResult] = dict(results or {})  # still valid: same record, same weights
        self.budget_bytes, self.used_bytes = budget_bytes, sum(map(result_bytes, self.results.values()))
        self.stop = threading.Event()
        self.first_done = threading.Event()  # set once `first` (see `start`) has finished or given up
        self.thread: threading.Thread | None = None

    def start(self, candidates: list[tuple[list[Hint], str, ErrorSpan | None]],
              delay_s: float = SPECULATION_START_S, first=None) -> "Speculator":
        """Score `candidates` in a background thread after `delay_s`; `first(stop)` runs before them (the studio
        opens the next record of the queue there)."""
        if len(self.scorer.trajectory) > SPECULATION_MAX_TOKENS:
            candidates = []
        if candidates or first:
            self.thread = threading.Thread(target=self._run, args=(candidates, delay_s, first), daemon=True)
            self.thread.start()
        else:
            self.first_done.set()
        return self

    def _run(self, candidates, delay_s: float, first=None) -> None:
        try:
            if self.stop.wait(delay_s):
                return
            if first is not None:
                first(self.stop)
        finally:
            self.first_done.set()
        for hints, span, error in candidates:
            key = hints_key(hints, span, error)
            if key in self.results:
                continue
            with TURNS.background(self.stop) as mine:  # only while no action runs or waits
                if not mine:
                    return
                try:
                    scores = self.scorer.score(hints, span=span, error=error)
                except (ValueError, KeyError):
                    continue  # a candidate the trajectory refuses (context token, …): nothing to serve
            size = result_bytes(scores)
            if self.used_bytes + size > self.budget_bytes:
                return
            self.results[key], self.used_bytes = scores, self.used_bytes + size

    def get(self, hints: list[Hint], span: str, error: ErrorSpan | None) -> ScoreResult | None:
        scores = self.results.get(hints_key(hints, span, error))
        return None if scores is None else scores.copy()


def candidate_hints(hints: list[Hint], proposals_hints: list[Hint], error_start: int | None, trajectory,
                    around: int = 2) -> list[list[Hint]]:
    """Hint sets the user is likely to click next: each proposal's, then the current hint moved to the few tokens
    around the error's start (the same text; student tokens only)."""
    sets: list[list[Hint]] = [[h] for h in proposals_hints]
    if hints and error_start is not None:
        for token in sorted(range(error_start - around, error_start + around + 1), key=lambda t: abs(t - error_start)):
            if 0 < token < len(trajectory) and trajectory.student_mask[token] and token != hints[0].token:
                message, char = trajectory.token_to_char(token)
                moved = copy.deepcopy(hints)
                moved[0].token, moved[0].message, moved[0].char, moved[0].status = token, message, char, "edited"
                sets.append(moved)
    return sets
