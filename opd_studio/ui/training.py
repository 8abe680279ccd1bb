"""The Train tab: a few training steps on the curated set, streamed as curves; fix rate; past runs.

The studio holds one model per process. Training attaches a LoRA adapter to it (peft injects it in place), so every
session then scores with the trained weights, and can switch back to the base weights (the adapter disabled) to
compare. Each run starts from the base weights and is saved under the store's runs directory; the store records
which run is active, and `Weights.sync` makes a process carry it (or the base weights, after "Reset to base").
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import queue
import threading
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from ..adapters import load_adapter, reset_to_base, save_run
from ..fix_rate import FixRateConfig, fix_rate, summarize
from ..records import Record
from ..store import Store
from ..train import DriftError, TrainConfig, base_weights, train


@dataclass
class Weights:
    """The process's model, and the run whose adapter it carries (None: the base weights).

    What persists is on disk: each run's adapter (under `Store.runs_dir`) and the store's active run. `sync` brings
    the process in line with them. That is what keeps trained weights between calls on a ZeroGPU Space, where each
    `spaces.GPU` call runs in a worker forked from the main process and what it changes in memory is gone when it
    returns. Elsewhere `sync` costs one SQLite read once the process agrees with the store.
    """

    base: object
    tokenizer: object
    trained: object | None = None
    run_id: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model(self):
        return self.trained if self.trained is not None else self.base

    @property
    def label(self) -> str:
        return f"trained (run {self.run_id})" if self.trained is not None else "base"

    @property
    def version(self) -> int:
        """Which weights a session's cached passes belong to: run ids are never reused, 0 is the base."""
        return self.run_id or 0

    def reset(self) -> None:
        if self.trained is not None:
            self.base = reset_to_base(self.trained)
            self.trained, self.run_id = None, None

    def sync(self, store: Store) -> None:
        """Carry the store's active run: attach its saved adapter, or go back to the base weights."""
        wanted = store.active_run()
        if wanted == self.run_id:
            return
        with self.lock:
            if wanted == self.run_id:
                return
            self.reset()
            if wanted is None:
                return
            path = store.run(wanted)["adapter_path"]
            try:
                self.trained, self.run_id = load_adapter(self.base, path), wanted
            except (FileNotFoundError, TypeError) as exc:
                store.set_active_run(None)
                raise ValueError(f"run {wanted}'s adapter cannot be loaded from {path} ({exc}); the studio is back "
                                 "on the base weights") from None


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


def heldout_records(curated: list[Record] | None = None, limit: int = 8) -> list[Record]:
    """Greedy held-out demo rollouts (with their assistant turns), for drift and the held-out fix rate: of the demo
    families the curated records come from (all families when none is known), taken in turn from each family. A
    few: held-out drift costs one forward of each of them at every step."""
    from ..records import read_records
    from .session import ASSETS

    path = ASSETS / "demo_rollouts.jsonl"
    if not path.is_file():
        return []
    heldout = [r for r in read_records(path) if r.meta.get("split") == "heldout" and r.meta.get("run") == "greedy"]
    families = {r.meta.get("family") for r in curated or []} & {r.meta.get("family") for r in heldout}
    by_family: dict[str, list[Record]] = {}
    for record in heldout:
        if not families or record.meta.get("family") in families:
            by_family.setdefault(record.meta.get("family"), []).append(record)
    interleaved = [r for group in itertools.zip_longest(*by_family.values()) for r in group if r is not None]
    return interleaved[:limit]


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else width
    return "█" * filled + "░" * (width - filled)


def run_training(weights: Weights, store: Store, config: TrainConfig, stop: threading.Event,
                 use_heldout: bool = True):
    """Generator: yields (status text, steps frame, records frame) while training runs in a worker thread.

    Every run starts from the base weights, so runs compare. A finished run is saved under `store.runs_dir` and
    becomes the active run; a run whose drift is over its threshold is neither saved nor applied."""
    records = store.records("accepted")
    if not records:
        raise ValueError("the curated set is empty: accept some hinted records first")
    heldout = heldout_records(records) if use_heldout else []
    updates: queue.Queue = queue.Queue()
    store.set_active_run(None)

    def work() -> None:
        try:
            with weights.lock:
                weights.reset()
                result = train(weights.base, weights.tokenizer, records, config, heldout=heldout or None,
                               on_step=lambda row: updates.put(("row", row)), should_stop=stop.is_set)
            updates.put(("done", result))
        except Exception as exc:  # noqa: BLE001 - reported to the user by the generator (train took its adapter out)
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
            status = (f"`{progress_bar(item['step'], config.steps)}` step {item['step']} / {config.steps} · loss "
                      f"{item.get('loss', float('nan')):.4f} · drift {item.get('drift', float('nan')):.4f}")
            yield status, steps, per_record
            continue
        result = item
        break
    name = f"{len(records)} record{'s' if len(records) != 1 else ''}"
    run_id = store.add_run(config.to_dict(), result.history, name=name, status=result.stopped)
    adapter_path = store.runs_dir / f"run-{run_id}"
    try:
        save_run(result, adapter_path, weights.tokenizer)
    except DriftError as exc:
        with weights.lock:
            weights.base = reset_to_base(result.model)
        outcome = f"not saved and not applied, the studio stays on the base weights: {exc}"
    else:
        store.set_adapter_path(run_id, adapter_path)
        store.set_active_run(run_id)
        with weights.lock:
            weights.trained, weights.run_id = result.model, run_id
        outcome = f"adapter saved to {adapter_path}; the studio now uses it"
    steps, per_record = history_frames(result.history)
    final = result.final
    yield (f"**run {run_id}: {result.steps} steps, stopped by {result.stopped}** · drift "
           f"{final.get('drift', float('nan')):.4f} · {outcome}", steps, per_record)


FIX_RATE_COLUMNS = ["weights", "split", "mode", "answers", "suppressed", "suppressed_n", "corrected", "corrected_n"]
ANSWER_COLUMNS = ["weights", "record", "split", "mode", "seed", "answer", "suppressed", "corrected"]


def measure_fix_rate(weights: Weights, store: Store, samples: int = 2,
                     compare_base: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Regenerate the curated prompts and the held-out demo prompts under the current weights — and, with
    `compare_base`, under the base weights too (the adapter disabled), since a rate means little without the
    rate the model had before training. Returns (summary per weights × split × mode, every answer)."""
    curated = store.records("accepted")
    if not curated:
        raise ValueError("the curated set is empty")
    config = FixRateConfig(samples=int(samples), max_new_tokens=64)
    heldout = heldout_records(curated)
    runs = [(weights.label, contextlib.nullcontext())]
    if compare_base and weights.trained is not None:
        runs.append(("base", base_weights(weights.trained)))
    summaries, answers = [], []
    for label, context in runs:
        with context:
            rows = fix_rate(weights.model, weights.tokenizer, curated, heldout, config)
        summaries.append(summarize(rows).assign(weights=label))
        answers.append(rows.assign(weights=label))
    return pd.concat(summaries)[FIX_RATE_COLUMNS], pd.concat(answers)[ANSWER_COLUMNS]


RUN_COLUMNS = ["run", "records", "steps", "stopped", "loss", "span", "lr", "drift", "mean p(error)", "saved", "in use"]


def runs_table(store: Store) -> pd.DataFrame:
    """Every run, comparable: settings, how it ended, final drift and mean p(error tokens), whether its weights were
    saved, and which one the studio uses now."""
    active = store.active_run()
    table = []
    for run in store.runs().itertuples():
        history = json.loads(run.metrics)
        config = json.loads(run.config)
        final = history[-1] if history else {}
        errors = [math.exp(r["logp_error"]) for r in final.get("records", {}).values()
                  if r.get("logp_error") is not None and not math.isnan(r["logp_error"])]
        mean_p = sum(errors) / len(errors) if errors else None
        table.append({"run": run.id, "records": run.name, "steps": final.get("step"), "stopped": run.status,
                      "loss": config.get("loss"), "span": config.get("span"), "lr": config.get("lr"),
                      "drift": _rounded(final.get("drift")), "mean p(error)": _rounded(mean_p),
                      "saved": bool(run.adapter_path),
                      "in use": "✓" if run.id == active else ""})
    return pd.DataFrame(table, columns=RUN_COLUMNS)


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
