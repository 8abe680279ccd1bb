"""Target constructions: what distribution the unhinted student is trained toward at each target position.

At a target position t (an original position after a hint), with log-probabilities over the vocabulary:

    p   = p_θ0(· | x_<t)          the student before training (unhinted)
    q   = p_θ0(· | x'_<t')        the teacher: the same weights with the hint in context
    z   = p_θ0(· | x''_<t'')      the placebo teacher: a content-free hint of the same shape at the same place
    y   = x_t                     the token the trajectory has there (the mistake, at the error positions)

the constructions are

    hinted     log r = log q                                           (the original self-distillation target)
    contrast   log r = log p + α (log q − log z) − log Z               Z normalises r; α = the strength
               The hint's *content* as a likelihood ratio applied to the student's own distribution: whatever any
               parenthetical does to the text (a line break after "(Hint: …)", say) is in both q and z and cancels;
               what this hint says moves p. α = 0 is the student itself (no change), α = 1 the plain ratio.
    evidence   log r = log q  where log q(y) − log z(y) < −τ,  else log p      (τ = `evidence_nats`)
               Train only positions where the content lowers the sampled token beyond the placebo; hold the others
               at the student's own distribution (a target equal to p pulls nowhere but keeps the position in place).
    unleaked   log r(v) = log q(v) − log Σ_{u∉B} q(u)  for v ∉ B,  r(v) = 0 for v ∈ B
               B = the tokens the leak / contamination flags mark (`banned_tokens`): tokens only the hint contains,
               and what followed the just-read token inside the hint; y itself is never removed.
    guided     log r = log_softmax((1 + α) log q − α · max(log z, floor))      position weight w = K / (K + τ),
               K = KL(q ‖ z)
               RLCSD's contrastive target (arXiv 2606.11709, "opsd_ectr"): extrapolate the hinted teacher away from
               the placebo teacher; the floor keeps tokens the placebo all but rules out (log z → −∞) from being
               boosted without bound. Positions where the hint changes little (K ≪ τ) get a small weight w in the
               loss, so the distillation concentrates where the hint's content acts. α = `alpha`, floor =
               `guided_floor`, τ = `guided_tau`.

Every construction takes (N, V) float log-probabilities (N positions) and returns (N, V) normalised log-probabilities,
which `losses.per_token_loss` accepts as teacher logits; `construct` adds a per-position loss weight (1 except for
guided). `TARGETS` is the registry the CLI and the studio list; `TargetSpec` is the one validator of the
parameters. This module is tensor math only: the forward passes that produce p, q and z live in `scoring.py` (the studio) and `objective.py` (training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TARGETS = ("hinted", "contrast", "evidence", "unleaked", "guided")
NEEDS_PLACEBO = ("contrast", "evidence", "guided")
NEEDS_STUDENT = ("contrast", "evidence")
ALPHA_MAX = 4.0  # contrast strength α ∈ (0, ALPHA_MAX]: past it the ratio of two near-equal passes is all noise
BANNED_LOGP = -1e4  # "zero probability" that stays finite: 0 · (−1e4 − log p) is 0, where 0 · −inf would be NaN


@dataclass(frozen=True)
class TargetSpec:
    """Which construction, with its parameters (see the module docstring)."""

    kind: str = "hinted"
    alpha: float = 1.0  # contrast and guided
    evidence_nats: float = 0.5  # evidence only: how far below the placebo the content must push y, in nats
    floor: float = -5.0  # guided only: log z is clamped from below at this before the extrapolation
    tau: float = 1.0  # guided only: the position weight KL / (KL + τ)

    def __post_init__(self) -> None:
        if self.kind not in TARGETS:
            raise ValueError(f"target {self.kind!r} is not one of {', '.join(TARGETS)}")
        if not 0.0 < self.alpha <= ALPHA_MAX:
            raise ValueError(f"alpha must be in (0, {ALPHA_MAX:g}], got {self.alpha:g}: give a strength α in that "
                             "range (contrast: 1 is the plain ratio; guided: 0.5 is RLCSD's)")
        if self.evidence_nats < 0:
            raise ValueError(f"evidence_nats must be >= 0, got {self.evidence_nats:g}")
        if not self.floor < 0:
            raise ValueError(f"the guided floor is a log-probability and must be < 0, got {self.floor:g}")
        if not self.tau > 0:
            raise ValueError(f"the guided τ must be > 0, got {self.tau:g}")

    @property
    def needs_placebo(self) -> bool:
        return self.kind in NEEDS_PLACEBO

    @property
    def needs_student(self) -> bool:
        return self.kind in NEEDS_STUDENT


@dataclass
class Target:
    logp: torch.Tensor  # (N, V) the target's log-probabilities
    trained: torch.Tensor  # (N,) bool: False where the target only holds the position (evidence without evidence)
    weight: torch.Tensor  # (N,) float: the position's factor in the loss (guided's KL / (KL + τ); 1 elsewhere)


# ------------------------------------------------------------------------------------------------------------------
# The constructions


def hinted(log_q: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(log_q.float(), dim=-1)


def contrast(log_p: torch.Tensor, log_q: torch.Tensor, log_z: torch.Tensor, alpha: float) -> torch.Tensor:
    """log r = log p + α (log q − log z), normalised."""
    return torch.log_softmax(log_p.float() + alpha * (log_q.float() - log_z.float()), dim=-1)


def evidence(log_p: torch.Tensor, log_q: torch.Tensor, log_z: torch.Tensor, tokens: torch.Tensor,
             nats: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log r, trained): q where log q(y) − log z(y) < −nats, p elsewhere."""
    index = tokens[:, None]
    trained = (log_q.gather(-1, index) - log_z.gather(-1, index))[:, 0] < -nats  # (N,)
    log_r = torch.where(trained[:, None], log_q.float(), log_p.float())
    return torch.log_softmax(log_r, dim=-1), trained


def unleaked(log_q: torch.Tensor, banned: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """q without the `banned` (N, V) tokens, renormalised; y is never banned."""
    banned = banned.clone()
    banned.scatter_(-1, tokens[:, None], False)
    return torch.log_softmax(log_q.float().masked_fill(banned, BANNED_LOGP), dim=-1)


def guided(log_q: torch.Tensor, log_z: torch.Tensor, alpha: float = 0.5, floor: float = -5.0) -> torch.Tensor:
    """log r = log_softmax((1 + α) log q − α · max(log z, floor)): the hinted teacher pushed away from the placebo."""
    return torch.log_softmax((1.0 + alpha) * log_q.float() - alpha * log_z.float().clamp_min(floor), dim=-1)


def guided_weight(log_q: torch.Tensor, log_z: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """(N,) w = KL(q ‖ z) / (KL(q ‖ z) + τ) ∈ [0, 1): how much the hint's content changes the teacher there."""
    log_q, log_z = log_q.float(), log_z.float()
    kl = (log_q.exp() * (log_q - log_z)).sum(-1).clamp_min(0.0)  # rounding can leave −1e-9 where q = z
    return kl / (kl + tau)


def construct(spec: TargetSpec, log_q: torch.Tensor, tokens: torch.Tensor, log_p: torch.Tensor | None = None,
              log_z: torch.Tensor | None = None, banned: torch.Tensor | None = None) -> Target:
    """The target of `spec` at N positions. `log_p` is needed by contrast and evidence, `log_z` (the placebo) by
    contrast, evidence and guided, `banned` (N, V) bool by unleaked."""
    every = torch.ones(log_q.shape[0], dtype=torch.bool, device=log_q.device)
    ones = every.float()
    if spec.kind == "hinted":
        return Target(hinted(log_q), every, ones)
    if spec.kind == "unleaked":
        if banned is None:
            raise ValueError("the unleaked target needs the banned tokens")
        return Target(unleaked(log_q, banned, tokens), every, ones)
    if log_z is None or (spec.needs_student and log_p is None):
        raise ValueError(f"the {spec.kind} target needs the placebo teacher's log-probabilities"
                         + (" and the student's" if spec.needs_student else ""))
    if spec.kind == "guided":
        return Target(guided(log_q, log_z, spec.alpha, spec.floor), every, guided_weight(log_q, log_z, spec.tau))
    if spec.kind == "contrast":
        return Target(contrast(log_p, log_q, log_z, spec.alpha), every, ones)
    log_r, trained = evidence(log_p, log_q, log_z, tokens, spec.evidence_nats)
    return Target(log_r, trained, ones)


# ------------------------------------------------------------------------------------------------------------------
# What the leak / contamination flags mark


def banned_tokens(prefix_ids: list[int], hint_ids: list[list[int]], previous: int) -> set[int]:
    """Tokens the teacher should not be copied for at one position: those only the hints in context contain (not in
    the trajectory before them: privilege leakage), and those that followed `previous` (the token just read) inside
    a hint (the teacher would go on writing the hint). `diagnostics.hint_flags` flags the same two sets."""
    in_hints = set().union(*(set(h) for h in hint_ids)) if hint_ids else set()
    copied = {h[j + 1] for h in hint_ids for j in range(len(h) - 1) if h[j] == previous}
    return (in_hints - set(prefix_ids)) | copied


def banned_mask(sets: list[set[int]], vocab: int, device) -> torch.Tensor:
    """(N, V) bool from one set of token ids per position."""
    mask = torch.zeros((len(sets), vocab), dtype=torch.bool, device=device)
    for n, ids in enumerate(sets):
        if ids:
            mask[n, torch.tensor(sorted(ids), device=device)] = True
    return mask


def leak_sets(input_ids: list[int], hinted_ids: list[int], hints: list[tuple[int, list[int]]], positions: list[int],
              teacher_rows: list[int]) -> list[set[int]]:
    """`banned_tokens` at each target position: `hints` are (insert_at, hint ids) in original positions, a target t
    is predicted from row `teacher_rows[n]` of `hinted_ids`; only hints inserted at or before t are in context."""
    sets = []
    for t, row in zip(positions, teacher_rows):
        active = [ids for at, ids in hints if at <= t]
        prefix = input_ids[: min(at for at, _ in hints if at <= t)] if active else input_ids[:t]
        sets.append(banned_tokens(prefix, active, hinted_ids[row]))
    return sets
