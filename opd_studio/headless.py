"""The `score` and `generate` commands' work: records in, a resumable output file out.

    score_file(model, tokenizer, records, "scores.parquet", span="turn")       → one row per token (scoring.COLUMNS)
    score_file(None, tokenizer, records, "scores.parquet", client=served_client(url, tokenizer))   (a server)
    generate_file(records, "rollouts.jsonl", configs, model=…, tokenizer=…)   → one record per rollout
    generate_file(records, "rollouts.jsonl", configs, tokenizer=…, remote=RemoteConfig(url))   (a serving engine)

Both run in batches (`batching`) or concurrent requests (`remote`), show a tokens/s progress bar on a terminal, and
keep every finished record in a sidecar so that re-running the same command with the same output skips what is
already done (`resume`). Everything is validated before the first model call; the output file is written once, at
the end, atomically.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .files import write_atomic
from .records import Record, read_records
from .resume import ResumableOutput, progress
from .rollout import SamplingConfig

JSON_COLUMNS = ("top_before", "top_after", "top_placebo")  # [text, p] pairs: JSON text in Parquet


@dataclass
class Summary:
    done: int  # records (or rollouts) now in the output
    resumed: int  # of which an earlier run had finished
    tokens: int  # tokens this run processed
    seconds: float

    def line(self, verb: str, output) -> str:
        rate = f", {self.tokens / self.seconds:,.0f} tok/s" if self.seconds > 0 and self.tokens else ""
        resumed = f" ({self.resumed} already there)" if self.resumed else ""
        return f"{verb} {self.done} records{resumed}, {self.tokens:,} tokens in {self.seconds:.1f} s{rate} → {output}"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------------------
# Scoring


def score_file(model, tokenizer, records: list[Record], output: str | Path, span: str = "turn", top_k: int = 5,
               batch_size: int = 16, placebo: str | None = None, client=None) -> Summary:
    """`client` (a `served.PromptLogprobClient`): score through its server instead of `model` (None then); its rows
    carry `served.SERVED_COLUMNS` (entropy and KL over the top k plus a tail bin)."""
    from .batching import prepare_scoring, score_records

    output = Path(output)
    if output.suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"{output}: the scores go to a .jsonl or .parquet file")
    store = ResumableOutput(output, _read_scores)
    todo = [r for r in records if r.id not in store]
    jobs = prepare_scoring(tokenizer, todo, placebo=placebo)  # every record is checked before any model work
    started, ran = time.perf_counter(), []
    bar = progress(sum(j.n_tokens for j in jobs), desc="score")

    def on_tokens(n: int) -> None:
        ran.append(n)
        bar.update(n)

    try:
        if client is not None:
            from .served import score_served

            scored = score_served(client, tokenizer, jobs, span=span, on_tokens=on_tokens)
        else:
            scored = score_records(model, tokenizer, jobs, span=span, top_k=top_k, batch_size=batch_size,
                                   on_tokens=on_tokens)
        for record, scores in scored:
            store.add(record.id, _rows(record.id, scores.table))
    except BaseException:
        store.discard_if_empty()
        raise
    finally:
        bar.close()
    count = store.finish([r.id for r in records], lambda units: _write_scores(output, units))
    return Summary(count, len(records) - len(todo), sum(ran), time.perf_counter() - started)


def _rows(record_id: str, table: pd.DataFrame) -> list[dict]:
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    return [{"record_id": record_id, **{k: _plain(v) for k, v in row.items()}} for row in rows]


def _plain(value):
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _write_scores(output: Path, units: list[list[dict]]) -> None:
    rows = [row for unit in units for row in unit]
    if output.suffix == ".parquet":
        frame = pd.DataFrame(rows)
        for column in JSON_COLUMNS:
            if column in frame:
                frame[column] = frame[column].map(json.dumps)
        for column in ("rank_before", "rank_after", "rank_placebo"):
            if column in frame:
                frame[column] = frame[column].astype("Int64")
        for column in ("logp_before", "logp_after", "entropy_before", "entropy_after", "kl", "logp_placebo",
                       "content_drop"):
            if column in frame:
                frame[column] = frame[column].astype(float)
        write_atomic(output, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        write_atomic(output, lambda tmp: Path(tmp).write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"))


def _read_scores(output: Path) -> dict[str, list[dict]]:
    if output.suffix == ".parquet":
        frame = pd.read_parquet(output)
        for column in JSON_COLUMNS:
            if column in frame:
                frame[column] = frame[column].map(json.loads)
        rows = [{k: _plain(v) for k, v in row.items()}
                for row in frame.astype(object).where(frame.notna(), None).to_dict("records")]
    else:
        rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines() if line.strip()]
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["record_id"], []).append(row)
    return grouped


# ------------------------------------------------------------------------------------------------------------------
# Generation


def generate_file(records: list[Record], output: str | Path, configs: list[SamplingConfig], *, tokenizer,
                  model=None, remote=None, batch_size: int = 16) -> Summary:
    """`len(configs)` rollouts per record (ids `id#n` when more than one), from the local model in batches or from
    `remote` (a `remote.RemoteConfig`). Rollouts whose ids re-tokenized are reported on stderr."""
    from .batching import GenerationJob, generate_records

    output = Path(output)
    store = ResumableOutput(output, lambda path: {r.id: r.to_dict() for r in read_records(path)})
    jobs, order = [], []
    for record in records:
        for n, config in enumerate(configs):
            rollout_id = record.id if len(configs) == 1 else f"{record.id}#{n}"
            order.append(rollout_id)
            if rollout_id not in store:
                jobs.append(GenerationJob(rollout_id, record.messages, config, record.tools, dict(record.meta),
                                          record.reference))
    for job in jobs:  # every prompt is checked before the first request
        job.prompt(tokenizer)
    started = time.perf_counter()
    bar = progress(sum(j.config.max_new_tokens for j in jobs), desc="generate")
    retokenized = []
    try:
        if remote is not None:
            from .remote import RemoteGenerator

            rollouts = RemoteGenerator(remote, tokenizer).generate(jobs)
        else:
            rollouts = generate_records(model, tokenizer, jobs, batch_size=batch_size)
        tokens = 0
        for rollout in rollouts:
            ids = rollout.response_token_ids
            n = len(ids) if ids else len(rollout.meta.get("remote", {}).get("logprobs", []))
            tokens += n
            bar.update(n)
            if rollout.meta.get("remote", {}).get("token_ids") == "retokenized":
                retokenized.append(rollout.id)
            store.add(rollout.id, rollout.to_dict())
    except BaseException:
        store.discard_if_empty()
        raise
    finally:
        bar.close()
    if retokenized:
        named = ", ".join(retokenized[:5]) + (" …" if len(retokenized) > 5 else "")
        _log(f"warning: {len(retokenized)} rollout(s) ({named}) "
             "came without exact token ids (the server returned neither ids nor bytes that match the local "
             "vocabulary): scoring re-tokenizes their text, which may differ from what was sampled")
    count = store.finish(order, lambda units: write_atomic(output, lambda tmp: Path(tmp).write_text(
        "".join(json.dumps(u, ensure_ascii=False) + "\n" for u in units), encoding="utf-8")))
    return Summary(count, len(order) - len(jobs), tokens, time.perf_counter() - started)
