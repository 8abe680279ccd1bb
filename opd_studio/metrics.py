"""A training run's metric rows: one `StepMetrics` per step (row k describes the weights after k optimizer steps, see
train.py), holding a `RecordMetrics` per trained record.

Rows are typed in memory and stored as JSON objects — run.json's "history", the store's run metrics — through
`to_dict` / `from_dict`, the one place that knows that layout; `load_history` reads a stored run's rows. Rows stored
by earlier releases may lack keys (those in tests/fixtures/store_v0.sqlite hold only step, loss, drift and each
record's logp_error, logp_teacher and drift), and run.json writes NaN as null: both read back as NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# The per-step numbers, in the order the stored rows have always had them.
STEP_COLUMNS = ["step", "loss", "distill", "anchor", "drift", "drift_heldout", "lr", "grad_norm", "seconds",
                "train_seconds"]


@dataclass(frozen=True)
class RecordMetrics:
    """One record under some weights (frozen: rows share the values of records a step did not measure again)."""

    logp_error: float = math.nan  # Σ log p(error tokens) under the student, unhinted
    logp_teacher: float = math.nan  # Σ log r(error tokens) under the target
    drift: float = math.nan  # mean KL(p ‖ b) over the record's anchored tokens
    target_logp: list[float] = field(default_factory=list)  # log p(y_t) per target position: the step timeline
    right_logp: float = math.nan  # log p(right first token) at the first error position; NaN when no hint states it

    def to_dict(self) -> dict[str, Any]:
        return {"logp_error": self.logp_error, "logp_teacher": self.logp_teacher, "drift": self.drift,
                "target_logp": list(self.target_logp), "right_logp": self.right_logp}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RecordMetrics:
        return cls(_number(values.get("logp_error")), _number(values.get("logp_teacher")),
                   _number(values.get("drift")), [_number(x) for x in values.get("target_logp") or []],
                   _number(values.get("right_logp")))


@dataclass
class StepMetrics:
    """Row `step` of a run: the weights after `step` optimizer steps, measured by the forward pass of the next step
    (the last row by one extra forward)."""

    step: int
    loss: float = math.nan  # distill + drift_weight · anchor, mean over the step's micro-batches
    distill: float = math.nan
    anchor: float = math.nan
    drift: float = math.nan  # mean KL(p ‖ b) over the curated records' anchored tokens
    drift_heldout: float = math.nan  # the same over the held-out records' tokens; NaN where not measured
    lr: float = math.nan
    grad_norm: float = math.nan  # before clipping; NaN without clipping and on the last row
    seconds: float = math.nan  # the whole step, since the previous row was made
    train_seconds: float = math.nan  # its forward and backward passes, plus the optimizer update that preceded them
    records: dict[str, RecordMetrics] = field(default_factory=dict)
    rolled_back_from: int | None = None  # on the last row of a run a drift stop rolled back: the step undone

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {name: getattr(self, name) for name in STEP_COLUMNS}
        row["records"] = {record_id: values.to_dict() for record_id, values in self.records.items()}
        if self.rolled_back_from is not None:
            row["rolled_back_from"] = self.rolled_back_from
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> StepMetrics:
        return cls(int(row["step"]), *(_number(row.get(name)) for name in STEP_COLUMNS[1:]),
                   records={record_id: RecordMetrics.from_dict(values)
                            for record_id, values in (row.get("records") or {}).items()},
                   rolled_back_from=row.get("rolled_back_from"))


def load_history(stored: Any) -> list[StepMetrics]:
    """A stored run's rows (run.json's "history", the store's run metrics); anything but a list holds none."""
    return [StepMetrics.from_dict(row) for row in stored] if isinstance(stored, list) else []


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
