"""Helpers shared by the benchmarks: timing with medians, and synthetic rollouts of an exact length."""

from __future__ import annotations

import statistics
import time

from opd_studio.records import Record

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
