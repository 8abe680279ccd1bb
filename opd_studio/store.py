"""The curated set: records, their hints and review status, and training runs, in SQLite (WAL).

One file, `opd_studio.sqlite`, under `OPD_STUDIO_DATA` (default `./opd_data`; `/data` on a Space with persistent
storage). Every write is one transaction, so a killed process leaves the store as it was before or after a write,
never between. Each call opens its own connection: the store is safe to share between Gradio sessions and threads.

Review status of a record: `pending` (in the queue), `accepted` (curated), `rejected`. Deletion is soft (restorable).
Each record keeps the model and tokenizer it was scored with, the reviewer, timestamps and time spent reviewing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .records import Record, RecordError, parse_records, write_atomic

STATUSES = ("pending", "accepted", "rejected")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,            -- the record as JSON (SPEC §3), hints included
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    model TEXT, tokenizer TEXT, reviewer TEXT,
    span TEXT NOT NULL DEFAULT 'turn',
    review_seconds REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS hints (
    record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    source TEXT, status TEXT, placement TEXT, text TEXT,
    PRIMARY KEY (record_id, n)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    name TEXT, config TEXT NOT NULL, metrics TEXT NOT NULL, adapter_path TEXT, status TEXT
);
-- Settings of the studio that outlive a process: `active_run`, the run whose weights the model carries.
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT);
"""


def data_dir() -> Path:
    default = "/data" if os.environ.get("SPACE_ID") and Path("/data").is_dir() else "./opd_data"
    return Path(os.environ.get("OPD_STUDIO_DATA", default))


def _write_hints(db: sqlite3.Connection, record: Record) -> None:
    """The hints table mirrors the record's hints, so filters by source or status need no JSON parsing."""
    db.execute("DELETE FROM hints WHERE record_id = ?", (record.id,))
    db.executemany("INSERT INTO hints VALUES (?, ?, ?, ?, ?, ?)",
                   [(record.id, n, h.source, h.status, h.placement, h.text) for n, h in enumerate(record.hints)])


class Store:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else data_dir() / "opd_studio.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

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

    # -- records --------------------------------------------------------------------------------------------------

    def save(self, record: Record, status: str | None = None, *, model: str | None = None,
             tokenizer: str | None = None, reviewer: str | None = None, span: str | None = None,
             review_seconds: float = 0.0) -> None:
        """Insert or update a record (and its hints); fields left None keep their stored value."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        now = time.time()
        with self._connect() as db:
            db.execute(
                """INSERT INTO records (id, record, status, model, tokenizer, reviewer, span, review_seconds,
                                       created_at, updated_at)
                   VALUES (:id, :record, COALESCE(:status, 'pending'), :model, :tokenizer, :reviewer,
                           COALESCE(:span, 'turn'), :seconds, :now, :now)
                   ON CONFLICT(id) DO UPDATE SET
                       record = excluded.record, status = COALESCE(:status, status),
                       model = COALESCE(:model, model), tokenizer = COALESCE(:tokenizer, tokenizer),
                       reviewer = COALESCE(:reviewer, reviewer), span = COALESCE(:span, span),
                       review_seconds = review_seconds + :seconds, updated_at = :now, deleted = 0""",
                {"id": record.id, "record": record.to_json(), "status": status, "model": model,
                 "tokenizer": tokenizer, "reviewer": reviewer, "span": span, "seconds": review_seconds, "now": now})
            _write_hints(db, record)

    def get(self, record_id: str) -> Record | None:
        with self._connect() as db:
            row = db.execute("SELECT record FROM records WHERE id = ?", (record_id,)).fetchone()
        return Record.from_dict(json.loads(row["record"])) if row else None

    def set_status(self, record_id: str, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        with self._connect() as db:
            if db.execute("UPDATE records SET status = ?, updated_at = ? WHERE id = ?",
                          (status, time.time(), record_id)).rowcount == 0:
                raise KeyError(f"no record {record_id!r} in the store")

    def delete(self, record_id: str) -> None:
        self._set_deleted(record_id, 1)

    def restore(self, record_id: str) -> None:
        self._set_deleted(record_id, 0)

    def _set_deleted(self, record_id: str, deleted: int) -> None:
        with self._connect() as db:
            if db.execute("UPDATE records SET deleted = ?, updated_at = ? WHERE id = ?",
                          (deleted, time.time(), record_id)).rowcount == 0:
                raise KeyError(f"no record {record_id!r} in the store")

    def table(self, status: str | None = None, source: str | None = None, deleted: bool = False) -> pd.DataFrame:
        """One row per record: id, status, hints, sources, model, reviewer, review time, timestamps."""
        query = """SELECT r.id, r.status, r.span, r.model, r.tokenizer, r.reviewer, r.review_seconds,
                          r.created_at, r.updated_at, r.deleted,
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
                                            "created_at", "updated_at", "deleted", "hints", "sources"])
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

    # -- import / export ------------------------------------------------------------------------------------------

    def export(self, path: str | os.PathLike, status: str | None = "accepted") -> int:
        """Write records to .jsonl (SPEC §3) or .parquet (one row per record, the record as JSON); atomic."""
        path = Path(path)
        records = self.records(status)
        if path.suffix == ".parquet":
            frame = pd.DataFrame({"id": [r.id for r in records], "record": [r.to_json() for r in records]})
            write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
        else:
            write_atomic(path, lambda tmp: Path(tmp).write_text(
                "".join(r.to_json() + "\n" for r in records), encoding="utf-8"))
        return len(records)

    def import_file(self, path: str | os.PathLike, status: str = "pending", max_bytes: int = 50_000_000) -> int:
        """Import .jsonl or .parquet (as exported). Everything is validated first; then one transaction."""
        path = Path(path)
        if not path.is_file():
            raise RecordError(f"{path.name}: no such file")
        if path.stat().st_size > max_bytes:
            raise RecordError(f"{path.name} is {path.stat().st_size / 1e6:.1f} MB; the limit is "
                              f"{max_bytes / 1e6:.0f} MB. Split it into smaller files.")
        if path.suffix == ".parquet":
            try:
                lines = pd.read_parquet(path)["record"].tolist()
            except Exception as exc:
                raise RecordError(f"{path.name}: not a Parquet file exported by OPD Studio ({exc})") from None
        else:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError:
                raise RecordError(f"{path.name}: not UTF-8 text") from None
        records = parse_records(lines, source=path.name)
        with self._connect() as db:
            for record in records:
                now = time.time()
                db.execute("""INSERT INTO records (id, record, status, created_at, updated_at)
                              VALUES (?, ?, ?, ?, ?)
                              ON CONFLICT(id) DO UPDATE SET record = excluded.record, status = excluded.status,
                                  updated_at = excluded.updated_at, deleted = 0""",
                           (record.id, record.to_json(), status, now, now))
                _write_hints(db, record)
        return len(records)

    # -- training runs --------------------------------------------------------------------------------------------

    def add_run(self, config: dict, metrics: list[dict] | dict, name: str = "", adapter_path: str | None = None,
                status: str = "done") -> int:
        with self._connect() as db:
            cursor = db.execute("INSERT INTO runs (created_at, name, config, metrics, adapter_path, status) "
                                "VALUES (?, ?, ?, ?, ?, ?)",
                                (time.time(), name, json.dumps(config, default=str),
                                 json.dumps(metrics, default=str), adapter_path, status))
            return int(cursor.lastrowid)

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
        return pd.DataFrame(rows, columns=["id", "created_at", "name", "config", "metrics", "adapter_path", "status"])

    def run(self, run_id: int) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        return {**dict(row), "config": json.loads(row["config"]), "metrics": json.loads(row["metrics"])}
