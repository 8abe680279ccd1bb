"""The Train tab: a few training steps on the curated set, streamed as curves; past runs; rounds of the loop and
their history; the fix rate. Layout and events together; the work is the workspace's run lifecycle
(`Workspace.train`, `use_run`, `fix_rate`, `runs_table`) and `rounds.run_round`, in the workspace of whoever sent the
request (on a Space, visitors who are not signed in only look).

Boxes that have nothing to show yet (plots, the adapter download, the fix-rate tables) stay hidden until they do.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading

import gradio as gr
import pandas as pd

from .. import plots
from ..alignment import LOSS_SPANS
from ..hints import HINT_MODELS
from ..records import PROPOSAL_PLACEMENTS
from ..rounds import HISTORY_COLUMNS, RoundConfig, round_history, run_round
from ..targets import ALPHA_MAX, TARGETS
from ..workspace import ANSWER_COLUMNS, FIX_RATE_COLUMNS, RUN_COLUMNS, TrainConfig, metrics_frames
from . import session as actions
from .common import gpu, guarded, guarded_stream, signed_in, weights, workspace
from .strip import render_timeline

WHAT_NEXT = ("**What next.** The run's weights are in use now. *Regenerate and measure the fix rate* below: did the "
             "flagged mistakes go away on the curated prompts, and on held-out ones (suppressed vs corrected)? On "
             "*Inspect & annotate*, switch *Weights* between *current* and *base* to see a record under both; "
             "*Reset to base* undoes the run, and the Runs table keeps every run to come back to.")


def latest_run(runs: pd.DataFrame):
    """The number the Run box starts from: the latest run (None when there is none)."""
    return int(runs["run"].max()) if len(runs) else None


def train_config(steps, lr, loss, span, drift_weight, drift_threshold, lora_r, target=None, alpha=None,
                 placebo=None) -> TrainConfig:
    """The training settings the form holds (what Train and Next round both use)."""
    defaults = TrainConfig()
    return TrainConfig(steps=int(steps), lr=float(lr), loss=loss, span=span, drift_weight=float(drift_weight),
                       drift_threshold=float(drift_threshold) if drift_threshold else None,
                       lora_r=int(lora_r), lora_alpha=2 * int(lora_r), target=target or defaults.target,
                       alpha=float(alpha) if alpha is not None else defaults.alpha,
                       placebo=placebo or defaults.placebo)


def round_views(history: pd.DataFrame) -> tuple:
    """The round history table and its plot, hidden while there is no round."""
    shown = not history.empty
    return (gr.update(value=history, visible=shown),
            gr.update(value=plots.rounds_figure(history), visible=True) if shown else gr.update(visible=False))


@guarded_stream
@gpu
def on_train(session, steps, lr, loss, span, drift_weight, drift_threshold, lora_r, use_heldout, target=None,
             alpha=None, placebo=None, trackio=False, profile: gr.OAuthProfile | None = None):
    config = train_config(steps, lr, loss, span, drift_weight, drift_threshold, lora_r, target, alpha, placebo)
    session = signed_in(session, profile)
    current = workspace(profile)
    current.require_write("train")
    actions.require_placebos(current.training_records(), config.target, config.placebo)
    actions.stop_speculating(session)  # the weights are about to change under it
    session.cancel = threading.Event()
    hidden = gr.update(visible=False)
    yield (session, "starting: loading the curated set and caching the hinted teacher's targets…", gr.skip(),
           gr.skip(), gr.skip(), gr.skip(), "")
    for progress in current.train(weights(session), config, session.cancel, bool(use_heldout),
                                  report_to="trackio" if trackio else "none"):
        status = progress.status
        steps_frame, per_record = metrics_frames(progress.history)
        shown = not per_record.empty
        yield (session, status,
               gr.update(value=plots.training_figure(per_record), visible=True) if shown else hidden,
               gr.update(value=plots.loss_figure(steps_frame), visible=True) if shown else hidden,
               gr.skip(), gr.skip(), "")
    runs = current.runs_table()
    yield session, gr.skip(), gr.skip(), gr.skip(), runs, latest_run(runs), WHAT_NEXT


@guarded_stream
@gpu
def on_next_round(session, steps, lr, loss, span, drift_weight, drift_threshold, lora_r, use_heldout, target,
                  alpha, placebo, trackio, hint_model, accept, placement, profile: gr.OAuthProfile | None = None):
    """One round of the loop from the active weights (`rounds.run_round`), streamed like a training run. It takes
    the Train form as `on_train` does, its trackio box included (the round's training reports to trackio)."""
    config = RoundConfig(hint_model=hint_model, accept="verifier" if accept else None, hint_placement=placement,
                         train=train_config(steps, lr, loss, span, drift_weight, drift_threshold, lora_r, target,
                                            alpha, placebo), report_to="trackio" if trackio else "none")
    session = signed_in(session, profile)
    current = workspace(profile)
    current.require_write("run a round")
    actions.stop_speculating(session)
    session.cancel = threading.Event()
    hidden = gr.update(visible=False)
    for progress in run_round(current, weights(session), config, stop=session.cancel,
                              heldout=None if use_heldout else []):
        steps_frame, per_record = metrics_frames(progress.history)
        shown = not per_record.empty
        yield (session, progress.status,
               gr.update(value=plots.training_figure(per_record), visible=True) if shown else hidden,
               gr.update(value=plots.loss_figure(steps_frame), visible=True) if shown else hidden,
               gr.skip(), gr.skip(), gr.skip(), gr.skip())
    runs = current.runs_table()
    yield (session, gr.skip(), gr.skip(), gr.skip(), runs, latest_run(runs), *round_views(round_history(current)))


def on_cancel(session):
    cancel = getattr(session, "cancel", None)
    if cancel is not None:
        cancel.set()
    return "cancelling after the current step…"


@guarded
@gpu
def on_reset(session, profile: gr.OAuthProfile | None = None):
    current = workspace(profile)
    current.use_run(None)
    weights(signed_in(session, profile))
    return "weights reset to base", current.runs_table()


def _run_number(run_id) -> int:
    if run_id is None or not float(run_id).is_integer() or run_id < 1:
        raise ValueError("give the number of a run from the Runs table")
    return int(run_id)


@guarded
@gpu
def on_use_run(session, run_id, profile: gr.OAuthProfile | None = None):
    current = workspace(profile)
    current.use_run(_run_number(run_id))
    loaded = weights(signed_in(session, profile))
    return f"using the weights of run {loaded.run_id}", current.runs_table()


@guarded
def on_download_run(run_id, profile: gr.OAuthProfile | None = None):
    """A zip of the run's directory: the peft adapter (safetensors) and run.json (settings, metrics, checksums)."""
    number = _run_number(run_id)
    run = workspace(profile).store.run(number)
    if run is None:
        raise ValueError(f"there is no run {number}")
    if not run["adapter_path"] or not os.path.isdir(run["adapter_path"]):
        raise ValueError(f"run {number} has no saved weights (it was not saved: {run['status']})")
    base = os.path.join(tempfile.mkdtemp(prefix="opd-run-"), f"opd-studio-run-{number}")
    return gr.update(value=shutil.make_archive(base, "zip", run["adapter_path"]), visible=True)


@guarded
@gpu
def on_fix_rate(session, samples, compare_base, profile: gr.OAuthProfile | None = None):
    session = signed_in(session, profile)
    summary, rows = workspace(profile).fix_rate(weights(session), int(samples), bool(compare_base))
    return gr.update(value=summary.round(3), visible=True), gr.update(value=rows, visible=True)


def _timeline_views(session, k: int | None = None):
    shown = session.timeline
    line = shown.timeline
    k = len(line.steps) - 1 if k is None else k
    return (render_timeline(shown.trajectory, line, k, shown.error_span),
            gr.update(value=plots.timeline_figure(line, line.steps[k], shown.error_span), visible=True))


@guarded
def on_timeline(session, run_id, record_id, profile: gr.OAuthProfile | None = None):
    """The step timeline of a curated record in a run (from the store: runs trained here or from the CLI); the
    slider starts at the last step."""
    session = signed_in(session, profile)
    session.timeline = actions.run_timeline(workspace(profile), weights(session).tokenizer, run_id, record_id)
    line = session.timeline.timeline
    picker = gr.update(choices=session.timeline.record_ids, value=line.record_id, visible=True)
    slider = gr.update(minimum=line.steps[0], maximum=max(line.steps[-1], line.steps[0] + 1),
                       value=line.steps[-1], visible=True)
    return (session, picker, slider, *_timeline_views(session))


@guarded
def on_timeline_step(session, step):
    """Redraw the timeline's strip at `step` (no model work: the probabilities were kept while training)."""
    if session is None or session.timeline is None:
        raise ValueError("train a run (or give a run's number) and press 'Step timeline' first")
    steps = session.timeline.timeline.steps
    k = min(range(len(steps)), key=lambda n: abs(steps[n] - float(step or 0)))
    return _timeline_views(session, k)


@guarded
def on_runs(profile: gr.OAuthProfile | None = None):
    current = workspace(profile)
    runs = current.runs_table()
    return runs, latest_run(runs), *round_views(round_history(current))


def build(app: gr.Blocks, session: gr.State) -> None:
    """The Train tab: layout, then its events (and the Runs table filled when the page loads)."""
    gr.Markdown("Train on the curated set (accepted records). Each run starts from the base weights; the drift "
                "guard anchors every untouched token to the base model and stops the run when drift passes the "
                "threshold. Records kept as right only add anchors. A finished run is saved and used at once; the "
                "Runs table keeps them all.", elem_classes=["opd-help"])
    defaults = TrainConfig()  # the library's defaults (README "Defaults chosen on a held-out family")
    with gr.Row():
        train_steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="Steps")
        train_lr = gr.Number(value=defaults.lr, label="Learning rate")
        train_loss = gr.Dropdown(["jsd", "forward_kl", "reverse_kl", "sampled"], value=defaults.loss, label="Loss")
        train_span = gr.Radio(list(LOSS_SPANS), value=defaults.span, label="Loss span")
    with gr.Row():
        train_drift_weight = gr.Number(value=defaults.drift_weight, label="Drift weight (anchor to base)")
        train_drift_threshold = gr.Number(value=defaults.drift_threshold,
                                          label="Stop when drift exceeds (nats/token)")
        train_rank = gr.Slider(1, 64, value=defaults.lora_r, step=1, label="LoRA rank")
        train_heldout = gr.Checkbox(value=True, label="Measure drift on held-out demo rollouts")
        train_trackio = gr.Checkbox(value=False, label="Report to trackio (project opd-studio)",
                                    info="local: trackio show --project opd-studio", elem_id="opd-trackio")
    with gr.Row():
        train_target = gr.Dropdown(list(TARGETS), value=defaults.target, label="Target",
                                   info="hinted: the hinted teacher · contrast: what the hint adds over a placebo · "
                                        "evidence: only where the content lowers the token · unleaked: no hint-only "
                                        "tokens", elem_id="opd-target")
        train_alpha = gr.Slider(0.1, ALPHA_MAX, value=defaults.alpha, step=0.1, label="Contrast strength α",
                                elem_id="opd-alpha")
        train_placebo = gr.Dropdown(["default", "stored"], value=defaults.placebo, allow_custom_value=True,
                                    label="Placebo (contrast, evidence)",
                                    info="default: the record's own, else built from the hint · stored: the "
                                         "record's own only · or type a content-free text",
                                    elem_id="opd-placebo-policy")
    with gr.Row():
        train_button = gr.Button("Train", variant="primary", elem_id="opd-train")
        cancel_button = gr.Button("Cancel", variant="stop", elem_id="opd-cancel")
        reset_button = gr.Button("Reset to base", elem_id="opd-reset")
        use_run_id = gr.Number(None, label="Run", precision=0, minimum=1, elem_id="opd-run-id")
        use_run_button = gr.Button("Use this run's weights", elem_id="opd-use-run")
        download_run_button = gr.Button("Download its adapter", elem_id="opd-download-run")
    run_file = gr.File(label="Adapter (peft, safetensors) and run.json, zipped", elem_id="opd-run-file",
                       visible=False)
    train_status = gr.Markdown(elem_id="opd-train-status", label="Training status", show_label=False)
    train_plot = gr.Plot(elem_id="opd-train-plot", visible=False, label="p(error tokens) per step", show_label=False)
    loss_plot = gr.Plot(elem_id="opd-loss-plot", visible=False, label="Loss and drift", show_label=False)
    what_next = gr.Markdown(elem_id="opd-train-next", label="What next", show_label=False)
    gr.Markdown("**Rounds of the loop.** *Next round* regenerates the curated prompts with the weights in use, runs "
                "the hint model on the answers (its proposals go to the review queue, or are accepted as proposed; "
                "*Hint placement: feedback* puts each hint in a feedback turn before the answer, after which the hinted "
                "model writes the right result more often than after an inline hint), "
                "keeps right answers as anchors, then trains from the weights in use with the settings above; the "
                "run names its parent. The history counts greedy answers per round, on the curated prompts and on "
                "held-out demo prompts never trained on (none while *Measure drift on held-out demo rollouts* is "
                "off).", elem_classes=["opd-help"])
    with gr.Row():
        round_hint_model = gr.Dropdown(list(HINT_MODELS), value="answer", label="Hint model",
                                       elem_id="opd-round-hint-model")
        round_placement = gr.Radio(list(PROPOSAL_PLACEMENTS), value=RoundConfig.hint_placement, label="Hint placement",
                                   elem_id="opd-round-placement")
        round_accept = gr.Checkbox(value=False, label="Accept its proposals as proposed (no review)",
                                   elem_id="opd-round-accept")
        round_button = gr.Button("Next round", variant="primary", elem_id="opd-next-round")
    rounds = gr.Dataframe(pd.DataFrame(columns=HISTORY_COLUMNS), interactive=False, elem_id="opd-rounds",
                          label="Round history: right / suppressed / corrected / broken / looping, of answers",
                          visible=False)
    rounds_plot = gr.Plot(elem_id="opd-rounds-plot", visible=False, label="Right answers across rounds",
                          show_label=False)
    runs = gr.Dataframe(pd.DataFrame(columns=RUN_COLUMNS), interactive=False, label="Runs",
                        elem_id="opd-runs")
    gr.Markdown("**Step timeline.** A curated record of the run above (the Run box) across its steps: the student's "
                "probability of each trained token at the chosen step, the error tokens outlined, and the right "
                "token's probability where a verifier or reference knows it.", elem_classes=["opd-help"])
    with gr.Row():
        timeline_button = gr.Button("Step timeline of this run", elem_id="opd-timeline-show")
        timeline_record = gr.Dropdown([], value=None, label="Curated record", allow_custom_value=True,
                                      elem_id="opd-timeline-record", visible=False)
        timeline_step = gr.Slider(0, 1, value=0, step=1, label="Step", elem_id="opd-timeline-step", visible=False)
    timeline_strip = gr.HTML("", elem_id="opd-timeline-strip", label="Timeline strip (HTML)", show_label=False)
    timeline_plot = gr.Plot(elem_id="opd-timeline-plot", visible=False, label="Timeline plot", show_label=False)
    with gr.Row():
        fix_samples = gr.Slider(0, 5, value=2, step=1, label="Sampled answers per prompt (plus greedy)")
        fix_compare = gr.Checkbox(value=True, label="Also under the base weights (twice the time)")
        fix_button = gr.Button("Regenerate and measure the fix rate", elem_id="opd-fix")
    gr.Markdown("*suppressed*: the flagged mistake is no longer produced · *corrected*: the record's verifier now "
                "passes. A model can stop writing `= 114` without learning to add.", elem_classes=["opd-help"])
    fix_summary = gr.Dataframe(pd.DataFrame(columns=FIX_RATE_COLUMNS), interactive=False,
                               label="Fix rate: curated vs held-out", elem_id="opd-fix-summary", visible=False)
    fix_rows = gr.Dataframe(pd.DataFrame(columns=ANSWER_COLUMNS), interactive=False,
                            label="Every regenerated answer", visible=False)

    train_inputs = [session, train_steps, train_lr, train_loss, train_span, train_drift_weight, train_drift_threshold,
                    train_rank, train_heldout, train_target, train_alpha, train_placebo, train_trackio]
    timeline_outputs = [session, timeline_record, timeline_step, timeline_strip, timeline_plot]
    train_button.click(on_train, train_inputs, [session, train_status, train_plot, loss_plot, runs, use_run_id,
                                                what_next], api_name="train", show_progress="hidden").success(
        on_timeline, [session, use_run_id, timeline_record], timeline_outputs, api_name=False)
    timeline_button.click(on_timeline, [session, use_run_id, timeline_record], timeline_outputs, api_name="timeline")
    timeline_record.input(on_timeline, [session, use_run_id, timeline_record], timeline_outputs, api_name=False)
    timeline_step.change(on_timeline_step, [session, timeline_step], [timeline_strip, timeline_plot],
                         api_name="timeline_step", show_progress="hidden")
    cancel_button.click(on_cancel, [session], [train_status], queue=False, api_name=False)
    reset_button.click(on_reset, [session], [train_status, runs], api_name="reset")
    use_run_button.click(on_use_run, [session, use_run_id], [train_status, runs], api_name="use_run")
    download_run_button.click(on_download_run, [use_run_id], [run_file], api_name="download_run")
    fix_button.click(on_fix_rate, [session, fix_samples, fix_compare], [fix_summary, fix_rows], api_name="fix_rate")
    round_button.click(on_next_round, [*train_inputs, round_hint_model, round_accept, round_placement],
                       [session, train_status, train_plot, loss_plot, runs, use_run_id, rounds, rounds_plot],
                       api_name="next_round", show_progress="hidden")
    app.load(on_runs, [], [runs, use_run_id, rounds, rounds_plot], api_name=False)
