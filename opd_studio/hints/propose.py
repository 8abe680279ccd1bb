"""Run a hint model on records: locate its proposals in tokens and attach them as proposed hints.

`locate` fills a proposal's token fields from the tokenized trajectory (error span and hint position), so the UI
and the scorer can use them; `propose_record` returns the record with the proposals added as hints with status
"proposed" (the first proposal's span becomes the record's error span if it has none) and the hint model's result.
"""

from __future__ import annotations

import copy

from ..records import Record
from ..trajectory import Trajectory, TrajectoryError, build_trajectory
from .base import HintProposal, ProposalResult


def locate(proposals: list[HintProposal], trajectory: Trajectory) -> list[HintProposal]:
    """Fill in token positions. A hint written before the spaces that precede the error ("= (Hint: …) 32") lands,
    with tokenizers that make those spaces tokens of their own (SmolLM2 before digits), on a space token: the loss
    span would then start at a token that is not the mistake, and the teacher would be asked to drop the space.
    Such a hint moves to the error's first token and keeps the trajectory's space in front of it."""
    for proposal in proposals:
        error = proposal.to_error()
        proposal.token_start, proposal.token_end = trajectory.error_token_span(error)
        proposal.hint_token, _ = trajectory.char_to_token(proposal.message, proposal.hint_char)
        between = range(proposal.hint_token, proposal.token_start)
        if proposal.placement == "inline" and between and all(trajectory.token_texts[t].isspace() for t in between):
            proposal.hint_token = proposal.token_start
            proposal.hint_char = trajectory.token_to_char(proposal.token_start)[1]
            proposal.text = proposal.text.strip() + " "
    return proposals


def propose_record(hint_model, record: Record, tokenizer=None) -> tuple[Record, ProposalResult]:
    result = hint_model.propose(record)
    updated = copy.deepcopy(record)
    if tokenizer is not None and result.proposals:
        try:
            locate(result.proposals, build_trajectory(tokenizer, record))
        except TrajectoryError as exc:
            raise TrajectoryError(f"record {record.id!r}: {hint_model.name} proposed a position that does not fit "
                                  f"the trajectory: {exc}") from None
    existing = {(h.message, h.char, h.text) for h in updated.hints}
    for proposal in result.proposals:
        hint = proposal.to_hint()
        if (hint.message, hint.char, hint.text) not in existing:
            updated.hints.append(hint)
    if result.proposals and updated.error is None:
        updated.error = result.proposals[0].to_error()
    updated.meta = {**updated.meta, f"proposal:{hint_model.name}": result.reason or
                    f"{len(result.proposals)} proposal(s)"}
    if result.raw is not None:
        updated.meta[f"raw:{hint_model.name}"] = result.raw
    return updated, result
