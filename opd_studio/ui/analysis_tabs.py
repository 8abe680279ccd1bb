"""The analysis sub-tabs under the strip: the probability plots, the position sweep, hint texts compared, the gradient
map and the leak check. Each reads the open record of the session and, where it needs the model, waits in the
model queue like every other action (`MODEL_WORK`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import plots
from ..diagnostics import compare_hint_texts, hint_flags, position_sweep, summarize_flags
from ..targets import ALPHA_MAX, TARGETS
from . import session as actions
from .common import MODEL_WORK, gpu, guarded, model_turn, synced
from .strip import strip_html


@dataclass
class AnalysisTabs:
    """What the annotate tab's events update: the plots after every edit, the gradient table when it is dropped."""

    logprob_plot: gr.Plot
    kl_plot: gr.Plot
    gradient_table: gr.Dataframe


# ------------------------------------------------------------------------------------------------------------------
# Handlers


@guarded
def on_plots(session: actions.Session):
    """The log-prob and KL plots of the open record (None, None when nothing is open)."""
    if session is None or session.record is None or session.scores.pending_from is not None:
        return None, None
    return plots.logprob_figure(session.scores), plots.kl_figure(session.scores)

@guarded
def on_plots_shown(session: actions.Session):
    """`on_plots` for the page: the plot boxes show only once they have something to draw."""
    return tuple(gr.update(value=figure, visible=figure is not None) for figure in on_plots(session))

@guarded
def on_gradient_shown(session: actions.Session):
    """The gradient map's table while it belongs to the strip as it is (an edit drops it)."""
    frame = session.gradient if session is not None else None
    return gr.update(value=actions.gradient_table(frame), visible=frame is not None)

@guarded
@gpu
def on_gradient(session, target, alpha, view):
    """The gradient map of the open record for `target`: in the token details and as a table."""
    session = synced(session)
    with model_turn(session):
        gradient = actions.gradient_map(session, target, alpha)
    return session, strip_html(session, view), gr.update(value=actions.gradient_table(gradient), visible=True)

@guarded
@gpu
def on_sweep(session, window):
    actions.require_open(session)
    if not session.hints:
        raise ValueError("place a hint first")
    error = session.scores.error_span or (session.scores.anchors[0],) * 2
    error = (error[0], max(error[1], error[0] + 1))
    placebo = session.hints[0].placebo or session.placebo_default or "default"  # the placebo the lane scores
    with model_turn(session):
        sweep = position_sweep(session.scorer, session.hints[0].inserted_text, error, window=int(window),
                               placebo=placebo)
    return gr.update(value=plots.sweep_figure(sweep), visible=True), gr.update(value=sweep.round(3), visible=True)

@guarded
@gpu
def on_compare(session, candidates):
    actions.require_open(session)
    texts = [t for t in (candidates or "").split("\n") if t.strip()]
    if not session.hints:
        raise ValueError("place a hint first")
    anchor = session.scores.anchors[0]
    with model_turn(session):
        comparison = compare_hint_texts(session.scorer, texts, anchor, session.scores.error_span)
    return (gr.update(value=plots.comparison_figure(comparison), visible=True),
            gr.update(value=comparison.round(3), visible=True))

@guarded
@gpu
def on_flags(session):
    actions.require_open(session)
    with model_turn(session):
        flags = hint_flags(session.scorer, session.scores)
    summary = summarize_flags(flags)
    text = (f"{summary['targets']} target positions · **{summary['leaks']} leak** (teacher's top token only in the "
            f"hint) · **{summary['continues_hint']} copy the hint** · max teacher mass on hint-only tokens "
            f"{summary['max_p_hint_only']:.3f}")
    return text, gr.update(value=flags.round(3), visible=True)


# ------------------------------------------------------------------------------------------------------------------
# Layout and events


def build(session: gr.State, strip: gr.HTML, view: gr.Radio) -> AnalysisTabs:
    """The sub-tabs and their own events; `strip` and `view`: the annotate tab's strip, which the gradient map marks."""
    with gr.Tabs():
        with gr.Tab("Probabilities"):
            logprob_plot = gr.Plot(elem_id="opd-logprob-plot", label="Log p before and after", show_label=False,
                                   visible=False)
            kl_plot = gr.Plot(elem_id="opd-kl-plot", label="KL per token", show_label=False, visible=False)
        with gr.Tab("Position sweep"):
            window = gr.Slider(2, 32, value=12, step=1, label="Window (tokens before the error)")
            sweep_button = gr.Button("Sweep")
            sweep_plot = gr.Plot(visible=False, label="Placement sweep", show_label=False)
            sweep_table = gr.Dataframe(interactive=False, visible=False, label="Placement sweep table")
        with gr.Tab("Compare hint texts"):
            candidates = gr.Textbox(lines=4, label="Candidate hint texts, one per line",
                                    value=" (Hint: recompute this step.)\n (Hint: check the carry.)"
                                          "\n (Note: continue.)")
            compare_button = gr.Button("Compare")
            compare_plot = gr.Plot(visible=False, label="Hint comparison", show_label=False)
            compare_table = gr.Dataframe(interactive=False, visible=False, label="Hint comparison table")
        with gr.Tab("Gradient map", elem_id="opd-gradient-tab"):
            gr.Markdown("Before training: at each target token, where the target pushes (its top tokens "
                        "against the student's) and its weight. Also in the token details (blue underline).",
                        elem_classes=["opd-help"])
            with gr.Row():
                gradient_target = gr.Dropdown(list(TARGETS), value="hinted", label="Target",
                                              elem_id="opd-gradient-target")
                gradient_alpha = gr.Number(1.0, label=f"Strength α, contrast and guided (0, {ALPHA_MAX:g}]",
                                           elem_id="opd-gradient-alpha")
                gradient_button = gr.Button("Show the gradient map", elem_id="opd-gradient")
            gradient_table = gr.Dataframe(interactive=False, visible=False, elem_id="opd-gradient-table",
                                          label="Gradient map", wrap=True,
                                          column_widths=["5%", "9%", "7%", "7%", "7%", "7%", "8%", "25%", "25%"])
        with gr.Tab("Leaks & contamination"):
            flags_button = gr.Button("Check the hint")
            flags_summary = gr.Markdown(label="Leak check", show_label=False)
            flags_table = gr.Dataframe(interactive=False, visible=False, label="Leak check table")

    gradient_button.click(on_gradient, [session, gradient_target, gradient_alpha, view],
                          [session, strip, gradient_table], api_name="gradient_map", **MODEL_WORK)
    sweep_button.click(on_sweep, [session, window], [sweep_plot, sweep_table], api_name="sweep", **MODEL_WORK)
    compare_button.click(on_compare, [session, candidates], [compare_plot, compare_table], api_name="compare",
                         **MODEL_WORK)
    flags_button.click(on_flags, [session], [flags_summary, flags_table], api_name="flags", **MODEL_WORK)
    return AnalysisTabs(logprob_plot, kl_plot, gradient_table)
