"""The studio's page: one builder per tab (each tab's layout and its event wiring live in its own module), and
`launch`. The work happens in `ui.session`, `ui.incremental` and the engine; `ui.common` holds what the tabs share
(the model, the store, the guard that turns errors into one message, never a traceback in the browser).

Every event that touches the model runs one at a time, in one queue (concurrency id "model"): the model is shared,
the sessions are not. A waiting action shows its place in that queue on the status line.
"""

from __future__ import annotations

import gc
import os
import threading

import gradio as gr

from . import annotate_tab, curated_tab, train_tab
from . import session as actions
from .common import BASE_URL, MODEL_SPEC, access, counts_markdown, guarded, model, signed_in
from .strip import STRIP_CSS
from .waiting import WAIT_CSS, WAIT_JS

APP_CSS = STRIP_CSS + annotate_tab.CSS + WAIT_CSS
APP_JS = f"() => {{ ({annotate_tab.KEYS_JS})(); ({WAIT_JS})(); }}"
QUEUE_SIZE = 64  # actions waiting at once, all sessions together (OPD_STUDIO_QUEUE_SIZE)


@guarded
def on_load(session, hint_model_name, profile: gr.OAuthProfile | None = None):
    session = signed_in(session, profile)
    return counts_markdown(profile), annotate_tab.queue_markdown(session, hint_model_name)


def build_app() -> gr.Blocks:
    with gr.Blocks(title="OPD Studio") as app:
        session = gr.State(actions.Session())
        with gr.Row():
            served = f" served at `{BASE_URL}` (entropy and KL: top-5 + tail)" if BASE_URL else ""
            gr.Markdown(f"## OPD Studio\nOn-policy self-distillation with hints · model: `{MODEL_SPEC}`{served}")
            counts = gr.Markdown(elem_id="opd-counts", label="Review counts", show_label=False)
            if access().signs_in and os.environ.get("SPACE_ID"):  # Hugging Face sign-in exists on a Space only
                gr.LoginButton(size="sm", scale=0)
        with gr.Tabs():
            with gr.Tab("Inspect & annotate"):
                queue, hint_model = annotate_tab.build(session, counts)
            with gr.Tab("Train"):
                train_tab.build(app, session)
            with gr.Tab("Curated set") as curated:
                curated_tab.build(curated, counts)
        # Outside the queue: opening the page is never refused by a full queue (on_load does no model work).
        app.load(on_load, [session, hint_model], [counts, queue], api_name=False, queue=False)
    return app


def _load_model_then_freeze() -> None:
    """Load the model, then take every object alive by then (imports, Gradio, the model's modules: ~0.5 M) out of
    the cyclic garbage collector's walks (`gc.freeze`): a full collection walked them all, a 0.3 s pause that fell
    anywhere, a long record's first paint included. They live as long as the process anyway."""
    try:
        model()
    finally:
        gc.freeze()


def launch(app: gr.Blocks, **kwargs) -> None:
    # Load the model while the page opens, so the first Generate does not wait for it.
    threading.Thread(target=_load_model_then_freeze, daemon=True).start()
    # A full queue refuses the action with Gradio's one-line "Queue is full" message rather than dropping it.
    app.queue(default_concurrency_limit=1, max_size=int(os.environ.get("OPD_STUDIO_QUEUE_SIZE", QUEUE_SIZE)))
    app.launch(server_name=kwargs.pop("server_name", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")),
               server_port=kwargs.pop("server_port", int(os.environ.get("GRADIO_SERVER_PORT", 7860))),
               css=APP_CSS, js=APP_JS, theme=gr.themes.Soft(), show_error=True, **kwargs)
