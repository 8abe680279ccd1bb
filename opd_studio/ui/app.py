"""The studio's layout and event wiring. The work happens in `ui.session` and the engine; this file only connects
components to those functions and turns their errors into messages (never a traceback in the browser).

Every event that touches the model runs one at a time (the queue's concurrency limit is 1): the model is shared,
the sessions are not.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import tempfile
import threading
import time

import gradio as gr
import pandas as pd

from .. import plots
from ..diagnostics import compare_hint_texts, hint_flags, position_sweep, summarize_flags
from ..model import ModelLoadError, load_model_cached
from ..records import Record, RecordError
from ..rollout import SamplingConfig
from ..store import Store
from ..trajectory import TrajectoryError
from . import session as actions
from . import training
from .strip import STRIP_CSS, STRIP_JS, VIEWS, render_strip

log = logging.getLogger("opd_studio.ui")
MODEL_SPEC = os.environ.get("OPD_STUDIO_MODEL", "default")
HINT_MODEL_CHOICES = ["auto", "arithmetic", "tools", "reference", "critic", "manual"]
USER_ERRORS = (ValueError, RecordError, TrajectoryError, ModelLoadError, KeyError)

try:  # On a ZeroGPU Space, model work runs under spaces.GPU; elsewhere this is a no-op.
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the environment
    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


@functools.lru_cache(maxsize=1)
def _loaded() -> training.Weights:
    return training.Weights(*load_model_cached(MODEL_SPEC))


def _weights() -> training.Weights:
    """The process's weights, brought in line with the store's active run (see `training.Weights.sync`)."""
    weights = _loaded()
    weights.sync(_store())
    return weights


def _model():
    """The model as it is now (the active run's adapter, if any) and its tokenizer."""
    weights = _weights()
    return weights.model, weights.tokenizer


def _opened(session: actions.Session) -> actions.Session:
    """A session just opened with `_model()`: its passes belong to the current weights."""
    session.weights_version = _weights().version
    return session


def _sync(session: actions.Session) -> actions.Session:
    """Rebuild the session's scorer when the weights changed since it cached its passes."""
    weights = _weights()
    if session.weights_version != weights.version:
        session = actions.use_weights(session, weights.model, weights.tokenizer, session.base_weights,
                                      weights.version)
    return session


@functools.lru_cache(maxsize=1)
def _store() -> Store:
    return Store()


def guarded(fn):
    """Turn user errors into a visible message and anything unexpected into a short one (logged in full)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as exc:
            raise gr.Error(str(exc).strip("'\"")) from None
        except Exception as exc:  # noqa: BLE001 - the browser gets a message, the log gets the traceback
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Unexpected error ({type(exc).__name__}): {exc}. Your work is unchanged.") from None
    return wrapper


# ------------------------------------------------------------------------------------------------------------------
# Views


def counts_markdown() -> str:
    counts = _store().counts()
    return (f"**{counts['reviewed']} / {counts['total']} reviewed** · {counts['accepted']} curated · "
            f"{counts['rejected']} rejected · {counts['pending']} pending")


def status_markdown(session: actions.Session) -> str:
    if session.record is None:
        return "Pick a demo task or write a prompt, then **Generate**. Or upload your own rollouts (JSONL)."
    record, table = session.record, session.table
    weights = "base weights" if session.base_weights else f"{_weights().label} weights"
    parts = [f"**{record.id}** · {len(table)} tokens · loss span: {session.span} · {weights}"]
    anchors = [h["anchor"] for h in table.attrs.get("hints", [])]
    if anchors:
        row = table.loc[anchors[0]]
        parts.append(f"at the hint: p({row.text!r}) {math.exp(row.logp_before):.3f} → "
                     f"{math.exp(row.logp_after):.3f}")
    if session.notice:
        parts.append(f"⚠ {session.notice}")
    return " · ".join(parts)


def render(session: actions.Session, view: str, with_plots: bool = True):
    """Everything that shows the open record: [state, strip, status, logprob plot, KL plot, hint text, placement,
    template, proposals, counts]. Without `with_plots` the plots are left as they are (`gr.skip()`): edits redraw
    the strip first and the plots follow in a chained event (`on_plots`), so what the user clicked answers sooner."""
    if session.record is None:
        return (session, "<div class='opd-strip'>No rollout open.</div>", status_markdown(session), None, None,
                "", "inline", "", "", counts_markdown())
    trajectory = session.scorer.trajectory
    hint = session.hints[0] if session.hints else None
    figures = on_plots(session) if with_plots else (gr.skip(), gr.skip())
    return (session,
            render_strip(session.table, view, trajectory),
            status_markdown(session), *figures,
            hint.text if hint else "", hint.placement if hint else "inline", (hint.template or "") if hint else "",
            actions.proposals_markdown(session), counts_markdown())


@guarded
def on_plots(session: actions.Session):
    """The log-prob and KL plots of the open record (None, None when nothing is open)."""
    if session is None or session.record is None:
        return None, None
    return plots.logprob_figure(session.table), plots.kl_figure(session.table)


# ------------------------------------------------------------------------------------------------------------------
# Handlers (thin: validate, call the session action, render)


@guarded
@gpu
def on_generate(session, source_kind, demo_id, prompt, temperature, top_p, max_tokens, seed, hint_model_name, view):
    model, tokenizer = _model()
    if source_kind == "Demo task":
        source = next((r for r in actions.demo_tasks() if r.id == demo_id), None)
        if source is None:
            raise ValueError("choose a demo task")
    else:
        if not prompt or not prompt.strip():
            raise ValueError("write a prompt first")
        if len(prompt) > 8000:
            raise ValueError(f"the prompt has {len(prompt)} characters; keep it under 8000")
        source = Record(id=f"prompt-{abs(hash(prompt)) % 10**8}", messages=[{"role": "user", "content": prompt}])
    sampling = SamplingConfig(max_new_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p),
                              seed=int(seed))
    hint_model = actions.hint_model_for(hint_model_name, source,
                                        chat=_local_chat() if hint_model_name == "critic" else None)
    session = _opened(actions.generate_and_open(session, model, tokenizer, source, sampling, hint_model))
    _store().save(session.record, model=model.config.name_or_path)
    return render(session, view)


def _local_chat():
    from ..hints.critic import LocalChat

    return LocalChat(*_model())


@guarded
@gpu
def on_upload(session, file, hint_model_name, view):
    records = actions.parse_upload(file)
    store = _store()
    for record in records:
        store.save(record)
    model, tokenizer = _model()
    first = records[0]
    hint_model = actions.hint_model_for(hint_model_name, first) if hint_model_name not in ("critic",) else None
    session = _opened(actions.open_record(session, model, tokenizer, first, hint_model))
    gr.Info(f"Imported {len(records)} record(s) into the review queue.")
    return (*render(session, view), None)  # clear the file box, ready for the next upload


@guarded
def on_token_click(session, view, evt: gr.EventData):
    session = _sync(session)
    token = getattr(evt, "token", None)
    if token is None:
        raise ValueError("click a token of the strip")
    return render(actions.move_hint(session, int(token)), view, with_plots=False)


@guarded
def on_move(session, token, view):
    session = _sync(session)
    if token is None:
        raise ValueError("give a token index")
    return render(actions.move_hint(session, int(token)), view, with_plots=False)


@guarded
def on_edit(session, text, placement, template, view):
    session = _sync(session)
    return render(actions.edit_hint(session, text, placement, template or None), view, with_plots=False)


@guarded
def on_span(session, span, view):
    session = _sync(session)
    if session.record is None:
        return render(session, view)
    return render(actions.set_span(session, span), view, with_plots=False)


@guarded
def on_view(session, view):
    return render(session, view, with_plots=False)


@guarded
def on_undo(session, view):
    session = _sync(session)
    return render(actions.undo(session), view, with_plots=False)


@guarded
def on_use_proposal(session, number, view):
    return render(actions.use_proposal(session, int(number or 1) - 1), view)


@guarded
@gpu
def on_review(status, session, reviewer, view):
    as_right = status == "right"
    stored = actions.review(session, _store(), "accepted" if as_right else status, reviewer, as_right=as_right)
    gr.Info(f"{stored.id}: kept as right (its tokens anchor training)" if as_right else f"{stored.id}: {status}")
    following = _neighbour(stored.id, +1, "pending")
    if following is not None:
        model, tokenizer = _model()
        session = _opened(actions.open_record(session, model, tokenizer, following))
    return render(session, view)


def _neighbour(record_id: str | None, step: int, status: str | None) -> Record | None:
    """The record after/before `record_id` in the review queue (store order), restricted to `status`."""
    table = _store().table()
    ids = table.id.tolist()
    if not ids:
        return None
    at = ids.index(record_id) if record_id in ids else -1
    order = ids[at + 1:] + ids[:at] if step > 0 else list(reversed(ids[:at])) + list(reversed(ids[at + 1:]))
    statuses = dict(zip(table.id, table.status))
    for candidate in order:
        if status is None or statuses[candidate] == status:
            return _store().get(candidate)
    return None


@guarded
@gpu
def on_step(step, session, queue_status, view):
    current = session.record.id if session.record else None
    following = _neighbour(current, step, None if queue_status == "all" else queue_status)
    if following is None:
        raise ValueError(f"no other {queue_status} record in the queue")
    model, tokenizer = _model()
    return render(_opened(actions.open_record(session, model, tokenizer, following)), view)


@guarded
@gpu
def on_sweep(session, window):
    actions._require_open(session)
    if not session.hints:
        raise ValueError("place a hint first")
    error = session.table.attrs.get("error_span") or (session.table.attrs["hints"][0]["anchor"],) * 2
    error = (error[0], max(error[1], error[0] + 1))
    sweep = position_sweep(session.scorer, session.hints[0].inserted_text, error, window=int(window))
    return plots.sweep_figure(sweep), sweep.round(3)


@guarded
@gpu
def on_compare(session, candidates):
    actions._require_open(session)
    texts = [t for t in (candidates or "").split("\n") if t.strip()]
    if not session.hints:
        raise ValueError("place a hint first")
    anchor = session.table.attrs["hints"][0]["anchor"]
    comparison = compare_hint_texts(session.scorer, texts, anchor, session.table.attrs.get("error_span"))
    return plots.comparison_figure(comparison), comparison.round(3)


@guarded
@gpu
def on_flags(session):
    actions._require_open(session)
    flags = hint_flags(session.scorer, session.hints, session.table)
    summary = summarize_flags(flags)
    text = (f"{summary['targets']} target positions · **{summary['leaks']} leak** (teacher's top token only in the "
            f"hint) · **{summary['continues_hint']} copy the hint** · max teacher mass on hint-only tokens "
            f"{summary['max_p_hint_only']:.3f}")
    return text, flags.round(3)


# -- training -------------------------------------------------------------------------------------------------------


def guarded_stream(fn):
    """`guarded` for generator handlers: errors raised while streaming become messages too."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except gr.Error:
            raise
        except (*USER_ERRORS, training.DriftError) as exc:
            raise gr.Error(str(exc)) from None
        except Exception as exc:  # noqa: BLE001
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Unexpected error ({type(exc).__name__}): {exc}") from None
    return wrapper


@guarded_stream
@gpu
def on_train(session, steps, lr, loss, span, drift_weight, drift_threshold, lora_r, use_heldout):
    config = training.TrainConfig(steps=int(steps), lr=float(lr), loss=loss, span=span,
                                  drift_weight=float(drift_weight),
                                  drift_threshold=float(drift_threshold) if drift_threshold else None,
                                  lora_r=int(lora_r), lora_alpha=2 * int(lora_r))
    session.cancel = threading.Event()
    for status, steps_frame, per_record in training.run_training(_weights(), _store(), config, session.cancel,
                                                                 bool(use_heldout)):
        yield (session, status, plots.training_figure(per_record), training.loss_figure(steps_frame),
               training.runs_table(_store()))


def on_cancel(session):
    cancel = getattr(session, "cancel", None)
    if cancel is not None:
        cancel.set()
    return "cancelling after the current step…"


@guarded
@gpu
def on_reset():
    _store().set_active_run(None)
    _weights()
    return "weights reset to base", training.runs_table(_store())


def _run_number(run_id) -> int:
    if run_id is None or not float(run_id).is_integer():
        raise ValueError("give the number of a run from the Runs table")
    return int(run_id)


@guarded
@gpu
def on_use_run(run_id):
    _store().set_active_run(_run_number(run_id))
    weights = _weights()
    return f"using the weights of run {weights.run_id}", training.runs_table(_store())


@guarded
def on_download_run(run_id):
    """A zip of the run's directory: the peft adapter (safetensors) and run.json (settings, metrics, checksums)."""
    number = _run_number(run_id)
    run = _store().run(number)
    if run is None:
        raise ValueError(f"there is no run {number}")
    if not run["adapter_path"] or not os.path.isdir(run["adapter_path"]):
        raise ValueError(f"run {number} has no saved weights (it was not saved: {run['status']})")
    base = os.path.join(tempfile.mkdtemp(prefix="opd-run-"), f"opd-studio-run-{number}")
    return shutil.make_archive(base, "zip", run["adapter_path"])


@guarded
@gpu
def on_fix_rate(samples, compare_base):
    summary, rows = training.measure_fix_rate(_weights(), _store(), int(samples), bool(compare_base))
    return summary.round(3), rows


@guarded
def on_score_with(session, which, view):
    weights = _weights()
    session = actions.use_weights(session, weights.model, weights.tokenizer, which == "base", weights.version)
    return render(session, view)


# -- curated set ---------------------------------------------------------------------------------------------------


@guarded
def on_curated(status, source, show_deleted):
    table = _store().table(status=None if status == "all" else status, source=source or None, deleted=show_deleted)
    return table.drop(columns=["deleted"]), counts_markdown()


@guarded
def on_delete(record_id, restore, status, source, show_deleted):
    if not record_id:
        raise ValueError("give the id of a record")
    (_store().restore if restore else _store().delete)(record_id.strip())
    return on_curated(status, source, show_deleted)


@guarded
def on_export(kind):
    suffix = ".parquet" if kind == "Parquet" else ".jsonl"
    path = os.path.join(tempfile.mkdtemp(prefix="opd-export-"), f"curated-{time.strftime('%Y%m%d-%H%M%S')}{suffix}")
    n = _store().export(path, status="accepted")
    gr.Info(f"Exported {n} curated record(s).")
    return path


@guarded
def on_import(file, status, source, show_deleted):
    if not file:
        raise ValueError("choose a .jsonl or .parquet file exported by OPD Studio")
    n = _store().import_file(file, status="accepted")
    gr.Info(f"Imported {n} record(s) into the curated set.")
    return on_curated(status, source, show_deleted)


# ------------------------------------------------------------------------------------------------------------------
# Layout


KEYS_JS = """
() => {
  const click = (id) => { const b = document.getElementById(id); if (b) b.click(); };
  document.addEventListener('keydown', (event) => {
    const t = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const typing = t && (['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName) || t.isContentEditable);
    if (typing) return;
    const actions = {a: 'opd-accept', x: 'opd-reject', u: 'opd-undo', j: 'opd-next', k: 'opd-prev'};
    if (actions[event.key]) { click(actions[event.key]); event.preventDefault(); }
    else if (event.key === 'e') {
      const box = document.querySelector('#opd-hint-text textarea'); if (box) { box.focus(); event.preventDefault(); }
    }
  });
}
"""

APP_CSS = STRIP_CSS + """
#opd-counts { text-align: right; }
.opd-help { font-size: 12px; color: #6b7280; }
"""


def build_app() -> gr.Blocks:
    demo_choices = [(f"{r.id} · {r.messages[-1]['content'][:60]}", r.id) for r in actions.demo_tasks()]
    with gr.Blocks(title="OPD Studio") as app:
        session = gr.State(actions.Session())
        with gr.Row():
            gr.Markdown(f"## OPD Studio\nOn-policy self-distillation with hints · model: `{MODEL_SPEC}`")
            counts = gr.Markdown(elem_id="opd-counts")
        with gr.Tabs():
            with gr.Tab("Inspect & annotate"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        source_kind = gr.Radio(["Demo task", "Prompt"], value="Demo task", label="Rollout source")
                        demo_id = gr.Dropdown(demo_choices, value=demo_choices[0][1] if demo_choices else None,
                                              label="Demo task", elem_id="opd-demo")
                        prompt = gr.Textbox(label="Prompt", value="What is 17 + 25?", lines=2, elem_id="opd-prompt")
                        hint_model = gr.Dropdown(HINT_MODEL_CHOICES, value="auto", label="Hint model")
                        with gr.Accordion("Sampling", open=False):
                            temperature = gr.Slider(0, 1.5, value=0, step=0.05, label="Temperature (0 = greedy)")
                            top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p")
                            max_tokens = gr.Slider(8, 512, value=128, step=8, label="Max new tokens")
                            seed = gr.Number(value=0, precision=0, label="Seed")
                        generate_button = gr.Button("Generate", variant="primary", elem_id="opd-generate")
                        upload = gr.File(label="…or upload rollouts (JSONL)", file_types=[".jsonl"],
                                         elem_id="opd-upload")
                        with gr.Row():
                            queue_status = gr.Dropdown(["pending", "accepted", "rejected", "all"], value="pending",
                                                       label="Queue")
                        with gr.Row():
                            prev_button = gr.Button("← prev (k)", elem_id="opd-prev", size="sm")
                            next_button = gr.Button("next (j) →", elem_id="opd-next", size="sm")
                        reviewer = gr.Textbox(label="Reviewer", value="anonymous")
                    with gr.Column(scale=3):
                        status = gr.Markdown(elem_id="opd-status")
                        with gr.Row():
                            view = gr.Radio(list(VIEWS), value="delta", label="Colour by", elem_id="opd-view")
                            span = gr.Radio(["error", "turn", "response"], value="turn", label="Loss span")
                            score_with = gr.Radio(["current", "base"], value="current", label="Weights",
                                                  elem_id="opd-weights")
                        strip = gr.HTML("<div class='opd-strip'>No rollout open.</div>", js_on_load=STRIP_JS,
                                        elem_id="opd-strip")
                        gr.Markdown("Click a token to move the hint before it · ←/→ move · `n` next low-p · "
                                    "`m` next high-KL · `a` accept · `x` reject · `e` edit · `u` undo · `j`/`k` "
                                    "next/previous record", elem_classes=["opd-help"])
                        with gr.Row():
                            hint_text = gr.Textbox(label="Hint text", scale=3, elem_id="opd-hint-text")
                            placement = gr.Radio(["inline", "feedback", "template"], value="inline",
                                                 label="Placement")
                        template = gr.Textbox(label="Template (with {hint})", visible=True,
                                              placeholder=" [note: {hint}] ")
                        with gr.Row():
                            apply_button = gr.Button("Apply edit (e)", elem_id="opd-apply")
                            accept_button = gr.Button("Accept (a)", variant="primary", elem_id="opd-accept")
                            reject_button = gr.Button("Reject (x)", variant="stop", elem_id="opd-reject")
                            right_button = gr.Button("Keep as right", elem_id="opd-right")
                            undo_button = gr.Button("Undo (u)", elem_id="opd-undo")
                        with gr.Row(visible=False):  # API endpoints for scripted use (gradio_client)
                            move_token = gr.Number(precision=0, elem_id="opd-move-token")
                            move_button = gr.Button("move", elem_id="opd-move")
                            proposal_number = gr.Number(value=1, precision=0)
                            proposal_button = gr.Button("use proposal")
                            plots_button = gr.Button("plots")
                        proposals = gr.Markdown(elem_id="opd-proposals")
                        with gr.Tabs():
                            with gr.Tab("Probabilities"):
                                logprob_plot = gr.Plot(elem_id="opd-logprob-plot")
                                kl_plot = gr.Plot(elem_id="opd-kl-plot")
                            with gr.Tab("Position sweep"):
                                window = gr.Slider(2, 32, value=12, step=1, label="Window (tokens before the error)")
                                sweep_button = gr.Button("Sweep")
                                sweep_plot = gr.Plot()
                                sweep_table = gr.Dataframe(interactive=False)
                            with gr.Tab("Compare hint texts"):
                                candidates = gr.Textbox(lines=4, label="Candidate hint texts, one per line",
                                                        value=" (Hint: recompute this step.)\n (Hint: check the carry.)"
                                                              "\n (Note: continue.)")
                                compare_button = gr.Button("Compare")
                                compare_plot = gr.Plot()
                                compare_table = gr.Dataframe(interactive=False)
                            with gr.Tab("Leaks & contamination"):
                                flags_button = gr.Button("Check the hint")
                                flags_summary = gr.Markdown()
                                flags_table = gr.Dataframe(interactive=False)
            with gr.Tab("Train"):
                gr.Markdown("Train on the curated set (accepted records). Each run starts from the base weights; "
                            "the drift guard anchors every untouched token to the base model and stops the run "
                            "when drift passes the threshold. Records kept as right only add anchors. A finished "
                            "run is saved and used at once; the Runs table keeps them all.",
                            elem_classes=["opd-help"])
                defaults = training.TrainConfig()  # the library's defaults (bench/effect.py --sweep chose them)
                with gr.Row():
                    train_steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="Steps")
                    train_lr = gr.Number(value=defaults.lr, label="Learning rate")
                    train_loss = gr.Dropdown(["jsd", "forward_kl", "reverse_kl", "sampled"], value=defaults.loss,
                                             label="Loss")
                    train_span = gr.Radio(["error", "turn", "response"], value=defaults.span, label="Loss span")
                with gr.Row():
                    train_drift_weight = gr.Number(value=defaults.drift_weight, label="Drift weight (anchor to base)")
                    train_drift_threshold = gr.Number(value=defaults.drift_threshold,
                                                      label="Stop when drift exceeds (nats/token)")
                    train_rank = gr.Slider(1, 64, value=defaults.lora_r, step=1, label="LoRA rank")
                    train_heldout = gr.Checkbox(value=True, label="Measure drift on held-out demo rollouts")
                with gr.Row():
                    train_button = gr.Button("Train", variant="primary", elem_id="opd-train")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="opd-cancel")
                    reset_button = gr.Button("Reset to base", elem_id="opd-reset")
                    use_run_id = gr.Number(None, label="Run", precision=0, minimum=1, elem_id="opd-run-id")
                    use_run_button = gr.Button("Use this run's weights", elem_id="opd-use-run")
                    download_run_button = gr.Button("Download its adapter", elem_id="opd-download-run")
                run_file = gr.File(label="Adapter (peft, safetensors) and run.json, zipped",
                                   elem_id="opd-run-file")
                train_status = gr.Markdown(elem_id="opd-train-status")
                train_plot = gr.Plot(elem_id="opd-train-plot")
                loss_plot = gr.Plot(elem_id="opd-loss-plot")
                runs = gr.Dataframe(pd.DataFrame(columns=training.RUN_COLUMNS), interactive=False, label="Runs",
                                    elem_id="opd-runs")
                with gr.Row():
                    fix_samples = gr.Slider(0, 5, value=2, step=1, label="Sampled answers per prompt (plus greedy)")
                    fix_compare = gr.Checkbox(value=True, label="Also under the base weights (twice the time)")
                    fix_button = gr.Button("Regenerate and measure the fix rate", elem_id="opd-fix")
                gr.Markdown("*suppressed*: the flagged mistake is no longer produced · *corrected*: the record's "
                            "verifier now passes. A model can stop writing `= 114` without learning to add.",
                            elem_classes=["opd-help"])
                fix_summary = gr.Dataframe(pd.DataFrame(columns=training.FIX_RATE_COLUMNS), interactive=False,
                                           label="Fix rate: curated vs held-out", elem_id="opd-fix-summary")
                fix_rows = gr.Dataframe(pd.DataFrame(columns=training.ANSWER_COLUMNS), interactive=False,
                                        label="Every regenerated answer")
            with gr.Tab("Curated set"):
                with gr.Row():
                    curated_status = gr.Dropdown(["all", "pending", "accepted", "rejected"], value="accepted",
                                                 label="Status")
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

        quick = dict(show_progress="minimal")  # edits redraw in place, without a spinner over every output
        shown = [session, strip, status, logprob_plot, kl_plot, hint_text, placement, template, proposals, counts]
        generate_button.click(on_generate, [session, source_kind, demo_id, prompt, temperature, top_p, max_tokens,
                                            seed, hint_model, view], shown, api_name="generate")
        upload.upload(on_upload, [session, upload, hint_model, view], [*shown, upload], api_name="upload")
        figures = [logprob_plot, kl_plot]
        # Edits redraw the strip first; the plots follow once it is shown (an API caller gets them from /plots).
        for event in (strip.click(on_token_click, [session, view], shown, api_name=False, **quick),
                      move_button.click(on_move, [session, move_token, view], shown, api_name="move_hint", **quick),
                      apply_button.click(on_edit, edit_inputs := [session, hint_text, placement, template, view],
                                         shown, api_name="edit_hint", **quick),
                      hint_text.submit(on_edit, edit_inputs, shown, api_name=False, **quick),
                      span.input(on_span, [session, span, view], shown, api_name="set_span", **quick),
                      undo_button.click(on_undo, [session, view], shown, api_name="undo", **quick)):
            event.success(on_plots, [session], figures, api_name=False, show_progress="hidden")
        view.input(on_view, [session, view], shown, api_name=False, **quick)
        plots_button.click(on_plots, [session], figures, api_name="plots")
        proposal_button.click(on_use_proposal, [session, proposal_number, view], shown, api_name="use_proposal")
        accept_button.click(functools.partial(on_review, "accepted"), [session, reviewer, view], shown,
                            api_name="accept")
        right_button.click(functools.partial(on_review, "right"), [session, reviewer, view], shown,
                           api_name="keep_as_right")
        reject_button.click(functools.partial(on_review, "rejected"), [session, reviewer, view], shown,
                            api_name="reject")
        next_button.click(functools.partial(on_step, +1), [session, queue_status, view], shown, api_name="next")
        prev_button.click(functools.partial(on_step, -1), [session, queue_status, view], shown, api_name="previous")
        sweep_button.click(on_sweep, [session, window], [sweep_plot, sweep_table], api_name="sweep")
        compare_button.click(on_compare, [session, candidates], [compare_plot, compare_table], api_name="compare")
        flags_button.click(on_flags, [session], [flags_summary, flags_table], api_name="flags")
        score_with.input(on_score_with, [session, score_with, view], shown, api_name="score_with", **quick)
        train_inputs = [session, train_steps, train_lr, train_loss, train_span, train_drift_weight,
                        train_drift_threshold, train_rank, train_heldout]
        train_button.click(on_train, train_inputs, [session, train_status, train_plot, loss_plot, runs],
                           api_name="train")
        cancel_button.click(on_cancel, [session], [train_status], queue=False, api_name=False)
        reset_button.click(on_reset, [], [train_status, runs], api_name="reset")
        use_run_button.click(on_use_run, [use_run_id], [train_status, runs], api_name="use_run")
        download_run_button.click(on_download_run, [use_run_id], [run_file], api_name="download_run")
        fix_button.click(on_fix_rate, [fix_samples, fix_compare], [fix_summary, fix_rows], api_name="fix_rate")
        curated_view = [curated_status, curated_source, show_deleted]
        refresh.click(on_curated, curated_view, [curated, counts], api_name="curated")
        curated_status.change(on_curated, curated_view, [curated, counts], api_name=False)
        delete_button.click(on_delete, [target_id, restore, *curated_view], [curated, counts], api_name="delete")
        export_button.click(on_export, [export_kind], [export_file], api_name="export")
        import_file.upload(on_import, [import_file, *curated_view], [curated, counts], api_name="import_curated")
        app.load(on_curated, curated_view, [curated, counts], api_name=False)
        app.load(lambda: training.runs_table(_store()), [], [runs], api_name=False)
    return app


def launch(app: gr.Blocks, **kwargs) -> None:
    import threading

    # Load the model while the page opens, so the first Generate does not wait for it.
    threading.Thread(target=_model, daemon=True).start()
    app.queue(default_concurrency_limit=1, max_size=64)
    app.launch(server_name=kwargs.pop("server_name", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")),
               server_port=kwargs.pop("server_port", int(os.environ.get("GRADIO_SERVER_PORT", 7860))),
               css=APP_CSS, js=KEYS_JS, theme=gr.themes.Soft(), show_error=True, **kwargs)
