"""Tool-call verifier: check the assistant's tool calls against the record's OpenAI `tools` schema.

Calls are read from two places: structured `tool_calls` on an assistant message, and JSON written into the
message text — inside `<tool_call>...</tool_call>` tags (SmolLM2 writes a list there) or bare, as
`{"name": ..., "arguments": {...}}` (also `"parameters"`, or wrapped as `{"function": {...}}`). Each call is
checked for: malformed JSON, unknown tool name, missing required argument, unknown argument, and wrong argument
type (JSON-schema `type` string/number/integer/boolean/array/object/null or a list of them, `enum`, and the type of
array items).

One proposal per faulty call; its error span is the first fault in the text (the tool name, the argument key, the
value, the arguments object, or the whole call for bad JSON) and its hint names what is wrong and the valid
signatures: "(Hint: get_weather has no argument 'location'. Use get_weather(city: string, unit?: 'c'|'f').)".
The hint goes before the whole call, not inside the JSON, because that is where the model decides what to call.
Structured `tool_calls` have no characters in the content: their proposals span the whole turn
(char_start=0, char_end=max(1, len(content))), with the call's index in the rationale.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import HintProposal, ProposalResult
from .inline import inline_hint

_TAGGED = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_BARE_CALL = re.compile(r'(?:\[\s*)?\{\s*"(?:name|function)"\s*:')
_JSON_TYPES = {"string": str, "boolean": bool, "array": list, "object": dict}


@dataclass
class _Fault:
    what: str  # human sentence for the hint: "get_weather has no argument 'location'"
    span: tuple[int, int] | None  # characters in the content, None for structured calls


@dataclass
class _Call:
    """One call as found: where it is written (None for structured calls) and what it says."""

    start: int | None
    end: int | None
    label: str  # "tool_calls[1]" or "call at char 12"
    name: Any = None
    arguments: Any = None
    json_error: str | None = None


# ------------------------------------------------------------------------------------------------------------------
# Schemas


def tool_schemas(tools: list[dict]) -> dict[str, dict]:
    """name -> JSON schema of its parameters, from an OpenAI tools list."""
    schemas = {}
    for tool in tools or []:
        function = tool.get("function", tool) if isinstance(tool, dict) else {}
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            schemas[function["name"]] = function.get("parameters") or {}
    return schemas


def _type_text(schema: dict) -> str:
    if "enum" in schema:
        return "|".join(f"'{v}'" if isinstance(v, str) else json.dumps(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    return "|".join(kind) if isinstance(kind, list) else kind


def signature(name: str, schema: dict) -> str:
    """get_weather(city: string, unit?: 'c'|'f') — required arguments plain, optional ones with '?'."""
    required = set(schema.get("required") or [])
    arguments = [f"{key}{'' if key in required else '?'}: {_type_text(spec if isinstance(spec, dict) else {})}"
                 for key, spec in (schema.get("properties") or {}).items()]
    return f"{name}({', '.join(arguments)})"


def _matches_type(value: Any, schema: dict) -> bool:
    if "enum" in schema and value not in schema["enum"]:
        return False
    kinds = schema.get("type")
    if kinds is None:
        return True
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind == "null" and value is None:
            return True
        if kind == "integer" and _is_number(value) and float(value).is_integer():
            return True
        if kind == "number" and _is_number(value):
            return True
        if kind in _JSON_TYPES and isinstance(value, _JSON_TYPES[kind]):
            items = schema.get("items")
            return kind != "array" or not isinstance(items, dict) or all(_matches_type(v, items) for v in value)
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------------------------------
# Finding calls


def calls_in_content(content: str, tool_names: set[str]) -> list[_Call]:
    """Tool calls written as JSON in the text: tagged ones, then bare ones outside the tags. A bare object counts
    as a call when it has "arguments"/"parameters"/"function" or names a known tool (so {"name": "Ada"} in an
    answer is not one); bare text that starts like a call but is not valid JSON is a malformed call."""
    calls, covered = [], []
    for match in _TAGGED.finditer(content):
        covered.append(match.span())
        body = match.group(1)
        body_start = match.start(1) + len(body) - len(body.lstrip())
        calls += _decode_calls(content, body_start, match.start(1) + len(body.rstrip()), match.span())
    position = 0
    while (match := _BARE_CALL.search(content, position)) is not None:
        start = match.start()
        position = start + 1
        if any(a <= start < b for a, b in covered):
            continue
        try:
            decoded, end = json.JSONDecoder().raw_decode(content, start)
        except json.JSONDecodeError:  # most often a call cut off by the token limit: it runs to the paragraph end
            end = content.find("\n\n", start)
            end = len(content) if end < 0 else end
            decoded = None
        if decoded is None or any(_looks_like_call(obj, tool_names) for obj in _as_list(decoded)):
            calls += _decode_calls(content, start, end, (start, end))
            position = end
    return sorted(calls, key=lambda call: call.start)


def _as_list(decoded: Any) -> list:
    return decoded if isinstance(decoded, list) else [decoded]


def _looks_like_call(obj: Any, tool_names: set[str]) -> bool:
    return isinstance(obj, dict) and (bool({"arguments", "parameters", "function"} & set(obj))
                                      or obj.get("name") in tool_names)


def _decode_calls(content: str, body_start: int, body_end: int, frame: tuple[int, int]) -> list[_Call]:
    """The calls in content[body_start:body_end]: one object or a list of them. `frame` is the whole written call
    (tags included), the span of faults that have no smaller place (bad JSON)."""
    start, end = frame
    label = f"call at char {start}"
    if body_start >= body_end:
        return [_Call(start, end, label, json_error="the tool call is empty")]
    try:
        decoded, used = json.JSONDecoder().raw_decode(content[:body_end], body_start)
    except json.JSONDecodeError as error:
        return [_Call(start, end, label, json_error=f"the tool call is not valid JSON ({error.msg.lower()})")]
    if used < body_end:
        return [_Call(start, end, label, json_error="the tool call has text after its JSON")]
    objects = _as_list(decoded)
    if len(objects) == 1:
        return [_call_from_json(objects[0], start, end, label)]
    # Several calls in one list: each gets its own frame so its faults are placed on its own text.
    calls, cursor = [], body_start + 1
    for obj in objects:
        at = content.find("{", cursor, used)
        try:
            _, stop = json.JSONDecoder().raw_decode(content, at)
        except (json.JSONDecodeError, ValueError):
            at, stop = start, end
        calls.append(_call_from_json(obj, at, stop, f"call at char {at}"))
        cursor = stop
    return calls


def _call_from_json(obj: Any, start: int | None, end: int | None, label: str) -> _Call:
    if isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = obj["function"]
    if not isinstance(obj, dict) or "name" not in obj:
        return _Call(start, end, label, json_error='a tool call must be an object with "name" and "arguments"')
    arguments = obj.get("arguments", obj.get("parameters"))
    if arguments is None:
        # Arguments written next to "name" instead of under "arguments" are a mistake, not an empty call.
        arguments = None if set(obj) - {"name", "type", "id"} else {}
    if isinstance(arguments, str):  # OpenAI style: arguments is itself a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            return _Call(start, end, label, obj["name"],
                         json_error=f"the arguments are not valid JSON ({error.msg.lower()})")
    return _Call(start, end, label, obj["name"], arguments)


def structured_calls(message: dict) -> list[_Call]:
    return [_call_from_json(call.get("function") or {}, None, None, f"tool_calls[{index}]")
            for index, call in enumerate(message.get("tool_calls") or [])]


# ------------------------------------------------------------------------------------------------------------------
# Checking a call


def check_call(call: _Call, schemas: dict[str, dict], content: str) -> list[_Fault]:
    """What is wrong with one call, most specific first (a missing argument has no characters of its own, so it
    comes after faults on written keys and values); spans are None for structured calls."""
    where = call.start is not None
    whole = (call.start, call.end) if where else None
    if call.json_error:
        return [_Fault(f'{call.json_error}; write {{"name": ..., "arguments": {{...}}}}', whole)]
    if not isinstance(call.name, str) or call.name not in schemas:
        return [_Fault(f"there is no tool {call.name!r}", _value_span(content, call, "name") if where else None)]
    if not isinstance(call.arguments, dict):
        return [_Fault(f"the arguments of {call.name} must be a JSON object under \"arguments\"", whole)]
    schema = schemas[call.name]
    properties = schema.get("properties") or {}
    faults = []
    for key, value in call.arguments.items():
        if key not in properties:
            span = _key_span(content, call, key) if where else None
            faults.append(_Fault(f"{call.name} has no argument '{key}'", span))
        elif isinstance(properties[key], dict) and not _matches_type(value, properties[key]):
            expected = _type_text(properties[key])
            span = _value_span(content, call, key, inside_arguments=True) if where else None
            faults.append(_Fault(f"'{key}' must be {expected}, not {json.dumps(value, ensure_ascii=False)}", span))
    missing = [key for key in schema.get("required") or [] if key not in call.arguments]
    if missing:
        span = _arguments_span(content, call) if where else None
        faults.append(_Fault(f"{call.name} needs {', '.join(repr(k) for k in missing)}", span))
    return faults


def _arguments_span(content: str, call: _Call) -> tuple[int, int]:
    match = re.compile(r'"(?:arguments|parameters)"\s*:\s*').search(content, call.start, call.end)
    if not match:
        return call.start, call.end
    try:
        _, end = json.JSONDecoder().raw_decode(content, match.end())
    except json.JSONDecodeError:
        return call.start, call.end
    return match.end(), end


def _key_span(content: str, call: _Call, key: str) -> tuple[int, int]:
    """Characters of an argument's name, without its quotes."""
    start, end = _arguments_span(content, call)
    quoted = json.dumps(key, ensure_ascii=False)
    match = re.compile(re.escape(quoted) + r"\s*:").search(content, start, end)
    return (match.start() + 1, match.start() + len(quoted) - 1) if match else (start, end)


def _value_span(content: str, call: _Call, key: str, inside_arguments: bool = False) -> tuple[int, int]:
    """Characters of the value of `key` (strings without their quotes)."""
    start, end = _arguments_span(content, call) if inside_arguments else (call.start, call.end)
    match = re.compile(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:\s*").search(content, start, end)
    if not match:
        return start, end
    try:
        _, value_end = json.JSONDecoder().raw_decode(content, match.end())
    except json.JSONDecodeError:
        return start, end
    quoted = content[match.end()] == '"' and value_end - match.end() >= 3
    return (match.end() + 1, value_end - 1) if quoted else (match.end(), value_end)


# ------------------------------------------------------------------------------------------------------------------
# The verifier


@dataclass
class ToolCallVerifier:
    name: ClassVar[str] = "tools"

    def propose(self, record) -> ProposalResult:
        if not record.tools:
            return ProposalResult(reason="record has no tools schema")
        schemas = tool_schemas(record.tools)
        proposals, checked = [], 0
        for index in record.assistant_indices:
            message = record.messages[index]
            content = message.get("content") or ""
            for call in calls_in_content(content, set(schemas)) + structured_calls(message):
                checked += 1
                faults = check_call(call, schemas, content)
                if faults:
                    proposals.append(self._proposal(index, content, call, faults, schemas))
        if proposals:
            return ProposalResult(proposals, reason=f"{len(proposals)} of {checked} tool calls are invalid",
                                  checked=checked)
        if not checked:
            return ProposalResult(reason="no tool calls found in the assistant messages")
        return ProposalResult(reason=f"all {checked} tool calls valid", checked=checked)

    def _proposal(self, index: int, content: str, call: _Call, faults: list[_Fault],
                  schemas: dict[str, dict]) -> HintProposal:
        problems = "; ".join(fault.what for fault in faults)
        if isinstance(call.name, str) and call.name in schemas and not call.json_error:
            advice = f"Use {signature(call.name, schemas[call.name])}."
        else:
            advice = "Available tools: " + ", ".join(signature(n, s) for n, s in schemas.items()) + "."
        body = f"{problems}. {advice}"
        if call.start is None:  # structured call: no characters of its own, so it spans the whole turn
            start, end = 0, max(1, len(content))
            hint_char, text = 0, f"(Hint: {body}) "
        else:
            start, end = faults[0].span
            hint_char, text = inline_hint(content, call.start, body)
        return HintProposal(message=index, char_start=start, char_end=end, hint_char=hint_char, text=text,
                            rationale=f"{call.label}: {problems}", source=f"verifier:{self.name}")
