"""The Curated set tab: filter, delete/restore, export and import the reviewed records; layout and events together.
"""

from __future__ import annotations

import os
import tempfile
import time

import gradio as gr

from .common import counts_markdown, guarded, store


@guarded
def on_curated(status, source, show_deleted):
    table = store().table(status=None if status == "all" else status, source=source or None, deleted=show_deleted)
    return table.drop(columns=["deleted"]), counts_markdown()


@guarded
def on_delete(record_id, restore, status, source, show_deleted):
    if not record_id:
        raise ValueError("give the id of a record")
    (store().restore if restore else store().delete)(record_id.strip())
    return on_curated(status, source, show_deleted)


@guarded
def on_export(kind):
    suffix = ".parquet" if kind == "Parquet" else ".jsonl"
    path = os.path.join(tempfile.mkdtemp(prefix="opd-export-"), f"curated-{time.strftime('%Y%m%d-%H%M%S')}{suffix}")
    n = store().export(path, status="accepted")
    gr.Info(f"Exported {n} curated record(s).")
    return path


@guarded
def on_import(file, status, source, show_deleted):
    if not file:
        raise ValueError("choose a .jsonl or .parquet file exported by OPD Studio")
    n = store().import_file(file, status="accepted")
    gr.Info(f"Imported {n} record(s) into the curated set.")
    return on_curated(status, source, show_deleted)


def build(app: gr.Blocks, counts: gr.Markdown) -> None:
    """The Curated set tab: layout, then its events (and the table filled when the page loads)."""
    with gr.Row():
        curated_status = gr.Dropdown(["all", "pending", "accepted", "rejected"], value="accepted", label="Status")
        curated_source = gr.Textbox(label="Hint source (e.g. arithmetic)")
        show_deleted = gr.Checkbox(label="Show deleted")
        refresh = gr.Button("Refresh", elem_id="opd-refresh")
    curated = gr.Dataframe(interactive=False, elem_id="opd-curated")
    with gr.Row():
        target_id = gr.Textbox(label="Record id")
        restore = gr.Checkbox(label="Restore instead of delete")
        delete_button = gr.Button("Delete / restore")
    with gr.Row():
        export_kind = gr.Radio(["JSONL", "Parquet"], value="JSONL", label="Export format")
        export_button = gr.Button("Export curated set", elem_id="opd-export")
        export_file = gr.File(label="Export", elem_id="opd-export-file")
        import_file = gr.File(label="Import an exported file", file_types=[".jsonl", ".parquet"],
                              elem_id="opd-import")

    curated_view = [curated_status, curated_source, show_deleted]
    refresh.click(on_curated, curated_view, [curated, counts], api_name="curated")
    curated_status.change(on_curated, curated_view, [curated, counts], api_name=False)
    delete_button.click(on_delete, [target_id, restore, *curated_view], [curated, counts], api_name="delete")
    export_button.click(on_export, [export_kind], [export_file], api_name="export")
    import_file.upload(on_import, [import_file, *curated_view], [curated, counts], api_name="import_curated")
    app.load(on_curated, curated_view, [curated, counts], api_name=False)
