"""Hinted scoring: splice hints into a trajectory in token space, run one forward pass, compare before and after.

    original  x  = y_0 … y_T                      (the trajectory; never re-tokenized)
    hinted    x' = y_<k, h, y_k … y_T              (hint tokens h spliced before position k; several hints allowed)
    before    p_i = p(y_i | x_<i)                  (the student)
    after     q_i = p(y_i | x'_<pos(i))            (the teacher: same weights, the hint in context)

Rows of the result are positions of the ORIGINAL trajectory (the columns of docs/data.md). Positions before the first
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

from .records import ErrorSpan, Hint, Record, placebo_for
from .targets import TargetSpec, banned_mask, construct, leak_sets
from .trajectory import Trajectory, TrajectoryError, build_trajectory

FEEDBACK_TEMPLATE = "Consider this feedback: {hint}"
LOSS_SPANS = ("error", "turn", "response")
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
# Placing and splicing hints


@dataclass
class PlacedHint:
    hint: Hint
    anchor: int  # original token the hint is about: the loss span starts here
    insert_at: int  # original token the hint tokens go before (the anchor, or the turn start for feedback turns)
    ids: list[int]  # hint tokens
    snapped: bool  # the hint's character offset fell inside a token and was moved to that token's start
    text: str  # the hint tokens decoded: what the model reads (a feedback turn with its template)

    @property
    def placement(self) -> str:
        return self.hint.placement


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


def place_hints(tokenizer, trajectory: Trajectory, hints: list[Hint]) -> list[PlacedHint]:
    placed = []
    for n, hint in enumerate(hints):
        try:
            anchor, snapped = trajectory.anchor_token(hint)
        except TrajectoryError as exc:
            raise TrajectoryError(f"hint {n}: {exc}") from None
        if hint.placement == "feedback":
            message = trajectory.message_index[anchor]
            insert_at = trajectory.turn_token_spans[message][0]
            ids = _feedback_ids(tokenizer, trajectory, message, hint)
        else:
            insert_at = anchor
            ids = tokenizer(hint.inserted_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise TrajectoryError(f"hint {n} is empty: write some hint text")
        placed.append(PlacedHint(hint, anchor, insert_at, list(ids), snapped, tokenizer.decode(ids)))
    return sorted(placed, key=lambda p: (p.insert_at, p.anchor))


def _feedback_ids(tokenizer, trajectory: Trajectory, message: int, hint: Hint) -> list[int]:
    """The tokens of a feedback message rendered by the chat template just before assistant message `message`."""
    template = hint.template if hint.template and "{hint}" in hint.template else FEEDBACK_TEMPLATE
    feedback = {"role": hint.feedback_role, "content": template.replace("{hint}", hint.text.strip())}
    before = trajectory.messages[:message]
    def render(messages: list[dict]) -> str:
        return tokenizer.apply_chat_template(messages, tools=trajectory.tools, tokenize=False) if messages else ""

    prefix, with_feedback = render(before), render(before + [feedback])
    if not with_feedback.startswith(prefix):
        raise TrajectoryError("the chat template cannot insert a feedback turn here; use an inline hint")
    return tokenizer(with_feedback[len(prefix):], add_special_tokens=False)["input_ids"]


def splice(input_ids: list[int], placed: list[PlacedHint]) -> tuple[list[int], list[int]]:
    """Hinted ids, and for each original position its index in the hinted sequence."""
    hinted, position = [], []
    by_insert: dict[int, list[PlacedHint]] = {}
    for p in placed:
        by_insert.setdefault(p.insert_at, []).append(p)
    for i, token in enumerate(input_ids):
        for p in by_insert.get(i, ()):
            hinted.extend(p.ids)
        position.append(len(hinted))
        hinted.append(token)
    return hinted, position


def target_mask(trajectory: Trajectory, placed: list[PlacedHint], span: str = "turn",
                error: tuple[int, int] | None = None) -> list[bool]:
    """Original positions that get the loss: from each hint's anchor to the end of the error span / the turn /
    the response, student tokens only (hint tokens are not original positions, so they are never targets)."""
    if span not in LOSS_SPANS:
        raise ValueError(f"loss span {span!r} is not one of {', '.join(LOSS_SPANS)}")
    mask = [False] * len(trajectory)
    for p in placed:
        if span == "error":  # the record's error span; without one, the anchor token alone
            start, end = error if error else (p.anchor, p.anchor + 1)
            start = max(start, p.insert_at)  # before the hint, teacher and student are the same model
        elif span == "turn":
            start, end = p.anchor, trajectory.turn_end(p.anchor)
        else:
            start, end = p.anchor, len(trajectory)
        for i in range(start, end):
            mask[i] = mask[i] or trajectory.student_mask[i]
    return mask


def resolve_placebo(hints: list[Hint], placebo: str | list[Hint] | None) -> list[Hint] | None:
    """The placebo hints to score beside `hints`: None (no placebo lane); "default" (each hint's stored placebo,
    else `records.default_placebo`); any other text (each hint's stored placebo, else this text at the hint's place,
    inserted as is); or a list of hints, one per hint."""
    if placebo is None:
        return None
    if isinstance(placebo, str):
        if not placebo.strip():
            raise ValueError("the placebo text is empty: give a content-free text, or 'default'")
        return [placebo_for(h, None if placebo == "default" else placebo) for h in hints]
    if len(placebo) != len(hints):
        raise ValueError(f"{len(placebo)} placebo hints for {len(hints)} hints: give one placebo per hint")
    return list(placebo)


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


@torch.no_grad()
def forward_reusing(model, ids: list[int], reuse: ForwardPass | None = None, keep_cache: bool = True
                    ) -> ForwardPass:
    """Forward `ids`, reusing `reuse`'s cache for the longest common prefix (all but at least one token).
    `keep_cache=False`: only the hidden states are wanted (the pass's `kv` is empty), so the reused cache is read,
    never copied into a grown one (`kv_cache(grow=False)`)."""
    shared = common_prefix(reuse.ids, ids) if reuse else 0
    shared = min(shared, len(ids) - 1)
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
    rank = (logprobs > token_lp).sum(1) + 1
    entropy = -(logprobs.exp() * logprobs).sum(1)
    top_lp, top_ids = logprobs.topk(top_k, dim=1)
    return TokenStats(token_lp[:, 0].cpu().numpy(), rank.cpu().numpy(), entropy.cpu().numpy(),
                      top_ids.cpu().numpy(), top_lp.cpu().numpy())


# ------------------------------------------------------------------------------------------------------------------
# The scorer


class HintScorer:
    """Scores one trajectory under any number of hint sets, reusing every pass it can.

    >>> scorer = HintScorer(model, tokenizer, build_trajectory(tokenizer, record))
    >>> scores = scorer.score(record.hints, span="turn")  # a ScoreResult: scores.table, scores.hints, …
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

    def score(self, hints: list[Hint], span: str = "turn", error: ErrorSpan | None = None,
              placebo: str | list[Hint] | None = None) -> ScoreResult:
        """One row per original token (COLUMNS); with `placebo` (see `resolve_placebo`) also PLACEBO_COLUMNS."""
        placed = self.place(hints)
        placebo_hints = resolve_placebo(hints, placebo)
        error_tokens = self.trajectory.error_token_span(error) if error else None
        targets = target_mask(self.trajectory, placed, span, error_tokens)
        after = self._after_stats(placed)  # also fills the student's rows it projects anyway
        before = self._before_stats()
        table = self._table(placed, targets, before, after)
        if placebo_hints is not None:
            self._add_placebo(table, self.place(placebo_hints), before)
        return ScoreResult(table, placed, span, error_tokens,
                           placebo=None if placebo_hints is None else [h.text for h in placebo_hints])

    def window(self, hints: list[Hint], error: ErrorSpan | None = None) -> tuple[int, int]:
        """[start, end) of the original positions a person looks at first: from WINDOW_BEFORE_HINT tokens before
        the first hint (or the error span, if it starts earlier) to WINDOW_AFTER_ERROR tokens after the error
        span's end (or the first hint's anchor). Without hints: around the error span, else the whole trajectory."""
        placed = self.place(hints)
        n = len(self.trajectory)
        error_tokens = self.trajectory.error_token_span(error) if error else None
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
        default_start, default_end = self.window(hints, error)
        start = default_start if start is None else max(0, start)
        end = default_end if end is None else min(end, len(self.trajectory))
        placed = self.place(hints)
        error_tokens = self.trajectory.error_token_span(error) if error else None
        targets = target_mask(self.trajectory, placed, span, error_tokens)
        shown = [i for i in self.student_positions if start <= i < end]
        changed = [i for i in shown if placed and i >= placed[0].insert_at]
        after, kl = {}, {}
        if changed:
            spliced_ids, position = splice(self.trajectory.input_ids, placed)
            check_context(self.model, len(spliced_ids))
            original = self.original_pass(upto=end)
            # the last changed position is predicted from the hidden state just before it: the pass stops there
            cut = spliced_ids[: position[changed[-1]]]
            last = self._last_hinted
            if not (last is not None and len(last.ids) >= len(cut) and last.ids[: len(cut)] == cut):
                reuse = original
                if last and common_prefix(last.ids, cut) > common_prefix(original.ids, cut):
                    reuse = last
                with self.weights():
                    # not kept as `_last_hinted`: `score` then runs the hinted pass from the first hint in one
                    # piece, so its table is the one-shot table bit for bit (the window's part is a few tokens)
                    last = forward_reusing(self.model, cut, reuse if self.reuse_cache else None, keep_cache=False)
            after, kl = self._compare(last, position, changed)
        before = self._before_stats(shown)
        table = self._table(placed, targets, before, (after, kl))
        n = len(self.trajectory)
        late = [i for i in self.student_positions if i >= end]
        pending_from = end if end < n and (placed or any(i not in before for i in late)) else None
        pending_before = start if any(i not in before for i in self.student_positions if i < start) else None
        return ScoreResult(table, placed, span, error_tokens, pending_from=pending_from,
                           pending_before=pending_before)

    # -- passes ---------------------------------------------------------------------------------------------------

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
    def _before_stats(self, positions: list[int] | None = None) -> dict[int, tuple]:
        """The student's rows at `positions` (default: every student position), computing the missing ones; returns
        every row known so far."""
        wanted = self.student_positions if positions is None else positions
        missing = [i for i in wanted if i not in self._before]
        if missing:
            hidden = self.original_pass(upto=max(missing)).hidden
            for a in range(0, len(missing), self.chunk_size):
                chunk = missing[a: a + self.chunk_size]
                self._before.update(self._stats(hidden, [i - 1 for i in chunk], chunk))
        return self._before

    def hinted_pass(self, placed: list[PlacedHint]) -> tuple[ForwardPass, list[int]]:
        """The hinted sequence's pass (reusing the longest cached prefix) and the original → hinted position map."""
        self._last_hinted, position = self._spliced_pass(placed, self._last_hinted, "hinted")
        return self._last_hinted, position

    def placebo_pass(self, placed: list[PlacedHint]) -> tuple[ForwardPass, list[int]]:
        """`hinted_pass` for the placebo hints, with its own cache (editing the hint does not evict the placebo)."""
        self._last_placebo, position = self._spliced_pass(placed, self._last_placebo, "placebo")
        return self._last_placebo, position

    def _spliced_pass(self, placed, last: ForwardPass | None, what: str) -> tuple[ForwardPass, list[int]]:
        spliced_ids, position = splice(self.trajectory.input_ids, placed)
        check_context(self.model, len(spliced_ids), what)
        original = self.original_pass()
        if last is not None and last.ids == spliced_ids:
            return last, position
        # Reuse whichever earlier pass shares the longer prefix with the new sequence.
        reuse = original
        if last and common_prefix(last.ids, spliced_ids) > common_prefix(original.ids, spliced_ids):
            reuse = last
        with self.weights():
            return forward_reusing(self.model, spliced_ids, reuse if self.reuse_cache else None), position

    @torch.no_grad()
    def _after_stats(self, placed: list[PlacedHint]):
        """Stats under the teacher and KL(teacher ‖ student) at the student positions after the first hint."""
        changed = [i for i in self.student_positions if placed and i >= placed[0].insert_at]
        if not changed:
            return {}, {}
        hinted, position = self.hinted_pass(placed)
        return self._compare(hinted, position, changed)

    @torch.no_grad()
    def _compare(self, hinted: ForwardPass, position: list[int], changed: list[int]) -> tuple[dict, dict]:
        """Teacher rows and KL(teacher ‖ student) at original positions `changed`, chunk by chunk: each chunk's
        teacher and student log-probabilities are computed once, and the student's also give its rows where they
        are not known yet. `hinted` covers at least the hinted positions up to `position[changed[-1]] - 1`."""
        original = self.original_pass(upto=changed[-1])
        after, kl = {}, {}
        for a in range(0, len(changed), self.chunk_size):
            positions = changed[a: a + self.chunk_size]
            log_q = self._logprobs(hinted.hidden, [position[i] - 1 for i in positions])  # (n, V) teacher
            log_p = self._logprobs(original.hidden, [i - 1 for i in positions])  # (n, V) student
            after.update(self._rows(log_q, positions))
            unknown = [n for n, i in enumerate(positions) if i not in self._before]
            if unknown:
                self._before.update(self._rows(log_p[unknown], [positions[n] for n in unknown]))
            kl.update(zip(positions, (log_q.exp() * (log_q - log_p)).sum(1).clamp_min(0.0).tolist()))
        return after, kl

    @torch.no_grad()
    def _add_placebo(self, table: pd.DataFrame, placed: list[PlacedHint], before: dict[int, tuple]) -> None:
        """PLACEBO_COLUMNS in place: the placebo teacher's stats, the content drop and the style flag."""
        changed = [i for i in self.student_positions if placed and i >= placed[0].insert_at]
        stats = {}
        if changed:
            spliced, position = self.placebo_pass(placed)
            for a in range(0, len(changed), self.chunk_size):
                positions = changed[a: a + self.chunk_size]
                stats.update(self._stats(spliced.hidden, [position[i] - 1 for i in positions], positions))
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
        placed = self.place(hints)
        placebo_hints = resolve_placebo(hints, placebo)
        if spec.needs_placebo and placebo_hints is None:
            raise ValueError(f"the {spec.kind} target needs a placebo: pass placebo='default' or a placebo text")
        error_tokens = self.trajectory.error_token_span(error) if error else None
        mask = target_mask(self.trajectory, placed, span, error_tokens)
        positions = [i for i in range(1, len(self.trajectory)) if mask[i]]
        if not positions:
            return GradientMap(pd.DataFrame(columns=GRADIENT_MAP_COLUMNS), spec.kind)
        ids = self.trajectory.input_ids
        log_p = self._logprobs(self.original_pass().hidden, [i - 1 for i in positions])  # (n, V)
        tokens = torch.tensor([ids[i] for i in positions], device=log_p.device)
        hinted, position = self.hinted_pass(placed)
        rows = [position[i] - 1 for i in positions]
        log_q = self._logprobs(hinted.hidden, rows)
        log_z = banned = None
        if placebo_hints is not None:
            spliced, placebo_position = self.placebo_pass(self.place(placebo_hints))
            log_z = self._logprobs(spliced.hidden, [placebo_position[i] - 1 for i in positions])
        if spec.kind == "unleaked":
            sets = leak_sets(ids, hinted.ids, [(p.insert_at, p.ids) for p in placed], positions, rows)
            banned = banned_mask(sets, log_q.shape[-1], log_q.device)
        result = construct(spec, log_q, tokens, log_p, log_z, banned)
        log_r = result.logp
        kl = (log_r.exp() * (log_r - log_p)).sum(-1).clamp_min(0.0)

        def token_p(logp):
            return logp.gather(1, tokens[:, None])[:, 0].exp().tolist() if logp is not None else [math.nan] * len(
                positions)

        def tops(logp):
            if logp is None:
                return [[] for _ in positions]
            top_lp, top_ids = logp.topk(self.top_k, dim=-1)
            return [[[self._text_of(int(t)), float(math.exp(v))] for t, v in zip(i_row, v_row)]
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

    def _stats(self, hidden, rows: list[int], positions: list[int]) -> dict[int, tuple]:
        """`_rows` at `positions`, predicted from `rows` of a pass's hidden states (a served scorer reads them from
        the server's answer instead: `served.ServedScorer`)."""
        return self._rows(self._logprobs(hidden, rows), positions)

    def _logprobs(self, hidden: torch.Tensor, rows: list[int]) -> torch.Tensor:
        index = torch.tensor(rows, device=hidden.device)
        return torch.log_softmax(logits_from_hidden(self.model, hidden[index]), dim=-1)

    def _rows(self, logprobs: torch.Tensor, positions: list[int]) -> dict[int, tuple]:
        """position → (log p(token), rank, entropy, top-k [text, p]) from its (V,) log-probabilities."""
        ids = torch.tensor([self.trajectory.input_ids[i] for i in positions], device=logprobs.device)
        stats = token_stats(logprobs, ids, self.top_k)
        out = {}
        for n, i in enumerate(positions):
            top = [[self._text_of(int(t)), math.exp(lp)] for t, lp in zip(stats.top_ids[n], stats.top_logp[n])]
            out[i] = (float(stats.logp[n]), int(stats.rank[n]), float(stats.entropy[n]), top)
        return out

    def _text_of(self, token_id: int) -> str:
        if token_id not in self._token_text:
            self._token_text[token_id] = self.tokenizer.decode([token_id])
        return self._token_text[token_id]

    # -- table ----------------------------------------------------------------------------------------------------

    def _table(self, placed, targets, before, after) -> pd.DataFrame:
        after_stats, kl = after
        traj = self.trajectory
        inserts = {p.insert_at for p in placed}
        nan = math.nan
        rows = []
        for i, text in enumerate(traj.token_texts):
            b = before.get(i)
            a = after_stats.get(i, b)  # before the first hint, after == before exactly
            rows.append({
                "i": i, "text": text, "student": traj.student_mask[i], "hint": i in inserts,
                "logp_before": b[0] if b else nan, "logp_after": a[0] if a else nan,
                "rank_before": b[1] if b else pd.NA, "rank_after": a[1] if a else pd.NA,
                "entropy_before": b[2] if b else nan, "entropy_after": a[2] if a else nan,
                "kl": kl.get(i, 0.0 if b else nan),
                "top_before": b[3] if b else [], "top_after": a[3] if a else [],
                "target": targets[i],
            })
        table = pd.DataFrame(rows, columns=COLUMNS)
        table["rank_before"] = table["rank_before"].astype("Int64")
        table["rank_after"] = table["rank_after"].astype("Int64")
        return table


def score_record(model, tokenizer, record: Record, span: str = "turn", top_k: int = 5,
                 include_rejected: bool = False, placebo: str | None = None) -> ScoreResult:
    """Score a record with its hints (rejected ones left out unless asked for); `placebo` as in `HintScorer.score`."""
    trajectory = build_trajectory(tokenizer, record)
    check_trajectory_length(model, len(trajectory), record.id)
    hints = record.hints if include_rejected else record.usable_hints
    return HintScorer(model, tokenizer, trajectory, top_k=top_k).score(hints, span=span, error=record.error,
                                                                        placebo=placebo)
