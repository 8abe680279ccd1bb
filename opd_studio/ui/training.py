"""The Train tab's views: metric rows as frames and figures. The run lifecycle itself (train → save → register →
use, the fix rate, the runs table) lives in `opd_studio.workspace`; the functions below with a store argument only
adapt it to the tab's outputs.
"""

from __future__ import annotations

import math
import threading

import pandas as pd
import plotly.graph_objects as go

from ..store import Store
from ..train import DriftError, TrainConfig  # noqa: F401 - the tab's handlers name them through this module
from ..workspace import (ANSWER_COLUMNS, FIX_RATE_COLUMNS, RUN_COLUMNS, Weights,  # noqa: F401
                         Workspace, heldout_records)


def history_frames(history: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-step frame, per-record frame) from metric rows as `train(on_step=…)` sends them."""
    steps = pd.DataFrame([{k: v for k, v in row.items() if k != "records"} for row in history],
                         columns=None if history else ["step", "loss", "drift", "drift_heldout"])
    records = pd.DataFrame([{"step": row["step"], "record": rid, "p_error": math.exp(r["logp_error"]),
                             "p_teacher": math.exp(r["logp_teacher"]), "drift": r["drift"]}
                            for row in history for rid, r in row.get("records", {}).items()],
                           columns=["step", "record", "p_error", "p_teacher", "drift"])
    return steps, records


def loss_figure(steps: pd.DataFrame) -> go.Figure:
    figure = go.Figure()
    if not steps.empty:
        for column, name in (("loss", "loss"), ("drift", "drift (curated, untouched tokens)"),
                             ("drift_heldout", "drift (held-out)")):
            if column in steps and steps[column].notna().any():
                figure.add_trace(go.Scatter(x=steps.step, y=steps[column], name=name, mode="lines+markers"))
    figure.update_layout(title="Loss and drift (mean KL(trained ‖ base), nats/token)", height=280,
                         template="plotly_white", margin=dict(l=50, r=20, t=40, b=40), xaxis_title="step")
    return figure


def run_training(weights: Weights, store: Store, config: TrainConfig, stop: threading.Event,
                 use_heldout: bool = True):
    """Generator: (status text, steps frame, records frame) as `Workspace.train` reports."""
    for progress in Workspace(store).train(weights, config, stop, use_heldout):
        yield (progress.status, *history_frames(progress.history))


def measure_fix_rate(weights: Weights, store: Store, samples: int = 2,
                     compare_base: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    return Workspace(store).fix_rate(weights, samples, compare_base)


def runs_table(store: Store) -> pd.DataFrame:
    return Workspace(store).runs_table()
