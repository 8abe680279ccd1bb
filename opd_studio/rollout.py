"""Sample an assistant turn and record what the model thought of every token it wrote.

`generate(model, tokenizer, messages, …)` → (Record, DataFrame). The record carries the new assistant message and
its exact sampled ids (`response_token_ids`), so scoring never re-tokenizes the rollout, and their log-probabilities
(`response_logprobs`), so the studio paints the student's colours before any forward pass. The prompt ids are those
`trajectory.build_trajectory` produces for the conversation, so the rollout and its later scoring agree token for
token. The table has one row per generated token: `text`, `token_id`, `logp`, `rank`, `entropy`, `top` ([text, p]
pairs), `top_ids`, `top_logp` — from the model's raw distribution (temperature 1), whatever temperature sampled it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from .records import Record
from .scoring import token_stats
from .trajectory import build_trajectory


@dataclass
class SamplingConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    top_k_alternatives: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= 8192:
            raise ValueError(f"max_new_tokens must be between 1 and 8192, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def prompt_ids(tokenizer, messages: list[dict], tools=None) -> list[int]:
    """Token ids of `messages` followed by the assistant generation prompt, tokenized as trajectories are."""
    context = build_trajectory(tokenizer, Record("prompt", messages, tools)).input_ids
    rendered = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    with_prompt = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    header = with_prompt[len(rendered):]
    return context + tokenizer(header, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def generate(model, tokenizer, messages: list[dict], config: SamplingConfig | None = None, tools=None,
             record_id: str = "rollout", meta: dict | None = None) -> tuple[Record, pd.DataFrame]:
    """Sample one assistant turn after `messages` (a trailing assistant message is replaced)."""
    config = config or SamplingConfig()
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages:
        raise ValueError("a rollout needs at least one message to answer")
    ids = prompt_ids(tokenizer, messages, tools)
    input_ids = torch.tensor([ids], device=model.device)
    sample = config.temperature > 0
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        out = model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=config.max_new_tokens,
            do_sample=sample, temperature=config.temperature if sample else None,
            top_p=config.top_p if sample else None, top_k=None, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, return_dict_in_generate=True, output_logits=True)
    record = rollout_record(tokenizer, messages, out.sequences[0, len(ids):].tolist(), config, tools, record_id,
                            meta, model.config.name_or_path)
    new_ids = record.response_token_ids
    logits = torch.stack(out.logits, dim=1)[0].float()  # (steps, V)
    logprobs = torch.log_softmax(logits[: len(new_ids)], dim=-1)
    table = _token_table(tokenizer, new_ids, logprobs, config.top_k_alternatives)
    record.response_logprobs = [min(0.0, float(lp)) for lp in table.logp]  # the student's colours, before a pass
    return record, table


def rollout_record(tokenizer, messages: list[dict], new_ids: list[int], config: SamplingConfig, tools,
                   record_id: str, meta: dict | None, model_name: str) -> Record:
    """The record of a sampled turn: `messages` + the decoded assistant message, with the exact sampled ids."""
    new_ids = _drop_incomplete_tail(tokenizer, new_ids)
    ended = bool(new_ids) and new_ids[-1] == tokenizer.eos_token_id
    content = tokenizer.decode(new_ids[:-1] if ended else new_ids, skip_special_tokens=False,
                               clean_up_tokenization_spaces=False)
    return Record(
        id=record_id, messages=[*messages, {"role": "assistant", "content": content}], tools=tools,
        meta={**(meta or {}), "model": model_name, "sampling": asdict(config), "finished": ended},
        response_token_ids=new_ids)


def _drop_incomplete_tail(tokenizer, ids: list[int]) -> list[int]:
    # A rollout cut by max_new_tokens can end inside a multi-byte character; drop those bytes.
    while ids and tokenizer.decode(ids[-1:]).endswith("\ufffd") and tokenizer.decode(ids).endswith("\ufffd"):
        ids = ids[:-1]
    return ids


def _token_table(tokenizer, ids: list[int], logprobs: torch.Tensor, top_k: int) -> pd.DataFrame:
    stats = token_stats(logprobs, torch.tensor(ids, device=logprobs.device), top_k)
    decode = {}

    def text(t: int) -> str:
        if t not in decode:
            decode[t] = tokenizer.decode([t])
        return decode[t]

    return pd.DataFrame({
        "i": range(len(ids)), "text": [text(t) for t in ids], "token_id": ids, "logp": stats.logp.tolist(),
        "rank": stats.rank.tolist(), "entropy": stats.entropy.tolist(),
        "top": [[[text(int(t)), math.exp(lp)] for t, lp in zip(row_ids, row_lp)]
                for row_ids, row_lp in zip(stats.top_ids.tolist(), stats.top_logp.tolist())],
        "top_ids": stats.top_ids.tolist(), "top_logp": stats.top_logp.tolist(),
    })
