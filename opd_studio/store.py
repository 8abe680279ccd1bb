"""The curated set in SQLite (WAL): records, every revision of each, their review status, and training runs.

One file, `opd_studio.sqlite`, under `OPD_STUDIO_DATA` (default `./opd_data`; `/data` on a Space with persistent
storage). Every write is one transaction, so a killed process leaves the store as it was before or after a write,
never between. Each call opens its own connection: the store is safe to share between Gradio sessions and threads.
The schema is versioned (`migrations.py`); opening an older file migrates it.

Review status of a record: `pending` (in the queue), `accepted` (curated), `rejected`. Deletion is soft.

Two ways in, and the rule that keeps a reviewer's work:
- `save` is the reviewer's write (accept, reject, edit, restore): it replaces the current version.
- `add` is every other way in (a generation, an upload, an import): it never replaces a reviewed record. A record
  whose id is new is added; one equal to what is stored is kept as it was; one that differs from a *pending* record
  replaces it; one that differs from a *reviewed* record is kept beside it as a revision the reviewer can restore.
Every version is kept in `revisions` (append-only); `revisions(id)` lists them and `restore_revision` brings one
back as a new current version. A record's hint statuses always agree with its status: accepted records carry
accepted hints, rejected ones rejected hints (`consistent`).
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .migrations import migrate
from .records import Record, RecordError

STATUSES = ("pending", "accepted", "rejected")
REVIEWED = ("accepted", "rejected")
# What an export writes into each record's meta, so that an import can tell a curated export from plain rollouts.
EXPORT_KEY = "opd_studio"


def data_dir() -> Path:
    default = "/data" if os.environ.get("SPACE_ID") and Path("/data").is_dir() else "./opd_data"
    return Path(os.environ.get("OPD_STUDIO_DATA", default))


def consistent(record: Record, status: str) -> Record:
    """A copy of `record` whose hint statuses agree with the record's: an accepted record's hints are accepted, a
    rejected record's rejected; a pending record keeps no review verdict on its hints (they become `edited`)."""
    record = copy.deepcopy(record)
    for hint in record.hints:
        if status in REVIEWED:
            hint.status = status
        elif hint.status in REVIEWED:
            hint.status = "edited"
    return record


def _content(record: Record) -> str:
    """What decides whether two versions are the same: everything but the export's bookkeeping in meta."""
    data = record.to_dict()
    data["meta"] = {k: v for k, v in (data.get("meta") or {}).items() if k != EXPORT_KEY}
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


def _same_trajectory(a: Record, b: Record) -> bool:
    return (a.messages, a.tools, a.response_token_ids) == (b.messages, b.tools, b.response_token_ids)


@dataclass
class AddReport:
    """What `Store.add` did with each incoming record, by id."""

    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # replaced a pending record (its old version kept)
    kept: list[str] = field(default_factory=list)  # equal to what is stored, or nothing to add to a reviewed record
    revisions: list[str] = field(default_factory=list)  # beside a reviewed record, which stays as it was
    queued: list[str] = field(default_factory=list)  # of `new`: an import's records that were not curated exports

    @property
    def total(self) -> int:
        return len(self.new) + len(self.updated) + len(self.kept) + len(self.revisions)

    def message(self) -> str:
        """One line: N new, M kept as they were, K added as revisions (…)."""
        parts = [f"{len(self.new)} new" + (f" ({len(self.queued)} to the review queue: not exported as curated)"
                                           if self.queued else "")]
        if self.updated:
            parts.append(f"{len(self.updated)} updated (pending; the previous version is kept as a revision)")
        parts.append(f"{len(self.kept)} kept as they were")
        parts.append(f"{len(self.revisions)} added as revisions (the reviewed records are unchanged)")
        return f"{self.total} record{'s' if self.total != 1 else ''}: " + ", ".join(parts)


def _write_hints(db: sqlite3.Connection, record: Record) -> None:
    """The hints table mirrors the record's hints, so filters by source or status need no JSON parsing."""
    db.execute("DELETE FROM hints WHERE record_id = ?", (record.id,))
    db.executemany("INSERT INTO hints VALUES (?, ?, ?, ?, ?, ?)",
                   [(record.id, n, h.source, h.status, h.placement, h.text) for n, h in enumerate(record.hints)])


def _next_revision(db: sqlite3.Connection, record_id: str) -> int:
    return int(db.execute("SELECT COALESCE(MAX(rev), 0) + 1 FROM revisions WHERE record_id = ?",
                          (record_id,)).fetchone()[0])


def _append_revision(db: sqlite3.Connection, record: Record, status: str, reviewer: str | None, note: str) -> int:
    rev = _next_revision(db, record.id)
    db.execute("INSERT INTO revisions VALUES (?, ?, ?, ?, ?, ?, ?)",
               (record.id, rev, record.to_json(), status, reviewer, note, time.time()))
    return int(rev)


class Store:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else data_dir() / "opd_studio.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:  # DDL and the version bump in one explicit transaction: a failed migration leaves the old file
            db.execute("BEGIN IMMEDIATE")
            migrate(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
        try:
            with db:  # one transaction: commit on success, roll back on any error
                yield db
        finally:
            db.close()

    # -- the reviewer's writes ------------------------------------------------------------------------------------

    def save(self, record: Record, status: str | None = None, *, model: str | None = None,
             tokenizer: str | None = None, reviewer: str | None = None, span: str | None = None,
             review_seconds: float = 0.0, note: str = "reviewed", origin: str | None = None) -> int:
        """Make `record` the current version (a new revision when it changed); fields left None keep their stored
        value. Returns the current revision number."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        with self._connect() as db:
            return self._save(db, record, status, model=model, tokenizer=tokenizer, reviewer=reviewer, span=span,
                              review_seconds=review_seconds, note=note, origin=origin)

    def _save(self, db, record: Record, status: str | None, *, model=None, tokenizer=None, reviewer=None, span=None,
              review_seconds: float = 0.0, note: str, origin=None, undelete: bool = True) -> int:
        row = db.execute("SELECT record, status, revision FROM records WHERE id = ?", (record.id,)).fetchone()
        status = status or (row["status"] if row else "pending")
        record = consistent(record, status)
        changed = row is None or row["status"] != status or _content(Record.from_dict(json.loads(row["record"]))) \
            != _content(record)
        revision = _next_revision(db, record.id) if changed else row["revision"]
        now = time.time()
        db.execute(
            """INSERT INTO records (id, record, status, model, tokenizer, reviewer, span, review_seconds,
                                   created_at, updated_at, revision, origin)
               VALUES (:id, :record, :status, :model, :tokenizer, :reviewer, COALESCE(:span, 'turn'), :seconds,
                       :now, :now, :revision, :origin)
               ON CONFLICT(id) DO UPDATE SET
                   record = excluded.record, status = excluded.status,
                   model = COALESCE(:model, model), tokenizer = COALESCE(:tokenizer, tokenizer),
                   reviewer = COALESCE(:reviewer, reviewer), span = COALESCE(:span, span),
                   review_seconds = review_seconds + :seconds, updated_at = :now, revision = :revision,
                   deleted = CASE WHEN :undelete THEN 0 ELSE deleted END""",
            {"id": record.id, "record": record.to_json(), "status": status, "model": model, "tokenizer": tokenizer,
             "reviewer": reviewer, "span": span, "seconds": review_seconds, "now": now, "revision": revision,
             "origin": origin, "undelete": undelete})
        _write_hints(db, record)
        if changed:  # after the row exists: a revision belongs to a record
            _append_revision(db, record, status, reviewer, note)
        return int(revision)

    def set_status(self, record_id: str, status: str, reviewer: str | None = None) -> None:
        record = self.get(record_id)
        if record is None:
            raise KeyError(f"no record {record_id!r} in the store")
        self.save(record, status, reviewer=reviewer, note=f"marked {status}")

    def delete(self, record_id: str) -> None:
        self._set_deleted(record_id, 1)

    def restore(self, record_id: str) -> None:
        self._set_deleted(record_id, 0)

    def _set_deleted(self, record_id: str, deleted: int) -> None:
        with self._connect() as db:
            if db.execute("UPDATE records SET deleted = ?, updated_at = ? WHERE id = ?",
                          (deleted, time.time(), record_id)).rowcount == 0:
                raise KeyError(f"no record {record_id!r} in the store")

    # -- everything else that brings records in -------------------------------------------------------------------

    def add(self, records: list[Record], *, origin: str, status: str | dict[str, str] = "pending",
            model: str | None = None) -> AddReport:
        """Bring in generated, uploaded or imported records without ever replacing a reviewed one (module
        docstring). `status`: of new records, one for all or by id. One transaction for the whole batch."""
        report = AddReport()
        with self._connect() as db:
            for record in records:
                wanted = status.get(record.id, "pending") if isinstance(status, dict) else status
                row = db.execute("SELECT record, status FROM records WHERE id = ?", (record.id,)).fetchone()
                if row is None:
                    self._save(db, record, wanted, model=model, note=origin, origin=origin)
                    report.new.append(record.id)
                    continue
                stored = Record.from_dict(json.loads(row["record"]))
                incoming = consistent(record, wanted)
                nothing_new = _content(incoming) == _content(stored) or (
                    _same_trajectory(incoming, stored) and not incoming.hints and not incoming.error)
                if nothing_new and (row["status"] in REVIEWED or row["status"] == wanted):
                    report.kept.append(record.id)
                elif row["status"] in REVIEWED:
                    _append_revision(db, incoming, wanted, None, f"{origin}, not applied: the record was reviewed")
                    report.revisions.append(record.id)
                else:
                    self._save(db, record, wanted, model=model, note=origin, origin=origin, undelete=False)
                    report.updated.append(record.id)
        return report

    # -- reading --------------------------------------------------------------------------------------------------

    def get(self, record_id: str) -> Record | None:
        with self._connect() as db:
            row = db.execute("SELECT record FROM records WHERE id = ?", (record_id,)).fetchone()
        return Record.from_dict(json.loads(row["record"])) if row else None

    def status_of(self, record_id: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT status FROM records WHERE id = ?", (record_id,)).fetchone()
        return row["status"] if row else None

    def table(self, status: str | None = None, source: str | None = None, deleted: bool = False) -> pd.DataFrame:
        """One row per record: id, status, hints, sources, model, reviewer, review time, timestamps, revision."""
        query = """SELECT r.id, r.status, r.span, r.model, r.tokenizer, r.reviewer, r.review_seconds,
                          r.created_at, r.updated_at, r.deleted, r.revision, r.origin, r.record,
                          (SELECT COUNT(*) FROM revisions v WHERE v.record_id = r.id) AS revisions,
                          COUNT(h.n) AS hints, COALESCE(GROUP_CONCAT(DISTINCT h.source), '') AS sources
                   FROM records r LEFT JOIN hints h ON h.record_id = r.id
                   WHERE r.deleted = ?"""
        params: list = [int(deleted)]
        if status:
            query += " AND r.status = ?"
            params.append(status)
        if source:
            query += " AND r.id IN (SELECT record_id FROM hints WHERE source = ?)"
            params.append(source)
        query += " GROUP BY r.id ORDER BY r.created_at, r.id"
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(query, params).fetchall()]
        table = pd.DataFrame(rows, columns=["id", "status", "span", "model", "tokenizer", "reviewer", "review_seconds",
                                            "created_at", "updated_at", "deleted", "revision", "origin", "record",
                                            "revisions", "hints", "sources"])
        for column in ("created_at", "updated_at"):
            table[column] = pd.to_datetime(table[column], unit="s")
        return table

    def records(self, status: str | None = "accepted") -> list[Record]:
        query, params = "SELECT record FROM records WHERE deleted = 0", []
        if status:
            query += " AND status = ?"
            params.append(status)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created_at, id", params).fetchall()
        return [Record.from_dict(json.loads(r["record"])) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute("SELECT status, COUNT(*) AS n FROM records WHERE deleted = 0 GROUP BY status").fetchall()
        counts = {s: 0 for s in STATUSES} | {r["status"]: r["n"] for r in rows}
        counts["total"] = sum(counts[s] for s in STATUSES)
        counts["reviewed"] = counts["accepted"] + counts["rejected"]
        return counts

    # -- revisions ------------------------------------------------------------------------------------------------

    def revisions(self, record_id: str) -> pd.DataFrame:
        """Every version of a record, oldest first: rev, status, reviewer, note, saved_at, current, hint text."""
        with self._connect() as db:
            current = db.execute("SELECT revision FROM records WHERE id = ?", (record_id,)).fetchone()
            if current is None:
                raise KeyError(f"no record {record_id!r} in the store")
            rows = db.execute("SELECT rev, status, reviewer, note, saved_at, record FROM revisions "
                              "WHERE record_id = ? ORDER BY rev", (record_id,)).fetchall()
        table = pd.DataFrame(
            [{"rev": r["rev"], "status": r["status"], "reviewer": r["reviewer"] or "", "note": r["note"],
              "saved_at": pd.to_datetime(r["saved_at"], unit="s").strftime("%Y-%m-%d %H:%M:%S"),
              "current": r["rev"] == current["revision"],
              "hint": " | ".join(h.get("text", "").strip() for h in json.loads(r["record"]).get("hints") or [])}
             for r in rows], columns=["rev", "status", "reviewer", "note", "saved_at", "current", "hint"])
        return table

    def revision(self, record_id: str, rev: int) -> tuple[Record, str]:
        with self._connect() as db:
            row = db.execute("SELECT record, status FROM revisions WHERE record_id = ? AND rev = ?",
                             (record_id, int(rev))).fetchone()
        if row is None:
            raise KeyError(f"record {record_id!r} has no revision {rev}")
        return Record.from_dict(json.loads(row["record"])), row["status"]

    def restore_revision(self, record_id: str, rev: int, reviewer: str | None = None) -> int:
        """Make revision `rev` current again (as a new revision: nothing is lost); returns the new number."""
        record, status = self.revision(record_id, rev)
        return self.save(record, status, reviewer=reviewer, note=f"restored from revision {int(rev)}")

    # -- import / export ------------------------------------------------------------------------------------------

    def export(self, path: str | os.PathLike, status: str | None = "accepted", fmt: str | None = None) -> int:
        """Write records as `fmt` — jsonl (the data format), parquet (one row per record, the record as JSON) or
        datasets (a `datasets.load_from_disk` folder); by default from the suffix — atomically (`exports.py`).
        Each record's meta carries `opd_studio: {status, reviewer, revision}`, which `import_file` reads to tell
        a curated export from plain rollouts."""
        from .exports import export_curated

        path = Path(path)
        fmt = fmt or ("parquet" if path.suffix == ".parquet" else "jsonl")
        if fmt not in ("jsonl", "parquet", "datasets"):
            raise ValueError(f"the store exports jsonl, parquet or datasets, not {fmt!r} (see exports.export_curated)")
        table = self.table(status=status)
        records = []
        for row in table.itertuples():
            record = Record.from_dict(json.loads(row.record))
            record.meta = {**record.meta, EXPORT_KEY: {"status": row.status, "reviewer": row.reviewer,
                                                       "revision": int(row.revision)}}
            records.append(record)
        if fmt == "datasets" and not records:
            raise ValueError("nothing to export: no record has that status")
        return export_curated(records, fmt, path)

    def import_file(self, path: str | os.PathLike, max_bytes: int = 50_000_000) -> AddReport:
        """Import .jsonl or .parquet. Records exported by the studio keep the status they were exported with
        (accepted / rejected); any other record goes to the review queue as pending. A reviewed record in the store
        is never replaced (`add`). Everything is validated first; then one transaction."""
        records = read_import(path, max_bytes)
        statuses = {}
        for record in records:
            exported = record.meta.get(EXPORT_KEY)
            exported = exported.get("status") if isinstance(exported, dict) else None
            statuses[record.id] = exported if exported in STATUSES else "pending"
        report = self.add(records, origin=f"imported from {Path(path).name}", status=statuses)
        report.queued = [i for i in report.new if statuses[i] == "pending"]
        return report

    # -- training runs --------------------------------------------------------------------------------------------

    def add_run(self, config: dict, metrics: list[dict] | dict, name: str = "", adapter_path: str | None = None,
                status: str = "done", parent: int | None = None) -> int:
        """`parent`: the run whose weights this one started from (None: the base weights)."""
        with self._connect() as db:
            cursor = db.execute("INSERT INTO runs (created_at, name, config, metrics, adapter_path, status, parent) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (time.time(), name, json.dumps(config, default=str),
                                 json.dumps(metrics, default=str), adapter_path, status, parent))
            return int(cursor.lastrowid)

    def set_round(self, run_id: int, outcome: dict) -> None:
        """Record that run `run_id` was a round of the loop, and what it did (`rounds.RoundOutcome`, as JSON)."""
        with self._connect() as db:
            db.execute("UPDATE runs SET round = ? WHERE id = ?", (json.dumps(outcome, default=str), run_id))

    @property
    def runs_dir(self) -> Path:
        """Where the runs' adapters are saved: next to the database, so a Space's /data keeps both."""
        return self.path.parent / "runs"

    def set_adapter_path(self, run_id: int, path: str | os.PathLike | None) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET adapter_path = ? WHERE id = ?", (str(path) if path else None, run_id))

    def active_run(self) -> int | None:
        """The run whose weights the studio uses (None: the base model)."""
        with self._connect() as db:
            row = db.execute("SELECT value FROM state WHERE key = 'active_run'").fetchone()
        return int(row["value"]) if row and row["value"] is not None else None

    def set_active_run(self, run_id: int | None) -> None:
        if run_id is not None:
            run = self.run(run_id)
            if run is None:
                raise ValueError(f"there is no run {run_id}")
            if not run["adapter_path"]:
                raise ValueError(f"run {run_id} has no saved weights (it was not saved: {run['status']})")
        with self._connect() as db:
            db.execute("INSERT INTO state (key, value) VALUES ('active_run', ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       (None if run_id is None else str(run_id),))

    def runs(self) -> pd.DataFrame:
        with self._connect() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY id").fetchall()]
        return pd.DataFrame(rows, columns=["id", "created_at", "name", "config", "metrics", "adapter_path", "status",
                                           "parent", "round"])

    def run(self, run_id: int) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        return {**dict(row), "config": json.loads(row["config"]), "metrics": json.loads(row["metrics"]),
                "round": json.loads(row["round"]) if row["round"] else None}


def read_import(path: str | os.PathLike, max_bytes: int = 50_000_000) -> list[Record]:
    """Records from a file or folder `exports.read_input` reads (JSONL, Parquet, a datasets folder), size-checked."""
    from .exports import read_input

    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path.name}: no such file")
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if size > max_bytes:
        raise RecordError(f"{path.name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
                          "Split it into smaller files.")
    return read_input(path)
