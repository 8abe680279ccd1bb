"""Helpers shared by the benchmarks: timing with medians, and synthetic rollouts of an exact length."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

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


def update_readme(marker: str, table: str) -> None:
    """Put `table` between the README's `<!-- MARKER: … -->` and `<!-- /MARKER -->` lines."""
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {marker}:[^\n]*-->\n).*?(\n\s*<!-- /{marker} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- {marker} --> markers")
    readme.write_text(pattern.sub(lambda m: m.group(1) + table + m.group(2), text), encoding="utf-8")
