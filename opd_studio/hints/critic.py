"""LLM critic: ask a chat model for the first wrong quote in the last assistant answer and a short hint.

The critic is any causal LM the core can load (default: the studio's own model) or any OpenAI-compatible chat
endpoint (a vLLM/TGI server, an inference provider, or `python -m opd_studio serve`): base URL and key come from
arguments or `OPD_CRITIC_BASE_URL` / `OPD_CRITIC_API_KEY` / `OPD_CRITIC_MODEL`.

It is asked for JSON `{"wrong_quote": "...", "hint": "..."}`. Replies are parsed forgivingly (code fences, prose
around the object, single quotes, other key names), and the quote is located in the answer exactly, then ignoring
case and spacing, then fuzzily (the best-matching window, if similar enough). Anything unusable becomes "no
proposal" with the raw reply kept for inspection.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from .base import HintProposal, ProposalResult
from .inline import inline_hint

SYSTEM_PROMPT = (
    "You check answers. Read the conversation and find the first mistake in the assistant's last answer. "
    'Reply with JSON only: {"wrong_quote": "<the exact wrong text copied from the answer>", '
    '"hint": "<a short hint that helps fix it without giving the full answer>"}. '
    'If the answer is correct reply {"wrong_quote": null, "hint": null}.')

QUOTE_KEYS = ("wrong_quote", "quote", "wrong", "error", "mistake", "incorrect", "wrong_text", "span")
HINT_KEYS = ("hint", "feedback", "correction", "fix", "suggestion", "advice")
FUZZY_THRESHOLD = 0.75


def critic_prompt(record) -> list[dict]:
    lines = []
    for message in record.messages:
        content = message.get("content") or ""
        if message.get("tool_calls"):
            content += " " + json.dumps([c["function"] for c in message["tool_calls"]], ensure_ascii=False)
        lines.append(f"{message['role'].upper()}: {content}")
    if record.reference:
        lines.append(f"REFERENCE ANSWER: {record.reference}")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


# ------------------------------------------------------------------------------------------------------------------
# Parsing


def parse_critique(raw: str) -> tuple[str | None, str | None] | None:
    """(quote, hint) from a messy reply; (None, None) when the critic says the answer is correct; None when the
    reply holds no usable object."""
    for candidate in _json_candidates(raw):
        data = _loads(candidate)
        if not isinstance(data, dict):
            continue
        lowered = {str(k).lower().strip(): v for k, v in data.items()}
        quote = next((lowered[k] for k in QUOTE_KEYS if k in lowered), _MISSING)
        hint = next((lowered[k] for k in HINT_KEYS if k in lowered), None)
        if quote is _MISSING:
            continue
        if quote in (None, "", "null", "none", "None"):
            return None, None
        return str(quote), (str(hint).strip() if hint not in (None, "") else None)
    return None


_MISSING = object()


def _json_candidates(raw: str) -> list[str]:
    fenced = re.findall(r"```(?:json)?\s*(.*?)```", raw, flags=re.S)
    # every balanced {...} in the text, outermost first
    objects, depth, start = [], 0, None
    for n, ch in enumerate(raw):
        if ch == "{":
            if depth == 0:
                start = n
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                objects.append(raw[start: n + 1])
    return [*fenced, *objects]


def _loads(text: str):
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:  # single quotes, Python literals
        return ast.literal_eval(text.replace("null", "None").replace("true", "True").replace("false", "False"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def locate_quote(content: str, quote: str) -> tuple[int, int, float] | None:
    """(start, end, similarity) of `quote` in `content`: exact, then case/space-insensitive, then fuzzy."""
    quote = quote.strip().strip('"').strip()
    if not quote:
        return None
    at = content.find(quote)
    if at >= 0:
        return at, at + len(quote), 1.0
    pattern = r"\s+".join(re.escape(w) for w in quote.split())
    match = re.search(pattern, content, flags=re.I)
    if match:
        return match.start(), match.end(), 0.95
    best = (0.0, 0, 0)
    for size in {len(quote), max(1, len(quote) - 2), len(quote) + 2}:
        for a in range(0, max(1, len(content) - size + 1)):
            ratio = difflib.SequenceMatcher(None, content[a:a + size].lower(), quote.lower()).ratio()
            if ratio > best[0]:
                best = (ratio, a, a + size)
    if best[0] >= FUZZY_THRESHOLD:
        start, end = best[1], min(best[2], len(content))
        while start < end and content[start].isspace():
            start += 1
        return start, end, round(best[0], 3)
    return None


# ------------------------------------------------------------------------------------------------------------------
# Backends


@dataclass
class LocalChat:
    """A model the core loaded; greedy, so the critic is reproducible."""

    model: object
    tokenizer: object
    max_new_tokens: int = 96

    def __call__(self, messages: list[dict]) -> str:
        from ..rollout import SamplingConfig, generate

        record, _ = generate(self.model, self.tokenizer, messages, SamplingConfig(max_new_tokens=self.max_new_tokens))
        return record.messages[-1]["content"]


@dataclass
class OpenAIChat:
    """POST {base_url}/chat/completions, the OpenAI wire format; stdlib only."""

    base_url: str
    model: str = "default"
    api_key: str | None = None
    max_tokens: int = 96
    timeout: float = 120.0

    def __call__(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.max_tokens}).encode()
        request = urllib.request.Request(self.base_url.rstrip("/") + "/chat/completions", data=body,
                                         headers={"Content-Type": "application/json",
                                                  **({"Authorization": f"Bearer {self.api_key}"}
                                                     if self.api_key else {})})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.load(response)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"critic endpoint answered HTTP {exc.code}: {exc.read()[:200]!r}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise RuntimeError(f"critic endpoint {self.base_url} unreachable: {exc}") from None
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise RuntimeError(f"critic endpoint sent no choices[0].message.content: {str(reply)[:200]}") from None

    @classmethod
    def from_env(cls) -> "OpenAIChat":
        base_url = os.environ.get("OPD_CRITIC_BASE_URL")
        if not base_url:
            raise ValueError("set OPD_CRITIC_BASE_URL (e.g. http://127.0.0.1:8000/v1) to use an endpoint critic")
        return cls(base_url, os.environ.get("OPD_CRITIC_MODEL", "default"), os.environ.get("OPD_CRITIC_API_KEY"))


# ------------------------------------------------------------------------------------------------------------------
# The hint model


class LLMCritic:
    name = "critic"
    needs_model = True  # built over a chat client; the studio runs it on its own model under the model lock

    def __init__(self, chat=None, source: str | None = None):
        """`chat`: a callable messages → reply text (LocalChat, OpenAIChat); default: the studio's own model."""
        if chat is None:
            from ..model import load_model_cached

            chat = LocalChat(*load_model_cached())
        self.chat = chat
        self.source = source or f"critic:{getattr(chat, 'model', 'local') if isinstance(chat, OpenAIChat) else 'local'}"

    def propose(self, record) -> ProposalResult:
        assistants = record.assistant_indices
        if not assistants:
            return ProposalResult(reason="record has no assistant message to critique")
        message = assistants[-1]
        content = record.messages[message].get("content") or ""
        raw = self.chat(critic_prompt(record))
        parsed = parse_critique(raw)
        if parsed is None:
            return ProposalResult(reason="critic reply had no usable JSON", raw=raw)
        quote, hint = parsed
        if quote is None:
            return ProposalResult(reason="critic found no mistake", raw=raw, checked=1)
        located = locate_quote(content, quote)
        if located is None:
            return ProposalResult(reason=f"critic quoted text that is not in the answer: {quote[:80]!r}", raw=raw)
        start, end, similarity = located
        hint_char, text = inline_hint(content, start, hint or "this part is wrong; check it again")
        proposal = HintProposal(message=message, char_start=start, char_end=end, hint_char=hint_char, text=text,
                                rationale=f"critic quoted {quote[:80]!r}" + ("" if similarity == 1.0 else
                                                                           f" (matched at {similarity:.2f})"),
                                confidence=0.5 * similarity, source=self.source)
        return ProposalResult([proposal], raw=raw, checked=1)
