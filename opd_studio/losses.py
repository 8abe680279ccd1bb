"""Distillation losses between the hinted teacher q and the unhinted student p, per target position.

With log q and log p the full-vocabulary log-probabilities at one position:

    forward KL        KL(q ‖ p) = Σ_v q(v) (log q(v) − log p(v))          mode-covering
    reverse KL        KL(p ‖ q) = Σ_v p(v) (log p(v) − log q(v))          mode-seeking
    JSD(β)            β KL(q ‖ m) + (1 − β) KL(p ‖ m),  m = β q + (1 − β) p
                      with TRL's convention at the ends: β = 0 is forward KL, β = 1 is reverse KL
    sampled           advantage a = log q(y) − log p(y) of the token y the student sampled, detached;
                      loss = −a · log p(y). Its gradient is a one-sample estimate of ∇ KL(p ‖ q) (Tinker/OPSD).

`top_k`: restrict both distributions to the student's k most likely tokens plus one tail bin holding the rest of
the mass (1 − Σ top-k), so the divergence needs k + 1 numbers per position instead of the vocabulary.

Losses are computed in chunks of positions under activation checkpointing: the backward pass recomputes a chunk's
(chunk, V) intermediates instead of keeping all of them, so memory stays bounded by one chunk of the vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

LOSSES = ("forward_kl", "reverse_kl", "jsd", "sampled")


@dataclass
class LossConfig:
    kind: str = "jsd"
    beta: float = 0.5  # JSD only
    top_k: int | None = None  # student top-k support plus a tail bin; None = full vocabulary
    chunk_size: int = 128  # positions per chunk

    def __post_init__(self) -> None:
        if self.kind not in LOSSES:
            raise ValueError(f"loss {self.kind!r} is not one of {', '.join(LOSSES)}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None, got {self.top_k}")


def forward_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def reverse_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def jsd(log_q: torch.Tensor, log_p: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    if beta == 0.0:
        return forward_kl(log_q, log_p)
    if beta == 1.0:
        return reverse_kl(log_q, log_p)
    log_m = torch.logsumexp(torch.stack([log_q + math.log(beta), log_p + math.log(1.0 - beta)]), dim=0)
    return beta * forward_kl(log_q, log_m) + (1.0 - beta) * forward_kl(log_p, log_m)


def sampled_token_loss(log_q_token: torch.Tensor, log_p_token: torch.Tensor) -> torch.Tensor:
    advantage = (log_q_token - log_p_token).detach()
    return -advantage * log_p_token


def top_k_with_tail(log_q: torch.Tensor, log_p: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V) log-probs → (N, k + 1): the student's top-k tokens and a tail bin, for both distributions."""
    index = log_p.detach().topk(min(k, log_p.shape[-1]), dim=-1).indices
    return with_tail(log_q.gather(-1, index)), with_tail(log_p.gather(-1, index))


def with_tail(log_top: torch.Tensor) -> torch.Tensor:
    """(N, K) log-probabilities of K tokens → (N, K + 1), the rest of the mass as a last bin: log(1 − Σ exp(log_top)),
    computed stably; the clamp keeps the log finite when the K tokens hold all the mass."""
    covered = torch.logsumexp(log_top, dim=-1, keepdim=True).clamp(max=-1e-7)
    return torch.cat([log_top, torch.log(-torch.expm1(covered))], dim=-1)


def over_chunks(fn, tensors: list[torch.Tensor], chunk_size: int, checkpointed: bool):
    """`fn(*rows)` for each chunk of `chunk_size` rows of `tensors` (all (N, …)). `checkpointed`: under activation
    checkpointing, so a chunk's (n, V) logits are recomputed in the backward pass instead of kept."""
    for a in range(0, tensors[0].shape[0], chunk_size):
        rows = [t[a: a + chunk_size] for t in tensors]
        yield checkpoint(fn, *rows, use_reentrant=False) if checkpointed else fn(*rows)


def per_token_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, config: LossConfig,
                   tokens: torch.Tensor | None = None) -> torch.Tensor:
    """(N, V) student and teacher logits → (N,) loss per position. `tokens` (N,): the student's tokens at these
    positions, needed by the sampled-token loss."""
    log_p = torch.log_softmax(student_logits.float(), dim=-1)
    log_q = torch.log_softmax(teacher_logits.float(), dim=-1).detach()
    if config.kind == "sampled":
        if tokens is None:
            raise ValueError("the sampled-token loss needs the sampled tokens")
        return sampled_token_loss(log_q.gather(-1, tokens[:, None])[:, 0], log_p.gather(-1, tokens[:, None])[:, 0])
    if config.top_k is not None:
        log_q, log_p = top_k_with_tail(log_q, log_p, config.top_k)
    if config.kind == "forward_kl":
        return forward_kl(log_q, log_p)
    if config.kind == "reverse_kl":
        return reverse_kl(log_q, log_p)
    return jsd(log_q, log_p, config.beta)


def distill_loss(student_hidden: torch.Tensor, head, teacher_logits: torch.Tensor, config: LossConfig,
                 tokens: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_t w_t D(q_t, p_t) / Σ_t w_t over the given positions, chunked with activation checkpointing.

    student_hidden (N, H): final hidden states at the target positions only (logits nowhere else);
    head: maps (n, H) → (n, V) logits (e.g. `scoring.logits_from_hidden` bound to the model);
    teacher_logits (N, V): from the hinted pass (or cached from a frozen teacher);
    weights (N,): per-position weights (1 for targets; a drift anchor can use a smaller weight); default 1.
    """
    n = student_hidden.shape[0]
    if n == 0:
        return student_hidden.sum() * 0.0
    if weights is None:
        weights = torch.ones(n, device=student_hidden.device)
    def chunk_loss(hidden, teacher, w, chunk_tokens=None):
        return (per_token_loss(head(hidden), teacher, config, chunk_tokens) * w).sum()

    tensors = [student_hidden, teacher_logits, weights] + ([tokens] if tokens is not None else [])
    total = sum(over_chunks(chunk_loss, tensors, config.chunk_size, student_hidden.requires_grad),
                start=student_hidden.new_zeros((), dtype=torch.float32))
    return total / weights.sum().clamp_min(1e-8)
