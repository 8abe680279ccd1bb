"""Alignment: where hints go, and which row of which pass predicts which original token. Built once per record and
hint set; scoring, training, batching, the diagnostics and the exports read it and never rebuild it.

    original  x   = y_0 … y_T                    (the trajectory; never re-tokenized)
    hinted    x'  = y_<k, h, y_k … y_T           (hint tokens h spliced before position k; several hints allowed)
    placebo   x'' = the same with each hint's placebo (`records.placebo_for`) at the hint's place
    pos(t)         original position t's index in x' (or x'')

A causal decoder's row r (its final hidden state after reading tokens 0 … r) predicts token r + 1, so the row that
predicts token t of a sequence is t − 1 (`predicting_row`, the one place this offset is written): row t − 1 of the
unhinted pass (the student), row pos(t) − 1 of the hinted pass (the teacher) and of the placebo pass. Position 0
has no predicting row and is never a target. Hint tokens are not original positions, so they are never targets.

The target positions T (`target_mask`): from each hint's anchor to the end of the error span / the turn / the
response, student tokens only. The error positions (the "p(error tokens)" metric): the record's error span's
student tokens, else the first hint's anchor. The anchors: every other student position.

Batches: sequences are padded on the right (`pad_right`), so every real token's position id equals its index and,
under causal attention, no real token attends to a pad; `pad_id` is the one rule for the pad token.

This module knows token ids and hints; it runs no model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .records import ErrorSpan, Hint, placebo_for
from .targets import Target, TargetSpec, banned_mask, construct, leak_sets
from .trajectory import Trajectory, TrajectoryError

FEEDBACK_TEMPLATE = "Consider this feedback: {hint}"
LOSS_SPANS = ("error", "turn", "response")
LANES = ("student", "hinted", "placebo")  # the passes of an alignment: unhinted, hinted, placebo


def predicting_row(position: int) -> int:
    """The row of a causal pass whose hidden state predicts the token at `position` of that pass's sequence."""
    return position - 1


def predicting_rows(positions) -> list[int]:
    return [predicting_row(t) for t in positions]


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


# ------------------------------------------------------------------------------------------------------------------
# The alignment


@dataclass(frozen=True)
class Spliced:
    """The trajectory with hint tokens spliced in: its ids, and each original position's index in them."""

    ids: list[int]
    position: list[int]  # original position t → its index in `ids`
    hints: list[PlacedHint]  # in insertion order

    def rows(self, positions) -> list[int]:
        """The rows of this sequence's pass that predict original positions `positions`."""
        return [predicting_row(self.position[t]) for t in positions]

    @property
    def hint_tokens(self) -> list[tuple[int, list[int]]]:
        """(insert_at, hint ids) per hint: what the leak sets (`targets.leak_sets`) read."""
        return [(p.insert_at, p.ids) for p in self.hints]


@dataclass(frozen=True)
class Alignment:
    """One record under one hint set: the trajectory, the placed hints, the hinted and placebo sequences with their
    position maps, the target and error positions, and for each pass (`LANES`) the rows that predict them."""

    trajectory: Trajectory
    hinted: Spliced
    placebo: Spliced | None  # None: no placebo lane
    span: str  # the loss span (LOSS_SPANS) of `mask`
    error: tuple[int, int] | None  # the record's error span in original tokens
    mask: list[bool]  # per original position: gets the distillation loss

    @property
    def hints(self) -> list[PlacedHint]:
        return self.hinted.hints

    @property
    def input_ids(self) -> list[int]:
        return self.trajectory.input_ids

    @property
    def targets(self) -> list[int]:
        """Original positions with the distillation loss (position 0 has no predicting row)."""
        return [t for t in range(1, len(self.trajectory)) if self.mask[t]]

    @property
    def student_positions(self) -> list[int]:
        """Every position the model generated that some row predicts."""
        return [t for t in range(1, len(self.trajectory)) if self.trajectory.student_mask[t]]

    @property
    def anchors(self) -> list[int]:
        """The other student positions: held to the base model by training's drift guard."""
        return [t for t in self.student_positions if not self.mask[t]]

    @property
    def errors(self) -> list[int]:
        """The positions of the "p(error tokens)" metric: the error span's student tokens, else the first hint's
        anchor."""
        if self.error:
            return [t for t in range(*self.error) if t >= 1 and self.trajectory.student_mask[t]]
        return [self.hints[0].anchor] if self.hints else []

    @property
    def changed(self) -> list[int]:
        """Student positions at or after the first inserted hint token: where the hinted pass can differ."""
        if not self.hints:
            return []
        first = self.hints[0].insert_at
        return [t for t in self.student_positions if t >= first]

    def rows(self, lane: str, positions) -> list[int]:
        """The rows of pass `lane` ("student", "hinted", "placebo") that predict original positions `positions`."""
        if lane == "student":
            return predicting_rows(positions)
        if lane == "hinted":
            return self.hinted.rows(positions)
        if lane == "placebo" and self.placebo is not None:
            return self.placebo.rows(positions)
        raise ValueError(f"lane {lane!r} is not one of this alignment's passes")

    def tokens(self, positions, device=None) -> torch.Tensor:
        """(N,) the trajectory's token at each position."""
        return torch.tensor([self.input_ids[t] for t in positions], device=device)

    def with_span(self, span: str) -> "Alignment":
        """The same hints and passes with another loss span."""
        if span == self.span:
            return self
        return dataclasses.replace(self, span=span, mask=target_mask(self.trajectory, self.hints, span, self.error))


def align(tokenizer, trajectory: Trajectory, hints: list[Hint], span: str = "turn", error: ErrorSpan | None = None,
          placebo: str | list[Hint] | None = None) -> Alignment:
    """Place `hints` on `trajectory`, splice them (and, with `placebo`, the placebo hints: see `resolve_placebo`),
    and mark the loss span `span` and the record's `error`."""
    placed = place_hints(tokenizer, trajectory, hints)
    error_tokens = trajectory.error_token_span(error) if error else None
    mask = target_mask(trajectory, placed, span, error_tokens)
    placebo_hints = resolve_placebo(hints, placebo)
    placebo_spliced = None
    if placebo_hints is not None:
        placebo_placed = place_hints(tokenizer, trajectory, placebo_hints)
        placebo_spliced = Spliced(*splice(trajectory.input_ids, placebo_placed), placebo_placed)
    return Alignment(trajectory, Spliced(*splice(trajectory.input_ids, placed), placed), placebo_spliced, span,
                     error_tokens, mask)


# ------------------------------------------------------------------------------------------------------------------
# A target's inputs


def construct_target(alignment: Alignment, positions: list[int], spec: TargetSpec, log_q: torch.Tensor,
                     log_p: torch.Tensor | None = None, log_z: torch.Tensor | None = None) -> Target:
    """`targets.construct` at original `positions`, from the (N, V) log-probabilities of the hinted (q), unhinted
    (p) and placebo (z) passes at the rows that predict them (`Alignment.rows`): the tokens y there and, for
    unleaked, the banned set (the hint-only tokens in context, and what followed the just-read token inside a hint).
    The one gathering of a target's inputs, for training (`objective.build_target`) and for the studio's gradient
    map (`scoring.HintScorer.gradient_map`)."""
    tokens = alignment.tokens(positions, log_q.device)
    banned = None
    if spec.kind == "unleaked":
        sets = leak_sets(alignment.input_ids, alignment.hinted.ids, alignment.hinted.hint_tokens, positions,
                         alignment.rows("hinted", positions))
        banned = banned_mask(sets, log_q.shape[-1], log_q.device)
    return construct(spec, log_q, tokens, log_p, log_z, banned)


# ------------------------------------------------------------------------------------------------------------------
# Padding


def pad_id(tokenizer) -> int:
    """The id padded batches use: the tokenizer's pad token, else its end-of-sequence token, else 0. Any id does
    (right padding is never attended to by a real token, left padding is masked); this is the one rule."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def pad_right(sequences: list[list[int]], pad: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask; right padding keeps every real token's position id equal to its index."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for b, s in enumerate(sequences):
        ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[b, : len(s)] = 1
    return ids.to(device), mask.to(device)
