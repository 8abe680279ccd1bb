"""Fix rate: after training, regenerate each prompt and tell *error suppressed* apart from *corrected*.

For every record, the conversation up to the assistant turn it judges is answered again — greedily and with k
samples — and each new answer gets two verdicts:

- **suppressed**: the flagged wrong text is no longer produced at that spot. The spot is the error's left context
  in its message (up to 24 characters, cut at a word start) followed by the wrong text: for "17 + 25 = 32." with
  "32" flagged, the answer is suppressed unless it contains "17 + 25 = 32" (not followed by a further digit or
  letter). Only records with an error span have this verdict.
- **corrected**: the record's verifiers now pass: the reference verifier when the record has a reference, and the
  family's verifier (`meta.family`: arithmetic → arithmetic, tools → tools) or the verifier that proposed its hints
  (`source: "verifier:NAME"`). Each must find nothing wrong, and at least one must have checked something: an
  answer that stops doing arithmetic is not "corrected".

A 135M model can stop writing `= 32` without learning to add; the two columns say which happened. Records are
scored by what they are, so held-out records with their own flagged errors get both verdicts, and held-out
prompts without a rollout get only "corrected".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from .alignment import pad_id
from .records import Record
from .rollout import prompt_ids

CONTEXT_CHARS = 24


@dataclass
class FixRateConfig:
    samples: int = 3  # sampled answers per prompt, besides the greedy one
    temperature: float = 0.7
    max_new_tokens: int = 96
    seed: int = 0
    batch_size: int = 16  # prompts decoded together


# ------------------------------------------------------------------------------------------------------------------
# The two verdicts


def error_signature(record: Record) -> tuple[int, str, str] | None:
    """(message index, left context, wrong text) of the record's flagged error, or None without a char span."""
    error = record.error
    if error is None or error.message is None or error.char_start is None:
        return None
    content = record.messages[error.message].get("content") or ""
    wrong = content[error.char_start: error.char_end]
    left = content[max(0, error.char_start - CONTEXT_CHARS): error.char_start]
    if error.char_start > CONTEXT_CHARS and " " in left:
        left = left[left.index(" ") + 1:]  # start at a word, not inside one
    return error.message, left, wrong


def suppressed(signature: tuple[int, str, str], answer: str) -> bool:
    """True when `answer` no longer writes the wrong text after the same left context."""
    _, left, wrong = signature
    pattern = re.escape(left + wrong) + (r"(?![0-9A-Za-z])" if wrong[-1:].isalnum() else "")
    return re.search(pattern, answer) is None


def verifiers_for(record: Record) -> list:
    from .hints import HINT_MODELS, VERIFIER_OF_FAMILY

    names = []
    family = (record.meta or {}).get("family")
    if family in VERIFIER_OF_FAMILY:
        names.append(VERIFIER_OF_FAMILY[family])
    names += [h.source.split(":", 1)[1] for h in record.hints if h.source.startswith("verifier:")]
    if record.reference:
        names.append("reference")
    return [HINT_MODELS[name]() for name in dict.fromkeys(names) if name in HINT_MODELS]


def corrected(record: Record, verifiers: list) -> bool | None:
    """All verifiers find nothing wrong and at least one checked something; None when no verifier applies."""
    if not verifiers:
        return None
    results = [v.propose(record) for v in verifiers]
    if any(r.proposals for r in results):
        return False
    return any(r.checked for r in results)


_WORDS = re.compile(r"\S+")
_REPEATED_STRETCH = re.compile(r"(.{2,}?)\1{4,}", re.DOTALL)


def loops(answer: str, n: int = 4, times: int = 3) -> bool:
    """The answer repeats itself: some run of `n` words occurs `times` times or more, or a stretch of ≥ 2
    characters is repeated 5 times in a row ("= 7*27 = 7*27 = 7*27 …", "4242424242…")."""
    words = _WORDS.findall(answer)
    counts: dict[tuple, int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i: i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= times:
            return True
    return _REPEATED_STRETCH.search(answer) is not None


# ------------------------------------------------------------------------------------------------------------------
# Regenerating


def prompt_of(record: Record) -> tuple[list[dict], int | None]:
    """The messages to answer again, and the index of the judged assistant turn (None: answer after the end)."""
    if record.error is not None and record.error.message is not None:
        judged = record.error.message
    elif record.assistant_indices:
        judged = record.assistant_indices[-1]
    else:
        return list(record.messages), None
    return list(record.messages[:judged]), judged


def regenerate(model, tokenizer, prompts: list[tuple[list[dict], list | None]],
               config: FixRateConfig) -> list[list[tuple[str, int | None, str]]]:
    """Per prompt (messages, tools): [(mode, seed, answer text)], the greedy answer then `config.samples` samples.

    Prompts are tokenized as rollouts are (`rollout.prompt_ids`) and answered in left-padded batches of
    `config.batch_size`: one decoding loop for many prompts, which is what makes a fix-rate table affordable on a
    CPU. Sample n of every prompt is drawn under seed `config.seed + n`."""
    import torch

    ids = [prompt_ids(tokenizer, messages, tools) for messages, tools in prompts]
    answers: list[list[tuple[str, int | None, str]]] = [[] for _ in prompts]
    runs = [("greedy", None)] + [("sampled", config.seed + n) for n in range(config.samples)]
    pad = pad_id(tokenizer)
    for mode, seed in runs:
        for a in range(0, len(ids), config.batch_size):
            batch = ids[a: a + config.batch_size]
            width = max(len(x) for x in batch)
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch], device=model.device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=model.device)
            with torch.no_grad(), torch.random.fork_rng(
                    devices=[model.device] if model.device.type == "cuda" else []):
                torch.manual_seed(seed or 0)
                out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=config.max_new_tokens,
                                     do_sample=mode == "sampled", temperature=config.temperature if seed is not None
                                     else None, top_p=None, top_k=None, pad_token_id=pad,
                                     eos_token_id=tokenizer.eos_token_id)
            for n, row in enumerate(out[:, width:].tolist()):
                if tokenizer.eos_token_id in row:
                    row = row[: row.index(tokenizer.eos_token_id)]
                text = tokenizer.decode(row, skip_special_tokens=False, clean_up_tokenization_spaces=False)
                answers[a + n].append((mode, seed, text))
    return answers


def fix_rate(model, tokenizer, curated: list[Record], heldout: list[Record] | None = None,
             config: FixRateConfig | None = None) -> pd.DataFrame:
    """One row per (record, generation): split (curated | heldout), mode (greedy | sampled), seed, answer,
    suppressed (bool, or None without a flagged error), corrected (bool, or None without a verifier)."""
    config = config or FixRateConfig()
    tagged = [("curated", r) for r in curated] + [("heldout", r) for r in heldout or []]
    prompts = [(prompt_of(r)[0], r.tools) for _, r in tagged]
    rows = []
    for (split, record), answers in zip(tagged, regenerate(model, tokenizer, prompts, config)):
        messages = prompt_of(record)[0]
        signature = error_signature(record)
        verifiers = verifiers_for(record)
        for mode, seed, text in answers:
            answer = Record(record.id, [*messages, {"role": "assistant", "content": text}], tools=record.tools,
                            reference=record.reference, meta=dict(record.meta or {}))
            rows.append({"record": record.id, "split": split, "mode": mode, "seed": seed, "answer": text,
                         "suppressed": suppressed(signature, text) if signature else None,
                         "corrected": corrected(answer, verifiers)})
    return pd.DataFrame(rows, columns=["record", "split", "mode", "seed", "answer", "suppressed", "corrected"])


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per split and mode: how many answers, and the share suppressed / corrected (over answers that have the
    verdict)."""
    out = []
    for (split, mode), group in rows.groupby(["split", "mode"], sort=False):
        line = {"split": split, "mode": mode, "answers": len(group)}
        for column in ("suppressed", "corrected"):
            known = group[column].dropna()
            line[column] = float(known.astype(bool).mean()) if len(known) else None
            line[f"{column}_n"] = len(known)
        out.append(line)
    return pd.DataFrame(out)
