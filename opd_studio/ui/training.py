"""The Train tab: a few training steps on the curated set, streamed as curves; fix rate; reset; past runs.

The studio holds one model per process. Training attaches a LoRA adapter to it (peft injects it in place), so every
session then scores with the trained weights, and can switch back to the base weights (the adapter disabled) to
compare. Each run starts from the base weights; "Reset to base" removes the adapter. `VERSION` counts weight
changes, so sessions know when their cached passes are stale.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from ..adapters import reset_to_base, save_run
from ..fix_rate import FixRateConfig, fix_rate, summarize
from ..records import Record
from ..store import Store, data_dir
from ..train import DriftError, TrainConfig, train


@dataclass
class Weights:
    """The process's current weights: the base model, or the model of the last run (a peft model)."""

    base: object
    tokenizer: object
    trained: object | None = None
    run_id: int | None = None
    version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model(self):
        return self.trained if self.trained is not None else self.base

    @property
    def label(self) -> str:
        return f"trained (run {self.run_id})" if self.trained is not None else "base"

    def reset(self) -> None:
        if self.trained is not None:
            self.base = reset_to_base(self.trained)
            self.trained, self.run_id = None, None
            self.version += 1


def history_frames(history: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-step frame, per-record frame) from metric rows as `train(on_step=…)` sends them."""
    steps = pd.DataFrame([{k: v for k, v in row.items() if k != "records"} for row in history])
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


def heldout_records(limit: int = 8) -> list[Record]:
    """Greedy held-out demo rollouts (with their assistant turns), for drift and the held-out fix rate. A few:
    held-out drift costs one forward of each of them at every step."""
    from ..records import read_records
    from .session import ASSETS

    path = ASSETS / "demo_rollouts.jsonl"
    if not path.is_file():
        return []
    heldout = [r for r in read_records(path) if r.meta.get("split") == "heldout" and r.meta.get("run") == "greedy"]
    return heldout[:limit]


def run_training(weights: Weights, store: Store, config: TrainConfig, stop: threading.Event,
                 use_heldout: bool = True):
    """Generator: yields (status text, steps frame, records frame) while training runs in a worker thread."""
    records = store.records("accepted")
    if not records:
        raise ValueError("the curated set is empty: accept some hinted records first")
    heldout = heldout_records() if use_heldout else []
    updates: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            with weights.lock:
                weights.reset()  # every run starts from the base weights, so runs compare
                result = train(weights.base, weights.tokenizer, records, config, heldout=heldout or None,
                               on_step=lambda row: updates.put(("row", row)), should_stop=stop.is_set)
            updates.put(("done", result))
        except Exception as exc:  # noqa: BLE001 - reported to the user by the generator
            updates.put(("error", exc))

    threading.Thread(target=work, daemon=True).start()
    history: list[dict] = []
    while True:
        kind, item = updates.get()
        if kind == "error":
            raise item if isinstance(item, (ValueError, DriftError)) else RuntimeError(str(item))
        if kind == "row":
            history.append(item)
            steps, per_record = history_frames(history)
            yield f"step {item['step']} / {config.steps} · loss {item.get('loss', float('nan')):.4f}", steps, per_record
            continue
        result = item
        break
    run_id = store.add_run(config.to_dict(), result.history, name=f"{len(records)} records", status=result.stopped)
    adapter_path = data_dir() / "runs" / f"run-{run_id}"
    try:
        save_run(result, adapter_path, weights.tokenizer)
        saved = f"adapter saved to {adapter_path}"
    except DriftError as exc:
        saved = f"not saved: {exc}"
    with weights.lock:
        weights.trained, weights.run_id = result.model, run_id
        weights.version += 1
    steps, per_record = history_frames(result.history)
    final = result.final
    yield (f"**run {run_id}: {result.steps} steps, stopped by {result.stopped}** · drift "
           f"{final.get('drift', float('nan')):.4f} · {saved}", steps, per_record)


def measure_fix_rate(weights: Weights, store: Store, samples: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    curated = store.records("accepted")
    if not curated:
        raise ValueError("the curated set is empty")
    rows = fix_rate(weights.model, weights.tokenizer, curated, heldout_records(),
                    FixRateConfig(samples=int(samples), max_new_tokens=64))
    return summarize(rows), rows


def runs_table(store: Store) -> pd.DataFrame:
    runs = store.runs()
    table = []
    for run in runs.itertuples():
        history = json.loads(run.metrics)
        config = json.loads(run.config)
        final = history[-1] if history else {}
        records = final.get("records", {})
        mean_p = (sum(math.exp(r["logp_error"]) for r in records.values()) / len(records)) if records else None
        table.append({"run": run.id, "records": run.name, "steps": final.get("step"), "stopped": run.status,
                      "loss": config.get("loss"), "lr": config.get("lr"), "drift": final.get("drift"),
                      "mean p(error)": mean_p})
    return pd.DataFrame(table, columns=["run", "records", "steps", "stopped", "loss", "lr", "drift",
                                        "mean p(error)"])
