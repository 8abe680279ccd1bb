"""The Curated set tab: what was curated (readable), each record's revisions and restore, delete, export and import;
layout and events together. Every action goes through the signed-in user's workspace (`common.workspace`), which
refuses writes from visitors who may not write; the table is redrawn whenever the tab is shown.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import gradio as gr
import pandas as pd

from ..records import MAX_UPLOAD_BYTES, MAX_UPLOAD_RECORDS
from ..workspace import CURATED_COLUMNS
from .common import counts_markdown, guarded, workspace

EXPORT_FORMATS = {"JSONL": "jsonl", "Parquet": "parquet", "datasets (zip)": "datasets"}
REVISION_COLUMNS = ["rev", "status", "reviewer", "note", "saved_at", "current", "hint"]


@guarded
def on_curated(status, source, show_deleted, profile: gr.OAuthProfile | None = None):
    table = workspace(profile).curated_table(None if status == "all" else status, source or None, bool(show_deleted))
    return table, counts_markdown(profile)


@guarded
def on_revisions(record_id, profile: gr.OAuthProfile | None = None):
    """The record's revisions, and the one before the current as the revision to restore."""
    if not record_id or not record_id.strip():
        raise ValueError("give the id of a record (the first column of the table)")
    table = workspace(profile).revisions(record_id.strip())
    earlier = table[~table.current].rev
    return table, int(earlier.iloc[-1]) if len(earlier) else None


@guarded
def on_pick(table: pd.DataFrame, evt: gr.SelectData, profile: gr.OAuthProfile | None = None):
    """A click on a row of the curated table opens that record's revisions."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    record_id = str(table.iloc[int(row)]["id"])
    return (record_id, *on_revisions(record_id, profile))


@guarded
def on_restore(record_id, rev, status, source, show_deleted, profile: gr.OAuthProfile | None = None):
    if not record_id or not record_id.strip():
        raise ValueError("give the id of a record (the first column of the table)")
    if rev is None or not float(rev).is_integer():
        raise ValueError("give a revision number from the revisions table")
    current = workspace(profile)
    new = current.restore(record_id.strip(), int(rev))
    gr.Info(f"{record_id.strip()}: revision {int(rev)} restored as revision {new}")
    return (current.revisions(record_id.strip()), *on_curated(status, source, show_deleted, profile))


@guarded
def on_delete(record_id, undo, status, source, show_deleted, profile: gr.OAuthProfile | None = None):
    if not record_id or not record_id.strip():
        raise ValueError("give the id of a record (the first column of the table)")
    workspace(profile).delete(record_id.strip(), undo=bool(undo))
    return on_curated(status, source, show_deleted, profile)


@guarded
def on_export(kind, profile: gr.OAuthProfile | None = None):
    fmt = EXPORT_FORMATS.get(kind)
    if fmt is None:
        raise ValueError(f"choose an export format: {', '.join(EXPORT_FORMATS)}")
    folder = tempfile.mkdtemp(prefix="opd-export-")
    name = f"curated-{time.strftime('%Y%m%d-%H%M%S')}"
    path = os.path.join(folder, f"{name}.{fmt}" if fmt != "datasets" else name)
    count = workspace(profile).export(path, status="accepted", fmt=fmt)
    gr.Info(f"Exported {count} curated record(s).")
    return shutil.make_archive(path, "zip", path) if fmt == "datasets" else path


@guarded
def on_import(file, status, source, show_deleted, profile: gr.OAuthProfile | None = None):
    if not file:
        raise ValueError("choose a .jsonl or .parquet file")
    report = workspace(profile).import_file(file, max_bytes=MAX_UPLOAD_BYTES, max_records=MAX_UPLOAD_RECORDS)
    gr.Info(f"Imported {report.message()}")
    return (*on_curated(status, source, show_deleted, profile), gr.update(value=None))


def build(tab: gr.Tab, counts: gr.Markdown) -> None:
    """The Curated set tab: layout, then its events. The table is drawn whenever the tab is shown."""
    gr.Markdown("Accepted records are trained on (only their accepted hints). Every version of a record is kept: "
                "pick a record, see its revisions, restore any of them. An import of a curated export keeps its "
                "review status; plain rollouts go to the review queue, and a reviewed record is never replaced.",
                elem_classes=["opd-help"])
    with gr.Row():
        curated_status = gr.Dropdown(["all", "pending", "accepted", "rejected"], value="accepted", label="Status")
        curated_source = gr.Textbox(label="Hint source (e.g. verifier:arithmetic)")
        show_deleted = gr.Checkbox(label="Show deleted")
        refresh = gr.Button("Refresh", elem_id="opd-refresh", size="sm")
    curated = gr.Dataframe(pd.DataFrame(columns=CURATED_COLUMNS), interactive=False, wrap=True,
                           elem_id="opd-curated", label="Curated set", show_label=False)
    with gr.Row():
        record_id = gr.Textbox(label="Record id", elem_id="opd-curated-id", scale=3)
        revisions_button = gr.Button("Show revisions", elem_id="opd-revisions", size="sm")
        undo = gr.Checkbox(label="Undelete instead", scale=1)
        delete_button = gr.Button("Delete", elem_id="opd-delete", size="sm", variant="stop")
    revisions = gr.Dataframe(pd.DataFrame(columns=REVISION_COLUMNS), interactive=False, wrap=True,
                             label="Revisions of the record (click a row above; the current one is marked)",
                             elem_id="opd-revisions-table")
    with gr.Row():
        rev = gr.Number(None, precision=0, minimum=1, label="Revision to restore", placeholder="e.g. 1",
                        elem_id="opd-rev")
        restore_button = gr.Button("Restore this revision", elem_id="opd-restore", size="sm")
    with gr.Row():
        export_kind = gr.Radio(list(EXPORT_FORMATS), value="JSONL", label="Export format")
        export_button = gr.Button("Export curated set", elem_id="opd-export")
        export_file = gr.File(label="Export", elem_id="opd-export-file", visible=False)
        import_file = gr.File(label="Import (a curated export, or rollouts for the review queue)",
                              file_types=[".jsonl", ".parquet"], elem_id="opd-import")

    view = [curated_status, curated_source, show_deleted]
    tab.select(on_curated, view, [curated, counts], api_name=False, show_progress="hidden")
    refresh.click(on_curated, view, [curated, counts], api_name="curated")
    for control in view:
        control.change(on_curated, view, [curated, counts], api_name=False, show_progress="hidden")
    revisions_button.click(on_revisions, [record_id], [revisions, rev], api_name="revisions")
    curated.select(on_pick, [curated], [record_id, revisions, rev], api_name=False)
    restore_button.click(on_restore, [record_id, rev, *view], [revisions, curated, counts],
                         api_name="restore_revision")
    delete_button.click(on_delete, [record_id, undo, *view], [curated, counts], api_name="delete")
    export_button.click(on_export, [export_kind], [export_file], api_name="export").success(
        lambda: gr.update(visible=True), None, [export_file], api_name=False, show_progress="hidden")
    import_file.upload(on_import, [import_file, *view], [curated, counts, import_file], api_name="import_curated")

