"""The curated work of one user: the store, the weights the model carries, training runs, review and the fix rate.

The studio, the command line and the benchmarks all go through this module, so each rule lives once:

- **Records come in** through `add_rollouts` / `import_file` (never replacing a reviewed record, see `store.py`) and
  are **reviewed** through `review` (the only write that replaces a current version; every version is kept).
- **Only accepted hints are trained on**: `training_records` gives the accepted records, each with its accepted
  hints (a record accepted without hints only anchors).
- **A run's lifecycle**: train (from the base weights) → save the adapter under the store's runs directory →
  register it in the store → make it the active run. `Weights.sync` makes any process (a Gradio worker, a ZeroGPU
  fork, a later `opd-studio score --run N`) carry the store's active run. A run whose drift is over its threshold
  is registered but neither saved nor used.

Ids: a generated rollout's id is derived from its content (`rollout_id`, sha256), and a typed prompt's from its
text (`prompt_id`), so the same rollout has the same id in every process and after a restart — generating it again
finds the reviewed record instead of replacing it.

Nothing here imports Gradio.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import queue
import threading
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator

import pandas as pd

from .adapters import load_adapter, load_run, reset_to_base, save_run
from .fix_rate import FixRateConfig, fix_rate, summarize
from .metrics import StepMetrics, load_history
from .objective import build_example
from .records import Record, read_records
from .store import AddReport, Store, consistent, open_store
from .train import DriftError, Timeline, TrainConfig, TrainResult, base_weights, metrics_frames, timeline, train
from .trajectory import build_trajectory

# ------------------------------------------------------------------------------------------------------------------
# Where things are


def assets_dir() -> Path:
    """The demo tasks and rollouts: inside the installed package, or the repository's assets/ when run from a
    checkout."""
    packaged = Path(str(resources.files("opd_studio") / "assets"))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "assets"


def asset_text(name: str) -> str:
    """A script or style sheet of the studio's page: files under assets/studio/ (shipped inside the package), so
    that they are read, linted and diffed as JS and CSS rather than as Python strings."""
    return (assets_dir() / "studio" / name).read_text(encoding="utf-8")


def demo_records(name: str = "demo_rollouts.jsonl") -> list[Record]:
    path = assets_dir() / name
    return read_records(path) if path.is_file() else []


def model_label(model) -> str:
    """What the store records as the model (and tokenizer): its name, never a machine-local cache path."""
    return str(getattr(getattr(model, "config", None), "name_or_path", "") or "unknown")


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


def prompt_id(prompt: str) -> str:
    return f"prompt-{_digest(prompt)}"


def rollout_id(source_id: str, record: Record) -> str:
    """`source_id` and a hash of the trajectory (messages, tools, exact token ids): equal rollouts, equal ids."""
    return f"{source_id}-{_digest([record.messages, record.tools, record.response_token_ids])}"


# ------------------------------------------------------------------------------------------------------------------
# The weights the process's model carries


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
    store_path: Path | None = None  # whose active run the weights carry (one process may serve several workspaces)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model(self):
        return self.trained if self.trained is not None else self.base

    @property
    def label(self) -> str:
        return f"trained (run {self.run_id})" if self.trained is not None else "base"

    @property
    def version(self) -> tuple:
        """Which weights a session's cached passes belong to: (workspace, run); run ids are never reused."""
        return (str(self.store_path), self.run_id or 0)

    def reset(self) -> None:
        if self.trained is not None:
            self.base = reset_to_base(self.trained)
            self.trained, self.run_id = None, None

    def sync(self, store: Store) -> None:
        """Carry the store's active run: attach its saved adapter, or go back to the base weights."""
        if getattr(self.base, "served", False):  # a served model (served.ServedModel): its weights are the server's
            return
        wanted = store.active_run()
        if wanted == self.run_id and self.store_path == store.path:
            return
        with self.lock:
            if wanted == self.run_id and self.store_path == store.path:
                return
            self.reset()
            self.store_path = store.path
            if wanted is None:
                return
            path = store.run(wanted)["adapter_path"]
            try:
                self.trained, self.run_id = load_adapter(self.base, path), wanted
            except (FileNotFoundError, TypeError, ValueError) as exc:
                store.set_active_run(None)
                raise ValueError(f"run {wanted}'s adapter cannot be loaded from {path} ({exc}); back on the base "
                                 "weights") from None


# ------------------------------------------------------------------------------------------------------------------
# Runs


@dataclass
class RunOutcome:
    run_id: int
    saved: bool
    message: str  # one line for the user


@dataclass
class TrainProgress:
    """What a running training reports: a status line and the metric rows so far (row k = after k steps)."""

    status: str
    history: list[StepMetrics]
    outcome: RunOutcome | None = None  # set on the last report


def progress_bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else width
    return "█" * filled + "░" * (width - filled)


def heldout_records(curated: list[Record] | None = None, limit: int = 8) -> list[Record]:
    """Greedy held-out demo rollouts (with their assistant turns), for drift and the held-out fix rate: of the demo
    families the curated records come from (all families when none is known), taken in turn from each family. A
    few: held-out drift costs one forward of each of them at every step."""
    heldout = [r for r in demo_records() if r.meta.get("split") == "heldout" and r.meta.get("run") == "greedy"]
    families = {r.meta.get("family") for r in curated or []} & {r.meta.get("family") for r in heldout}
    by_family: dict[str, list[Record]] = {}
    for record in heldout:
        if not families or record.meta.get("family") in families:
            by_family.setdefault(record.meta.get("family"), []).append(record)
    interleaved = [r for group in itertools.zip_longest(*by_family.values()) for r in group if r is not None]
    return interleaved[:limit]


RUN_COLUMNS = ["run", "records", "steps", "stopped", "target", "loss", "span", "lr", "drift", "mean p(error)", "saved",
               "in use"]
FIX_RATE_COLUMNS = ["weights", "split", "mode", "answers", "suppressed", "suppressed_n", "corrected", "corrected_n"]
ANSWER_COLUMNS = ["weights", "record", "split", "mode", "seed", "answer", "suppressed", "corrected"]
CURATED_COLUMNS = ["id", "status", "prompt", "answer", "hint", "reviewer", "updated", "revisions", "sources"]


# ------------------------------------------------------------------------------------------------------------------
# The workspace


@dataclass
class RunTimeline:
    run: int
    timeline: Timeline
    trajectory: object  # the record's `Trajectory` (tokens to draw)
    error_span: tuple[int, int] | None
    record_ids: list[str]  # the run's records that have target positions (what the picker offers)


class ReadOnlyError(ValueError):
    """A write to a workspace the caller may only read (an anonymous visitor on a Space); the message says why."""


@dataclass
class Workspace:
    store: Store
    user: str | None = None  # the signed-in name on a Space; None when the studio runs for one person
    read_only: str | None = None  # why this caller may not write (None: they may); see access.py

    @classmethod
    def open(cls, path: str | Path | None = None, user: str | None = None) -> "Workspace":
        return cls(open_store(path), user)

    @property
    def writable(self) -> bool:
        return self.read_only is None

    def require_write(self, action: str) -> None:
        if self.read_only is not None:
            raise ReadOnlyError(f"{self.read_only}: you cannot {action} here")

    # -- records in -----------------------------------------------------------------------------------------------

    def add_rollouts(self, records: list[Record], origin: str, model=None) -> AddReport:
        """Generated or uploaded rollouts go to the review queue; a reviewed record is never replaced."""
        self.require_write("add records")
        return self.store.add(records, origin=origin, model=model_label(model) if model is not None else None)

    def import_file(self, path, max_bytes: int = 50_000_000, max_records: int | None = None) -> AddReport:
        """A curated export keeps its review status; plain rollouts go to the review queue (`Store.import_file`)."""
        self.require_write("import records")
        return self.store.import_file(path, max_bytes, max_records)

    def export(self, path, status: str | None = "accepted", fmt: str | None = None) -> int:
        """jsonl / parquet / datasets, every record of `status`, marked with its review status (`Store.export`)."""
        return self.store.export(path, status, fmt)

    # -- review ---------------------------------------------------------------------------------------------------

    def review(self, record: Record, status: str, *, model=None, reviewer: str | None = None,
               span: str | None = None, seconds: float = 0.0, as_right: bool = False) -> Record:
        """The reviewer's verdict on `record` as edited: `accepted` (needs a hint, or `as_right`), `rejected` or
        `pending`. The previous version stays in the record's revisions. Returns what was stored."""
        self.require_write("review records")
        if as_right:  # nothing wrong: stored without hints or error span, it only anchors training
            record = copy.deepcopy(record)
            record.hints, record.error, status = [], None, "accepted"
        elif status == "accepted" and not record.hints:
            raise ValueError("accepting needs a hint: click a token to place one, keep the record as right, or "
                             "reject it")
        reviewer = self.user or reviewer or "anonymous"
        label = model_label(model) if model is not None else None
        self.store.save(record, status, model=label, tokenizer=label, reviewer=reviewer, span=span,
                        review_seconds=max(0.0, seconds), note="kept as right" if as_right else status)
        return consistent(record, status)

    def delete(self, record_id: str, undo: bool = False) -> None:
        """Soft delete (`undo` brings the record back)."""
        self.require_write("delete records")
        (self.store.restore if undo else self.store.delete)(record_id)

    def revisions(self, record_id: str) -> pd.DataFrame:
        return self.store.revisions(record_id)

    def restore(self, record_id: str, rev: int) -> int:
        self.require_write("restore revisions")
        return self.store.restore_revision(record_id, rev, reviewer=self.user)

    def training_records(self) -> list[Record]:
        """The curated set as training sees it: accepted records, each with only its accepted hints."""
        records = []
        for record in self.store.records("accepted"):
            record.hints = [h for h in record.hints if h.status == "accepted"]
            records.append(record)
        return records

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    def curated_table(self, status: str | None = None, source: str | None = None,
                      deleted: bool = False) -> pd.DataFrame:
        """What was curated, readable: prompt, answer, hint text, reviewer, when, how many versions."""
        table = self.store.table(status=status, source=source, deleted=deleted)
        rows = []
        for row in table.itertuples():
            record = Record.from_dict(json.loads(row.record))
            users = [m for m in record.messages if m["role"] == "user"]
            answers = [m for m in record.messages if m["role"] == "assistant"]
            rows.append({"id": row.id, "status": row.status,
                         "prompt": _short((users[-1].get("content") or "") if users else ""),
                         "answer": _short((answers[-1].get("content") or "") if answers else ""),
                         "hint": _short(" | ".join(h.text.strip() for h in record.hints)),
                         "reviewer": row.reviewer or "",
                         "updated": row.updated_at.strftime("%Y-%m-%d %H:%M"),
                         "revisions": int(row.revisions), "sources": row.sources})
        return pd.DataFrame(rows, columns=CURATED_COLUMNS)

    # -- runs -----------------------------------------------------------------------------------------------------

    def register_run(self, result: TrainResult, tokenizer, name: str | None = None, activate: bool = True,
                     force: bool = False, run_id: int | None = None, parent: int | None = None) -> RunOutcome:
        """Record a finished run in the store (completing `run_id`, when `Store.start_run` listed it as running)
        and save its adapter under the runs directory; make it the active run (`activate`). A run whose drift is
        over its threshold is recorded but not saved (unless `force`). The adapter is written atomically before the
        store points at it: a process killed in between leaves a run without weights, never half-written ones.
        `parent`: the run it started from (None: the base weights)."""
        self.require_write("train")
        count = len(result.record_ids)
        name = name or f"{count} record{'s' if count != 1 else ''}"
        config, metrics = result.config.to_dict(), [row.to_dict() for row in result.history]
        if run_id is None:
            run_id = self.store.add_run(config, metrics, name=name, status=result.stopped, parent=parent)
        adapter_path = self.store.runs_dir / f"run-{run_id}"
        try:
            save_run(result, adapter_path, tokenizer, force=force)
        except DriftError as exc:
            self.store.finish_run(run_id, config, metrics, result.stopped, name, restore_previous=True)
            return RunOutcome(run_id, False, f"run {run_id} not saved and not used: {exc}")
        self.store.set_adapter_path(run_id, adapter_path)
        self.store.finish_run(run_id, config, metrics, result.stopped, name, restore_previous=not activate)
        if activate:
            self.store.set_active_run(run_id)
        return RunOutcome(run_id, True, f"run {run_id} saved to {adapter_path}"
                          + ("; it is now the active weights" if activate else ""))

    def use_run(self, run_id: int | None) -> None:
        """Make `run_id` the active weights (None: the base weights)."""
        self.require_write("change the weights")
        self.store.set_active_run(run_id)

    def latest_run(self) -> int | None:
        runs = self.store.runs()
        return int(runs.id.iloc[-1]) if len(runs) else None

    def train(self, weights: Weights, config: TrainConfig, stop: threading.Event | None = None,
              use_heldout: bool = True, from_active: bool = False, heldout: list[Record] | None = None,
              name: str | None = None, report_to: str = "none", trackio=None) -> Iterator[TrainProgress]:
        """Train on `training_records` in a worker thread, reporting progress as it comes; register the run.
        `report_to="trackio"` also reports every step to trackio (tracking.py): to `trackio` (a `TrackioTarget`),
        else the local project opd-studio; the tracker's config names the store's run, its name and its parent.

        A run starts from the base weights, so runs compare — or, `from_active`, from the active run's weights,
        which are then its teacher and anchors and its parent (a round of the loop, `rounds.py`); a round that fails
        or is not saved leaves the parent active. The first report comes before any work (the teacher's targets are
        cached before step 0, which takes a while on a CPU). `heldout`: the records drift is also measured on
        (default: `heldout_records`)."""
        self.require_write("train")
        if getattr(weights.base, "served", False):
            raise ValueError("training needs the model's weights in this process; this studio scores through a "
                             "server (--base-url): export the curated set and run opd-studio train where the "
                             "weights are, or start the studio without --base-url")
        records = self.training_records()
        if not records:
            raise ValueError("the curated set is empty: accept some hinted records first")
        heldout = (heldout if heldout is not None else heldout_records(records)) if use_heldout else []
        stop = stop or threading.Event()
        updates: queue.Queue = queue.Queue()
        if from_active:
            weights.sync(self.store)
        parent = weights.run_id if from_active else None
        # Listed as running from now on; the weights in use are remembered, so a process killed mid-run leaves
        # them active again at the next start (`Store.start_run`). A round leaves its parent active until its own
        # run is saved: a process killed meanwhile resumes from it.
        run_id = self.store.start_run(config.to_dict(),
                                      name or f"{len(records)} record{'s' if len(records) != 1 else ''}", parent)
        if not from_active:  # the weights in memory are about to match no saved run
            self.store.set_active_run(None)

        tracker = None
        if report_to == "trackio":
            from .tracking import TrackioReporter, TrackioTarget

            tracker = TrackioReporter(trackio or TrackioTarget(), {
                **asdict(config), "records": len(records), "heldout_records": len(heldout), "run": run_id,
                "run_name": name or "", "parent_run": parent})

        def on_step(row: StepMetrics) -> None:
            updates.put(("row", row))
            if tracker:
                tracker.log(row)

        def work() -> None:
            try:
                with weights.lock:
                    if not from_active:
                        weights.reset()
                    result = train(weights.model, weights.tokenizer, records, config, heldout=heldout or None,
                                   on_step=on_step, should_stop=stop.is_set)
                updates.put(("done", result))
            except Exception as exc:  # noqa: BLE001 - re-raised by the generator (train took its adapter out)
                if parent is not None:  # the parent's adapter was being trained in place: reload it from disk
                    with weights.lock:
                        weights.reset()
                    self.store.set_active_run(parent)
                updates.put(("error", exc))
            finally:
                if tracker:
                    tracker.finish()

        yield TrainProgress(f"`{progress_bar(0, config.steps)}` caching the teacher's targets and the base anchors "
                            f"for {len(records)} record{'s' if len(records) != 1 else ''}"
                            + (f" and {len(heldout)} held-out rollouts" if heldout else "") + "…", [])
        threading.Thread(target=work, daemon=True).start()
        history: list[StepMetrics] = []
        while True:
            kind, item = updates.get()
            if kind == "error":
                self.store.finish_run(run_id, config.to_dict(), [row.to_dict() for row in history], "failed",
                                      restore_previous=True)
                raise item if isinstance(item, (ValueError, DriftError)) else RuntimeError(str(item))
            if kind == "done":
                break
            history.append(item)
            yield TrainProgress(f"`{progress_bar(item.step, config.steps)}` step {item.step} / {config.steps}"
                                f" · loss {item.loss:.4f} · drift {item.drift:.4f}", list(history))
        result: TrainResult = item
        outcome = self.register_run(result, weights.tokenizer, name=name, run_id=run_id)
        with weights.lock:
            if outcome.saved:
                weights.trained, weights.run_id, weights.store_path = result.model, outcome.run_id, self.store.path
            else:
                weights.trained, weights.run_id = None, None
                weights.base = reset_to_base(result.model)
                if parent is not None:
                    self.store.set_active_run(parent)
        yield TrainProgress(f"**run {outcome.run_id}: {result.steps} steps, stopped by {result.stopped}** · drift "
                            f"{result.final.drift:.4f} · {outcome.message}"
                            + (f" · reported to {tracker.where()}" if tracker else ""), result.history, outcome)

    def runs_table(self) -> pd.DataFrame:
        """Every run, comparable: settings, how it ended, final drift and mean p(error tokens), whether its weights
        were saved, and which one is in use."""
        active = self.store.active_run()
        table = []
        for run in self.store.runs().itertuples():
            config = json.loads(run.config)
            steps, records = metrics_frames(load_history(json.loads(run.metrics)))
            final = steps.iloc[-1] if len(steps) else None
            p_error = records[records.step == final.step].p_error.dropna() if final is not None else records.p_error
            table.append({"run": run.id, "records": run.name,
                          "steps": int(final.step) if final is not None else None, "stopped": run.status,
                          "target": config.get("target", "hinted"), "loss": config.get("loss"),
                          "span": config.get("span"), "lr": config.get("lr"),
                          "drift": _rounded(final.drift) if final is not None else None,
                          "mean p(error)": _rounded(p_error.mean()) if len(p_error) else None,
                          "saved": bool(run.adapter_path), "in use": "✓" if run.id == active else ""})
        return pd.DataFrame(table, columns=RUN_COLUMNS)

    # -- the fix rate ---------------------------------------------------------------------------------------------

    def run_timeline(self, tokenizer, run_number, record_id: str | None = None) -> RunTimeline:
        """The step timeline of curated record `record_id` (default: the run's first with targets) in run `run_number`
        of this workspace, from the store: the run's metric rows, and the target positions from its run.json (a run not
        saved, or trained before run.json kept them: recomputed from the record as the run's loss span places them)."""
        if run_number is None or not float(run_number).is_integer() or run_number < 1:
            raise ValueError("give the number of a run from the Runs table")
        run = self.store.run(int(run_number))
        if run is None:
            raise ValueError(f"there is no run {int(run_number)}")
        history = load_history(run["metrics"])
        if not history:
            raise ValueError(f"run {int(run_number)} has no steps recorded")
        targets = _run_targets(run)
        trained = list(history[0].records)
        records = {rid: self.store.get(rid) for rid in trained}
        positions = {}
        for rid, record in records.items():
            if rid in targets:
                positions[rid] = (targets[rid]["positions"], targets[rid].get("right_text"))
            elif record is not None:
                example = build_example(tokenizer, record, run["config"].get("span", "turn"))
                positions[rid] = (example.targets, example.right_text)
        choices = [rid for rid in trained if positions.get(rid) and positions[rid][0] and records.get(rid) is not None]
        if not choices:
            raise ValueError(f"run {int(run_number)} has no curated record with hinted tokens to follow "
                             "(records kept as right only anchor)")
        record_id = record_id if record_id in choices else choices[0]
        record = records[record_id]
        trajectory = build_trajectory(tokenizer, record)
        error = trajectory.error_token_span(record.error) if record.error else None
        line = timeline(history, record_id, *positions[record_id])
        return RunTimeline(int(run_number), line, trajectory, error, choices)

    def fix_rate(self, weights: Weights, samples: int = 2, compare_base: bool = True,
                 max_new_tokens: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Regenerate the curated prompts and the held-out demo prompts under the current weights — and, with
        `compare_base`, under the base weights too (the adapter disabled), since a rate means little without the
        rate the model had before training. Returns (summary per weights × split × mode, every answer)."""
        curated = self.training_records()
        if not curated:
            raise ValueError("the curated set is empty")
        config = FixRateConfig(samples=int(samples), max_new_tokens=max_new_tokens)
        heldout = heldout_records(curated)
        runs: list[tuple[str, contextlib.AbstractContextManager]] = [(weights.label, contextlib.nullcontext())]
        if compare_base and weights.trained is not None:
            runs.append(("base", base_weights(weights.trained)))
        summaries, answers = [], []
        for label, context in runs:
            with context:
                rows = fix_rate(weights.model, weights.tokenizer, curated, heldout, config)
            summaries.append(summarize(rows).assign(weights=label))
            answers.append(rows.assign(weights=label))
        return pd.concat(summaries)[FIX_RATE_COLUMNS], pd.concat(answers)[ANSWER_COLUMNS]


def _run_targets(run: dict) -> dict:
    if not run.get("adapter_path"):
        return {}
    try:
        return load_run(run["adapter_path"]).get("targets") or {}
    except (FileNotFoundError, OSError, ValueError):
        return {}


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)

