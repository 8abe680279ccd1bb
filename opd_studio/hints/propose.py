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
    for proposal in proposals:
        error = proposal.to_error()
        proposal.token_start, proposal.token_end = trajectory.error_token_span(error)
        proposal.hint_token, _ = trajectory.char_to_token(proposal.message, proposal.hint_char)
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
