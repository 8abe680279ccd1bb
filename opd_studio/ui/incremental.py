"""What the studio computes first after an edit, and what it computes before the user asks.

Window first. After a hint moves, a person looks at the hint and the error span. `window_table` scores only the
original positions before `upto` (the end of the error span plus a few tokens): the hinted pass runs from the first
hint to `upto` and no further (causal attention: what comes later cannot change those positions), and the
vocabulary projections run only there. Rows at or after `upto` keep their before-values and are marked pending
(`ScoreResult.pending_from`). Rows before `upto` are the one-shot `HintScorer.score` rows (tested equal); the
full table still comes from `HintScorer.score`, unchanged, as a second update.

Speculation. While the user reads a freshly opened record, `Speculator` scores the likely next hint positions (the
proposal's, and a few tokens around the error's start) on a scorer of its own that shares the record's original
pass, and keeps the finished tables within a memory budget. A click on one of them is served from memory. Every
real action takes `MODEL_LOCK` and raises `Speculator.stop`, so speculation yields between positions: a click waits
at most for the one position in flight.

Built on `HintScorer`; knows nothing about Gradio.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import asdict

import torch

from ..records import ErrorSpan, Hint
from ..scoring import HintScorer, ScoreResult, forward_reusing, splice, target_mask

WINDOW_AFTER_ERROR = 8  # tokens after the error span scored in the first update
MODEL_LOCK = threading.RLock()  # one model pass at a time: real actions and speculation never run side by side
SPECULATION_BUDGET_BYTES = 32_000_000  # per open record: the finished tables kept in memory
SPECULATION_START_S = 0.3  # speculation starts after this long without an action (the user reads first)
SPECULATION_MAX_TOKENS = 1024  # longer records: one position's pass costs seconds, so nothing is speculated


# ------------------------------------------------------------------------------------------------------------------
# Window first


def window_end(scorer: HintScorer, hints: list[Hint], error: ErrorSpan | None) -> int:
    """The first original position NOT in the first update: the error span's end (or the first hint's anchor + 1)
    plus `WINDOW_AFTER_ERROR`."""
    placed = scorer.place(hints)
    if not placed:
        return len(scorer.trajectory)
    error_tokens = scorer.trajectory.error_token_span(error) if error else None
    end = max(error_tokens[1] if error_tokens else 0, placed[0].anchor + 1)
    return min(len(scorer.trajectory), end + WINDOW_AFTER_ERROR)


@torch.no_grad()
def window_table(scorer: HintScorer, hints: list[Hint], span: str = "turn", error: ErrorSpan | None = None,
                 upto: int | None = None) -> ScoreResult:
    """`scorer.score(hints, span, error)` for the original positions before `upto`; rows from `upto` on carry their
    before-values (after = before, KL 0) and are pending: `pending_from == upto`."""
    if scorer.model is None:  # a served scorer: the server scores the whole sequence in the one request anyway
        return scorer.score(hints, span, error)
    upto = window_end(scorer, hints, error) if upto is None else upto
    placed = scorer.place(hints)
    trajectory = scorer.trajectory
    error_tokens = trajectory.error_token_span(error) if error else None
    targets = target_mask(trajectory, placed, span, error_tokens)
    before = scorer._before_stats()
    changed = [i for i in scorer.student_positions if placed and placed[0].insert_at <= i < upto]
    after, kl = {}, {}
    if changed:
        hinted_ids, position = splice(trajectory.input_ids, placed)
        original = scorer.original_pass()
        cut = position[changed[-1]]  # the last changed position is predicted from the hidden state just before it
        with scorer.weights():
            partial = forward_reusing(scorer.model, hinted_ids[:cut], original if scorer.reuse_cache else None)
        log_q = scorer._logprobs(partial.hidden, [position[i] - 1 for i in changed])  # (n, V) teacher
        log_p = scorer._logprobs(original.hidden, [i - 1 for i in changed])  # (n, V) student
        after = scorer._rows(log_q, changed)
        kl = dict(zip(changed, (log_q.exp() * (log_q - log_p)).sum(1).clamp_min(0.0).tolist()))
    table = scorer._table(placed, targets, before, (after, kl))
    return ScoreResult(table, placed, span, error_tokens,
                       pending_from=upto if placed and upto < len(trajectory) else None)


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
        self.scorer = HintScorer(scorer.model, scorer.tokenizer, scorer.trajectory, top_k=scorer.top_k,
                                 chunk_size=scorer.chunk_size, base_weights=scorer.base_weights)
        self.scorer._original, self.scorer._before = scorer.original_pass(), scorer._before_stats()
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
            with MODEL_LOCK:
                if self.stop.is_set():
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
