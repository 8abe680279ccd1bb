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

# The verifier that judges each demo family's answers (`meta.family` of the bundled tasks).
VERIFIER_OF_FAMILY = {"arithmetic": ArithmeticVerifier.name, "tools": ToolCallVerifier.name,
                      "qa": ReferenceVerifier.name}


def auto_verifier(record) -> str:
    """The verifier to run on `record` when the user chose "auto": its family's, else what its data suggests."""
    family = (record.meta or {}).get("family")
    if family in VERIFIER_OF_FAMILY:
        return VERIFIER_OF_FAMILY[family]
    return ToolCallVerifier.name if record.tools else ReferenceVerifier.name if record.reference \
        else ArithmeticVerifier.name

__all__ = ["HINT_MODELS", "VERIFIER_OF_FAMILY", "ArithmeticVerifier", "HintModel", "HintProposal", "LLMCritic",
           "ProposalResult", "ReferenceVerifier", "ToolCallVerifier", "auto_verifier"]
