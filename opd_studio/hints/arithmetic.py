"""Arithmetic verifier: recompute every `a op b = c` the assistant wrote and flag the wrong results.

A statement is a chain of expressions joined by `=` (also `≈`, "equals", "is equal to", "is"): `48 + 37 = 85`,
`2 + 3 × 4 = 14` (× and ÷ bind tighter, parentheses work), `12 + 5 = 17 + 3 = 20`. Each step of a chain is checked
against the value of the step before it; a step that is itself an expression passes when it has the same value
(`= 2 + 12 = 14`) or when its first number is that value (a running total: `= 17 + 3 = 20`). After a wrong step the
chain goes on from the model's own value, so one slip is flagged once, not at every later step.

Numbers may carry thousands commas (1,234), decimals, a sign or a currency symbol; operators are + - − × x * / ÷ ·
and the words plus/minus/times/multiplied by/divided by. Arithmetic is exact (fractions). A claimed number with d
decimals passes when the true value rounds to it at d decimals (so 10 / 3 = 3.33 passes); when the value is exact at
that precision the check is exact and the confidence 1.0, else 0.9. A chain touching letters, %, ^ or a dangling
operator (`2x + 3 = 7`) is algebra or something else, and is skipped rather than guessed at.

The error span is the wrong result's characters; the hint goes right before it (see `inline.py` for the spaces).
`style="reveal"` states the right result ("48 + 37 = 85."), `style="nudge"` points at the slip without the answer:
the missed carry or borrow, the order of operations, or "recompute 48 + 37 carefully."
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

from .base import HintProposal, ProposalResult
from .inline import inline_hint

STYLES = ("reveal", "nudge")

_WS = r"[ \t]*"
_NUMBER = r"[$€£]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_OPERATOR = r"(?:[+\-−×x*/÷·⋅]|\bplus\b|\bminus\b|\btimes\b|\bmultiplied by\b|\bdivided by\b)"
_RELATION = r"(?:=|≈|\bequals\b|\bis equal to\b|\bis\b)"
_TERM = rf"(?:\({_WS})*[-−]?{_NUMBER}(?:{_WS}\))*"
_EXPRESSION = rf"{_TERM}(?:{_WS}{_OPERATOR}{_WS}{_TERM})*"
_CHAIN = re.compile(rf"{_EXPRESSION}(?:{_WS}{_RELATION}{_WS}{_EXPRESSION})+", re.IGNORECASE)
_TOKEN = re.compile(rf"(?P<num>{_NUMBER})|(?P<rel>{_RELATION})|(?P<op>{_OPERATOR})|(?P<paren>[()])", re.IGNORECASE)

_OPERATOR_SYMBOL = {"+": "+", "plus": "+", "-": "-", "−": "-", "minus": "-", "×": "*", "x": "*", "*": "*",
                    "·": "*", "⋅": "*", "times": "*", "multiplied by": "*", "/": "/", "÷": "/", "divided by": "/"}
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_LEFT_TO_RIGHT = {"+": 1, "-": 1, "*": 1, "/": 1}
_PLACES = ("ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands", "millions")


@dataclass
class _Token:
    kind: str  # "num", "op", "rel", "(" or ")"
    start: int  # characters [start, end) in the message content
    end: int
    symbol: str = ""  # "+", "-", "*", "/" for operators
    value: Fraction | None = None  # for numbers
    decimals: int = 0  # digits shown after the decimal point


@dataclass
class _Slip:
    """One wrong step: `claimed` (a number token) should have been `expected`, the value of `expression`."""

    claimed: _Token
    expected: Fraction
    expression: list[_Token]
    exact: bool


# ------------------------------------------------------------------------------------------------------------------
# Finding and evaluating statements


def find_statements(content: str) -> list[list[_Token]]:
    """Every checkable chain in `content`, as tokens with character positions."""
    statements = []
    for match in _CHAIN.finditer(content):
        if _embedded(content, match.start(), match.end()):
            continue
        tokens = _fold_signs(_tokenize(match.group(), match.start()))
        if tokens and any(t.kind == "op" for t in tokens):
            statements.append(tokens)
    return statements


def _embedded(content: str, start: int, end: int) -> bool:
    """True when the match is a piece of something larger: algebra (2x + 3 = 7), a power, a percentage."""
    before, after = content[:start].rstrip(" \t"), content[end:]
    if start > 0 and (content[start - 1].isalnum() or content[start - 1] in ".,"):
        return True
    if before[-1:] in set("+-−×*/÷·⋅^"):
        return True
    if after[:1].isalnum() or after[:1] in set("%^_"):
        return True
    return bool(re.match(rf"{_WS}(?:[+\-−×*/÷·⋅^]|\*\*){_WS}[\w(]", after))


def _tokenize(text: str, offset: int) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(text):
        start, end = offset + match.start(), offset + match.end()
        if match.lastgroup == "num":
            digits = match.group().lstrip("$€£").replace(",", "")
            decimals = len(digits.split(".")[1]) if "." in digits else 0
            tokens.append(_Token("num", start, end, value=Fraction(digits), decimals=decimals))
        elif match.lastgroup == "op":
            tokens.append(_Token("op", start, end, symbol=_OPERATOR_SYMBOL[match.group().lower()]))
        elif match.lastgroup == "rel":
            tokens.append(_Token("rel", start, end))
        else:
            tokens.append(_Token(match.group(), start, end))
    return tokens


def _fold_signs(tokens: list[_Token]) -> list[_Token]:
    """Turn a minus in value position ("= -5", "3 × -2") into a negative number; it is part of the result."""
    folded: list[_Token] = []
    for token in tokens:
        previous = folded[-1] if folded else None
        if (previous is not None and previous.kind == "op" and previous.symbol == "-" and token.kind == "num"
                and previous.end == token.start and (len(folded) == 1 or folded[-2].kind in ("op", "rel", "("))):
            folded[-1] = _Token("num", previous.start, token.end, value=-token.value, decimals=token.decimals)
        else:
            folded.append(token)
    return folded


def _split_steps(tokens: list[_Token]) -> list[list[_Token]]:
    """The expressions between relations, with parentheses that belong to the surrounding text dropped
    ("(12 + 5 = 17)" is a parenthetical remark, not an unbalanced expression)."""
    steps, current = [], []
    for token in tokens + [_Token("rel", 0, 0)]:
        if token.kind != "rel":
            current.append(token)
            continue
        while current and current[0].kind == "(" and _depth(current) > 0:
            current = current[1:]
        while current and current[-1].kind == ")" and _depth(current) < 0:
            current = current[:-1]
        steps.append(current)
        current = []
    return steps


def _depth(tokens: list[_Token]) -> int:
    return sum(t.kind == "(" for t in tokens) - sum(t.kind == ")" for t in tokens)


def evaluate(tokens: list[_Token], precedence: dict[str, int] = _PRECEDENCE) -> Fraction | None:
    """Exact value of an expression (shunting-yard), or None when it does not parse or divides by zero."""
    values: list[Fraction] = []
    pending: list[str] = []

    def apply() -> None:
        symbol, right, left = pending.pop(), values.pop(), values.pop()
        values.append(_APPLY[symbol](left, right))  # Fraction / 0 raises ZeroDivisionError

    want_value = True
    try:
        for token in tokens:
            if token.kind == "num" and want_value:
                values.append(token.value)
                want_value = False
            elif token.kind == "(" and want_value:
                pending.append("(")
            elif token.kind == ")" and not want_value:
                while pending and pending[-1] != "(":
                    apply()
                if not pending:
                    return None
                pending.pop()
            elif token.kind == "op" and not want_value:
                while pending and pending[-1] != "(" and precedence[pending[-1]] >= precedence[token.symbol]:
                    apply()
                pending.append(token.symbol)
                want_value = True
            else:
                return None
        if want_value or "(" in pending:
            return None
        while pending:
            apply()
    except ZeroDivisionError:
        return None
    return values[0]


def _agrees(expected: Fraction, claimed: Fraction, decimals: int) -> tuple[bool, bool]:
    """(claimed is right, the check was exact): right means `expected` rounds to `claimed` at `decimals`."""
    scale = 10 ** decimals
    if (expected * scale).denominator == 1:
        return expected == claimed, True
    return abs(expected - claimed) <= Fraction(1, 2 * scale), False


def check_statement(tokens: list[_Token]) -> tuple[int, list[_Slip]]:
    """(number of `=` steps checked, the wrong ones) for one chain."""
    steps = _split_steps(tokens)
    values = [evaluate(step) for step in steps]
    if any(value is None for value in values):
        return 0, []
    slips = []
    for previous, step, value, previous_value in zip(steps, steps[1:], values[1:], values):
        first = step[0]
        if len(step) == 1:
            right, exact = _agrees(previous_value, first.value, first.decimals)
        elif _agrees(previous_value, value, max(t.decimals for t in step if t.kind == "num"))[0]:
            right, exact = True, True  # the same value written another way ("= 2 + 12")
        elif first.kind == "num":  # a running total ("= 17 + 3"): its first number must be the value so far
            right, exact = _agrees(previous_value, first.value, first.decimals)
        else:
            right, exact = False, False
        if not right and first.kind == "num":
            slips.append(_Slip(first, previous_value, previous, exact))
    return len(steps) - 1, slips


# ------------------------------------------------------------------------------------------------------------------
# Hint text


def format_number(value: Fraction, commas: bool = False) -> str:
    if value.denominator == 1:
        return f"{int(value):,}" if commas else str(int(value))
    text = f"{float(value):.6f}".rstrip("0")
    return text if Fraction(text) == value else f"{float(value):.2f}"


def _nudge(slip: _Slip, content: str) -> str:
    expression = content[slip.expression[0].start: slip.expression[-1].end]
    operands = [t.value for t in slip.expression if t.kind == "num"]
    symbols = [t.symbol for t in slip.expression if t.kind == "op"]
    claimed = slip.claimed.value
    whole = all(v.denominator == 1 and v >= 0 for v in operands + [claimed])
    if whole and symbols == ["+"]:
        note = _carry_note(int(operands[0]), int(operands[1]), int(claimed))
        if note:
            return note
    if whole and symbols == ["-"] and operands[0] >= operands[1]:
        note = _borrow_note(int(operands[0]), int(operands[1]), int(claimed))
        if note:
            return note
    mixes_precedence = {"+", "-"} & set(symbols) and {"*", "/"} & set(symbols)
    if mixes_precedence and not any(t.kind == "(" for t in slip.expression):
        in_order = evaluate(slip.expression, _LEFT_TO_RIGHT)
        if in_order is not None and _agrees(in_order, claimed, slip.claimed.decimals)[0]:
            return "multiply and divide before you add and subtract."
    return f"recompute {expression} carefully."


def _first_wrong_place(correct: int, claimed: int) -> int | None:
    for place in range(max(len(str(correct)), len(str(claimed)))):
        if (correct // 10 ** place) % 10 != (claimed // 10 ** place) % 10:
            return place
    return None


def _place_name(place: int) -> str:
    return _PLACES[place] if place < len(_PLACES) else f"10^{place}"


def _carry_note(a: int, b: int, claimed: int) -> str | None:
    place = _first_wrong_place(a + b, claimed)
    if not place or a % 10 ** place + b % 10 ** place < 10 ** place:
        return None  # the first wrong digit had no carry coming into it
    below = 10 ** (place - 1)
    digit_a, digit_b = (a // below) % 10, (b // below) % 10
    carry_in = int(a % below + b % below >= below)
    terms = f"{digit_a} + {digit_b}" + (" + 1" if carry_in else "")
    return f"{terms} = {digit_a + digit_b + carry_in}, so carry the 1 into the {_place_name(place)} place."


def _borrow_note(a: int, b: int, claimed: int) -> str | None:
    place = _first_wrong_place(a - b, claimed)
    if not place or a % 10 ** place >= b % 10 ** place:
        return None  # no borrow was taken from the first wrong digit
    return f"the {_place_name(place - 1)} place needs a borrow, so take 1 from the {_place_name(place)}."


# ------------------------------------------------------------------------------------------------------------------
# The verifier


@dataclass
class ArithmeticVerifier:
    style: str = "reveal"
    name: ClassVar[str] = "arithmetic"

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style {self.style!r} is not one of {', '.join(STYLES)}")

    def propose(self, record) -> ProposalResult:
        proposals, checked = [], 0
        for index in record.assistant_indices:
            content = record.messages[index].get("content") or ""
            for statement in find_statements(content):
                steps, slips = check_statement(statement)
                checked += steps
                proposals += [self._proposal(index, content, slip) for slip in slips]
        if proposals:
            return ProposalResult(proposals, reason=f"{len(proposals)} of {checked} arithmetic statements are wrong",
                                  checked=checked)
        if not checked:
            return ProposalResult(reason="no arithmetic found")
        return ProposalResult(reason=f"all {checked} arithmetic statements are correct", checked=checked)

    def _proposal(self, index: int, content: str, slip: _Slip) -> HintProposal:
        expression = content[slip.expression[0].start: slip.expression[-1].end]
        claimed = content[slip.claimed.start: slip.claimed.end]
        commas = "," in claimed or "," in expression
        expected = format_number(slip.expected, commas)
        if self.style == "reveal":
            body = f"{expression} = {expected}."
        else:
            body = _nudge(slip, content)
        hint_char, text = inline_hint(content, slip.claimed.start, body)
        return HintProposal(
            message=index, char_start=slip.claimed.start, char_end=slip.claimed.end, hint_char=hint_char,
            text=text, rationale=f"{expression} = {expected}, not {claimed}",
            confidence=1.0 if slip.exact else 0.9, source=f"verifier:{self.name}")
