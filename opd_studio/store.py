"""The curated set in SQLite (WAL): records, every revision of each, their review status, and training runs.

One file, `opd_studio.sqlite`, under `OPD_STUDIO_DATA` (default `./opd_data`; `/data` on a Space with persistent
storage). Every write is one transaction, so a killed process leaves the store as it was before or after a write,
never between. The schema is versioned (`migrations.py`); opening an older file migrates it.

Many readers and writers, one file (the studio's request threads, its background read-ahead, the CLI):
- the file is *prepared* once per process (WAL journal, migrations) when it is first opened; opening it again
  (`Store(path)`, `open_store(path)`) costs a `stat`. Preparing a file another process prepares at the same moment
  is retried: switching a new file to WAL meets a busy database without waiting for it.
- each call opens its own connection (cheap; no connection is shared between threads) with a busy timeout;
  a write takes the write lock when it begins (`BEGIN IMMEDIATE`), so what it read cannot change under it, and a
  write that still meets a busy database is retried for up to `BUSY_RETRY_S`, then refused in one line
  (`StoreBusyError`). Readers never wait for writers (WAL).
- a data directory that cannot be written (read-only, full) refuses the write in one line (`StoreWriteError`); the
  transaction rolls back, so what is stored stays as it was.

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

import contextlib
import copy
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .migrations import migrate
from .records import Record, RecordError, check_count

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


BUSY_TIMEOUT_S = 5.0  # how long one statement waits for another connection's lock (sqlite's busy handler)
BUSY_RETRY_S = 30.0  # how long a write keeps retrying a busy database before it is refused


class StoreBusyError(ValueError):
    """A write that found the database busy for longer than `BUSY_RETRY_S` (nothing was written)."""


class StoreWriteError(ValueError):
    """A write the data directory refused (read-only, full); the transaction rolled back, nothing stored changed."""


def _busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _unwritable(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return any(words in text for words in ("readonly", "read-only", "disk is full", "unable to open",
                                           "disk I/O error"))


def _retrying(action, what: str, path: Path):
    """`action()` again while the database is busy, for up to `BUSY_RETRY_S`; then one line that says so."""
    deadline, pause = time.monotonic() + BUSY_RETRY_S, 0.05
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if _unwritable(exc):
                raise StoreWriteError(f"the store {path} cannot be written ({exc}): the data directory is "
                                      f"read-only or full. {what} was not saved; everything stored before is "
                                      "unchanged. Free space or fix the permissions, then try again") from None
            if not _busy(exc):
                raise
            if time.monotonic() > deadline:
                raise StoreBusyError(f"the store is busy (another write held it for over {BUSY_RETRY_S:.0f} s): "
                                     f"{what} was not saved; try again") from None
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


# Files prepared in this process (journal mode, migrations), by resolved path: the file's identity (device, inode)
# when it was prepared, so a file deleted and made again is prepared again.
_PREPARED: dict[Path, tuple[int, int]] = {}
_OPENED: dict[Path, "Store"] = {}
_REGISTRY_LOCK = threading.Lock()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _prepare(path: Path) -> None:
    """WAL and the migrations, once per file and process (under `_REGISTRY_LOCK`)."""
    def wal() -> None:
        with contextlib.closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
            db.execute("PRAGMA journal_mode=WAL")

    def migrated() -> None:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:  # DDL and the version bump in one explicit transaction: a failed migration leaves the old file
            db.execute("BEGIN IMMEDIATE")
            migrate(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def recovered() -> None:
        with contextlib.closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            _recover_interrupted_runs(db)
            db.execute("COMMIT")

    _retrying(wal, "opening the store", path)
    _retrying(migrated, "opening the store", path)
    _retrying(recovered, "opening the store", path)
    _PREPARED[path] = _identity(path)


# A training run in progress: `state` holds `run_owner:<id>` = {"pid", "previous_active"} from `start_run` until
# `finish_run` (no schema change: a file stays readable by the release before).
RUN_OWNER = "run_owner:"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _recover_interrupted_runs(db: sqlite3.Connection) -> None:
    """Runs whose training process died (kill -9, a crash, a restart) are listed as `interrupted`, and the weights
    in use before them are made active again. Their adapters were never registered (`finish_run` sets the path
    after the atomic write), so no half-written adapter is ever used."""
    owners = db.execute("SELECT key, value FROM state WHERE key LIKE ?", (RUN_OWNER + "%",)).fetchall()
    for key, value in owners:
        owner = json.loads(value)
        if _process_alive(int(owner["pid"])) and int(owner["pid"]) != os.getpid():
            continue  # still training, in another process
        run_id = int(key[len(RUN_OWNER):])
        db.execute("UPDATE runs SET status = 'interrupted' WHERE id = ? AND status = 'running'", (run_id,))
        active = db.execute("SELECT value FROM state WHERE key = 'active_run'").fetchone()
        previous = owner.get("previous_active")
        usable = previous is not None and db.execute(
            "SELECT adapter_path FROM runs WHERE id = ? AND adapter_path IS NOT NULL", (previous,)).fetchone()
        if (active is None or active[0] is None) and usable:
            db.execute("INSERT INTO state (key, value) VALUES ('active_run', ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(previous),))
        db.execute("DELETE FROM state WHERE key = ?", (key,))


def open_store(path: str | os.PathLike | None = None) -> "Store":
    """The process's one `Store` for the file at `path` (made, and the file prepared, on first use)."""
    resolved = (Path(path) if path else data_dir() / "opd_studio.sqlite").resolve()
    with _REGISTRY_LOCK:
        store = _OPENED.get(resolved)
    if store is None or _PREPARED.get(resolved) != _identity(resolved):
        store = Store(resolved)
        with _REGISTRY_LOCK:
            store = _OPENED.setdefault(resolved, store)
    return store


class Store:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else data_dir() / "opd_studio.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        resolved = self.path.resolve()
        with _REGISTRY_LOCK:
            if resolved not in _PREPARED or _PREPARED[resolved] != _identity(resolved):
                _prepare(resolved)

    @contextmanager
    def _connect(self, write: bool = False):
        """One transaction on a connection of its own: `BEGIN IMMEDIATE` for a write (the write lock from the
        start, so nothing it read changes before it writes), a snapshot for a read; commit on success."""
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            try:
                db.execute("PRAGMA foreign_keys=ON")
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.OperationalError as exc:
                if write or not _unwritable(exc):
                    raise
                # A WAL file is read through its -shm beside it, which a read-only directory cannot hold.
                raise StoreWriteError(f"the store {self.path} cannot be opened ({exc}): its data directory is "
                                      "read-only or full. Nothing stored is lost; fix the permissions or free "
                                      "space, then reload") from None
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _write(self, work, what: str = "the change"):
        """`work(db)` in one write transaction, retried while the database is busy (`_retrying`)."""
        def attempt():
            with self._connect(write=True) as db:
                return work(db)
        return _retrying(attempt, what, self.path)

    # -- the reviewer's writes ------------------------------------------------------------------------------------

    def save(self, record: Record, status: str | None = None, *, model: str | None = None,
             tokenizer: str | None = None, reviewer: str | None = None, span: str | None = None,
             review_seconds: float = 0.0, note: str = "reviewed", origin: str | None = None) -> int:
        """Make `record` the current version (a new revision when it changed); fields left None keep their stored
        value. Returns the current revision number."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        return self._write(lambda db: self._save(db, record, status, model=model, tokenizer=tokenizer,
                                                 reviewer=reviewer, span=span, review_seconds=review_seconds,
                                                 note=note, origin=origin), f"the review of {record.id}")

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
        def work(db) -> None:
            if db.execute("UPDATE records SET deleted = ?, updated_at = ? WHERE id = ?",
                          (deleted, time.time(), record_id)).rowcount == 0:
                raise KeyError(f"no record {record_id!r} in the store")
        self._write(work, f"{'deleting' if deleted else 'restoring'} {record_id}")

    # -- everything else that brings records in -------------------------------------------------------------------

    def add(self, records: list[Record], *, origin: str, status: str | dict[str, str] = "pending",
            model: str | None = None) -> AddReport:
        """Bring in generated, uploaded or imported records without ever replacing a reviewed one (module
        docstring). `status`: of new records, one for all or by id. One transaction for the whole batch."""
        def work(db) -> AddReport:
            report = AddReport()
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
        return self._write(work, f"{len(records)} record{'s' if len(records) != 1 else ''} ({origin})")

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

    def import_file(self, path: str | os.PathLike, max_bytes: int = 50_000_000,
                    max_records: int | None = None) -> AddReport:
        """Import .jsonl or .parquet. Records exported by the studio keep the status they were exported with
        (accepted / rejected); any other record goes to the review queue as pending. A reviewed record in the store
        is never replaced (`add`). Everything is validated first; then one transaction."""
        records = read_import(path, max_bytes, max_records)
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
        row = (time.time(), name, json.dumps(config, default=str), json.dumps(metrics, default=str), adapter_path,
               status, parent)
        return self._write(lambda db: int(db.execute(
            "INSERT INTO runs (created_at, name, config, metrics, adapter_path, status, parent) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", row).lastrowid), "the training run")

    def start_run(self, config: dict, name: str = "", parent: int | None = None) -> int:
        """A run that has begun: listed as `running`, owned by this process, remembering the weights in use
        before it (`parent`: the run whose weights it starts from). `finish_run` completes it; if the process dies
        first, the next process to open the file lists it as `interrupted` and makes those weights active again
        (`_recover_interrupted_runs`)."""
        def work(db) -> int:
            previous = db.execute("SELECT value FROM state WHERE key = 'active_run'").fetchone()
            run_id = int(db.execute(
                "INSERT INTO runs (created_at, name, config, metrics, adapter_path, status, parent) "
                "VALUES (?, ?, ?, '[]', NULL, 'running', ?)",
                (time.time(), name, json.dumps(config, default=str), parent)).lastrowid)
            owner = {"pid": os.getpid(), "previous_active": int(previous[0]) if previous and previous[0] else None}
            db.execute("INSERT INTO state (key, value) VALUES (?, ?)", (f"{RUN_OWNER}{run_id}", json.dumps(owner)))
            return run_id
        return self._write(work, "the start of the training run")

    def finish_run(self, run_id: int, config: dict, metrics: list[dict], status: str, name: str | None = None,
                   restore_previous: bool = False) -> None:
        """A started run's settings, metric rows and how it ended (`restore_previous`: it produced no weights, so
        the weights in use before it become active again)."""
        def work(db) -> None:
            db.execute("UPDATE runs SET config = ?, metrics = ?, status = ?, name = COALESCE(?, name) WHERE id = ?",
                       (json.dumps(config, default=str), json.dumps(metrics, default=str), status, name, run_id))
            owner = db.execute("SELECT value FROM state WHERE key = ?", (f"{RUN_OWNER}{run_id}",)).fetchone()
            previous = json.loads(owner[0]).get("previous_active") if owner else None
            if restore_previous and previous is not None:
                db.execute("INSERT INTO state (key, value) VALUES ('active_run', ?) "
                           "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(previous),))
            db.execute("DELETE FROM state WHERE key = ?", (f"{RUN_OWNER}{run_id}",))
        self._write(work, f"the end of training run {run_id}")

    def set_round(self, run_id: int, outcome: dict) -> None:
        """Record that run `run_id` was a round of the loop, and what it did (`rounds.RoundOutcome`, as JSON)."""
        self._write(lambda db: db.execute("UPDATE runs SET round = ? WHERE id = ?",
                                          (json.dumps(outcome, default=str), run_id)), f"round of run {run_id}")

    @property
    def runs_dir(self) -> Path:
        """Where the runs' adapters are saved: next to the database, so a Space's /data keeps both."""
        return self.path.parent / "runs"

    def set_adapter_path(self, run_id: int, path: str | os.PathLike | None) -> None:
        self._write(lambda db: db.execute("UPDATE runs SET adapter_path = ? WHERE id = ?",
                                          (str(path) if path else None, run_id)), f"run {run_id}'s weights")

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
        self._write(lambda db: db.execute("INSERT INTO state (key, value) VALUES ('active_run', ?) "
                                          "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                                          (None if run_id is None else str(run_id),)), "the weights in use")

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


def read_import(path: str | os.PathLike, max_bytes: int = 50_000_000, max_records: int | None = None) -> list[Record]:
    """Records from a file or folder `exports.read_input` reads (JSONL, Parquet, a datasets folder), size-checked
    (and, with `max_records`, counted: `records.check_count`)."""
    from .exports import read_input

    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path.name}: no such file")
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if size > max_bytes:
        raise RecordError(f"{path.name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
                          "Split it into smaller files.")
    records = read_input(path)
    if max_records is not None:
        check_count(records, max_records, path.name)
    return records
