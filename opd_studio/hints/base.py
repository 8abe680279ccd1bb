"""What every hint model returns: proposals (where the error is, where the hint goes, what it says, why).

A hint model is anything with `name` and `propose(record) -> ProposalResult`, and `needs_model = True` when it runs a
language model (the critic; see `hints.needs_model`). Verifiers work on message text and
return character positions; `hints.propose.locate` adds the token positions once the record is tokenized.
A hint model that finds nothing says why in `ProposalResult.reason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..records import ErrorSpan, Hint


@dataclass
class HintProposal:
    message: int  # index of the assistant message that holds the error
    char_start: int  # error span [char_start, char_end) in that message's content
    char_end: int
    hint_char: int  # where the hint is inserted (character offset in the same message), usually char_start
    text: str
    placement: str = "inline"
    rationale: str = ""
    confidence: float = 1.0
    source: str = "manual"
    # Filled in by hints.propose.locate: token indices into the tokenized trajectory.
    token_start: int | None = None
    token_end: int | None = None
    hint_token: int | None = None

    def to_hint(self, status: str = "proposed") -> Hint:
        return Hint(text=self.text, message=self.message, char=self.hint_char, placement=self.placement,
                    source=self.source, status=status, rationale=self.rationale)

    def to_error(self) -> ErrorSpan:
        return ErrorSpan(message=self.message, char_start=self.char_start, char_end=self.char_end)


@dataclass
class ProposalResult:
    proposals: list[HintProposal] = field(default_factory=list)
    reason: str = ""  # why there is no proposal (or a note on what was checked)
    raw: str | None = None  # raw model output, kept for inspection (LLM critic)
    checked: int = 0  # how many things were checked (statements, tool calls, answers): 0 means nothing applied


class HintModel(Protocol):
    name: str

    def propose(self, record) -> ProposalResult: ...
