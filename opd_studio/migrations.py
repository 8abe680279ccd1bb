"""The store's schema, as numbered migrations: append-only, each run once, the version kept in `PRAGMA user_version`.

A store file written by any release opens with any later one: `migrate` runs, in one transaction, every migration
past the file's version. Never edit a migration that has shipped; add the next one. Version 0 is a file from before
versions existed (the first release created its tables with `CREATE TABLE IF NOT EXISTS` and left user_version at
0), so migration 1 creates those same tables only where they are missing.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Callable

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []


def migration(fn: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
    MIGRATIONS.append(fn)
    return fn


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection) -> int:
    """Bring `db` to the latest version (inside the caller's transaction); returns the version it started at."""
    start = schema_version(db)
    if start > len(MIGRATIONS):
        raise RuntimeError(f"the store was written by a newer OPD Studio (schema {start}; this one knows up to "
                           f"{len(MIGRATIONS)}): upgrade opd-studio")
    for number, step in enumerate(MIGRATIONS[start:], start=start + 1):
        step(db)
        db.execute(f"PRAGMA user_version = {number}")
    return start


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Statements one by one: `executescript` would commit the caller's transaction first."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


# ------------------------------------------------------------------------------------------------------------------


@migration
def m001_records_hints_runs(db: sqlite3.Connection) -> None:
    _script(db, """
    CREATE TABLE IF NOT EXISTS records (
        id TEXT PRIMARY KEY,
        record TEXT NOT NULL,
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
    CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT);
    """)


@migration
def m002_revisions(db: sqlite3.Connection) -> None:
    """Every version of a record is kept: `revisions` is an append-only log, `records.revision` the current one.

    Existing records become revision 1 of themselves. Their hint statuses are made to agree with the record's
    status (the first release's import could store an accepted record whose hints were still `proposed`), and the
    tokenizer column, which held a machine-local cache path for the default model, takes the model's name."""
    _script(db, """
    CREATE TABLE revisions (
        record_id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
        rev INTEGER NOT NULL,
        record TEXT NOT NULL,
        status TEXT NOT NULL,
        reviewer TEXT,
        note TEXT NOT NULL,          -- what made this version: generated, uploaded, reviewed, restored from 2, …
        saved_at REAL NOT NULL,
        PRIMARY KEY (record_id, rev)
    );
    ALTER TABLE records ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE records ADD COLUMN origin TEXT;
    """)
    rows = db.execute("SELECT id, record, status, reviewer, updated_at FROM records").fetchall()
    for record_id, text, status, reviewer, updated_at in rows:
        record = json.loads(text)
        if status in ("accepted", "rejected"):
            for hint in record.get("hints") or []:
                hint["status"] = status
        text = json.dumps(record, ensure_ascii=False)
        db.execute("UPDATE records SET record = ? WHERE id = ?", (text, record_id))
        db.execute("UPDATE hints SET status = ? WHERE record_id = ? AND ? IN ('accepted', 'rejected')",
                   (status, record_id, status))
        db.execute("INSERT INTO revisions VALUES (?, 1, ?, ?, ?, 'before revisions were kept', ?)",
                   (record_id, text, status, reviewer, updated_at))
    db.execute("UPDATE records SET tokenizer = model WHERE tokenizer LIKE '/%' OR tokenizer LIKE '%:\\%'")


@migration
def m003_run_rounds(db: sqlite3.Connection) -> None:
    """A run may be a round of the on-policy loop (`rounds.py`): `parent` is the run it started from (None: the base
    weights), `round` its outcome as JSON (what was proposed and accepted, right / suppressed / corrected / broken /
    looping per split, the answers regenerated after it). Both stay NULL for an ordinary run."""
    _script(db, """
    ALTER TABLE runs ADD COLUMN parent INTEGER REFERENCES runs(id);
    ALTER TABLE runs ADD COLUMN round TEXT;
    """)
