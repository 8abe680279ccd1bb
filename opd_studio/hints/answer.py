"""Answer verifier: know the expected result, find every place the answer states it, flag the first wrong one.

The arithmetic verifier checks `a op b = c` chains and nothing else; a small model mostly states its result in prose
("…63 + 32, which is 199.", "subtract 84 from 65, which gives you 11.", "So Tom has 348 marbles left."). This
verifier works from the other end: it knows what the result must be and looks for where the answer says it.

The expected result: the record's `reference` when it is a number, else the value of the question's own arithmetic
(the last user turn: "What is 48 + 37?", "Subtract 84 from 65.", "Multiply 21 by 12.", "the product of 6 and 7" …);
without either there is nothing to check. The question's operands are the numbers of that user turn.

Where the answer states its result (only the last assistant message with text is judged), every candidate in text
order:
- `\\boxed{X}`;
- a marker: "the answer is X", "answer: X", "result is X", "total is X"; and the answer's last "= X" (where it
  concludes: "So, 29 + 40 = 69.");
- a statement of the question's operation: a clause that mentions two of the question's operands, then `=`,
  "equals", "is (indeed / equal to)", "which is", "which gives (you)", "gives (you)", "yields", "makes", "we/you
  get", "to get", "results in (a total of)", followed by X;
- when none of these is found, and the answer is finished (it ends a sentence; one cut off mid-sentence at the
  token limit has not concluded): its last number that is not one of the operands.
Each X is compared with the expected result by `math-verify` (Hugging Face's answer checker: numbers in any
notation, thousands commas, fractions, LaTeX). The first X that differs is the error span, and the hint goes right
before its first character (`inline.py` handles the spaces); an answer whose stated results all agree passes. A
clause that mentions other numbers (a carry, a partial product) is not a statement of the question's result and is
not checked: the arithmetic verifier is the one for intermediate steps.

`style="reveal"` hints "(Hint: the answer is 95.)", `style="nudge"` says the stated result is wrong.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

from .base import HintProposal, ProposalResult
from .inline import inline_hint
from .reference import parse_number

STYLES = ("reveal", "nudge")

_NUM = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER = re.compile(rf"(?<![\d.,])\$?({_NUM})(?![\d]|\.\d)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_MARKER = re.compile(rf"\b(?:answer|result|total|sum|difference|product)\s*(?:is|:|=|would be|will be)\s*"
                     rf"(?:\*\*)?\$?(?P<x>{_NUM})(?![\d]|\.\d)(?!\s*[+\-−×x*/÷])", re.IGNORECASE)  # not "is 3 + 4 = 7"
_CONNECTOR = re.compile(rf"(?:=|\bequals\b|\bis equal to\b|\bwhich is\b|\bwhich gives(?: you| us)?\b|"
                        rf"\bgives(?: you| us)?\b|\byields\b|\bmakes\b|\b(?:we|you) get\b|\bto get\b|"
                        rf"\bresults in(?: a total of)?\b|\bis(?: indeed)?\b|\bare\b|\bleaves(?: you| us)?(?: with)?\b|"
                        rf"\bthat's\b)\s*(?:\*\*)?\$?(?P<x>{_NUM})(?![\d]|\.\d)", re.IGNORECASE)
_LAST_EQUALS = re.compile(rf"=\s*\$?(?P<x>{_NUM})(?![\d]|\.\d)(?!.*=)", re.DOTALL)
_FINISHED = re.compile(r"[.!?)}\]][\"'*]*\s*$")
_CLAUSE_START = re.compile(r"[.!?:;\n](?=\s|$)|\n")
_STATEMENT_REACH = 90  # characters before a connector that may hold the operands of the same statement

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
# The question's arithmetic, most specific phrasing first: (pattern, operation, operand order).
_QUESTION = [(re.compile(rf"\bsubtract\s+({_NUM})\s+from\s+({_NUM})", re.I), "-", (1, 0)),
             (re.compile(rf"\bdivide\s+({_NUM})\s+by\s+({_NUM})", re.I), "/", (0, 1)),
             (re.compile(rf"\bmultiply\s+({_NUM})\s+(?:by|and|with)\s+({_NUM})", re.I), "*", (0, 1)),
             (re.compile(rf"\bproduct of\s+({_NUM})\s+and\s+({_NUM})", re.I), "*", (0, 1)),
             (re.compile(rf"\b(?:add|sum of)\s+({_NUM})\s+(?:and|to)\s+({_NUM})", re.I), "+", (0, 1)),
             (re.compile(rf"\bdifference between\s+({_NUM})\s+and\s+({_NUM})", re.I), "-", (0, 1)),
             (re.compile(rf"({_NUM})\s*(?:\+|\bplus\b)\s*({_NUM})", re.I), "+", (0, 1)),
             (re.compile(rf"({_NUM})\s*(?:-|−|\bminus\b)\s*({_NUM})", re.I), "-", (0, 1)),
             (re.compile(rf"({_NUM})\s*(?:×|\*|x|\btimes\b|\bmultiplied by\b)\s*({_NUM})", re.I), "*", (0, 1)),
             (re.compile(rf"({_NUM})\s*(?:÷|/|\bdivided by\b)\s*({_NUM})", re.I), "/", (0, 1))]


def question_result(question: str) -> Fraction | None:
    """The value of the question's own arithmetic, or None when it has no phrasing this module reads."""
    for pattern, op, order in _QUESTION:
        match = pattern.search(question)
        if match:
            a, b = (parse_number(match.group(k + 1)) for k in order)
            if a is None or b is None or (op == "/" and b == 0):
                return None
            return _OPS[op](a, b)
    return None


def same_value(expected: Fraction, claimed: str) -> bool:
    """`math-verify`'s verdict on the claimed text against the expected value (exact numbers compare exactly)."""
    from math_verify import parse, verify

    gold = str(expected.numerator) if expected.denominator == 1 else f"\\frac{{{expected.numerator}}}" \
                                                                      f"{{{expected.denominator}}}"
    # No timeouts: they use signal.alarm, which only the main thread may (the studio runs hint models in threads);
    # the inputs are one short number each.
    return bool(verify(parse(f"${gold}$", parsing_timeout=None), parse(f"${claimed.replace(',', '')}$",
                                                                       parsing_timeout=None), timeout_seconds=None))


def stated_results(content: str, operands: list[Fraction]) -> list[tuple[int, int]]:
    """Character spans of every place `content` states its result (module docstring), in text order."""
    spans = [m.span(1) for m in _BOXED.finditer(content) if m.group(1).strip()]
    spans += [m.span("x") for m in _MARKER.finditer(content)]
    spans += [m.span("x") for m in _LAST_EQUALS.finditer(content)]  # the answer's last "= X": where it concludes
    for match in _CONNECTOR.finditer(content):
        clause_start = max([m.end() for m in _CLAUSE_START.finditer(content, 0, match.start())] or [0])
        before = content[max(clause_start, match.start() - _STATEMENT_REACH): match.start()]
        mentioned = [parse_number(n) for n in _NUMBER.findall(before)]
        remaining = list(operands)
        hits = 0
        for value in mentioned:
            if value in remaining:
                remaining.remove(value)
                hits += 1
        if hits >= 2 or (hits == 1 and len(operands) == 1):
            spans.append(match.span("x"))
    spans = sorted(set(spans))
    if spans:
        return spans
    if not _FINISHED.search(content):
        return []  # cut off mid-sentence (at the token limit): its last number is wherever the cut fell
    numbers = [m for m in _NUMBER.finditer(content) if parse_number(m.group(1)) not in operands]
    return [numbers[-1].span(1)] if numbers else []


@dataclass
class AnswerVerifier:
    style: str = "reveal"
    name: ClassVar[str] = "answer"
    needs_model: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style {self.style!r} is not one of {', '.join(STYLES)}")

    def propose(self, record) -> ProposalResult:
        users = [m.get("content") or "" for m in record.messages if m.get("role") == "user"]
        question = users[-1] if users else ""
        expected = parse_number((record.reference or "").strip()) if record.reference else None
        expected = expected if expected is not None else question_result(question)
        if expected is None:
            return ProposalResult(reason="no expected result: the record has no numeric reference and the question "
                                         "no arithmetic this verifier reads")
        answered = [i for i in record.assistant_indices if (record.messages[i].get("content") or "").strip()]
        if not answered:
            return ProposalResult(reason="record has no assistant answer")
        index = answered[-1]
        content = record.messages[index]["content"]
        operands = [v for v in (parse_number(n) for n in _NUMBER.findall(question)) if v is not None]
        spans = stated_results(content, operands)
        if not spans:
            return ProposalResult(reason="the answer states no result")
        wrong = [(a, b) for a, b in spans if not same_value(expected, content[a:b])]
        if not wrong:
            return ProposalResult(reason=f"every stated result ({len(spans)}) is the expected one", checked=len(spans))
        start, end = wrong[0]
        given, shown = content[start:end], _shown(expected)
        body = f"the answer is {shown}." if self.style == "reveal" else f"{given} is not the result; compute it again."
        hint_char, text = inline_hint(content, start, body)
        return ProposalResult(checked=len(spans), reason="a stated result differs from the expected one", proposals=[
            HintProposal(message=index, char_start=start, char_end=end, hint_char=hint_char, text=text,
                         rationale=f"the expected result is {shown}, the answer states {given}", confidence=0.95,
                         source=f"verifier:{self.name}")])


def _shown(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.6g}"
