"""The token strip: a scored trajectory as HTML, one chip per token, coloured by the chosen view.

Token text is untrusted (it is model output or an uploaded file): every piece of it goes through `html.escape`,
and so do the hint texts. Chips carry their index in `data-i` (the studio's JS turns a click into "move the hint
here"); hint tokens are drawn as ghost chips with no index, so the numbering stays that of the original trajectory.
Whitespace is made visible (· for spaces, ↵ for newlines), message boundaries are marked with the role.

After an edit the strip may arrive in two updates (`ui.incremental`): first with exact numbers up to just past the
error span and the rest marked pending (`opd-pending`, `data-stage='window'`), then whole (`data-stage='full'`).
The strip's script moves the hint chip at the click, before the server answers, and marks what will change pending.
"""

from __future__ import annotations

import bisect
import os
import html
import itertools
import json
import math
import re

import numpy as np
import pandas as pd

from ..alignment import PlacedHint
from ..scoring import GradientMap, ScoreResult
from ..workspace import asset_text

VIEWS = ("before", "after", "delta", "kl", "placebo", "content")
PLACEBO_VIEWS = ("placebo", "content")  # need the placebo lane (`scoring.PLACEBO_COLUMNS`)
LOW_P = 0.1  # "low-probability" token for keyboard jumps
HIGH_KL = 1.0  # "high-KL" token, nats


def _visible(text: str) -> str:
    return html.escape(text).replace(" ", "·").replace("\n", "↵").replace("\t", "→")


def _mix(color: tuple[int, int, int], amount: float) -> str:
    amount = max(0.0, min(1.0, amount))
    r, g, b = (round(255 + (c - 255) * amount) for c in color)
    return f"rgb({r},{g},{b})"


RED, BLUE, PURPLE = (220, 38, 38), (37, 99, 235), (124, 58, 237)
_renders = itertools.count()  # each render differs, so the page always takes it (and drops any local preview)

LEGENDS = {
    "before": ("p(token) under the student", "likely", "unlikely", f"rgb(255,255,255), {_mix(RED, 1)}"),
    "after": ("p(token) under the hinted teacher", "likely", "unlikely", f"rgb(255,255,255), {_mix(RED, 1)}"),
    "delta": ("Δ log p, teacher − student", "hint lowered p", "raised", f"{_mix(RED, 1)}, rgb(255,255,255), "
              f"{_mix(BLUE, 1)}"),
    "kl": ("KL(teacher ‖ student) per token", "0", "≥ 5 nats", f"rgb(255,255,255), {_mix(PURPLE, 1)}"),
    "placebo": ("p(token) under the placebo teacher", "likely", "unlikely", f"rgb(255,255,255), {_mix(RED, 1)}"),
    "content": ("content: log p hinted − log p placebo", "the hint's words lowered p", "raised",
                f"{_mix(RED, 1)}, rgb(255,255,255), {_mix(BLUE, 1)}"),
}


def legend(view: str, placebo: bool = False, mapped: bool = False) -> str:
    """The colour ramp of `view` and the keys; `placebo`: the table has the placebo lane (its style key shows)."""
    title, low, high, stops = LEGENDS[view]
    missing = ("<span class='opd-legend-note'>turn on the placebo lane to colour by it</span>"
               if view in PLACEBO_VIEWS and not placebo else "")
    return (f"<div class='opd-legend'><b>{title}</b> <span>{low}</span>"
            f"<span class='opd-ramp' style='background:linear-gradient(90deg, {stops})'></span><span>{high}</span>"
            f"{missing}"
            "<span class='opd-key opd-key-hint'>hint</span><span class='opd-key opd-key-error'>error</span>"
            "<span class='opd-key opd-key-target'>in the loss</span>"
            + ("<span class='opd-key opd-key-style' title='the placebo lowers this token too: any parenthetical does "
               "it, not what the hint says'>style (the placebo does it too)</span>" if placebo else "")
            + ("<span class='opd-key opd-key-mapped'>gradient map (details on hover)</span>" if mapped else "")
            + "<span class='opd-key opd-key-context'>prompt (not clickable)</span>"
            "<span class='opd-key opd-key-pending'>updating</span></div>")


def token_colors(table: pd.DataFrame, view: str) -> list[str]:
    """Each row's background in `view`: `_mix` of the view's colour by how far the row is from neutral (a row with no
    numbers, or with no placebo numbers in a placebo view, is transparent)."""
    def column(name: str) -> np.ndarray:
        return table[name].to_numpy(dtype=np.float64) if name in table.columns else np.full(len(table), np.nan)

    logp_before = column("logp_before")
    missing = np.isnan(logp_before)
    if view in ("before", "after", "placebo"):  # red where the token is unlikely
        logp = column({"before": "logp_before", "after": "logp_after", "placebo": "logp_placebo"}[view])
        amount, base = 1 - np.exp(logp), np.broadcast_to(RED, (len(table), 3))
        missing |= np.isnan(logp) if view == "placebo" else False
    elif view in ("delta", "content"):  # diverging: red where the hint lowered p, blue where it raised it
        change = column("logp_after") - logp_before if view == "delta" else column("content_drop")
        amount, base = np.abs(change) / 5, np.where((change < 0)[:, None], RED, BLUE)
        missing |= np.isnan(column("logp_placebo")) if view == "content" else False
    else:
        amount, base = column("kl") / 5, np.broadcast_to(PURPLE, (len(table), 3))
    amount = np.clip(np.nan_to_num(amount, nan=1.0), 0.0, 1.0)[:, None]
    rgb = np.rint(255 + (np.asarray(base) - 255) * amount).astype(int).tolist()
    return ["transparent" if gone else f"rgb({r},{g},{b})" for gone, (r, g, b) in zip(missing.tolist(), rgb)]


def shown_colors(table: pd.DataFrame, view: str, pending: np.ndarray, sampled: bool) -> list[str]:
    """The colour each row is drawn in: `token_colors` in `view`, except pending rows (their teacher numbers are on
    the way), which show the student's colour where it is known to be final (the before view, or a record opened
    from its sampled log-probabilities) and none otherwise."""
    colors = token_colors(table, view)
    if not pending.any():
        return colors
    before = token_colors(table, "before") if view == "before" or sampled else ["transparent"] * len(table)
    return [b if waiting else color for color, b, waiting in zip(colors, before, pending.tolist())]


def _top_rows(before: list, after: list, placebo: list | None = None) -> str:
    cells = []
    for n in range(max(len(before), len(after), len(placebo or []))):
        b = before[n] if n < len(before) else ("", 0.0)
        a = after[n] if n < len(after) else ("", 0.0)
        z = ""
        if placebo is not None:
            pair = placebo[n] if n < len(placebo) else ("", 0.0)
            z = f"<td>{_visible(pair[0])}</td><td>{pair[1]:.3f}</td>"
        cells.append(f"<tr><td>{_visible(b[0])}</td><td>{b[1]:.3f}</td><td>{_visible(a[0])}</td><td>{a[1]:.3f}</td>"
                     f"{z}</tr>")
    return "".join(cells)


def _placebo_lines(row) -> str:
    """before / hinted / placebo, and the part of the change the hint's content explains."""
    if pd.isna(getattr(row, "logp_placebo", math.nan)):
        return ""
    style = (" · <b>style</b>: the placebo lowers it too, so this drop is not the hint's content"
             if row.style else "")
    return (f"<span>p before / hinted / placebo {math.exp(row.logp_before):.3f} / {math.exp(row.logp_after):.3f} / "
            f"{math.exp(row.logp_placebo):.3f} · content (hinted − placebo) {row.content_drop:+.2f} nats"
            f"{style}</span>")


def _gradient_lines(push) -> str:
    """The gradient map at this token: where the target pushes, its weight, its top tokens vs the student's."""
    if push is None:
        return ""
    held = "" if push.trained else " · held at the student's own distribution (not trained)"
    rows = []
    for n in range(max(len(push.top_student), len(push.top_target))):
        s = push.top_student[n] if n < len(push.top_student) else ("", 0.0)
        t = push.top_target[n] if n < len(push.top_target) else ("", 0.0)
        rows.append(f"<tr><td>{_visible(s[0])}</td><td>{s[1]:.3f}</td><td>{_visible(t[0])}</td>"
                    f"<td>{t[1]:.3f}</td></tr>")
    return (f"<span class='opd-push'>gradient map ({html.escape(str(push.target))} target): p {push.p_student:.3f} → "
            f"{push.p_target:.3f} · push {push.push:+.2f} nats · weight {push.weight:.3f}{held}</span>"
            f"<table><tr><th colspan=2>student</th><th colspan=2>target</th></tr>{''.join(rows)}</table>")


def _rank(rank, topk: int | None) -> str:
    """A served rank outside the top k is unknown (echo + logprobs do not say): shown as "> k"."""
    return (f"> {topk}" if topk else "?") if pd.isna(rank) else str(rank)


def _tooltip(row, push=None, topk: int | None = None) -> str:
    """`topk`: the scores came from a server (`ScoreResult.topk_figures`): entropy and KL are over its top k + a tail
    bin, lower bounds of the full figures, and say so."""
    p_before, p_after = math.exp(row.logp_before), math.exp(row.logp_after)
    placebo = not pd.isna(getattr(row, "logp_placebo", math.nan))
    header = "<th colspan=2>before</th><th colspan=2>after</th>" + ("<th colspan=2>placebo</th>" if placebo else "")
    return (
        f"<span class='opd-tip' role='tooltip'><b>#{row.i} {_visible(row.text)}</b>"
        f"<span>p {p_before:.3f} → {p_after:.3f} · rank {_rank(row.rank_before, topk)} → "
        f"{_rank(row.rank_after, topk)}</span>"
        f"<span>entropy {row.entropy_before:.2f} → {row.entropy_after:.2f} · KL {row.kl:.3f}"
        f"{f' (top-{topk} + tail)' if topk else ''}</span>"
        f"{_placebo_lines(row)}"
        f"<table><tr>{header}</tr>"
        f"{_top_rows(row.top_before, row.top_after, row.top_placebo if placebo else None)}</table>"
        f"{_gradient_lines(push)}</span>")


def render_strip(scores: ScoreResult, view: str = "delta", trajectory=None, show_template: bool = False,
                 oneshot: bool = False, gradient: GradientMap | None = None, sampled: bool = False,
                 record_id: str = "", windowed: bool = True) -> str:
    """HTML for the whole trajectory: generated tokens, the content of user and tool messages (greyed), role labels.
    Chat-template tokens and the system prompt are left out unless `show_template`. Rows from
    `scores.pending_from` on are drawn pending (their teacher numbers are on the way); `sampled`: pending rows show
    the student's colour from their before-values (a record just opened with its sampled log-probabilities).
    `oneshot`: the strip's script does not preview moves (the old path, for the latency benchmark). With the placebo
    lane (`scoring.PLACEBO_COLUMNS`) tokens flagged style get a dotted underline; `gradient`
    (`HintScorer.gradient_map`) adds where the target pushes to the details of each target token.

    With `windowed`, a trajectory longer than `WINDOWED_MIN_TOKENS` is drawn windowed (`render_windowed_strip`):
    its tokens travel as data and the page draws the part on screen (`record_id` tells the page a new record)."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r} is not one of {', '.join(VIEWS)}")
    table = scores.table
    if windowed and len(table) > WINDOWED_MIN_TOKENS:
        return render_windowed_strip(scores, view, trajectory, show_template, oneshot, gradient, sampled, record_id)
    has_placebo = "logp_placebo" in table.columns
    pushes = {}
    if gradient is not None and not gradient.frame.empty:
        pushes = {row.i: row for row in gradient.frame.assign(target=gradient.target).itertuples()}
    hints_at: dict[int, list[PlacedHint]] = {}
    for hint in scores.hints:
        hints_at.setdefault(hint.insert_at, []).append(hint)
    error = scores.error_span or (-1, -1)
    pending_from = len(table) if scores.pending_from is None else scores.pending_from
    first = scores.hints[0] if scores.hints else None
    parts = [f"<div class='opd-strip' data-view='{view}' tabindex='-1' data-render='{next(_renders)}' "
             f"data-stage='{'window' if pending_from < len(table) else 'full'}' "
             f"data-hint='{first.anchor if first else ''}' "
             f"data-placement='{html.escape(first.placement if first else 'inline')}' data-oneshot='{int(oneshot)}'>",
             legend(view, has_placebo, bool(pushes))]
    previous_message = None
    visible_context = _visible_context(trajectory, show_template)
    pending_rows = (table.i.to_numpy() >= pending_from) & table.student.to_numpy(dtype=bool)
    for row, color in zip(table.itertuples(), shown_colors(table, view, pending_rows, sampled)):
        message = trajectory.message_index[row.i] if trajectory else None
        if message != previous_message and trajectory:
            role = html.escape(trajectory.roles[message])
            parts.append(f"<span class='opd-role opd-role-{role}'>{role}</span>")
            previous_message = message
        for hint in hints_at.get(row.i, []):
            parts.append(f"<span class='opd-ghost' title='hint ({html.escape(hint.placement)}), "
                         f"{len(hint.ids)} tokens'>{_visible(hint.text)}</span>")
        if not row.student and row.i not in visible_context and not row.hint:
            continue
        classes = ["opd-tok", "opd-student" if row.student else "opd-context"]
        if error[0] <= row.i < error[1]:
            classes.append("opd-error")
        if row.target:
            classes.append("opd-target")
        pending = row.i >= pending_from and row.student
        if pending:
            classes.append("opd-pending")
        if has_placebo and not pending and bool(getattr(row, "style", False)):
            classes.append("opd-style")
        if row.i in pushes:
            classes.append("opd-mapped")
        scored = not pd.isna(row.logp_before)
        data = f" data-i='{row.i}'"
        if scored:
            data += (f" data-p='{math.exp(row.logp_before):.4f}' data-q='{math.exp(row.logp_after):.4f}'"
                     f" data-kl='{row.kl:.4f}'"
                     f" data-low='{int(math.exp(row.logp_before) < LOW_P)}' data-highkl='{int(row.kl > HIGH_KL)}'")
        tip = (_pending_tip(row) if pending else _tooltip(row, pushes.get(row.i), scores.topk_figures)) if scored else ""
        newline = "<br>" if row.text.endswith("\n") else ""
        focusable = " tabindex='0'" if row.student else ""  # prompt tokens are not stops on the way to the strip
        parts.append(f"<span class='{' '.join(classes)}'{data}{focusable} "
                     f"style='background:{color}'>{_visible(row.text)}{tip}</span>{newline}")
    parts.append("<div class='opd-detail' aria-live='polite'>Hover or focus a token to see its probabilities."
                 "</div></div>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------------------------
# The windowed strip (long trajectories)

WINDOWED_MIN_TOKENS = 1500  # longer trajectories are drawn windowed: at most WINDOW_ELEMENTS token elements
WINDOW_ELEMENTS = 1200  # token elements the page draws at a time (the part on screen and a margin either side)
FOLD_MIN_TOKENS = 24  # a shorter turn or think block gets no fold
FOLDED_AT_OPEN_TOKENS = 256  # earlier turns and tool results this long open folded (unless the hint is in them)
# bits of the `f` column of `strip_data`
ERROR, TARGET, PENDING, STYLE, MAPPED, LOW, HIGHKL, NEWLINE, STUDENT = (1 << n for n in range(9))


def _rounded(values, digits: int = 4) -> list:
    """A column's numbers rounded to `digits` places, NaN (not computed) as None."""
    return [None if v != v else v for v in np.round(np.asarray(values, dtype=np.float64), digits).tolist()]


def _tops(column) -> list:
    return [[[text, round(p, 3)] for text, p in pairs] for pairs in column]


def strip_data(scores: ScoreResult, view: str = "delta", trajectory=None, show_template: bool = False,
               gradient: GradientMap | None = None, sampled: bool = False) -> dict:
    """The strip as columns the page draws from, one entry per token shown (k = 0 … n−1, the rows `render_strip`
    draws): `i` (trajectory index), `t` (raw text: the page escapes it), `c` (colour in `view`), `p`, `q` (p under
    the student and the teacher), `kl`, `f` (bit flags: ERROR … STUDENT), `rb`/`ra` ranks, `eb`/`ea` entropies,
    `tb`/`ta` top alternatives, `z` (p under the placebo, with the lane); `roles` [[k, role]], `hints`
    [[k, text, placement, n tokens]] (drawn before token k), `folds` [[k_start, k_end, label, folded at open]],
    `hint_k` and `error_k` (where the record opens; None: none); with `gradient`, `g` {k: [p_student, p_target,
    push, weight, trained, top_student, top_target]} at its target positions and `g_target` (the construction).
    Numbers are `scores.table`'s, rounded to 4 places. Built column by column: this is on the way to a long
    record's first paint."""
    table = scores.table
    placebo = "logp_placebo" in table.columns
    pushes = {} if gradient is None or gradient.frame.empty else {row.i: row for row in gradient.frame.itertuples()}
    error = scores.error_span or (-1, -1)
    pending_from = len(table) if scores.pending_from is None else scores.pending_from
    student = table.student.to_numpy(dtype=bool)
    shown_mask = student | table.hint.to_numpy(dtype=bool)
    visible_context = _visible_context(trajectory, show_template)
    if visible_context:
        shown_mask |= table.i.isin(visible_context).to_numpy()
    rows = table[shown_mask]
    i = rows.i.to_numpy()
    student = student[shown_mask]
    logp_before = rows.logp_before.to_numpy(dtype=np.float64)
    scored = ~np.isnan(logp_before)
    p_before = np.exp(logp_before)
    kl = rows.kl.to_numpy(dtype=np.float64)
    pending = (i >= pending_from) & student
    flags = (np.where((error[0] <= i) & (i < error[1]), ERROR, 0) | np.where(rows.target.to_numpy(bool), TARGET, 0)
             | np.where(pending, PENDING, 0) | np.where(student, STUDENT, 0)
             | np.where(np.isin(i, list(pushes)), MAPPED, 0)
             | np.where(rows.text.str.endswith("\n").to_numpy(bool), NEWLINE, 0)
             | np.where(scored & (p_before < LOW_P), LOW, 0) | np.where(scored & (kl > HIGH_KL), HIGHKL, 0))
    if placebo:
        flags |= np.where(~pending & rows["style"].to_numpy(bool), STYLE, 0)
    data = {"i": i.tolist(), "t": rows.text.tolist(), "c": shown_colors(rows, view, pending, sampled), "p": _rounded(p_before),
            "q": _rounded(np.where(scored, np.exp(rows.logp_after.to_numpy(dtype=np.float64)), np.nan)),
            "kl": _rounded(kl), "f": flags.tolist(),
            "rb": _ranks(rows.rank_before), "ra": _ranks(rows.rank_after),
            "eb": _rounded(rows.entropy_before, 2), "ea": _rounded(rows.entropy_after, 2),
            "tb": _tops(rows.top_before), "ta": _tops(rows.top_after)}
    if placebo:
        data["z"] = _rounded(np.exp(rows.logp_placebo.to_numpy(dtype=np.float64)))
    # a hint is drawn before the first shown token at or after its insertion point
    hints = []
    for hint in sorted(scores.hints, key=lambda h: h.insert_at):
        k = int(np.searchsorted(i, hint.insert_at))
        if k < len(i):
            hints.append([k, hint.text, hint.placement, len(hint.ids)])
    message_of, roles = [], []
    if trajectory:
        message_of = [trajectory.message_index[j] for j in data["i"]]
        roles = [[k, trajectory.roles[m]] for k, m in enumerate(message_of) if k == 0 or m != message_of[k - 1]]
    first = scores.hints[0] if scores.hints else None
    k_of = {j: k for k, j in enumerate(data["i"])}
    if pushes:  # the gradient map's lines of the token details (`_gradient_lines`), at the mapped tokens only
        data["g_target"] = gradient.target
        data["g"] = {str(k_of[j]): [*_rounded([row.p_student, row.p_target]), *_rounded([row.push], 2),
                                    *_rounded([row.weight]), bool(row.trained),
                                    *_tops([row.top_student, row.top_target])]
                     for j, row in pushes.items() if j in k_of}
    hint_k = _k_at_or_after(k_of, data["i"], first.insert_at) if first else None
    error_k = _k_at_or_after(k_of, data["i"], error[0]) if scores.error_span else None
    folds = _folds(trajectory, data["i"], message_of, {hint_k, error_k} - {None}) if trajectory else []
    return {**data, "roles": roles, "hints": hints, "folds": folds, "hint_k": hint_k, "error_k": error_k}


def _ranks(column: pd.Series) -> list:
    return [None if v != v else int(v) for v in column.to_numpy(dtype=np.float64, na_value=np.nan).tolist()]


def _k_at_or_after(k_of: dict[int, int], shown: list[int], i: int) -> int | None:
    if i in k_of:
        return k_of[i]
    later = [k for k, j in enumerate(shown) if j >= i]
    return later[0] if later else None


def _folds(trajectory, shown: list[int], message_of: list[int], keep_open: set[int]) -> list[list]:
    """Spans the reader may fold: each turn but the last assistant turn, and each <think> block; earlier turns and
    tool results of FOLDED_AT_OPEN_TOKENS or more open folded, unless they hold the hint or the error."""
    folds = []
    assistants = [m for m, role in enumerate(trajectory.roles) if role == "assistant"]
    last = assistants[-1] if assistants else None
    start = 0
    for k in range(1, len(shown) + 1):
        if k < len(shown) and message_of[k] == message_of[start]:
            continue
        message = message_of[start]
        if message != last and k - start >= FOLD_MIN_TOKENS:
            folded = k - start >= FOLDED_AT_OPEN_TOKENS and not any(start <= j < k for j in keep_open)
            folds.append([start, k, f"{trajectory.roles[message]} turn", folded])
        start = k
    ends = [trajectory.offsets[i][1] for i in shown]  # character ends of the shown tokens, increasing
    for block in re.finditer(r"<think>.*?</think>", trajectory.text, flags=re.DOTALL):
        first, last = bisect.bisect_right(ends, block.start()), bisect.bisect_left(ends, block.end()) + 1
        if last - first >= FOLD_MIN_TOKENS:
            folds.append([first, min(last, len(shown)), "think block", False])
    return sorted(folds)


AFTER_OF = {"q": "p", "ra": "rb", "ea": "eb", "ta": "tb"}  # each after-column and the before-column it repeats


def pack_strip(data: dict) -> dict:
    """`strip_data` as the page receives it (the long strip's payload, sent whole at each stage of an open): the
    same columns, with what repeats sent once. Token texts and top-alternative texts are indices into one string
    table `s`, colours indices into `palette`; each top-alternative list is flat [text index, p in thousandths, …]
    (p was rounded to 3 places: the same number); an after-column (`q`, `ra`, `ea`, `ta`) is null where it equals its
    before-column, as it does everywhere before the first hint. `strip.js`'s `unpackStrip` gives back `data`
    exactly (tests/test_ui_long_browser.py). At 8k tokens of the default model this is under half the JSON."""
    strings: dict[str, int] = {}
    palette: dict[str, int] = {}

    def text(t: str) -> int:
        return strings.setdefault(t, len(strings))

    def tops(pairs: list) -> list:
        return [x for t, p in pairs for x in (text(t), round(p * 1000))]

    packed = {key: value for key, value in data.items() if key not in ("t", "c", "tb") and key not in AFTER_OF}
    packed["t"] = [text(t) for t in data["t"]]
    packed["c"] = [palette.setdefault(c, len(palette)) for c in data["c"]]
    packed["tb"] = [tops(pairs) for pairs in data["tb"]]
    for after, before in AFTER_OF.items():
        packed[after] = [None if a == b else (tops(a) if after == "ta" else a)
                         for a, b in zip(data[after], data[before])]
    packed["s"], packed["palette"] = list(strings), list(palette)
    return packed


def render_windowed_strip(scores: ScoreResult, view: str = "delta", trajectory=None, show_template: bool = False,
                          oneshot: bool = False, gradient: GradientMap | None = None, sampled: bool = False,
                          record_id: str = "") -> str:
    """A long trajectory's strip: the legend, an empty scroll box the page fills with the part on screen
    (`WINDOW_ELEMENTS` token elements at most), a minimap canvas of the whole trajectory, and `strip_data` as JSON in
    a hidden text area (`pack_strip`ped and escaped; the page reads it as text and sets every token's text with
    textContent)."""
    table = scores.table
    data = strip_data(scores, view, trajectory, show_template, gradient, sampled)
    first = scores.hints[0] if scores.hints else None
    pending_from = len(table) if scores.pending_from is None else scores.pending_from
    payload = html.escape(json.dumps(pack_strip(data), ensure_ascii=False, separators=(",", ":")), quote=False)
    return (f"<div class='opd-strip opd-windowed' data-view='{view}' tabindex='-1' data-render='{next(_renders)}' "
            f"data-stage='{'window' if pending_from < len(table) else 'full'}' "
            f"data-hint='{first.anchor if first else ''}' data-record='{html.escape(record_id, quote=True)}' "
            f"data-placement='{html.escape(first.placement if first else 'inline')}' data-oneshot='{int(oneshot)}' "
            f"data-windowed='1' data-count='{len(data['i'])}' data-sampled='{int(sampled)}' "
            f"data-elements='{WINDOW_ELEMENTS}'>"
            f"{legend(view, 'logp_placebo' in table.columns, gradient is not None and not gradient.frame.empty)}"
            "<div class='opd-long'><div class='opd-scroll' tabindex='-1'><div class='opd-slice'></div></div>"
            "<div class='opd-map-box' title='the whole trajectory: click or drag to go there'>"
            "<canvas class='opd-map' width='132' height='520'></canvas><div class='opd-map-view'></div></div></div>"
            "<div class='opd-where' aria-live='polite'></div>"
            f"<textarea class='opd-data' hidden readonly>{payload}</textarea>"
            "<div class='opd-detail' aria-live='polite'>Hover or focus a token to see its probabilities."
            "</div></div>")


def render_timeline(trajectory, timeline, k: int, error_span: tuple[int, int] | None = None) -> str:
    """A curated record's strip at step `timeline.steps[k]` of a run (`train.Timeline`): each target token coloured
    by the student's probability of it then (red: unlikely), the error tokens outlined; the details say p at this
    step beside p at step 0. No hint, no clicks: this is what training did, not an edit."""
    k = max(0, min(int(k), len(timeline.steps) - 1))
    p_now = dict(zip(timeline.positions, timeline.p_target[k])) if timeline.p_target else {}
    p_start = dict(zip(timeline.positions, timeline.p_target[0])) if timeline.p_target else {}
    error = error_span or (-1, -1)
    right = ""
    if timeline.p_right:
        right = (f" · p(right {_visible(timeline.right_text or '')}) {timeline.p_right[0]:.3f} → "
                 f"<b class='opd-right-p'>{timeline.p_right[k]:.3f}</b>")
    parts = [f"<div class='opd-strip opd-timeline' data-step='{timeline.steps[k]}' data-render='{next(_renders)}'>",
             f"<div class='opd-legend'><b>step {timeline.steps[k]} of {timeline.steps[-1]}</b> · p(error tokens) "
             f"{timeline.p_error[0]:.3f} → <b class='opd-error-p'>{timeline.p_error[k]:.3f}</b>{right} · "
             f"<b>p(token) under the student at this step</b> <span>likely</span><span class='opd-ramp' "
             f"style='background:linear-gradient(90deg, rgb(255,255,255), {_mix(RED, 1)})'></span>"
             "<span>unlikely</span><span class='opd-key opd-key-error'>error</span>"
             "<span class='opd-key opd-key-target'>trained</span></div>"]
    visible = _visible_context(trajectory, False)
    previous_message = None
    for i, text in enumerate(trajectory.token_texts):
        message = trajectory.message_index[i]
        student = trajectory.student_mask[i]
        if not student and i not in visible:
            continue
        if message != previous_message:
            role = html.escape(trajectory.roles[message])
            parts.append(f"<span class='opd-role opd-role-{role}'>{role}</span>")
            previous_message = message
        classes = ["opd-tok", "opd-student" if student else "opd-context"]
        if error[0] <= i < error[1]:
            classes.append("opd-error")
        color, title, data = "transparent", "", ""
        if i in p_now:
            classes.append("opd-target")
            color = _mix(RED, 1 - p_now[i])
            title = f" title='#{i} p {p_start[i]:.3f} at step 0 → {p_now[i]:.3f} at step {timeline.steps[k]}'"
            data = f" data-i='{i}' data-p='{p_now[i]:.4f}'"
        newline = "<br>" if text.endswith("\n") else ""
        parts.append(f"<span class='{' '.join(classes)}'{data}{title} style='background:{color};cursor:default'>"
                     f"{_visible(text)}</span>{newline}")
    parts.append("</div>")
    return "".join(parts)


def _pending_tip(row) -> str:
    return (f"<span class='opd-tip' role='tooltip'><b>#{row.i} {_visible(row.text)}</b>"
            f"<span>p before {math.exp(row.logp_before):.3f} · the hinted numbers are on the way</span></span>")


def _visible_context(trajectory, show_template: bool) -> set[int]:
    """Context tokens worth showing: those inside the content of user and tool messages."""
    if trajectory is None:
        return set()
    if show_template:
        return set(range(len(trajectory)))
    shown = set()
    for i, (a, b) in enumerate(trajectory.offsets):
        message = trajectory.message_index[i]
        start, end = trajectory.content_spans[message]
        if trajectory.roles[message] in ("user", "tool") and start <= a and b <= end:
            shown.add(i)
    return shown


STRIP_CSS = asset_text("strip.css")

# Event delegation on the component's root survives every re-render of its value. The details panel shows a copy of
# the hovered token's hidden `.opd-tip` (markup we escaped on the server), so nothing floats over other blocks.
# A click (or Enter) on a generated token moves the hint chip there at once and marks every token whose numbers will
# change as pending; the server's answer then replaces the strip. On touch, a long press shows a token's details
# instead of moving the hint. After each redraw, focus comes back to the strip unless the user is typing.
STRIP_JS = asset_text("strip.js")


# ------------------------------------------------------------------------------------------------------------------
# The open record of a studio session

ONESHOT = os.environ.get("OPD_STUDIO_ONESHOT") == "1"  # the old path (no preview, no window, no speculation): bench


def strip_html(session, view: str) -> str:
    """The strip of a session's open record (`ui.session.Session`) in the chosen view."""
    return render_strip(session.scores, view, session.scorer.trajectory, oneshot=ONESHOT, gradient=session.gradient,
                        sampled=session.opening == "sampled", record_id=session.record.id, windowed=not ONESHOT)
