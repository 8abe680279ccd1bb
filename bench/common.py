"""Helpers shared by the benchmarks: timing with medians, and synthetic rollouts of an exact length."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

from opd_studio.records import ErrorSpan, Hint, Record

FILLER = ("Step {n}: we add the tens and then the ones, 17 + 25 = 42, and we check the carry once more. ")


def rollout_of_length(tokenizer, n_tokens: int, record_id: str = "long") -> Record:
    """A user question and an assistant answer of exactly `n_tokens` tokens (plus the end-of-turn token)."""
    text = "".join(FILLER.format(n=n) for n in range(n_tokens // 10 + 10))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    content = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    return Record(record_id, [{"role": "user", "content": "Add the numbers step by step."},
                              {"role": "assistant", "content": content}], response_token_ids=ids)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def update_readme(marker: str, table: str) -> None:
    """Put `table` between the README's `<!-- MARKER: … -->` and `<!-- /MARKER -->` lines."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {marker}:[^\n]*-->\n).*?(\n\s*<!-- /{marker} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {marker} --> markers")
    readme.write_text(pattern.sub(lambda m: m.group(1) + table + m.group(2), text), encoding="utf-8")


def addition_rollout(tokenizer, n_tokens: int, hint_at: float = 0.9, seed: int = 0,
                     record_id: str = "addition") -> Record:
    """A reasoning trace of about `n_tokens` tokens (never more): numbered addition steps with a running total, one
    wrong step (its sum 10 too high; the steps after it carry the wrong total on) at fraction `hint_at` of the steps,
    a hint before the wrong sum and the error span on it. Seeded: the same arguments give the same record."""
    import random

    rng = random.Random(seed)
    start, added = rng.randint(10, 99), [rng.randint(10, 999) for _ in range(n_tokens // 8 + 10)]

    def trace(n_steps: int, wrong: int | None) -> tuple[str, tuple[int, int] | None]:
        content, error, total = "", None, start
        for n in range(1, n_steps + 1):
            result = total + added[n - 1] + (10 if n == wrong else 0)  # later steps carry the wrong total on
            line = f"Step {n}: {total} + {added[n - 1]} = "
            if n == wrong:
                error = (len(content) + len(line), len(content) + len(line) + len(str(result)))
            content, total = content + line + f"{result}.\n", result
        return content, error

    def length(content: str) -> int:
        return len(tokenizer(content, add_special_tokens=False)["input_ids"])

    low, high = 1, len(added)  # the most steps whose trace fits in n_tokens
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if length(trace(middle, None)[0]) <= n_tokens else (low, middle - 1)
    n_steps = low
    while True:
        content, error = trace(n_steps, max(1, int(hint_at * n_steps)))
        if length(content) <= n_tokens:
            break
        n_steps -= 1
    response_ids = tokenizer(content, add_special_tokens=False)["input_ids"]
    hint = Hint(text=" (Hint: recompute this sum.)", message=1, char=error[0])
    return Record(record_id, [{"role": "user", "content": "Add the numbers step by step, keeping a running total."},
                              {"role": "assistant", "content": content}],
                  hints=[hint], error=ErrorSpan(message=1, char_start=error[0], char_end=error[1]),
                  response_token_ids=response_ids)


def with_sampled_logprobs(model, tokenizer, record: Record) -> Record:
    """`record` with `response_logprobs`: its response tokens' log-probabilities under `model` (one forward pass),
    what `generate` writes for a rollout it samples."""
    from opd_studio.scoring import HintScorer
    from opd_studio.trajectory import build_trajectory

    trajectory = build_trajectory(tokenizer, record)
    start = trajectory.student_token_spans[-1][0]
    logp = HintScorer(model, tokenizer, trajectory).score([]).table.logp_before
    record.response_logprobs = [min(0.0, float(lp)) for lp in logp[start: start + len(record.response_token_ids)]]
    return record
