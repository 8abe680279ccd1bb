"""What one training step computes: aligned records, cached targets and anchors, and the loss of a batch.

For each curated record r — trajectory x, hints spliced into x' (`alignment.splice`), target positions T_r
(`alignment.target_mask`: from the hint's anchor over the error / the turn / the response, student tokens only) and
the record's other student positions A_r:

    teacher   q_t = p_θ̄(· | x'_<t')      t ∈ T_r   (t' = t's index in x'; hint tokens are never targets)
    student   p_t = p_θ(· | x_<t)        the unhinted trajectory, what the model sees at inference
    base      b_t = p_θ0(· | x_<t)       t ∈ A_r   the starting weights on the same unhinted trajectory

    L = mean_{r: T_r ≠ ∅} 1/|T_r| Σ_{t∈T_r} D(q_t, p_t)  +  λ · mean_{r: A_r ≠ ∅} 1/|A_r| Σ_{t∈A_r} KL(b_t ‖ p_t)

D is `losses.per_token_loss` (forward/reverse KL, JSD(β), sampled-token; optionally the student's top-k + tail).
q_t above is the `hinted` target; `targets.py` builds the others from the same passes (cached for a frozen teacher):
`contrast` and `evidence` also need the student's own p_θ0(· | x_<t) and a placebo pass z_t = p_θ̄(· | x''_<t''),
x'' = x with each hint's placebo (`records.placebo_for`) spliced at the hint's place, run once and cached like q.
Each record weighs the same whatever its number of targets, so a batch of two gives the mean of the two losses.
The second term is the drift guard: it anchors every student position the hint should not move to the base model.
A record without hints has only anchors (a rollout accepted as right, or replay from other tasks): it widens what
the guard holds in place without diluting the distillation, since each term is a mean over its own records.
b_t is cached as the base's top-K log-probabilities plus a tail bin: K numbers a position instead of the
vocabulary. KL over those K + 1 bins is a lower bound of the full KL (merging outcomes never increases a
divergence) and is tight when the top K hold the mass. The drift metric is KL(p_t ‖ b_t) on the same bins.

Positions index the unhinted trajectory; the rows that predict them in each pass are the example's
`alignment.Alignment` (row t − 1 of the unhinted pass, pos(t) − 1 of the hinted one); the student's hidden states are
gathered at the rows the loss needs, and logits are computed only there (`scoring.logits_from_hidden`), in chunks
under activation checkpointing. Right padding keeps every real token's position id equal to its index.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field

import torch

from .alignment import Alignment, align, construct_target, pad_right, predicting_rows
from .losses import LossConfig, distill_loss, forward_kl, over_chunks, reverse_kl, with_tail
from .metrics import RecordMetrics
from .records import Record
from .scoring import check_context, forward_reusing, logits_from_hidden
from .targets import TargetSpec
from .trajectory import build_trajectory

PLACEBO_POLICIES = ("default", "stored")  # besides a text: see `build_example`


# ------------------------------------------------------------------------------------------------------------------
# Examples: a record's alignment and its cached targets


@dataclass
class Example:
    """One record, aligned (`alignment.Alignment`): positions index the unhinted trajectory; the rows that predict
    them in each pass come from the alignment."""

    record_id: str
    alignment: Alignment
    placebo_defaulted: bool = False  # a hint had no stored placebo: the default one was built
    right_token: int | None = None  # the right text's first token at the first error position, when known
    right_text: str | None = None
    # Filled by the caches (frozen teacher and base), on the training device.
    teacher_logits: torch.Tensor | None = None  # (len(targets), V): the constructed target (log-probs or logits)
    target_weight: torch.Tensor | None = None  # (len(targets),) the construction's loss factor (guided); None = 1
    target_trained: torch.Tensor | None = None  # (len(targets),) bool: False where the target only holds
    base_top_logp: torch.Tensor | None = None  # (len(anchors), K)
    base_top_ids: torch.Tensor | None = None  # (len(anchors), K)
    base_error_logp: float = math.nan  # Σ log p_θ0(error tokens | unhinted)
    teacher_error_logp: float = math.nan  # Σ log r(error tokens): the target's value (hinted: q | hinted)
    base_target_logp: list[float] = field(default_factory=list)  # log p_θ0(y_t) per target: step 0 of the timeline
    base_right_logp: float = math.nan

    def __post_init__(self) -> None:
        # read on every step: computed once from the alignment
        a = self.alignment
        self.input_ids: list[int] = a.input_ids  # the unhinted trajectory (what the student sees)
        self.hinted_ids: list[int] = a.hinted.ids  # the trajectory with its hints spliced in (what the teacher sees)
        self.targets: list[int] = a.targets  # positions with the distillation loss
        self.anchors: list[int] = a.anchors  # the other student positions: anchored to the base
        self.errors: list[int] = a.errors  # positions whose probability is the "p(error tokens)" metric
        self.placebo_ids: list[int] | None = a.placebo.ids if a.placebo is not None else None

    @property
    def measured(self) -> list[int]:
        """The positions whose targets are built: the targets, then the error positions (usually among them)."""
        return self.targets + self.errors


def build_example(tokenizer, record: Record, span: str = "turn", placebo: str | None = None) -> Example:
    """Align one record (`alignment.align`): hinted ids, target positions and their teacher rows, anchors, error
    positions.

    Hints with status "rejected" are left out. A record without hints has no targets: it only anchors (it still
    keeps the model in place). The error positions are the record's error span, else the first hint's anchor.
    `placebo` (for the constructions that need one): None, no placebo; "default", each hint's stored placebo, else
    the default one (`records.default_placebo`); "stored", only stored placebos (a hint without one is an error);
    any other text, each hint's stored placebo, else this text at the hint's place.
    """
    trajectory = build_trajectory(tokenizer, record)
    hints = record.usable_hints
    missing = [n for n, h in enumerate(hints) if h.placebo is None]
    lane = None
    if placebo is not None and hints:
        if placebo == "stored" and missing:
            raise ValueError(f"record {record.id!r}: hint {missing[0]} has no placebo; store one with the record "
                             "(the hint's 'placebo' field) or use --placebo default")
        lane = "default" if placebo in PLACEBO_POLICIES else placebo
    example = Example(record.id, align(tokenizer, trajectory, hints, span, record.error, lane),
                      placebo_defaulted=lane == "default" and bool(missing))
    example.right_text = right_text(record)
    if example.right_text and example.errors:
        ids = tokenizer(example.right_text, add_special_tokens=False)["input_ids"]
        example.right_token = ids[0] if ids else None
    return example


_RIGHT = re.compile(r"= (?P<right>[^=,]+), not (?P<wrong>.+)$")


def right_text(record: Record) -> str | None:
    """The right text at the record's error, when a hint's rationale states it: the arithmetic verifier writes
    "17 + 25 = 42, not 32" for the error "32". None when nothing says what is right there."""
    if record.error is None or record.error.message is None or record.error.char_start is None:
        return None
    content = record.messages[record.error.message].get("content") or ""
    wrong = content[record.error.char_start: record.error.char_end]
    for hint in record.usable_hints:
        match = _RIGHT.search(hint.rationale or "")
        if match and match.group("wrong").strip() == wrong.strip():
            return match.group("right").strip()
    return None


def heldout_example(tokenizer, record: Record) -> Example:
    """A held-out record: no loss, every student position is measured for drift (no hints, no error)."""
    return Example(record.id, align(tokenizer, build_trajectory(tokenizer, record), []))


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


def row_index(rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    batch = [b for b, r in enumerate(rows) for _ in r]
    flat = [i for r in rows for i in r]
    return torch.tensor(batch, dtype=torch.long, device=device), torch.tensor(flat, dtype=torch.long, device=device)


def hidden_at(forward, sequences: list[list[int]], rows: list[list[int]], pad_id: int, device) -> torch.Tensor:
    ids, mask = pad_right(sequences, pad_id, device)
    return forward(ids, mask, *row_index(rows, device))


# ------------------------------------------------------------------------------------------------------------------
# The anchor: KL between the cached base top-K (+ tail) and the student on the same bins


def anchor_terms(student_hidden: torch.Tensor, head, base_top_logp: torch.Tensor, base_top_ids: torch.Tensor,
                 weights: torch.Tensor, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_t w_t KL(b_t ‖ p_t), per-position drift KL(p_t ‖ b_t) detached), both on the base's top-K + tail bins.

    Chunked under activation checkpointing like `losses.distill_loss`: a chunk's (n, V) logits are recomputed in the
    backward pass instead of kept.
    """
    def chunk_terms(hidden, log_b, ids, w):
        log_p = torch.log_softmax(head(hidden).float(), dim=-1).gather(-1, ids)  # (n, K)
        b, p = with_tail(log_b.float()), with_tail(log_p)
        # KL is >= 0; rounding can leave -1e-9 where the student still equals the base.
        return (forward_kl(b, p) * w).sum(), reverse_kl(b, p).detach().clamp_min(0.0)

    parts = list(over_chunks(chunk_terms, [student_hidden, base_top_logp, base_top_ids, weights], chunk_size,
                             student_hidden.requires_grad))
    total = sum((part for part, _ in parts), start=student_hidden.new_zeros((), dtype=torch.float32))
    return total, (torch.cat([drift for _, drift in parts]) if parts else student_hidden.new_zeros(0))


# ------------------------------------------------------------------------------------------------------------------
# Caches: the frozen teacher's targets and the base's anchors, computed once


@torch.no_grad()
def cache_targets(model, examples: list[Example], top_k: int, dtype: torch.dtype, teacher: bool = True,
                  target: TargetSpec | None = None) -> None:
    """Run once under the base weights: per record, one unhinted pass gives the base's top-K log-probs at every
    anchor and log p_θ0(error tokens); with `teacher`, the hinted pass (reusing the unhinted pass's key/value cache
    up to the first hint token) gives the frozen teacher at each target and error position, and for the
    constructions that need it the placebo pass (reusing the same cache) gives z there; `target` (default: hinted)
    turns them into the cached target (`targets.construct`) and the target's Σ log r(error tokens)."""
    spec = target or TargetSpec()
    for ex in examples:
        original = forward_reusing(model, ex.input_ids)
        hidden = original.hidden  # (T, H)
        rows = ex.alignment.rows  # rows("student", positions): the rows of the unhinted pass that predict them
        if ex.anchors:
            logp = torch.log_softmax(logits_from_hidden(model, hidden[rows("student", ex.anchors)]), dim=-1)
            top = logp.topk(min(top_k, logp.shape[-1]), dim=-1)  # (n_a, K)
            ex.base_top_logp, ex.base_top_ids = top.values.to(dtype), top.indices
        if ex.errors:
            ex.base_error_logp = _token_logp(model, hidden[rows("student", ex.errors)], ex.input_ids,
                                             ex.errors)
            if ex.right_token is not None:
                first = torch.log_softmax(logits_from_hidden(model, hidden[rows("student", ex.errors[:1])]),
                                          dim=-1)
                ex.base_right_logp = float(first[0, ex.right_token])
        if ex.targets:
            ex.base_target_logp = _token_logps(model, hidden[rows("student", ex.targets)], ex.input_ids,
                                               ex.targets)
        if teacher and (ex.targets or ex.errors):
            _cache_teacher(model, ex, original, spec, dtype)


def _cache_teacher(model, ex: Example, original, spec: TargetSpec, dtype: torch.dtype) -> None:
    check_context(model, len(ex.hinted_ids))
    hinted = forward_reusing(model, ex.hinted_ids, original).hidden
    rows = ex.alignment.rows
    student = spliced = None
    if spec.needs_student:
        student = original.hidden[rows("student", ex.measured)]
    if spec.needs_placebo:
        _check_placebo(model, ex, spec)
        spliced = forward_reusing(model, ex.placebo_ids, original).hidden[rows("placebo", ex.measured)]
    logits, trained, weight, error_logp = build_target(model, ex, spec, hinted[rows("hinted", ex.measured)], student,
                                                       spliced)
    if ex.targets:
        ex.teacher_logits = logits.to(dtype)  # (n_t, V)
    ex.target_trained, ex.target_weight, ex.teacher_error_logp = trained, weight, error_logp


def _check_placebo(model, ex: Example, spec: TargetSpec) -> None:
    if ex.placebo_ids is None:
        raise ValueError(f"record {ex.record_id!r}: the {spec.kind} target needs a placebo; store one with the "
                         "record or use --placebo default")
    check_context(model, len(ex.placebo_ids), "placebo")


def build_target(model, ex: Example, spec: TargetSpec, hinted: torch.Tensor, student: torch.Tensor | None = None,
                 placebo: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, float]:
    """(target logits at the targets (n_t, V), trained mask or None, the construction's per-target loss weight or
    None (= 1), Σ log r(error tokens)) from the final hidden states of the hinted pass, and for the constructions
    that need them of the unhinted (`student`) and placebo passes, each at the rows that predict `ex.measured`
    (the targets, then the error positions, which give the metric)."""
    logits = logits_from_hidden(model, hinted)  # (n, V)
    trained = weight = None
    if spec.kind == "hinted":  # the raw logits, as before there were constructions
        r = logits
    else:
        log_q = torch.log_softmax(logits, dim=-1)
        log_p = torch.log_softmax(logits_from_hidden(model, student), -1) if student is not None else None
        log_z = torch.log_softmax(logits_from_hidden(model, placebo), -1) if placebo is not None else None
        built = construct_target(ex.alignment, ex.measured, spec, log_q, log_p, log_z)
        r, trained = built.logp, built.trained[: len(ex.targets)]
        if spec.kind == "guided":
            weight = built.weight[: len(ex.targets)]
    error_logp = math.nan
    if ex.errors:
        log_r = torch.log_softmax(r[len(ex.targets):].float(), dim=-1)
        tokens = torch.tensor([ex.input_ids[t] for t in ex.errors], device=log_r.device)
        error_logp = float(log_r.gather(1, tokens[:, None]).sum())
    return r[: len(ex.targets)], trained, weight, error_logp


def _token_logps(model, hidden: torch.Tensor, input_ids: list[int], positions: list[int]) -> list[float]:
    logp = torch.log_softmax(logits_from_hidden(model, hidden), dim=-1)
    tokens = torch.tensor([input_ids[t] for t in positions], device=hidden.device)
    return logp.gather(1, tokens[:, None])[:, 0].tolist()


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
    records: dict[str, RecordMetrics]  # record id → its metrics under the weights that ran the batch


def batch_loss(student, head, examples: list[Example], loss: LossConfig, drift_weight: float, pad_id: int, device,
               teacher_logits: list[torch.Tensor] | None = None,
               teacher_error_logp: list[float] | None = None,
               teacher_weights: list[torch.Tensor | None] | None = None) -> BatchOutput:
    """The loss L of the module docstring on a micro-batch (λ = `drift_weight`), and its metrics.

    `student`: a `HiddenAt` (possibly DDP-wrapped); `head`: hidden → logits. `teacher_logits` (per example) replace
    the cached frozen targets for moving teachers, and `teacher_weights` their per-target loss factors.
    """
    target_rows = [predicting_rows(ex.targets) for ex in examples]
    anchor_rows = [predicting_rows(ex.anchors) for ex in examples]
    error_rows = [predicting_rows(ex.errors) for ex in examples]
    rows = [t + a + e for t, a, e in zip(target_rows, anchor_rows, error_rows)]
    hidden = hidden_at(student, [ex.input_ids for ex in examples], rows, pad_id, device)  # (N, H)

    # Split the gathered rows back into targets / anchors / errors, per example.
    pieces, at = [], 0
    for t, a, e in zip(target_rows, anchor_rows, error_rows):
        pieces.append((hidden[at: at + len(t)], hidden[at + len(t): at + len(t) + len(a)],
                       hidden[at + len(t) + len(a): at + len(t) + len(a) + len(e)]))
        at += len(t) + len(a) + len(e)
    teachers = teacher_logits or [ex.teacher_logits for ex in examples]
    factors = teacher_weights if teacher_logits else [ex.target_weight for ex in examples]

    # Distillation on the targets: per-position weight 1 / (|T_r| · #records with targets), so the sum is the mean
    # of record means; a construction's own factor (guided's KL / (KL + τ)) multiplies it, not renormalised: where
    # the hint changes little the record pulls less.
    with_targets = [i for i, ex in enumerate(examples) if ex.targets]
    distill = hidden.new_zeros((), dtype=torch.float32)
    if with_targets:
        weights = torch.cat([torch.full((len(examples[i].targets),), 1.0 / len(examples[i].targets), device=device)
                             * (factors[i].to(device) if factors and factors[i] is not None else 1.0)
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
            logp_error = logp_teacher = record_drift = right_logp = math.nan
            target_logp: list[float] = []
            if ex.errors:
                error_logp = torch.log_softmax(head(pieces[i][2].detach()).float(), dim=-1)  # (n_e, V)
                tokens = torch.tensor([ex.input_ids[t] for t in ex.errors], device=error_logp.device)
                logp_error = float(error_logp.gather(1, tokens[:, None]).sum())
                logp_teacher = teacher_error_logp[i] if teacher_error_logp is not None else ex.teacher_error_logp
                if ex.right_token is not None:
                    right_logp = float(error_logp[0, ex.right_token])
            if ex.targets:
                logp_at_targets = torch.log_softmax(head(pieces[i][0].detach()).float(), dim=-1)
                tokens = torch.tensor([ex.input_ids[t] for t in ex.targets], device=logp_at_targets.device)
                target_logp = logp_at_targets.gather(1, tokens[:, None])[:, 0].tolist()
            if ex.anchors:
                record_drift = float(drift[drift_at: drift_at + len(ex.anchors)].mean())
                drift_at += len(ex.anchors)
            records[ex.record_id] = RecordMetrics(logp_error, logp_teacher, record_drift, target_logp, right_logp)
    return BatchOutput(distill + drift_weight * anchor, float(distill.detach()), float(anchor.detach()),
                       float(drift.sum()), int(drift.numel()), records)


@torch.no_grad()
def moving_teacher(model, examples: list[Example], pad_id: int, device,
                   target: TargetSpec | None = None
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[float]]:
    """Targets of a live or EMA teacher (whatever weights `model` holds now): the target's logits at each example's
    targets, their loss factors (None = 1; see `build_target`), and Σ log r(error tokens). One batched pass, no
    gradient, over the hinted sequences and, for the constructions that need them, the unhinted and the placebo
    sequences (the student's p in `contrast` is then the moving weights' own unhinted distribution)."""
    spec = target or TargetSpec()
    if spec.needs_placebo:
        for ex in examples:
            _check_placebo(model, ex, spec)
    sequences = [ex.hinted_ids for ex in examples]
    rows = [ex.alignment.rows("hinted", ex.measured) for ex in examples]
    if spec.needs_student:
        sequences += [ex.input_ids for ex in examples]
        rows += [ex.alignment.rows("student", ex.measured) for ex in examples]
    if spec.needs_placebo:
        sequences += [ex.placebo_ids for ex in examples]
        rows += [ex.alignment.rows("placebo", ex.measured) for ex in examples]
    hidden = hidden_at(HiddenAt(model), sequences, rows, pad_id, device)
    pieces, at = [], 0
    for r in rows:
        pieces.append(hidden[at: at + len(r)])
        at += len(r)
    n = len(examples)
    logits, weights, error_logp = [], [], []
    for b, ex in enumerate(examples):
        student = pieces[n + b] if spec.needs_student else None
        placebo = pieces[(2 if spec.needs_student else 1) * n + b] if spec.needs_placebo else None
        target_logits, _, weight, error = build_target(model, ex, spec, pieces[b], student, placebo)
        logits.append(target_logits)
        weights.append(weight)
        error_logp.append(error)
    return logits, weights, error_logp


@torch.no_grad()
def heldout_drift(model, examples: list[Example], pad_id: int, device, batch_size: int = 8,
                  chunk_size: int = 128) -> tuple[float, int]:
    """(Σ KL(p ‖ b), count) over the student tokens of held-out examples, under the current weights."""
    total, count = 0.0, 0
    decoder = HiddenAt(model)
    head = lambda h: logits_from_hidden(model, h)  # noqa: E731
    for a in range(0, len(examples), batch_size):
        chunk = examples[a: a + batch_size]
        hidden = hidden_at(decoder, [ex.input_ids for ex in chunk], [predicting_rows(ex.anchors) for ex in chunk],
                           pad_id, device)
        weights = torch.zeros(hidden.shape[0], device=device)
        _, drift = anchor_terms(hidden, head, torch.cat([ex.base_top_logp for ex in chunk]),
                                torch.cat([ex.base_top_ids for ex in chunk]), weights, chunk_size)
        total, count = total + float(drift.sum()), count + drift.numel()
    return total, count
