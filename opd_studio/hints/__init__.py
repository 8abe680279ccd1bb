"""Hint models: things that read a record and propose where its error is and what hint to insert before it.

`HINT_MODELS` maps a name (what the CLI and the UI show) to a factory: `HINT_MODELS["arithmetic"](style="nudge")`.
A new hint model is one import and one line here.
"""

from __future__ import annotations

from typing import Callable

from .arithmetic import ArithmeticVerifier
from .base import HintModel, HintProposal, ProposalResult
from .critic import LLMCritic
from .reference import ReferenceVerifier
from .tools import ToolCallVerifier

HINT_MODELS: dict[str, Callable[..., HintModel]] = {
    ArithmeticVerifier.name: ArithmeticVerifier,
    ToolCallVerifier.name: ToolCallVerifier,
    ReferenceVerifier.name: ReferenceVerifier,
    LLMCritic.name: LLMCritic,
}

__all__ = ["HINT_MODELS", "ArithmeticVerifier", "HintModel", "HintProposal", "LLMCritic", "ProposalResult",
           "ReferenceVerifier", "ToolCallVerifier"]
