"""Training runs where people track them: trackio (Hugging Face's local-first tracker), as TRL's `report_to`.

    reporter = TrackioReporter(TrackioTarget(project="opd-studio"), config={...})
    train(..., on_step=reporter.log)          # every StepMetrics row, as it is made
    reporter.finish(summary={...})

Local by default: runs go to trackio's SQLite store (`$TRACKIO_DIR`, else `$HF_HOME/trackio`) and `trackio show
--project opd-studio` opens the dashboard. With `space_id` the runs go to that Hugging Face Space's dashboard, with
`dataset_id` they are also kept in that dataset (trackio's own `init` arguments; they need a Hugging Face login).

What each step logs (`step_log`): the step's loss, distill and anchor terms, drift (and held-out drift), learning
rate, gradient norm and seconds; per trained record, `p_error/<id>` = exp(Σ log p(error tokens)) (the probability the
student still writes the record's error), `logp_error/<id>` and `drift/<id>`. NaN values (not measured at that step)
are left out. The run's config is the TrainConfig and what it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .metrics import STEP_COLUMNS, StepMetrics

REPORT_TO = ("none", "trackio")
DEFAULT_PROJECT = "opd-studio"


@dataclass
class TrackioTarget:
    project: str = DEFAULT_PROJECT
    name: str | None = None  # None: trackio names the run
    space_id: str | None = None  # a Hugging Face Space to log to (default: local only)
    dataset_id: str | None = None  # a Hugging Face dataset that keeps the logs (with a Space)


def step_log(row: StepMetrics) -> dict[str, float]:
    """The numbers of one row, flat, without the NaNs."""
    values = {name: getattr(row, name) for name in STEP_COLUMNS[1:]}
    for record_id, record in row.records.items():
        values[f"p_error/{record_id}"] = math.exp(record.logp_error)
        values[f"logp_error/{record_id}"] = record.logp_error
        values[f"drift/{record_id}"] = record.drift
    return {k: float(v) for k, v in values.items() if v is not None and not math.isnan(v)}


class TrackioReporter:
    """One trackio run: `init` now (with the config), `log` per step, `finish` at the end."""

    def __init__(self, target: TrackioTarget, config: dict):
        try:
            import trackio
        except ImportError:
            raise ValueError("--report-to trackio needs the trackio package: pip install trackio") from None
        self.trackio, self.target = trackio, target
        self.run = trackio.init(project=target.project, name=target.name, space_id=target.space_id,
                                dataset_id=target.dataset_id, config=config, auto_log_cpu=False)
        self.name = self.run.name

    # The run's own methods, not trackio.log / trackio.finish: those find the run in a context variable set by the
    # thread that called init, and the studio trains (and logs) in a worker thread.
    def log(self, row: StepMetrics) -> None:
        self.run.log(step_log(row), step=row.step)

    def finish(self) -> None:
        self.run.finish()

    def where(self) -> str:
        if self.target.space_id:
            return f"trackio run {self.name} in https://huggingface.co/spaces/{self.target.space_id}"
        return f"trackio run {self.name} (trackio show --project {self.target.project!r})"
