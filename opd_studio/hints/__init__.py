"""Hint models: things that read a record and propose where its error is and what hint to insert before it.

`HINT_MODELS` maps a name (what the CLI and the UI show) to a factory: `HINT_MODELS["arithmetic"](style="nudge")`.
A new hint model is one import and one line here: the CLI's `--hint-model` and the studio's dropdown list this
registry. A factory whose `needs_model` is true (the LLM critic) is built with a chat client over a model
(`critic.LocalChat(model, tokenizer)` or an endpoint) as its first argument; the others take only options.
"""

from __future__ import annotations

from typing import Callable

from .answer import AnswerVerifier
from .arithmetic import ArithmeticVerifier
from .base import HintModel, HintProposal, ProposalResult
from .critic import LLMCritic
from .reference import ReferenceVerifier
from .tools import ToolCallVerifier

HINT_MODELS: dict[str, Callable[..., HintModel]] = {
    ArithmeticVerifier.name: ArithmeticVerifier,
    AnswerVerifier.name: AnswerVerifier,
    ToolCallVerifier.name: ToolCallVerifier,
    ReferenceVerifier.name: ReferenceVerifier,
    LLMCritic.name: LLMCritic,
}

# The verifier that judges each demo family's answers (`meta.family` of the bundled tasks).
VERIFIER_OF_FAMILY = {"arithmetic": ArithmeticVerifier.name, "tools": ToolCallVerifier.name,
                      "qa": ReferenceVerifier.name}


def needs_model(name: str) -> bool:
    """The hint model `name` runs a language model (its factory takes a chat client first): the studio runs it on
    its own model, under the model lock, on a few records at a time."""
    return bool(getattr(HINT_MODELS.get(name), "needs_model", False))


def auto_verifier(record) -> str:
    """The verifier to run on `record` when the user chose "auto": its family's, else what its data suggests."""
    family = (record.meta or {}).get("family")
    if family in VERIFIER_OF_FAMILY:
        return VERIFIER_OF_FAMILY[family]
    return ToolCallVerifier.name if record.tools else ReferenceVerifier.name if record.reference \
        else ArithmeticVerifier.name

__all__ = ["HINT_MODELS", "VERIFIER_OF_FAMILY", "AnswerVerifier", "ArithmeticVerifier", "HintModel", "HintProposal", "LLMCritic",
           "ProposalResult", "ReferenceVerifier", "ToolCallVerifier", "auto_verifier", "needs_model"]
