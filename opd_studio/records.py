"""The data contract: records, hints and error spans, and their JSONL form (docs/data.md).

A record is one trajectory in OpenAI chat format plus the hints placed on it. Hints and error spans are placed
either by (message index, character offset in that message's content) — what a person writes by hand — or by
`token`, an index into the tokenized trajectory. This module only validates shapes and types; whether a position
is inside an assistant message is checked by `trajectory.py`, which knows the tokens.

Reading never half-succeeds silently: `read_records` raises `RecordError` naming the line and the field, and
`write_records` writes to a temporary file and renames it, so a failure leaves no half-written output.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from .files import write_atomic

PLACEMENTS = ("inline", "feedback", "template")
PROPOSAL_PLACEMENTS = ("inline", "feedback")  # a hint model's proposal can be placed so (a template needs a text)
HINT_STATUSES = ("proposed", "accepted", "rejected", "edited")
ROLES = ("system", "user", "assistant", "tool", "developer")
MAX_LINE_BYTES = 4_000_000
# What one upload in the studio may bring (README "Limits"): a Space serves many people from one process.
MAX_UPLOAD_BYTES = 20_000_000
MAX_UPLOAD_RECORDS = 2_000


class RecordError(ValueError):
    """A record that does not follow the data contract; the message says where and what to do."""


@dataclass
class Hint:
    """Hint tokens to insert before a trajectory position.

    `placement` decides what is inserted: `inline` puts `text` right before the anchor token; `feedback` inserts a
    chat message ("Consider this feedback: …") before the assistant turn that holds the anchor; `template` puts
    `template` with `{hint}` replaced by `text` right before the anchor.

    `placebo`: the text of a content-free hint scored at the same place and in the same placement, so that what
    any parenthetical does to the text can be told apart from what this hint says (`placebo_for`); None: the
    default placebo (`default_placebo`).
    """

    text: str
    message: int | None = None
    char: int | None = None
    token: int | None = None
    placement: str = "inline"
    template: str | None = None
    source: str = "manual"
    status: str = "proposed"
    rationale: str = ""
    feedback_role: str = "user"
    placebo: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise RecordError(f"hint text must be a string, got {type(self.text).__name__}")
        if self.placement not in PLACEMENTS:
            raise RecordError(f"hint placement {self.placement!r} is not one of {', '.join(PLACEMENTS)}")
        if self.placement == "template" and (not self.template or "{hint}" not in self.template):
            raise RecordError("a 'template' hint needs a template string containing {hint}")
        if self.placebo is not None and (not isinstance(self.placebo, str) or not self.placebo.strip()):
            raise RecordError("hint placebo must be a non-empty string, or left out for the default placebo")
        if self.status not in HINT_STATUSES:
            raise RecordError(f"hint status {self.status!r} is not one of {', '.join(HINT_STATUSES)}")
        if self.token is None and (self.message is None or self.char is None):
            raise RecordError("a hint needs either 'token' or both 'message' and 'char'")
        for name in ("message", "char", "token"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise RecordError(f"hint '{name}' must be a non-negative integer, got {value!r}")

    @property
    def inserted_text(self) -> str:
        """The text that goes into the trajectory for inline and template placements."""
        if self.placement == "template":
            return self.template.replace("{hint}", self.text)
        return self.text


# ------------------------------------------------------------------------------------------------------------------
# Placebos: a content-free hint of the same shape at the same place

# Content-free bodies, shortest first; the default placebo takes the one closest in length to the hint's body.
PLACEBO_BODIES = ("check this step.", "check this step carefully.", "look at this step again and check it carefully.")
_FRAME = re.compile(r"(?P<lead>\s*)(?P<open>\(\s*(?:[A-Za-z]+:\s*)?)?(?P<body>.*?)(?P<close>\s*\))?(?P<trail>\s*)",
                    re.DOTALL)


def placebo_text(text: str, body: str | None = None) -> str:
    """`text`'s frame around a content-free body: the same leading and trailing spaces and the same "(Hint: …)"
    wrapper, with `body` (default: the `PLACEBO_BODIES` entry closest in length to the hint's own body).

    >>> placebo_text(" (Hint: 17 + 25 = 42.)")
    ' (Hint: check this step.)'
    """
    frame = _FRAME.fullmatch(text)
    if not (frame.group("open") and frame.group("close")):  # no parenthesis: the whole text is the body
        frame = re.fullmatch(r"(?P<lead>\s*)(?P<body>.*?)(?P<trail>\s*)", text, re.DOTALL)
    if body is None:
        length = len(frame.group("body"))
        body = min(PLACEBO_BODIES, key=lambda b: (abs(len(b) - length), len(b)))
    parts = frame.groupdict()
    return parts["lead"] + (parts.get("open") or "") + body + (parts.get("close") or "") + parts["trail"]


def default_placebo(hint: Hint, body: str | None = None) -> Hint:
    """The default placebo of `hint`: same position and placement, `placebo_text(hint.text, body)` as its text."""
    return replace(hint, text=placebo_text(hint.text, body), placebo=None, source="placebo", rationale="")


def placebo_for(hint: Hint, default: str | None = None) -> Hint:
    """The placebo scored beside `hint`: its stored `placebo` text, else `default` (a whole text, used as is), else
    `default_placebo(hint)`. Same position and placement as `hint`."""
    if hint.placebo is not None or default is not None:
        return replace(hint, text=hint.placebo if hint.placebo is not None else default, placebo=None,
                       source="placebo", rationale="")
    return default_placebo(hint)


@dataclass
class ErrorSpan:
    """Where the mistake is: characters [char_start, char_end) of a message, or tokens [token_start, token_end)."""

    message: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    token_start: int | None = None
    token_end: int | None = None

    def __post_init__(self) -> None:
        by_char = None not in (self.message, self.char_start, self.char_end)
        by_token = None not in (self.token_start, self.token_end)
        if not (by_char or by_token):
            raise RecordError("an error span needs message + char_start + char_end, or token_start + token_end")
        if by_char and self.char_end <= self.char_start:
            raise RecordError(f"error span is empty: char_end {self.char_end} <= char_start {self.char_start}")
        if by_token and self.token_end <= self.token_start:
            raise RecordError(f"error span is empty: token_end {self.token_end} <= token_start {self.token_start}")


@dataclass
class Record:
    id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    hints: list[Hint] = field(default_factory=list)
    error: ErrorSpan | None = None
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Exact sampled token ids: a list of ints for the last assistant message, or one list (or null) per
    # assistant message in order. When present they are used instead of re-tokenizing the content.
    response_token_ids: list[int] | list[list[int] | None] | None = None
    # The sampled tokens' log-probabilities under the model that sampled them, shaped as `response_token_ids`
    # (one float per id). Optional: the studio paints the student's colours from them before any forward pass.
    response_logprobs: list[float] | list[list[float] | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {name: copy.deepcopy(getattr(self, name)) for name in ("id", "messages", "tools", "reference", "meta")}
        out["hints"] = [_drop_none(asdict(h)) for h in self.hints]
        out["error"] = _drop_none(asdict(self.error)) if self.error else None
        for optional in SAMPLED_FIELDS:
            if getattr(self, optional) is not None:
                out[optional] = _copy_sampled(getattr(self, optional))
        return {name: out[name] for name in RECORD_FIELDS if name in out}

    def __deepcopy__(self, memo: dict) -> "Record":
        """`copy.deepcopy`, with the sampled ids and log-probabilities copied as lists of numbers: walking them one
        number at a time (16k at 8k tokens) was most of the cost of storing or opening a long upload."""
        copied = object.__new__(Record)
        for name in RECORD_FIELDS:
            value = getattr(self, name)
            setattr(copied, name, _copy_sampled(value) if name in SAMPLED_FIELDS else copy.deepcopy(value, memo))
        return copied

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: Any) -> "Record":
        if not isinstance(raw, dict):
            raise RecordError(f"a record must be a JSON object, got {type(raw).__name__}")
        known = {"id", "messages", "tools", "hints", "error", "reference", "meta", "response_token_ids",
                 "response_logprobs"}
        unknown = set(raw) - known
        if unknown:
            raise RecordError(f"unknown field(s) {sorted(unknown)}; a record has {sorted(known)}")
        record_id = raw.get("id")
        if not isinstance(record_id, (str, int)) or record_id == "":
            raise RecordError("'id' must be a non-empty string")
        messages = _validate_messages(raw.get("messages"))
        tools = raw.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise RecordError("'tools' must be a list of OpenAI tool schemas or null")
        hints_raw = raw.get("hints") or []
        if not isinstance(hints_raw, list):
            raise RecordError("'hints' must be a list")
        hints = [_build(Hint, h, f"hints[{n}]") for n, h in enumerate(hints_raw)]
        error = _build(ErrorSpan, raw["error"], "error") if raw.get("error") else None
        reference = raw.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise RecordError("'reference' must be a string or null")
        meta = raw.get("meta") or {}
        if not isinstance(meta, dict):
            raise RecordError("'meta' must be an object")
        response_ids = raw.get("response_token_ids")
        if response_ids is not None:
            _validate_response_ids(response_ids)
        logprobs = raw.get("response_logprobs")
        if logprobs is not None:
            _validate_response_logprobs(logprobs, response_ids)
        return cls(str(record_id), messages, tools, hints, error, reference, meta, response_ids, logprobs)

    @property
    def assistant_indices(self) -> list[int]:
        return [n for n, m in enumerate(self.messages) if m["role"] == "assistant"]

    @property
    def usable_hints(self) -> list[Hint]:
        """The hints scoring and training use: every hint but the rejected ones. (The curated set is narrower:
        `workspace.training_records` keeps only accepted hints.)"""
        return [h for h in self.hints if h.status != "rejected"]


RECORD_FIELDS = tuple(Record.__dataclass_fields__)
SAMPLED_FIELDS = ("response_token_ids", "response_logprobs")  # numbers, or one list of numbers (or null) per turn


def _copy_sampled(value):
    return None if value is None else [list(x) if isinstance(x, list) else x for x in value]


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _build(kind, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise RecordError(f"{where} must be an object")
    names = set(kind.__dataclass_fields__)
    unknown = set(raw) - names
    if unknown:
        raise RecordError(f"{where} has unknown field(s) {sorted(unknown)}; allowed: {sorted(names)}")
    try:
        return kind(**raw)
    except RecordError as exc:
        raise RecordError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise RecordError(f"{where}: {exc}") from None


def _validate_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise RecordError("'messages' must be a non-empty list of chat messages")
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RecordError(f"messages[{n}] must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in ROLES:
            raise RecordError(f"messages[{n}].role {role!r} is not one of {', '.join(ROLES)}")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise RecordError(f"messages[{n}].content must be a string (multimodal content is not supported)")
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant" or not isinstance(calls, list):
                raise RecordError(f"messages[{n}].tool_calls must be a list on an assistant message")
            for c, call in enumerate(calls):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise RecordError(f"messages[{n}].tool_calls[{c}] needs function.name")
        if content is None and not calls:
            raise RecordError(f"messages[{n}] has neither content nor tool_calls")
    return messages


def _validate_response_ids(ids: Any) -> None:
    def is_id_list(x: Any) -> bool:
        return isinstance(x, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in x)

    if is_id_list(ids) and ids:
        return
    if isinstance(ids, list) and ids and all(x is None or is_id_list(x) for x in ids):
        return
    raise RecordError("'response_token_ids' must be a list of token ids, or one list (or null) per assistant message")


def _validate_response_logprobs(logprobs: Any, ids: Any) -> None:
    """`response_logprobs` has the shape of `response_token_ids`: one log-probability (a number ≤ 0) per id."""
    def is_logprob_list(x: Any) -> bool:
        return isinstance(x, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0
                                           for v in x)

    if ids is None:
        raise RecordError("'response_logprobs' needs 'response_token_ids' (one log-probability per sampled id)")
    flat = all(isinstance(i, int) for i in ids)
    pairs = [(logprobs, ids)] if flat else (list(zip(logprobs, ids)) if isinstance(logprobs, list)
                                            and len(logprobs) == len(ids) else None)
    if pairs is None or not all((lp is None and i is None) or (is_logprob_list(lp) and i is not None
                                                             and len(lp) == len(i)) for lp, i in pairs):
        raise RecordError("'response_logprobs' must match 'response_token_ids': one log-probability (≤ 0) per "
                          "sampled id, in the same lists")


# ------------------------------------------------------------------------------------------------------------------
# JSONL


def parse_records(lines: Iterable[str], source: str = "input") -> list[Record]:
    """Parse JSONL text; every problem is reported with its line number. Blank lines are skipped."""
    records, seen = [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(line.encode("utf-8", "replace")) > MAX_LINE_BYTES:
            raise RecordError(f"{source}, line {number}: line is longer than {MAX_LINE_BYTES} bytes")
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{source}, line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        try:
            record = Record.from_dict(raw)
        except RecordError as exc:
            raise RecordError(f"{source}, line {number}: {exc}") from None
        if record.id in seen:
            raise RecordError(f"{source}, line {number}: id {record.id!r} already used on line {seen[record.id]}")
        seen[record.id] = number
        records.append(record)
    return records


def read_records(path: str | os.PathLike) -> list[Record]:
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    try:
        with path.open(encoding="utf-8") as handle:
            return parse_records(handle, source=str(path))
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def write_records(path: str | os.PathLike, records: Iterable[Record | dict]) -> None:
    lines = [r.to_json() if isinstance(r, Record) else json.dumps(r, ensure_ascii=False) for r in records]

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in lines)

    write_atomic(path, write)


def check_count(records: list, limit: int, source: str) -> None:
    """Refuse more than `limit` records from one upload, naming the limit."""
    if len(records) > limit:
        raise RecordError(f"{source} holds {len(records)} records; the limit is {limit} records per upload. "
                          "Split it into smaller files (or use `opd-studio curated import`, which has no such limit).")
