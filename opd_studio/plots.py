"""Plotly figures from the engine's results (score tables, training metrics). Pure functions: data in, a figure out,
no state.

Plotly renders a subset of HTML in labels, so token text (untrusted model output) is escaped before it becomes one.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go

if TYPE_CHECKING:
    from .scoring import ScoreResult

BEFORE, AFTER, ERROR, HINT = "#6b7280", "#dc2626", "rgba(250, 204, 21, 0.25)", "#7c3aed"
PLACEBO, CONTENT, RIGHT = "#0f766e", "#2563eb", "#059669"
# A longer trace plots the student positions around its hints and error span: one SVG point (and one bar) per
# token, thousands of them, kept the browser drawing for ~10 s at 8k tokens, and every click waited behind it. The
# strip's minimap shows the whole trace.
PLOT_MAX_POSITIONS = 1000
PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d"]


def _layout(figure: go.Figure, title: str, y_title: str, height: int = 300) -> go.Figure:
    # The legend sits under the plot, left-aligned: on a narrow screen it wraps downwards instead of covering data.
    figure.update_layout(title=dict(text=title, font=dict(size=14)), height=height,
                         margin=dict(l=50, r=20, t=40, b=40), template="plotly_white", yaxis_title=y_title,
                         legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, xanchor="left"),
                         hovermode="x unified", modebar=dict(orientation="v"))  # the toolbar off the title
    return figure


def _integer_steps(figure: go.Figure, steps: pd.Series) -> None:
    """Ticks on whole steps only (no 0.5, 1.5, …), at most about ten of them."""
    last = int(steps.max()) if len(steps) else 1
    figure.update_xaxes(title="step", tickmode="linear", tick0=0, dtick=max(1, -(-last // 10)), tickformat="d",
                        range=[-0.3, max(last, 1) + 0.3])


def _integer_positions(figure: go.Figure, positions: pd.Series) -> None:
    """Token positions are whole numbers: no tick at 31.5 on a short rollout."""
    if len(positions):
        width = int(positions.max() - positions.min()) + 1
        dtick = next(step for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 10**9) if width <= 10 * step)
        figure.update_xaxes(tickmode="linear", tick0=0, dtick=dtick, tickformat="d")


def label(text: str) -> str:
    """A token as a plot label: whitespace made visible, HTML escaped."""
    return html.escape(repr(text)[1:-1])


def _scored(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.student & table.logp_before.notna()]


def _plotted(scores: ScoreResult) -> tuple[pd.DataFrame, str]:
    """The scored rows to plot and, when a long trace is cut to `PLOT_MAX_POSITIONS` rows around its first hint and
    its error span, a title suffix saying which positions show."""
    rows = _scored(scores.table)
    if len(rows) <= PLOT_MAX_POSITIONS:
        return rows, ""
    marks = [*scores.anchors[:1], *(scores.error_span[:1] if scores.error_span else ())]
    centre = (min(marks) + max(marks)) // 2 if marks else int(rows.i.iloc[0])
    start = int(rows.i.searchsorted(centre)) - PLOT_MAX_POSITIONS // 2
    start = max(0, min(start, len(rows) - PLOT_MAX_POSITIONS))
    shown = rows.iloc[start:start + PLOT_MAX_POSITIONS]
    return shown, f" · positions {int(shown.i.iloc[0])}–{int(shown.i.iloc[-1])} of {int(rows.i.iloc[-1])}"


def _mark_hints_and_error(figure: go.Figure, scores: ScoreResult) -> None:
    span = scores.error_span
    if span:
        figure.add_vrect(x0=span[0] - 0.5, x1=span[1] - 0.5, fillcolor=ERROR, line_width=0, annotation_text="error",
                         annotation_position="top left")
    for hint in scores.hints:
        figure.add_vline(x=hint.insert_at - 0.5, line_dash="dash", line_color=HINT)


def logprob_figure(scores: ScoreResult) -> go.Figure:
    """log p(token) before vs after the hint, per student position, and under the placebo when the table has the
    placebo lane (tokens flagged style marked ◇); error span shaded, hints dashed."""
    rows, cut = _plotted(scores)
    labels = [label(t) for t in rows.text]
    figure = go.Figure([
        go.Scatter(x=rows.i, y=rows.logp_before, name="before (student)", mode="lines+markers",
                   line=dict(color=BEFORE), text=labels, hovertemplate="%{text}: %{y:.2f}"),
        go.Scatter(x=rows.i, y=rows.logp_after, name="after (hinted teacher)", mode="lines+markers",
                   line=dict(color=AFTER), text=labels, hovertemplate="%{text}: %{y:.2f}"),
    ])
    placebo = "logp_placebo" in rows and rows.logp_placebo.notna().any()
    if placebo:
        figure.add_trace(go.Scatter(x=rows.i, y=rows.logp_placebo, name="placebo teacher", mode="lines+markers",
                                    line=dict(color=PLACEBO, dash="dot"), text=labels,
                                    hovertemplate="%{text}: %{y:.2f}"))
        style = rows[rows["style"].astype(bool)]
        if len(style):
            figure.add_trace(go.Scatter(x=style.i, y=style.logp_after, name="style (the placebo does it too)",
                                        mode="markers", marker=dict(symbol="diamond-open", size=12, color=PLACEBO),
                                        text=[label(t) for t in style.text], hovertemplate="%{text}: style"))
    _mark_hints_and_error(figure, scores)
    _integer_positions(figure, rows.i)
    return _layout(figure, "log p(token): before vs after the hint" + (" vs the placebo" if placebo else "") + cut,
                   "log p")


def kl_figure(scores: ScoreResult) -> go.Figure:
    rows, cut = _plotted(scores)
    colors = [AFTER if t else BEFORE for t in rows.target]
    # textposition="none": the token is for the hover, not drawn on every bar
    figure = go.Figure(go.Bar(x=rows.i, y=rows.kl, marker_color=colors, text=[label(t) for t in rows.text],
                              textposition="none", hovertemplate="%{text}: KL %{y:.3f}", name="KL"))
    _mark_hints_and_error(figure, scores)
    _integer_positions(figure, rows.i)
    # served scores: KL over the server's top k + a tail bin, a lower bound of the full-vocabulary KL (served.py)
    over = f" over the top {scores.topk_figures} + tail" if scores.topk_figures else ""
    return _layout(figure, f"KL(teacher ‖ student){over} per position (red: in the loss span){cut}", "nats",
                   height=240)


def sweep_figure(sweep: pd.DataFrame) -> go.Figure:
    """Drop in log p(error) for each insertion point, with the collateral change on the tokens in between."""
    labels = [f"{k}: {label(t)}" for k, t in zip(sweep.insert_at, sweep.before_token)]
    figure = go.Figure([
        go.Bar(x=labels, y=sweep["drop"], name="Δ log p(error span)",
               marker_color=[HINT if r else AFTER for r in sweep.recommended]),
        go.Scatter(x=labels, y=-sweep.collateral, name="− mean |Δ log p| of tokens between", mode="lines+markers",
                   line=dict(color=BEFORE)),
    ])
    if "content_drop" in sweep:  # the part of the drop the hint's words explain (raw − placebo)
        figure.add_trace(go.Scatter(x=labels, y=sweep["content_drop"], name="content drop (− placebo's)",
                                    mode="lines+markers", line=dict(color=CONTENT, dash="dot")))
    figure.update_layout(hovermode="closest")
    return _layout(figure, "Where to put the hint (purple: recommended)", "nats", height=260)


def comparison_figure(comparison: pd.DataFrame) -> go.Figure:
    labels = [html.escape(t.strip()[:40]) for t in comparison.text]
    figure = go.Figure([
        go.Bar(y=labels, x=comparison["drop"], orientation="h", name="Δ log p(error span)", marker_color=AFTER),
        go.Bar(y=labels, x=-comparison.collateral, orientation="h", name="− mean |Δ| elsewhere", marker_color=BEFORE),
    ])
    if "content_drop" in comparison:
        figure.add_trace(go.Bar(y=labels, x=comparison["content_drop"], orientation="h", width=0.3,
                                name="content drop (− placebo's)", marker_color=CONTENT))
    figure.update_layout(barmode="overlay", hovermode="closest", yaxis=dict(autorange="reversed"))
    return _layout(figure, "Hint texts compared", "", height=80 + 40 * len(comparison))


def training_figure(per_record: pd.DataFrame) -> go.Figure:
    """p(error tokens) per curated record vs step (solid: the student, dashed: the hinted teacher's value)."""
    figure = go.Figure()
    per_record = per_record.dropna(subset=["p_error"])  # records kept as right have no error tokens: anchors only
    for n, (record_id, rows) in enumerate(per_record.groupby("record", sort=False)):
        color = PALETTE[n % len(PALETTE)]
        figure.add_trace(go.Scatter(x=rows.step, y=rows.p_error, name=html.escape(str(record_id)),
                                    mode="lines+markers", line=dict(color=color)))
        # The teacher's target: dashed, with open markers, drawn over the axis so it stays visible near p = 0.
        figure.add_trace(go.Scatter(x=rows.step, y=rows.p_teacher, mode="lines+markers", showlegend=False,
                                    line=dict(dash="dash", color=color, width=2.5),
                                    marker=dict(symbol="diamond-open", size=9, color=color), cliponaxis=False,
                                    name=f"{html.escape(str(record_id))} teacher"))
    figure.update_layout(yaxis_range=[-0.04, 1.04])
    _integer_steps(figure, per_record.step)
    return _layout(figure, "p(error tokens): student (solid) vs hinted teacher (dashed ◇)", "p", height=340)


def loss_figure(steps: pd.DataFrame) -> go.Figure:
    """Loss and drift (mean KL(trained ‖ base), nats/token) per step."""
    figure = go.Figure()
    if not steps.empty:
        for column, name in (("loss", "loss"), ("drift", "drift (curated, untouched tokens)"),
                             ("drift_heldout", "drift (held-out)")):
            if column in steps and steps[column].notna().any():
                figure.add_trace(go.Scatter(x=steps.step, y=steps[column], name=name, mode="lines+markers"))
        _integer_steps(figure, steps.step)
    return _layout(figure, "Loss and drift (mean KL(trained ‖ base), nats/token)", "", height=300)


def timeline_figure(timeline, step: int | None = None, error_span: tuple[int, int] | None = None) -> go.Figure:
    """A curated record across a run's steps (`train.Timeline`): p of each error token (red) and of the other target
    tokens (grey), p(error tokens), and p(right first token) where known; a line at `step`."""
    figure = go.Figure()
    error = error_span or (-1, -1)
    for n, i in enumerate(timeline.positions):
        in_error = error[0] <= i < error[1]
        figure.add_trace(go.Scatter(x=timeline.steps, y=[row[n] for row in timeline.p_target], mode="lines",
                                    line=dict(color=AFTER if in_error else "rgba(107,114,128,0.35)",
                                              width=2 if in_error else 1),
                                    name=f"#{i}", showlegend=False, hovertemplate=f"#{i}: %{{y:.3f}}"))
    figure.add_trace(go.Scatter(x=timeline.steps, y=timeline.p_error, name="p(error tokens)", mode="lines+markers",
                                line=dict(color=AFTER, width=3)))
    if timeline.p_right:
        figure.add_trace(go.Scatter(x=timeline.steps, y=timeline.p_right, mode="lines+markers",
                                    name=f"p(right: {label(timeline.right_text or '')})",
                                    line=dict(color=RIGHT, width=3)))
    if step is not None:
        figure.add_vline(x=step, line_dash="dash", line_color=HINT)
    figure.update_layout(yaxis_range=[-0.04, 1.04])
    _integer_steps(figure, pd.Series(timeline.steps))
    return _layout(figure, f"{html.escape(timeline.record_id)}: the student's p across steps (grey: other target "
                   "tokens)", "p", height=300)


def rounds_figure(history: pd.DataFrame) -> go.Figure:
    """Right answers across rounds (`rounds.round_history`), curated (solid) and held-out (dashed), as shares of the
    answers; round 0 is where round 1 started (right − corrected + broken). Looping answers dotted."""
    figure = go.Figure()
    for split, dash, name in (("curated", "solid", "curated"), ("heldout", "dash", "held-out")):
        rows = history[history.split == split].sort_values("round")
        if rows.empty:
            continue
        first = rows.iloc[0]
        start = (first.right - first.corrected + first.broken) / first.answers if first["round"] == 1 else None
        x = ([0] if start is not None else []) + rows["round"].tolist()
        right = ([start] if start is not None else []) + (rows.right / rows.answers).tolist()
        figure.add_trace(go.Scatter(x=x, y=right, name=f"right ({name})", mode="lines+markers",
                                    line=dict(color=RIGHT, dash=dash, width=3)))
        figure.add_trace(go.Scatter(x=rows["round"], y=rows.looping / rows.answers, name=f"looping ({name})",
                                    mode="lines+markers", line=dict(color=AFTER, dash="dot" if split == "curated"
                                                                    else "dashdot")))
    last = int(history["round"].max()) if len(history) else 1
    figure.update_xaxes(title="round (0: before the first)", tickmode="linear", tick0=0, dtick=1, tickformat="d",
                        range=[-0.2, last + 0.2])
    figure.update_layout(yaxis_range=[-0.04, 1.04], yaxis_tickformat=".0%")
    return _layout(figure, "Right answers across rounds: curated (solid) vs held-out (dashed)", "share of answers",
                   height=300)
