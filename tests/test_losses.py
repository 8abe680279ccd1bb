"""Losses against hand-computed values on a 3-token vocabulary, and the chunked path against the plain one."""

import math

import pytest
import torch

from opd_studio.losses import LossConfig, distill_loss, jsd, per_token_loss, top_k_with_tail

Q = [0.7, 0.2, 0.1]  # teacher
P = [0.5, 0.3, 0.2]  # student


def logits(probs):
    return torch.log(torch.tensor([probs], dtype=torch.float64))


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b))


def test_forward_and_reverse_kl_by_hand():
    forward = 0.7 * math.log(0.7 / 0.5) + 0.2 * math.log(0.2 / 0.3) + 0.1 * math.log(0.1 / 0.2)
    reverse = 0.5 * math.log(0.5 / 0.7) + 0.3 * math.log(0.3 / 0.2) + 0.2 * math.log(0.2 / 0.1)
    assert forward == pytest.approx(0.0851, abs=1e-4) and reverse == pytest.approx(0.0920, abs=1e-4)
    assert per_token_loss(logits(P), logits(Q), LossConfig("forward_kl")).item() == pytest.approx(forward, rel=1e-6)
    assert per_token_loss(logits(P), logits(Q), LossConfig("reverse_kl")).item() == pytest.approx(reverse, rel=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.2])
def test_jsd_by_hand(beta):
    if beta == 0.0:
        expected = kl(Q, P)
    elif beta == 1.0:
        expected = kl(P, Q)
    else:
        m = [beta * q + (1 - beta) * p for q, p in zip(Q, P)]
        expected = beta * kl(Q, m) + (1 - beta) * kl(P, m)
    got = per_token_loss(logits(P), logits(Q), LossConfig("jsd", beta=beta)).item()
    assert got == pytest.approx(expected, rel=1e-5)  # float32 inside
    if beta == 0.5:
        # on paper: m = (0.6, 0.25, 0.15); ½KL(q‖m) + ½KL(p‖m) = ½(0.022729 + 0.021072)
        assert got == pytest.approx(0.0219005, abs=1e-6)


def test_sampled_token_loss_value_and_gradient():
    student = logits(P).clone().requires_grad_(True)
    tokens = torch.tensor([0])
    loss = per_token_loss(student, logits(Q), LossConfig("sampled"), tokens)
    advantage = math.log(0.7) - math.log(0.5)
    assert loss.item() == pytest.approx(-advantage * math.log(0.5))
    loss.sum().backward()
    # d(−a log p_0)/d logit_j = −a (1[j=0] − p_j); the advantage itself gets no gradient
    expected = [-advantage * (1 - 0.5), -advantage * (0 - 0.3), -advantage * (0 - 0.2)]
    assert student.grad[0].tolist() == pytest.approx(expected)


def test_top_k_with_tail_by_hand():
    # student top-2 are tokens 0 and 1 (0.5, 0.3); tail 0.2. Teacher on the same bins: 0.7, 0.2, tail 0.1.
    log_q, log_p = top_k_with_tail(logits(Q), logits(P), 2)
    assert log_p.exp()[0].tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert log_q.exp()[0].tolist() == pytest.approx([0.7, 0.2, 0.1])
    q4, p4 = [0.6, 0.1, 0.2, 0.1], [0.1, 0.4, 0.3, 0.2]
    got = per_token_loss(logits(p4), logits(q4), LossConfig("forward_kl", top_k=2)).item()
    # student top-2 = tokens 1, 2; tail bins: teacher 0.7, student 0.3
    assert got == pytest.approx(kl([0.1, 0.2, 0.7], [0.4, 0.3, 0.3]))
    assert per_token_loss(logits(p4), logits(q4), LossConfig("jsd", top_k=2)).item() == pytest.approx(
        jsd(torch.log(torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64)),
            torch.log(torch.tensor([0.4, 0.3, 0.3], dtype=torch.float64))).item())


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "sampled"])
def test_chunked_loss_and_gradient_equal_the_plain_formula(kind):
    torch.manual_seed(0)
    n, hidden_size, vocab = 37, 16, 50
    head = torch.nn.Linear(hidden_size, vocab, bias=False)
    hidden = torch.randn(n, hidden_size, requires_grad=True)
    teacher = torch.randn(n, vocab) * 3
    tokens = torch.randint(0, vocab, (n,))
    weights = torch.rand(n)
    config = LossConfig(kind, chunk_size=8, top_k=10 if kind == "jsd" else None)
    chunked = distill_loss(hidden, head, teacher, config, tokens, weights)
    chunked.backward()
    grad_chunked, head_grad_chunked = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    plain = (per_token_loss(head(hidden), teacher, config, tokens) * weights).sum() / weights.sum()
    plain.backward()
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-5)
    torch.testing.assert_close(grad_chunked, hidden.grad)
    torch.testing.assert_close(head_grad_chunked, head.weight.grad)


def test_teacher_gets_no_gradient():
    student, teacher = logits(P).requires_grad_(True), logits(Q).requires_grad_(True)
    per_token_loss(student, teacher, LossConfig("jsd")).sum().backward()
    assert teacher.grad is None and student.grad is not None


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        LossConfig("l2")
    with pytest.raises(ValueError, match="beta"):
        LossConfig("jsd", beta=1.5)
