"""What one training step computes: aligned records, cached targets and anchors, and the loss of a batch.

For each curated record r — trajectory x, hints spliced into x' (`scoring.splice`), target positions T_r
(`scoring.target_mask`: from the hint's anchor over the error / the turn / the response, student tokens only) and
the record's other student positions A_r:

    teacher   q_t = p_θ̄(· | x'_<t')      t ∈ T_r   (t' = t's index in x'; hint tokens are never targets)
    student   p_t = p_θ(· | x_<t)        the unhinted trajectory, what the model sees at inference
    base      b_t = p_θ0(· | x_<t)       t ∈ A_r   the starting weights on the same unhinted trajectory

    L = mean_{r: T_r ≠ ∅} 1/|T_r| Σ_{t∈T_r} D(q_t, p_t)  +  λ · mean_{r: A_r ≠ ∅} 1/|A_r| Σ_{t∈A_r} KL(b_t ‖ p_t)

D is `losses.per_token_loss` (forward/reverse KL, JSD(β), sampled-token; optionally the student's top-k + tail).
Each record weighs the same whatever its number of targets, so a batch of two gives the mean of the two losses.
The second term is the drift guard: it anchors every student position the hint should not move to the base model.
A record without hints has only anchors (a rollout accepted as right, or replay from other tasks): it widens what
the guard holds in place without diluting the distillation, since each term is a mean over its own records.
b_t is cached as the base's top-K log-probabilities plus a tail bin: K numbers a position instead of the
vocabulary. KL over those K + 1 bins is a lower bound of the full KL (merging outcomes never increases a
divergence) and is tight when the top K hold the mass. The drift metric is KL(p_t ‖ b_t) on the same bins.

Positions index the unhinted trajectory and position t is predicted by row t − 1; the student's hidden states are
gathered at the rows the loss needs, and logits are computed only there (`scoring.logits_from_hidden`), in chunks
under activation checkpointing. Right padding keeps every real token's position id equal to its index.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.utils.checkpoint

from .losses import LossConfig, distill_loss, forward_kl, reverse_kl
from .records import Record
from .scoring import forward_reusing, logits_from_hidden, place_hints, splice, target_mask
from .trajectory import build_trajectory


# ------------------------------------------------------------------------------------------------------------------
# Alignment: which positions get the loss, the anchor, the metric


@dataclass
class Example:
    """One record, aligned. Positions index the unhinted trajectory; a position t is predicted by row t − 1."""

    record_id: str
    input_ids: list[int]  # the unhinted trajectory (what the student sees)
    hinted_ids: list[int]  # the trajectory with its hints spliced in (what the teacher sees)
    targets: list[int]  # positions with the distillation loss
    teacher_rows: list[int]  # per target: the row of hinted_ids that predicts it (hinted position − 1)
    anchors: list[int]  # the other student positions: anchored to the base
    errors: list[int]  # positions whose probability is the "p(error tokens)" metric
    error_teacher_rows: list[int]
    # Filled by the caches (frozen teacher and base), on the training device.
    teacher_logits: torch.Tensor | None = None  # (len(targets), V)
    base_top_logp: torch.Tensor | None = None  # (len(anchors), K)
    base_top_ids: torch.Tensor | None = None  # (len(anchors), K)
    base_error_logp: float = math.nan  # Σ log p_θ0(error tokens | unhinted)
    teacher_error_logp: float = math.nan  # Σ log q(error tokens | hinted), frozen teacher


def build_example(tokenizer, record: Record, span: str = "turn") -> Example:
    """Align one record: hinted ids, target positions and their teacher rows, anchors, error positions.

    Hints with status "rejected" are left out. A record without hints has no targets: it only anchors (it still
    keeps the model in place). The error positions are the record's error span, else the first hint's anchor.
    """
    trajectory = build_trajectory(tokenizer, record)
    hints = [h for h in record.hints if h.status != "rejected"]
    placed = place_hints(tokenizer, trajectory, hints) if hints else []
    hinted_ids, position = splice(trajectory.input_ids, placed)
    error = trajectory.error_token_span(record.error) if record.error else None
    mask = target_mask(trajectory, placed, span, error) if placed else [False] * len(trajectory)
    targets = [t for t in range(1, len(trajectory)) if mask[t]]
    anchors = [t for t in range(1, len(trajectory)) if trajectory.student_mask[t] and not mask[t]]
    if error:
        errors = [t for t in range(*error) if t >= 1 and trajectory.student_mask[t]]
    else:
        errors = [placed[0].anchor] if placed else []
    return Example(record.id, list(trajectory.input_ids), hinted_ids, targets, [position[t] - 1 for t in targets],
                   anchors, errors, [position[t] - 1 for t in errors])


def heldout_example(tokenizer, record: Record) -> Example:
    """A held-out record: no loss, every student position is measured for drift."""
    trajectory = build_trajectory(tokenizer, record)
    anchors = [t for t in range(1, len(trajectory)) if trajectory.student_mask[t]]
    return Example(record.id, list(trajectory.input_ids), list(trajectory.input_ids), [], [], anchors, [], [])


# ------------------------------------------------------------------------------------------------------------------
# Forward passes that return hidden states at chosen rows only


class HiddenAt(torch.nn.Module):
    """The student forward (the module DDP wraps): final hidden states at (batch, row) pairs, nothing else.

    input_ids, attention_mask (B, T) right-padded; batch_index, row_index (N,) → (N, H).

    `checkpoint_layers`: recompute each decoder layer in the backward pass instead of keeping its activations
    (transformers' gradient checkpointing, switched on with `model.gradient_checkpointing_enable`).
    """

    def __init__(self, model, checkpoint_layers: bool = False):
        super().__init__()
        self.model = model
        self.checkpoint_layers = checkpoint_layers

    def forward(self, input_ids, attention_mask, batch_index, row_index):
        decoder = self.model.get_decoder()
        with _checkpointing(decoder, self.checkpoint_layers and torch.is_grad_enabled()):
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask,
                             use_cache=False).last_hidden_state  # (B, T, H)
        return hidden[batch_index, row_index]  # (N, H)


@contextlib.contextmanager
def _checkpointing(decoder, on: bool):
    """transformers checkpoints a layer only when the layer is in training mode. The model stays in eval mode (no
    dropout: teacher and student must be the same function), so only the layers' own flags flip, for the student
    pass only — the cached passes reuse key/value caches, which checkpointed layers would drop."""
    layers = [m for m in decoder.modules() if getattr(m, "gradient_checkpointing", False)] if on else []
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer in layers:
            layer.training = False


def pad_right(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask; right padding keeps every real token's position id equal to its index."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for b, s in enumerate(sequences):
        ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[b, : len(s)] = 1
    return ids.to(device), mask.to(device)


def row_index(rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    batch = [b for b, r in enumerate(rows) for _ in r]
    flat = [i for r in rows for i in r]
    return torch.tensor(batch, dtype=torch.long, device=device), torch.tensor(flat, dtype=torch.long, device=device)


def hidden_at(forward, sequences: list[list[int]], rows: list[list[int]], pad_id: int, device) -> torch.Tensor:
    ids, mask = pad_right(sequences, pad_id, device)
    return forward(ids, mask, *row_index(rows, device))


# ------------------------------------------------------------------------------------------------------------------
# The anchor: KL between the cached base top-K (+ tail) and the student on the same bins


def with_tail(log_top: torch.Tensor) -> torch.Tensor:
    """(N, K) log-probabilities of K tokens → (N, K + 1) with the rest of the mass as a last bin."""
    covered = torch.logsumexp(log_top, dim=-1, keepdim=True).clamp(max=-1e-7)
    return torch.cat([log_top, torch.log(-torch.expm1(covered))], dim=-1)


def anchor_terms(student_hidden: torch.Tensor, head, base_top_logp: torch.Tensor, base_top_ids: torch.Tensor,
                 weights: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_t w_t KL(b_t ‖ p_t), per-position drift KL(p_t ‖ b_t) detached), both on the base's top-K + tail bins.

    Chunked under activation checkpointing like `losses.distill_loss`: a chunk's (n, V) logits are recomputed in the
    backward pass instead of kept.
    """
    total = student_hidden.new_zeros((), dtype=torch.float32)
    drift = []

    def chunk_terms(hidden, log_b, ids, w):
        log_p = torch.log_softmax(head(hidden).float(), dim=-1).gather(-1, ids)  # (n, K)
        b, p = with_tail(log_b.float()), with_tail(log_p)
        # KL is >= 0; rounding can leave -1e-9 where the student still equals the base.
        return (forward_kl(b, p) * w).sum(), reverse_kl(b, p).detach().clamp_min(0.0)

    for a in range(0, student_hidden.shape[0], chunk_size):
        args = (student_hidden[a: a + chunk_size], base_top_logp[a: a + chunk_size], base_top_ids[a: a + chunk_size],
                weights[a: a + chunk_size])
        if student_hidden.requires_grad:
            part, chunk_drift = torch.utils.checkpoint.checkpoint(chunk_terms, *args, use_reentrant=False)
        else:
            part, chunk_drift = chunk_terms(*args)
        total = total + part
        drift.append(chunk_drift)
    return total, (torch.cat(drift) if drift else student_hidden.new_zeros(0))


# ------------------------------------------------------------------------------------------------------------------
# Caches: the frozen teacher's targets and the base's anchors, computed once


@torch.no_grad()
def cache_targets(model, examples: list[Example], top_k: int, dtype: torch.dtype, teacher: bool = True) -> None:
    """Run once under the base weights: per record, one unhinted pass gives the base's top-K log-probs at every
    anchor and log p_θ0(error tokens); with `teacher`, the hinted pass (reusing the unhinted pass's key/value cache
    up to the first hint token) gives the frozen teacher's logits at each target and log q(error tokens)."""
    for ex in examples:
        original = forward_reusing(model, ex.input_ids)
        hidden = original.hidden  # (T, H)
        if ex.anchors:
            logp = torch.log_softmax(logits_from_hidden(model, hidden[[t - 1 for t in ex.anchors]]), dim=-1)
            top = logp.topk(min(top_k, logp.shape[-1]), dim=-1)  # (n_a, K)
            ex.base_top_logp, ex.base_top_ids = top.values.to(dtype), top.indices
        if ex.errors:
            ex.base_error_logp = _token_logp(model, hidden[[t - 1 for t in ex.errors]], ex.input_ids, ex.errors)
        if teacher and (ex.targets or ex.errors):
            hinted = forward_reusing(model, ex.hinted_ids, original).hidden
            if ex.targets:
                ex.teacher_logits = logits_from_hidden(model, hinted[ex.teacher_rows]).to(dtype)  # (n_t, V)
            if ex.errors:
                ex.teacher_error_logp = _token_logp(model, hinted[ex.error_teacher_rows], ex.input_ids, ex.errors)


def _token_logp(model, hidden: torch.Tensor, input_ids: list[int], positions: list[int]) -> float:
    logp = torch.log_softmax(logits_from_hidden(model, hidden), dim=-1)
    tokens = torch.tensor([input_ids[t] for t in positions], device=hidden.device)
    return float(logp.gather(1, tokens[:, None]).sum())


# ------------------------------------------------------------------------------------------------------------------
# One micro-batch


@dataclass
class BatchOutput:
    loss: torch.Tensor  # what backward runs on
    distill: float
    anchor: float
    drift_sum: float  # Σ KL(p ‖ b) over the batch's anchors
    drift_count: int
    records: dict[str, dict[str, float]]  # id → {"logp_error", "logp_teacher", "drift"}


def batch_loss(student, head, examples: list[Example], loss: LossConfig, drift_weight: float, pad_id: int, device,
               teacher_logits: list[torch.Tensor] | None = None,
               teacher_error_logp: list[float] | None = None) -> BatchOutput:
    """The loss L of the module docstring on a micro-batch (λ = `drift_weight`), and its metrics.

    `student`: a `HiddenAt` (possibly DDP-wrapped); `head`: hidden → logits. `teacher_logits` (per example) replace
    the cached frozen targets for moving teachers.
    """
    target_rows = [[t - 1 for t in ex.targets] for ex in examples]
    anchor_rows = [[t - 1 for t in ex.anchors] for ex in examples]
    error_rows = [[t - 1 for t in ex.errors] for ex in examples]
    rows = [t + a + e for t, a, e in zip(target_rows, anchor_rows, error_rows)]
    hidden = hidden_at(student, [ex.input_ids for ex in examples], rows, pad_id, device)  # (N, H)

    # Split the gathered rows back into targets / anchors / errors, per example.
    pieces, at = [], 0
    for t, a, e in zip(target_rows, anchor_rows, error_rows):
        pieces.append((hidden[at: at + len(t)], hidden[at + len(t): at + len(t) + len(a)],
                       hidden[at + len(t) + len(a): at + len(t) + len(a) + len(e)]))
        at += len(t) + len(a) + len(e)
    teachers = teacher_logits or [ex.teacher_logits for ex in examples]

    # Distillation on the targets: per-position weight 1 / (|T_r| · #records with targets), so the sum is the mean
    # of record means.
    with_targets = [i for i, ex in enumerate(examples) if ex.targets]
    distill = hidden.new_zeros((), dtype=torch.float32)
    if with_targets:
        weights = torch.cat([torch.full((len(examples[i].targets),), 1.0 / len(examples[i].targets), device=device)
                             for i in with_targets]) / len(with_targets)
        tokens = torch.tensor([examples[i].input_ids[t] for i in with_targets for t in examples[i].targets],
                              device=device)
        distill = distill_loss(torch.cat([pieces[i][0] for i in with_targets]), head,
                               torch.cat([teachers[i] for i in with_targets]).to(device), loss,
                               tokens, weights) * weights.sum()

    # The anchor on every other student position, weight λ / (|A_r| · #records with anchors); its detached
    # KL(p ‖ b) is the drift.
    with_anchors = [i for i, ex in enumerate(examples) if ex.anchors]
    anchor = hidden.new_zeros((), dtype=torch.float32)
    drift = hidden.new_zeros(0)
    if with_anchors:
        weights = torch.cat([torch.full((len(examples[i].anchors),), 1.0 / len(examples[i].anchors), device=device)
                             for i in with_anchors]) / len(with_anchors)
        anchor_hidden = torch.cat([pieces[i][1] for i in with_anchors])
        if drift_weight == 0:
            anchor_hidden = anchor_hidden.detach()
        anchor, drift = anchor_terms(anchor_hidden, head, torch.cat([examples[i].base_top_logp for i in with_anchors]),
                                     torch.cat([examples[i].base_top_ids for i in with_anchors]), weights,
                                     loss.chunk_size)

    records, drift_at = {}, 0
    with torch.no_grad():
        for i, ex in enumerate(examples):
            row = {"logp_error": math.nan, "logp_teacher": math.nan, "drift": math.nan}
            if ex.errors:
                row["logp_error"] = _token_logp_rows(head, pieces[i][2].detach(), ex)
                row["logp_teacher"] = (teacher_error_logp[i] if teacher_error_logp is not None
                                       else ex.teacher_error_logp)
            if ex.anchors:
                row["drift"] = float(drift[drift_at: drift_at + len(ex.anchors)].mean())
                drift_at += len(ex.anchors)
            records[ex.record_id] = row
    return BatchOutput(distill + drift_weight * anchor, float(distill.detach()), float(anchor.detach()),
                       float(drift.sum()), int(drift.numel()), records)


def _token_logp_rows(head, hidden: torch.Tensor, ex: Example) -> float:
    logp = torch.log_softmax(head(hidden).float(), dim=-1)
    tokens = torch.tensor([ex.input_ids[t] for t in ex.errors], device=hidden.device)
    return float(logp.gather(1, tokens[:, None]).sum())


@torch.no_grad()
def moving_teacher(model, examples: list[Example], pad_id: int, device) -> tuple[list[torch.Tensor], list[float]]:
    """Targets of a live or EMA teacher (whatever weights `model` holds now): logits at each example's teacher rows,
    and Σ log q(error tokens). One batched hinted pass, no gradient."""
    rows = [ex.teacher_rows + ex.error_teacher_rows for ex in examples]
    decoder = HiddenAt(model)
    hidden = hidden_at(decoder, [ex.hinted_ids for ex in examples], rows, pad_id, device)
    logits, error_logp, at = [], [], 0
    for ex in examples:
        teacher = hidden[at: at + len(ex.teacher_rows)]
        errors = hidden[at + len(ex.teacher_rows): at + len(ex.teacher_rows) + len(ex.errors)]
        at += len(ex.teacher_rows) + len(ex.errors)
        logits.append(logits_from_hidden(model, teacher))
        error_logp.append(_token_logp(model, errors, ex.input_ids, ex.errors) if ex.errors else math.nan)
    return logits, error_logp


@torch.no_grad()
def heldout_drift(model, examples: list[Example], pad_id: int, device, batch_size: int = 8,
                  chunk_size: int = 128) -> tuple[float, int]:
    """(Σ KL(p ‖ b), count) over the student tokens of held-out examples, under the current weights."""
    total, count = 0.0, 0
    decoder = HiddenAt(model)
    head = lambda h: logits_from_hidden(model, h)  # noqa: E731
    for a in range(0, len(examples), batch_size):
        chunk = examples[a: a + batch_size]
        hidden = hidden_at(decoder, [ex.input_ids for ex in chunk], [[t - 1 for t in ex.anchors] for ex in chunk],
                           pad_id, device)
        weights = torch.zeros(hidden.shape[0], device=device)
        _, drift = anchor_terms(hidden, head, torch.cat([ex.base_top_logp for ex in chunk]),
                                torch.cat([ex.base_top_ids for ex in chunk]), weights, chunk_size)
        total, count = total + float(drift.sum()), count + drift.numel()
    return total, count
