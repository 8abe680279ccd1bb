"""Reference verifier: compare the final assistant answer with the record's `reference` and flag the wrong answer.

Only the last assistant message with text is judged. Both sides are normalized: Unicode folded (accents dropped),
lower case, punctuation and the articles a/an/the dropped, thousands commas removed, numbers written one way
(3.50 → 3.5, "eight" → 8 for zero to twenty).

- A numeric reference ("42", "1889") is compared with the one number the model gave as its answer: the first
  number after the last "answer is" / "answer:" / "result is"; else the number after the last "="; else the last
  number in the message. Containment would be wrong here: "50 - 25 = 35" contains the reference 25.
- Any other reference ("Paris") matches when its normalized words occur, in order and contiguous, in the
  normalized answer. When they do not, the flagged span is the model's answer, found as: the words after the last
  "answer is" / "answer:"; else the words after the first is/are/was/were of the first sentence ("The capital of
  France is Lyon." → "Lyon"); else the first sentence. A span stops at the end of its clause (, ; ( ! ? a line
  break, a sentence end, or "which/and/because/but/so/where/who").

`style="reveal"` hints "(Hint: the answer is Paris.)", `style="nudge"` only says the given answer is wrong.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

from .base import HintProposal, ProposalResult
from .inline import inline_hint

STYLES = ("reveal", "nudge")

_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty").split()
# Numbers, but not the pieces of a time of day ("22:30") or a version ("3.2.1"), which are never the answer.
_NUMBER = re.compile(r"(?<![\d:.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d:]|\.\d)|\b(?:"
                     + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
_ANSWER_MARKER = re.compile(r"\b(?:answer|result)\s*(?:is\b\s*:?|:|=)\s*", re.IGNORECASE)
_EQUALS = re.compile(r"=\s*")
_COPULA = re.compile(r"\b(?:is|are|was|were)\s+", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[,;!?(\n]|\.(?=\s|$)|\s(?:which|and|because|but|so|where|who)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_WORD = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+")
_ARTICLES = {"a", "an", "the"}


# ------------------------------------------------------------------------------------------------------------------
# Normalizing


def parse_number(text: str) -> Fraction | None:
    text = text.strip().lower().replace(",", "")
    if text in _NUMBER_WORDS:
        return Fraction(_NUMBER_WORDS.index(text))
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def normalize(text: str) -> list[str]:
    """The words of `text`, compared case-, accent-, punctuation- and number-format-blind."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).lower()
    folded = re.sub(r"(?<=\d),(?=\d{3}\b)", "", folded)
    words = []
    for word in _WORD.findall(folded):
        if word in _ARTICLES:
            continue
        number = parse_number(word)
        words.append(_number_text(number) if number is not None else word)
    return words


def _number_text(number: Fraction) -> str:
    return str(number.numerator) if number.denominator == 1 else f"{float(number):.10f}".rstrip("0")


def _contains(words: list[str], part: list[str]) -> bool:
    return any(words[i: i + len(part)] == part for i in range(len(words) - len(part) + 1))


# ------------------------------------------------------------------------------------------------------------------
# Locating the model's answer


def numeric_answer(content: str) -> tuple[int, int] | None:
    """Characters of the number the model gave as its answer, or None when it gave none."""
    for marker in (_ANSWER_MARKER, _EQUALS):
        found = list(marker.finditer(content))
        if found:
            number = _NUMBER.search(content, found[-1].end())
            sentence_end = _SENTENCE_END.search(content, found[-1].end())
            if number and (sentence_end is None or number.start() < sentence_end.start()):
                return number.span()
    numbers = list(_NUMBER.finditer(content))
    return numbers[-1].span() if numbers else None


def text_answer(content: str) -> tuple[int, int]:
    """Characters of the words the model gave as its answer (see the module docstring for the order of tries)."""
    markers = list(_ANSWER_MARKER.finditer(content))
    first_sentence_end = _end_of(_SENTENCE_END, content, 0)
    copula = _COPULA.search(content, 0, first_sentence_end)
    if markers:
        start = markers[-1].end()
    elif copula:
        start = copula.end()
    else:
        start = len(content) - len(content.lstrip())
        return _trimmed(content, start, first_sentence_end)
    return _trimmed(content, start, _end_of(_CLAUSE_END, content, start))


def _end_of(pattern: re.Pattern, content: str, start: int) -> int:
    match = pattern.search(content, start)
    return match.start() if match else len(content)


def _trimmed(content: str, start: int, end: int) -> tuple[int, int]:
    while end > start and (content[end - 1].isspace() or content[end - 1] in ".,;:!?\"'*"):
        end -= 1
    while start < end and content[start] in "\"'*":
        start += 1
    return (start, end) if end > start else (start, min(start + 1, len(content)))


# ------------------------------------------------------------------------------------------------------------------
# The verifier


@dataclass
class ReferenceVerifier:
    style: str = "reveal"
    name: ClassVar[str] = "reference"

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style {self.style!r} is not one of {', '.join(STYLES)}")

    def propose(self, record) -> ProposalResult:
        reference = (record.reference or "").strip()
        if not reference:
            return ProposalResult(reason="record has no reference")
        answered = [i for i in record.assistant_indices if (record.messages[i].get("content") or "").strip()]
        if not answered:
            return ProposalResult(reason="record has no assistant answer")
        index = answered[-1]
        content = record.messages[index]["content"]
        expected_number = parse_number(reference)
        if expected_number is not None:
            span = numeric_answer(content)
            if span and parse_number(content[span[0]: span[1]]) == expected_number:
                return ProposalResult(reason="answer matches the reference", checked=1)
            span = span or text_answer(content)
            confidence = 0.9
        else:
            if _contains(normalize(content), normalize(reference)):
                return ProposalResult(reason="answer matches the reference", checked=1)
            span = text_answer(content)
            confidence = 0.7  # where a free-text answer sits is a guess
        given = content[span[0]: span[1]]
        body = f"the answer is {reference}." if self.style == "reveal" else f"{given} is not the answer; think again."
        hint_char, text = inline_hint(content, span[0], body)
        return ProposalResult(checked=1, proposals=[HintProposal(
            message=index, char_start=span[0], char_end=span[1], hint_char=hint_char, text=text,
            rationale=f"the answer is {reference!r}, the model said {given!r}", confidence=confidence,
            source=f"verifier:{self.name}")], reason="answer differs from the reference")
