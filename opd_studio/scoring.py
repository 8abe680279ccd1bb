"""Hinted scoring: splice hints into a trajectory in token space, run one forward pass, compare before and after.

    original  x  = y_0 … y_T                      (the trajectory; never re-tokenized)
    hinted    x' = y_<k, h, y_k … y_T              (hint tokens h spliced before position k; several hints allowed)
    before    p_i = p(y_i | x_<i)                  (the student)
    after     q_i = p(y_i | x'_<pos(i))            (the teacher: same weights, the hint in context)

Rows of the result are positions of the ORIGINAL trajectory (the columns of docs/data.md). Where the hints go and
which row of which pass predicts which position is `alignment.Alignment`, built once per call and kept in
`ScoreResult.alignment`. Positions before the first
hint are identical in both passes (causal attention), so their key/value cache comes from the original pass and the
hinted pass runs only from the first inserted token on. The scorer also keeps the cache of the last hinted sequence,
so editing the text of a later hint, or moving a hint later, recomputes only from the first changed token onward.
Logits are computed only at student positions, in chunks of `chunk_size` rows from the decoder's hidden states, so
the (positions × vocabulary) log-probabilities never exist whole: peak memory is bounded by the passes' key/value
caches, whatever the length. At the positions the hint changes, one chunk's student log-probabilities serve both the
student's columns and the KL.

Window first (`HintScorer.score_window`): what a person looks at is the hint and the error span. The window's numbers
need the original pass only up to the window's end, the hinted pass only from the first hint to that end (causal
attention: what comes later cannot change them), and projections only inside the window. `score` afterwards
extends the original pass and keeps the student's rows instead of starting over, so window-then-whole costs about
what the one-shot `score` costs (plus the window's few hinted tokens).

A placebo (`score(..., placebo=...)`) is a content-free hint of the same shape at the same place
(`records.placebo_for`); its pass z_i = p(y_i | x''_<pos(i)) is cached like the hinted one, and the table gains
PLACEBO_COLUMNS: log z_i, and the part of the change the hint's content explains, content_drop = log q_i − log z_i.
A token is flagged `style` when the hint lowers it by more than STYLE_MIN_DROP nats and the placebo reproduces at
least STYLE_SHARE of that drop: what any parenthetical does there, not what this hint says.
`gradient_map` shows, per target position, where a target construction (`targets.py`) pushes before training.

This module knows token ids, hints and models; nothing about Gradio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .alignment import Alignment, PlacedHint, Spliced, align, construct_target, place_hints, predicting_rows
from .records import ErrorSpan, Hint, Record
from .targets import TargetSpec
from .trajectory import Trajectory, TrajectoryError, build_trajectory
COLUMNS = ["i", "text", "student", "hint", "logp_before", "logp_after", "rank_before", "rank_after",
           "entropy_before", "entropy_after", "kl", "top_before", "top_after", "target"]
# Added by `score(..., placebo=...)`, after COLUMNS.
PLACEBO_COLUMNS = ["logp_placebo", "rank_placebo", "top_placebo", "content_drop", "style"]
WINDOW_BEFORE_HINT = 256  # tokens before the first hint (or error) in the window `score_window` computes first
WINDOW_AFTER_ERROR = 8  # tokens after the error span (or the first hint's anchor) in that window
STYLE_MIN_DROP = 0.5  # nats: a smaller drop is not worth explaining
STYLE_SHARE = 0.5  # the placebo's own drop, as a share of the hint's, from which a drop is style
GRADIENT_MAP_COLUMNS = ["i", "text", "weight", "trained", "p_student", "p_hinted", "p_placebo", "p_target", "push",
                        "kl_target", "top_student", "top_hinted", "top_placebo", "top_target"]


# ------------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class ScoreResult:
    """What `HintScorer.score` gives: the per-token table and what it was scored with."""

    table: pd.DataFrame  # one row per original token: COLUMNS, and PLACEBO_COLUMNS with the placebo lane
    hints: list[PlacedHint]  # in insertion order
    span: str  # the loss span (LOSS_SPANS) of the `target` column
    error_span: tuple[int, int] | None  # the record's error span in original tokens
    placebo: list[str] | None = None  # the placebo texts scored beside the hints, when the lane ran
    pending_from: int | None = None  # a first update (`score_window`): rows from here on still lack the teacher
    pending_before: int | None = None  # `score_window` on a fresh open: rows before this still lack every number
    topk_figures: int | None = None  # served scores (served.py): entropy and KL are over the top k + a tail bin
    alignment: Alignment | None = None  # what the table was scored on: hints, passes, rows (`alignment.Alignment`)

    @property
    def anchors(self) -> list[int]:
        return [p.anchor for p in self.hints]

    def copy(self) -> "ScoreResult":
        return dataclasses.replace(self, table=self.table.copy())


@dataclass
class GradientMap:
    """What `HintScorer.gradient_map` gives: one row per target position (GRADIENT_MAP_COLUMNS), and the target."""

    frame: pd.DataFrame
    target: str  # the target construction (targets.TARGETS)


def context_limit(model) -> int | None:
    """The longest sequence the model takes: its config's `max_position_embeddings` (None when it has none). The one
    length limit of scoring, the studio and training: there is no other cap."""
    return getattr(model.config, "max_position_embeddings", None)


def check_trajectory_length(model, length: int, record_id: str | None = None) -> None:
    """A one-line error when a trajectory of `length` tokens is longer than the model's context."""
    limit = context_limit(model)
    if limit and length > limit:
        name = f"record {record_id!r}" if record_id is not None else "the record"
        raise TrajectoryError(f"{name} is {length:,} tokens long, longer than the model's context of {limit:,} tokens "
                              f"(max_position_embeddings): shorten the rollout or use a model with a longer context")


def check_context(model, length: int, what: str = "hinted") -> None:
    """A one-line error when a spliced sequence does not fit the model's context."""
    limit = context_limit(model)
    if limit and length > limit:
        raise TrajectoryError(f"the {what} sequence is {length} tokens, longer than the model's context ({limit}): "
                              f"use a shorter {what if what != 'hinted' else 'hint'} text")


# ------------------------------------------------------------------------------------------------------------------
# Model passes


def logits_from_hidden(model, hidden: torch.Tensor) -> torch.Tensor:
    """(N, H) final hidden states → (N, V) float32 logits, with the output transforms some models apply."""
    logits = model.get_output_embeddings()(hidden).float()
    scale = getattr(model.config, "logit_scale", None)
    if scale:
        logits = logits * scale
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@dataclass
class ForwardPass:
    """A forward pass we may reuse: its ids, per-layer keys/values and final hidden states."""

    ids: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (1, heads, T, head_dim) each
    hidden: torch.Tensor  # (T, H)


def kv_cache(model, kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None, grow: bool = True):
    """A `DynamicCache` holding per-layer (B, heads, T, head_dim) keys/values `kv` as they are, views included.

    Not `DynamicCache(ddp_cache_data=kv)`: that concatenates each layer onto an empty tensor, a copy of the whole
    cache (at 8k tokens of the default model 0.35 GB, and its time). Here the one copy is the forward's own
    concatenation of the new tokens' keys/values; `kv` itself is never written. `grow=False`: a forward whose cache
    is not wanted afterwards; each layer's concatenation lives only during that layer's attention, so the pass holds
    one layer's (prefix + new) keys/values at a time instead of the whole grown cache."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class ReadOnlyLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)

    cache = DynamicCache(config=model.config)
    for n, (layer, (keys, values)) in enumerate(zip(cache.layers, kv or [])):
        if type(layer) is DynamicLayer:  # a full-attention layer: it keeps exactly what it is given
            if not grow:
                layer = cache.layers[n] = ReadOnlyLayer()
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
        else:  # sliding-window and other layers keep their own invariants: their `update` fills them
            layer.update(keys, values)
    return cache


PASS_CHUNK = 1024  # new tokens per decoder call on top of a cache (see `forward_reusing`)


@torch.no_grad()
def forward_reusing(model, ids: list[int], reuse: ForwardPass | None = None, keep_cache: bool = True
                    ) -> ForwardPass:
    """Forward `ids`, reusing `reuse`'s cache for the longest common prefix (all but at least one token).
    `keep_cache=False`: only the hidden states are wanted (the pass's `kv` is empty), so the reused cache is read,
    never copied into a grown one (`kv_cache(grow=False)`).

    On a cache, more than PASS_CHUNK new tokens run PASS_CHUNK at a time. Their attention needs an explicit mask
    (queries and keys no longer line up), and with one SDPA on the CPU computes the masked half of the new tokens'
    own causal block, which it skips under `is_causal`: at 8k tokens, 3.9k new tokens on a 4.3k cache took 30.4 s in
    one piece and 22.8 s in chunks of 1,024. The rows equal the one-piece pass's to float rounding."""
    shared = common_prefix(reuse.ids, ids) if reuse else 0
    shared = min(shared, len(ids) - 1)
    if shared > 0 and len(ids) - shared > PASS_CHUNK:
        for end in range(shared + PASS_CHUNK, len(ids), PASS_CHUNK):
            reuse = forward_reusing(model, ids[:end], reuse)  # each chunk extends the last one's cache
        return forward_reusing(model, ids, reuse, keep_cache)
    cache = kv_cache(model, [(k[..., :shared, :], v[..., :shared, :]) for k, v in reuse.kv] if shared > 0 else None,
                     grow=keep_cache or shared == 0)
    new_ids = torch.tensor([ids[shared:]], device=model.device)
    out = model.get_decoder()(input_ids=new_ids, past_key_values=cache, use_cache=True)
    hidden = out.last_hidden_state[0]  # (T - shared, H)
    if shared > 0:
        hidden = torch.cat([reuse.hidden[:shared], hidden])
    kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers] if keep_cache else []
    return ForwardPass(list(ids), kv, hidden)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


# ------------------------------------------------------------------------------------------------------------------
# Per-position statistics


RANK_BLOCK = 2**15 - 1  # vocabulary columns counted per int16 sum in `token_stats`


@dataclass
class TokenStats:
    """Per position, what a model's distribution says about the token that is there (scoring's before / after
    columns, and a rollout's own table)."""

    logp: np.ndarray  # (N,) log p(actual token)
    rank: np.ndarray  # (N,) 1 = the model's top choice
    entropy: np.ndarray  # (N,) nats
    top_ids: np.ndarray  # (N, k)
    top_logp: np.ndarray  # (N, k)


def token_stats(logprobs: torch.Tensor, tokens: torch.Tensor, top_k: int) -> TokenStats:
    """`logprobs` (N, V) float32 log-probabilities at N positions, `tokens` (N,) the token at each."""
    token_lp = logprobs.gather(1, tokens[:, None])  # (N, 1)
    above = logprobs > token_lp  # (N, V)
    # Counted in int16 over column blocks below 2**15 (no overflow), then added: on the CPU a bool sum in int64
    # costs more than the projection's log-softmax, and this is the score path's largest cost after the model.
    rank = sum(block.sum(1, dtype=torch.int16).to(torch.int32) for block in above.split(RANK_BLOCK, dim=1)) + 1
    entropy = -logprobs.exp().mul_(logprobs).sum(1)  # in place: one (N, V) temporary, not two
    top_lp, top_ids = logprobs.topk(top_k, dim=1)
    return TokenStats(token_lp[:, 0].cpu().numpy(), rank.cpu().numpy(), entropy.cpu().numpy(),
                      top_ids.cpu().numpy(), top_lp.cpu().numpy())


# ------------------------------------------------------------------------------------------------------------------
# The scorer


class HintScorer:
    """Scores one trajectory under any number of hint sets, reusing every pass it can.

    >>> scorer = HintScorer(model, tokenizer, build_trajectory(tokenizer, record))
    >>> scores = scorer.score(record.hints, span="turn")  # a ScoreResult: scores.table, scores.hints, …

    Where the passes come from is a public seam: `original_pass`, `spliced_pass`, `logprobs`, `token_rows` and
    `teacher_stats` run the model here; a scorer whose passes come from elsewhere (a batch: `batching`, a server:
    `served.ServedScorer`) overrides them and keeps every column's definition.
    """

    def __init__(self, model, tokenizer, trajectory: Trajectory, top_k: int = 5, chunk_size: int = 256,
                 reuse_cache: bool = True, base_weights: bool = False):
        self.model, self.tokenizer, self.trajectory = model, tokenizer, trajectory
        self.top_k, self.chunk_size = top_k, chunk_size
        self.reuse_cache = reuse_cache  # False: every hinted pass runs from token 0 (the benchmark's baseline)
        self.base_weights = base_weights  # with a LoRA adapter: score with it disabled (the weights before training)
        self.student_positions = [i for i in range(1, len(trajectory)) if trajectory.student_mask[i]]
        self._original: ForwardPass | None = None  # may cover only a prefix (a window was scored first)
        self._last_hinted: ForwardPass | None = None
        self._last_placebo: ForwardPass | None = None
        self._before: dict[int, tuple] = {}  # position → (logp, rank, entropy, top list), filled as needed
        self._token_text: dict[int, str] = {}

    # -- public ---------------------------------------------------------------------------------------------------

    def place(self, hints: list[Hint]) -> list[PlacedHint]:
        return place_hints(self.tokenizer, self.trajectory, hints)

    def align(self, hints: list[Hint], span: str = "turn", error: ErrorSpan | None = None,
              placebo: str | list[Hint] | None = None) -> Alignment:
        """This trajectory's `alignment.Alignment` under `hints` (and the placebo lane, see `resolve_placebo`)."""
        return align(self.tokenizer, self.trajectory, hints, span, error, placebo)

    def fork(self) -> "HintScorer":
        """A scorer of its own (its hinted-pass caches are its own) sharing this one's whole original pass and the
        student's rows (computed here first): what the studio's speculation scores on."""
        twin = HintScorer(self.model, self.tokenizer, self.trajectory, top_k=self.top_k, chunk_size=self.chunk_size,
                          base_weights=self.base_weights)
        twin._original, twin._before = self.original_pass(), self.student_stats()
        return twin

    def score(self, hints: list[Hint], span: str = "turn", error: ErrorSpan | None = None,
              placebo: str | list[Hint] | None = None) -> ScoreResult:
        """One row per original token (COLUMNS); with `placebo` (see `resolve_placebo`) also PLACEBO_COLUMNS."""
        return self.score_aligned(self.align(hints, span, error, placebo))

    def score_aligned(self, alignment: Alignment) -> ScoreResult:
        """`score` on an alignment already built (of this scorer's trajectory)."""
        after = self.teacher_stats(alignment)  # also fills the student's rows it projects anyway
        before = self.student_stats()
        table = self._table(alignment, before, after)
        if alignment.placebo is not None:
            self._add_placebo(table, alignment, before)
        placebo = None if alignment.placebo is None else [p.hint.text for p in alignment.placebo.hints]
        return ScoreResult(table, alignment.hints, alignment.span, alignment.error, placebo=placebo,
                           alignment=alignment)

    def window(self, hints: list[Hint], error: ErrorSpan | None = None) -> tuple[int, int]:
        """[start, end) of the original positions a person looks at first: from WINDOW_BEFORE_HINT tokens before
        the first hint (or the error span, if it starts earlier) to WINDOW_AFTER_ERROR tokens after the error
        span's end (or the first hint's anchor). Without hints: around the error span, else the whole trajectory."""
        return self._window(self.align(hints, error=error))

    def _window(self, alignment: Alignment) -> tuple[int, int]:
        placed, error_tokens = alignment.hints, alignment.error
        n = len(self.trajectory)
        if not placed and not error_tokens:
            return 0, n
        starts = ([placed[0].insert_at] if placed else []) + ([error_tokens[0]] if error_tokens else [])
        ends = ([placed[0].anchor + 1] if placed else []) + ([error_tokens[1]] if error_tokens else [])
        return max(0, min(starts) - WINDOW_BEFORE_HINT), min(n, max(ends) + WINDOW_AFTER_ERROR)

    @torch.no_grad()
    def score_window(self, hints: list[Hint], span: str = "turn", error: ErrorSpan | None = None,
                     start: int | None = None, end: int | None = None) -> ScoreResult:
        """`score(hints, span, error)`'s rows for the original positions in [start, end) (default: `window`),
        computed with the least work: the original pass up to `end` (extending what is cached), the hinted pass
        from the first hint to `end`, vocabulary projections only inside the window. Rows outside the window carry
        what is already known (the student's numbers where computed, after = before, KL 0) and are pending:
        `pending_from` (rows from here on still lack the teacher) and `pending_before` (rows before it still lack
        the student's numbers). A later `score` extends the original pass made here and keeps its rows. The rows in
        the window equal `score`'s (tests/test_long.py, tests/test_ui_incremental.py)."""
        alignment = self.align(hints, span, error)
        default_start, default_end = self._window(alignment)
        start = default_start if start is None else max(0, start)
        end = default_end if end is None else min(end, len(self.trajectory))
        shown = [i for i in self.student_positions if start <= i < end]
        changed = [i for i in alignment.changed if start <= i < end]
        after, kl = {}, {}
        if changed:
            hinted = alignment.hinted
            check_context(self.model, len(hinted.ids))
            original = self.original_pass(upto=end)
            # the last changed position is predicted by the row just before it: the pass stops there
            cut = hinted.ids[: hinted.rows(changed[-1:])[0] + 1]
            last = self._last_hinted
            if not (last is not None and len(last.ids) >= len(cut) and last.ids[: len(cut)] == cut):
                reuse = original
                if last and common_prefix(last.ids, cut) > common_prefix(original.ids, cut):
                    reuse = last
                with self.weights():
                    # not kept as `_last_hinted`: `score` then runs the hinted pass from the first hint in one
                    # piece, so its table is the one-shot table bit for bit (the window's part is a few tokens)
                    last = forward_reusing(self.model, cut, reuse if self.reuse_cache else None,
                                            keep_cache=False)
            after, kl = self._compare(last, alignment, changed)
        before = self.student_stats(shown)
        table = self._table(alignment, before, (after, kl))
        n = len(self.trajectory)
        late = [i for i in self.student_positions if i >= end]
        pending_from = end if end < n and (alignment.hints or any(i not in before for i in late)) else None
        pending_before = start if any(i not in before for i in self.student_positions if i < start) else None
        return ScoreResult(table, alignment.hints, span, alignment.error, pending_from=pending_from,
                           pending_before=pending_before, alignment=alignment)

    # -- passes: the seam a scorer with passes from elsewhere overrides -------------------------------------------

    def weights(self):
        """Context in which the decoder runs: the adapter disabled for `base_weights`, else as the model is."""
        if self.base_weights and hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def original_pass(self, upto: int | None = None) -> ForwardPass:
        """The unhinted pass over at least the first `upto` tokens (default: all), extending a shorter cached one."""
        n = len(self.trajectory) if upto is None else min(upto, len(self.trajectory))
        if self._original is None or len(self._original.ids) < n:
            with self.weights():
                self._original = forward_reusing(self.model, self.trajectory.input_ids[:n], self._original)
        return self._original

    @torch.no_grad()
    def student_stats(self, positions: list[int] | None = None) -> dict[int, tuple]:
        """The student's rows at `positions` (default: every student position), computing the missing ones; returns
        every row known so far (a dict this scorer keeps filling)."""
        wanted = self.student_positions if positions is None else positions
        missing = [i for i in wanted if i not in self._before]
        if missing:
            hidden = self.original_pass(upto=max(missing)).hidden
            for a in range(0, len(missing), self.chunk_size):
                chunk = missing[a: a + self.chunk_size]
                self._before.update(self.token_rows(hidden, predicting_rows(chunk), chunk))
        return self._before

    def hinted_pass(self, alignment: Alignment) -> ForwardPass:
        """The hinted sequence's pass (reusing the longest cached prefix); `alignment.hinted.rows` index it."""
        self._last_hinted = self.spliced_pass(alignment.hinted, self._last_hinted, "hinted")
        return self._last_hinted

    def placebo_pass(self, alignment: Alignment) -> ForwardPass:
        """`hinted_pass` for the placebo hints, with its own cache (editing the hint does not evict the placebo)."""
        self._last_placebo = self.spliced_pass(alignment.placebo, self._last_placebo, "placebo")
        return self._last_placebo

    def spliced_pass(self, spliced: Spliced, last: ForwardPass | None, what: str) -> ForwardPass:
        """The pass over `spliced.ids`: `last` when it is that sequence, else run on whichever earlier pass (`last`
        or the original) shares the longer prefix with it."""
        check_context(self.model, len(spliced.ids), what)
        original = self.original_pass()
        if last is not None and last.ids == spliced.ids:
            return last
        reuse = original
        if last and common_prefix(last.ids, spliced.ids) > common_prefix(original.ids, spliced.ids):
            reuse = last
        with self.weights():
            return forward_reusing(self.model, spliced.ids, reuse if self.reuse_cache else None)

    @torch.no_grad()
    def teacher_stats(self, alignment: Alignment) -> tuple[dict, dict]:
        """Stats under the teacher and KL(teacher ‖ student) at the student positions after the first hint."""
        changed = alignment.changed
        if not changed:
            return {}, {}
        return self._compare(self.hinted_pass(alignment), alignment, changed)

    @torch.no_grad()
    def _compare(self, hinted: ForwardPass, alignment: Alignment, changed: list[int]) -> tuple[dict, dict]:
        """Teacher rows and KL(teacher ‖ student) at original positions `changed`, chunk by chunk: each chunk's
        teacher and student log-probabilities are computed once, and the student's also give its rows where they
        are not known yet. `hinted` covers at least the hinted rows that predict `changed`."""
        original = self.original_pass(upto=changed[-1])
        after, kl = {}, {}
        for a in range(0, len(changed), self.chunk_size):
            positions = changed[a: a + self.chunk_size]
            log_q = self.logprobs(hinted.hidden, alignment.rows("hinted", positions))  # (n, V) teacher
            log_p = self.logprobs(original.hidden, alignment.rows("student", positions))  # (n, V) student
            after.update(self._rows(log_q, positions))
            unknown = [n for n, i in enumerate(positions) if i not in self._before]
            if unknown:
                self._before.update(self._rows(log_p[unknown], [positions[n] for n in unknown]))
            kl.update(zip(positions, (log_q.exp() * (log_q - log_p)).sum(1).clamp_min(0.0).tolist()))
        return after, kl

    @torch.no_grad()
    def _add_placebo(self, table: pd.DataFrame, alignment: Alignment, before: dict[int, tuple]) -> None:
        """PLACEBO_COLUMNS in place: the placebo teacher's stats, the content drop and the style flag."""
        changed = [i for i in self.student_positions
                   if alignment.placebo.hints and i >= alignment.placebo.hints[0].insert_at]
        stats = {}
        if changed:
            spliced = self.placebo_pass(alignment)
            for a in range(0, len(changed), self.chunk_size):
                positions = changed[a: a + self.chunk_size]
                stats.update(self.token_rows(spliced.hidden, alignment.rows("placebo", positions), positions))
        rows = [stats.get(i, before.get(i)) for i in table.i]
        table["logp_placebo"] = [r[0] if r else math.nan for r in rows]
        table["rank_placebo"] = pd.array([r[1] if r else pd.NA for r in rows], dtype="Int64")
        table["top_placebo"] = [r[3] if r else [] for r in rows]
        table["content_drop"] = table.logp_after - table.logp_placebo
        raw = table.logp_after - table.logp_before
        placebo_drop = table.logp_placebo - table.logp_before
        table["style"] = ((raw < -STYLE_MIN_DROP) & (placebo_drop <= STYLE_SHARE * raw)).fillna(False).astype(bool)

    @torch.no_grad()
    def gradient_map(self, hints: list[Hint], target: TargetSpec | None = None,
                     placebo: str | list[Hint] | None = "default", span: str = "turn",
                     error: ErrorSpan | None = None) -> GradientMap:
        """Where a target construction pushes, before any training: one row per target position (GRADIENT_MAP_COLUMNS).

        p_student / p_hinted / p_placebo / p_target: the probability of the trajectory's token under the unhinted
        student, the hinted teacher, the placebo teacher and the constructed target; `top_*`: their top-k
        [text, p] pairs; `push` = log r(y) − log p(y) (negative: the target lowers the token); `kl_target` =
        KL(r ‖ p), how hard the target pulls at this position; `weight`: the position's share of the record's
        distillation loss (1 / number of targets, times the construction's own factor: guided's KL / (KL + τ)), and
        `trained`: False where the construction only holds the position (evidence). `placebo` is needed by contrast and evidence; p_placebo is NaN without one.
        """
        spec = target or TargetSpec()
        alignment = self.align(hints, span, error, placebo)
        if spec.needs_placebo and alignment.placebo is None:
            raise ValueError(f"the {spec.kind} target needs a placebo: pass placebo='default' or a placebo text")
        positions = alignment.targets
        if not positions:
            return GradientMap(pd.DataFrame(columns=GRADIENT_MAP_COLUMNS), spec.kind)
        log_p = self.logprobs(self.original_pass().hidden, alignment.rows("student", positions))  # (n, V)
        tokens = alignment.tokens(positions, log_p.device)
        log_q = self.logprobs(self.hinted_pass(alignment).hidden, alignment.rows("hinted", positions))
        log_z = None
        if alignment.placebo is not None:
            log_z = self.logprobs(self.placebo_pass(alignment).hidden, alignment.rows("placebo", positions))
        result = construct_target(alignment, positions, spec, log_q, log_p, log_z)
        log_r = result.logp
        kl = (log_r.exp() * (log_r - log_p)).sum(-1).clamp_min(0.0)

        def token_p(logp):
            return logp.gather(1, tokens[:, None])[:, 0].exp().tolist() if logp is not None else [math.nan] * len(
                positions)

        def tops(logp):
            if logp is None:
                return [[] for _ in positions]
            top_lp, top_ids = logp.topk(self.top_k, dim=-1)
            return [[[self.text_of(int(t)), float(math.exp(v))] for t, v in zip(i_row, v_row)]
                    for i_row, v_row in zip(top_ids.tolist(), top_lp.tolist())]

        p_student, p_target = token_p(log_p), token_p(log_r)
        frame = pd.DataFrame({
            "i": positions, "text": [self.trajectory.token_texts[i] for i in positions],
            "weight": (result.weight / len(positions)).tolist(), "trained": result.trained.tolist(),
            "p_student": p_student, "p_hinted": token_p(log_q), "p_placebo": token_p(log_z), "p_target": p_target,
            "push": [math.log(max(r, 1e-45)) - math.log(max(p, 1e-45)) for r, p in zip(p_target, p_student)],
            "kl_target": kl.tolist(), "top_student": tops(log_p), "top_hinted": tops(log_q),
            "top_placebo": tops(log_z), "top_target": tops(log_r)}, columns=GRADIENT_MAP_COLUMNS)
        return GradientMap(frame, spec.kind)

    def token_rows(self, hidden, rows: list[int], positions: list[int]) -> dict[int, tuple]:
        """`_rows` at `positions`, predicted from `rows` of a pass's hidden states (a served scorer reads them from
        the server's answer instead: `served.ServedScorer`)."""
        return self._rows(self.logprobs(hidden, rows), positions)

    def logprobs(self, hidden: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """(len(rows), V) float32 log-probabilities from `rows` of a pass's final hidden states."""
        index = torch.tensor(rows, device=hidden.device)
        return torch.log_softmax(logits_from_hidden(self.model, hidden[index]), dim=-1)

    def _rows(self, logprobs: torch.Tensor, positions: list[int]) -> dict[int, tuple]:
        """position → (log p(token), rank, entropy, top-k [text, p]) from its (V,) log-probabilities."""
        ids = torch.tensor([self.trajectory.input_ids[i] for i in positions], device=logprobs.device)
        stats = token_stats(logprobs, ids, self.top_k)
        top_p = np.exp(stats.top_logp.astype(np.float64)).tolist()  # as math.exp of each float32 log p
        return {i: (logp, rank, entropy, [[self.text_of(t), p] for t, p in zip(top_ids, ps)])
                for i, logp, rank, entropy, top_ids, ps in zip(positions, stats.logp.tolist(), stats.rank.tolist(),
                                                               stats.entropy.tolist(), stats.top_ids.tolist(), top_p)}

    def text_of(self, token_id: int) -> str:
        """A token's text (decoded once, then kept)."""
        if token_id not in self._token_text:
            self._token_text[token_id] = self.tokenizer.decode([token_id])
        return self._token_text[token_id]

    # -- table ----------------------------------------------------------------------------------------------------

    def _table(self, alignment: Alignment, before, after) -> pd.DataFrame:
        """The per-token table from the rows of the two passes (position → `_rows`' tuple), built column by column:
        at 8k tokens a dict per row cost a quarter of a second on the first paint."""
        after_stats, kl = after
        traj = self.trajectory
        inserts = {p.insert_at for p in alignment.hints}
        n = len(traj.token_texts)
        b_rows = [before.get(i) for i in range(n)]
        a_rows = [after_stats.get(i, b) for i, b in enumerate(b_rows)]  # before the first hint, after == before

        def column(rows, field: int, missing):
            return [row[field] if row else missing for row in rows]

        return pd.DataFrame({
            "i": range(n), "text": traj.token_texts, "student": traj.student_mask,
            "hint": [i in inserts for i in range(n)],
            "logp_before": column(b_rows, 0, math.nan), "logp_after": column(a_rows, 0, math.nan),
            "rank_before": pd.array(column(b_rows, 1, None), dtype="Int64"),
            "rank_after": pd.array(column(a_rows, 1, None), dtype="Int64"),
            "entropy_before": column(b_rows, 2, math.nan), "entropy_after": column(a_rows, 2, math.nan),
            "kl": [kl.get(i, 0.0 if b else math.nan) for i, b in enumerate(b_rows)],
            "top_before": [row[3] if row else [] for row in b_rows],
            "top_after": [row[3] if row else [] for row in a_rows],
            "target": list(alignment.mask),
        }, columns=COLUMNS)


def score_record(model, tokenizer, record: Record, span: str = "turn", top_k: int = 5,
                 include_rejected: bool = False, placebo: str | None = None) -> ScoreResult:
    """Score a record with its hints (rejected ones left out unless asked for); `placebo` as in `HintScorer.score`."""
    trajectory = build_trajectory(tokenizer, record)
    check_trajectory_length(model, len(trajectory), record.id)
    hints = record.hints if include_rejected else record.usable_hints
    return HintScorer(model, tokenizer, trajectory, top_k=top_k).score(hints, span=span, error=record.error,
                                                                        placebo=placebo)
