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

import html
import itertools
import math

import pandas as pd

from ..scoring import GradientMap, PlacedHint, ScoreResult

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


def token_color(row, view: str) -> str:
    if pd.isna(row.logp_before):
        return "transparent"
    if view == "before":
        return _mix(RED, 1 - math.exp(row.logp_before))  # red where the student found the token unlikely
    if view == "after":
        return _mix(RED, 1 - math.exp(row.logp_after))
    if view == "delta":  # diverging: red where the hint lowered p, blue where it raised it
        delta = row.logp_after - row.logp_before
        return _mix(RED if delta < 0 else BLUE, min(1.0, abs(delta) / 5))
    if view in PLACEBO_VIEWS:
        if pd.isna(getattr(row, "logp_placebo", math.nan)):
            return "transparent"
        if view == "placebo":
            return _mix(RED, 1 - math.exp(row.logp_placebo))
        return _mix(RED if row.content_drop < 0 else BLUE, min(1.0, abs(row.content_drop) / 5))
    return _mix(PURPLE, min(1.0, row.kl / 5))


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
                 oneshot: bool = False, gradient: GradientMap | None = None) -> str:
    """HTML for the whole trajectory: generated tokens, the content of user and tool messages (greyed), role labels.
    Chat-template tokens and the system prompt are left out unless `show_template`. Rows from
    `scores.pending_from` on are drawn pending (their teacher numbers are on the way). `oneshot`: the
    strip's script does not preview moves (the old path, for the latency benchmark). With the placebo lane
    (`scoring.PLACEBO_COLUMNS`) tokens flagged style get a dotted underline; `gradient` (`HintScorer.gradient_map`)
    adds where the target pushes to the details of each target token."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r} is not one of {', '.join(VIEWS)}")
    table = scores.table
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
    for row in table.itertuples():
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
        color = "transparent" if pending and view != "before" else token_color(row, view)
        focusable = " tabindex='0'" if row.student else ""  # prompt tokens are not stops on the way to the strip
        parts.append(f"<span class='{' '.join(classes)}'{data}{focusable} "
                     f"style='background:{color}'>{_visible(row.text)}{tip}</span>{newline}")
    parts.append("<div class='opd-detail' aria-live='polite'>Hover or focus a token to see its probabilities."
                 "</div></div>")
    return "".join(parts)


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


STRIP_CSS = """
.opd-strip { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 14px; line-height: 2.1;
             padding: 8px; border: 1px solid #e5e7eb; border-radius: 8px; background: #fff; color: #111; }
.opd-strip:focus { outline: none; }
.opd-tok { display: inline-block; line-height: 1.4; padding: 2px 1px; margin: 1px; border-radius: 3px;
           border: 1px solid transparent; white-space: pre; }
.opd-student { cursor: pointer; }
.opd-student:hover, .opd-student:focus { outline: 2px solid #111; z-index: 5; }
.opd-context { color: #9ca3af; cursor: default; }
.opd-target { border-bottom: 2px solid #111; }
.opd-error { border: 2px solid #f59e0b; }
.opd-style { text-decoration: underline dotted #0f766e 2px; text-underline-offset: 4px; }
.opd-mapped { box-shadow: inset 0 -3px 0 #0ea5e9; }
.opd-pending { color: #6b7280; background-image: repeating-linear-gradient(135deg, rgba(107,114,128,.16) 0 3px,
               transparent 3px 6px) !important; }
.opd-ghost { display: inline-block; line-height: 1.4; padding: 2px 4px; margin: 1px 2px; border: 1px dashed #7c3aed;
             border-radius: 4px; color: #7c3aed;
             background: #f5f3ff; font-style: italic; white-space: pre; }
.opd-role { font-size: 11px; text-transform: uppercase; color: #fff; background: #6b7280; border-radius: 3px;
            padding: 1px 5px; margin: 0 6px 0 2px; }
.opd-role-assistant { background: #2563eb; } .opd-role-tool { background: #059669; }
.opd-role-user { background: #4b5563; } .opd-role-system { background: #9ca3af; }
.opd-tip { display: none; }
.opd-legend { font-family: system-ui, sans-serif; font-size: 12px; line-height: 1.6; color: #374151;
              margin-bottom: 6px; display: flex; flex-wrap: wrap; gap: 4px 8px; align-items: center; }
.opd-ramp { display: inline-block; width: 90px; height: 10px; border: 1px solid #d1d5db; border-radius: 2px; }
.opd-key { font-size: 11px; line-height: 1.4; padding: 1px 4px; border-radius: 3px; border: 1px solid transparent; }
.opd-key-hint { border: 1px dashed #7c3aed; color: #7c3aed; background: #f5f3ff; font-style: italic; }
.opd-key-error { border: 2px solid #f59e0b; } .opd-key-target { border-bottom: 2px solid #111; }
.opd-key-context { color: #9ca3af; }
.opd-key-style { text-decoration: underline dotted #0f766e 2px; text-underline-offset: 3px; }
.opd-key-mapped { box-shadow: inset 0 -3px 0 #0ea5e9; }
.opd-legend-note { color: #b45309; font-style: italic; }
.opd-push { color: #0369a1; }
.opd-key-pending { color: #6b7280; background-image: repeating-linear-gradient(135deg, rgba(107,114,128,.16) 0 3px,
                   transparent 3px 6px); }
.opd-detail { margin-top: 8px; padding: 6px 8px; border-top: 1px solid #e5e7eb; font-size: 12px; line-height: 1.5;
              color: #374151; min-height: 3.2em; }
.opd-detail span { display: block; }
.opd-detail table { margin-top: 4px; border-collapse: collapse; }
.opd-detail td, .opd-detail th { padding: 0 10px 0 0; white-space: pre; text-align: left; }
.opd-detail.opd-flash { background: #fef3c7; transition: background 0.2s; }
"""

# Event delegation on the component's root survives every re-render of its value. The details panel shows a copy of
# the hovered token's hidden `.opd-tip` (markup we escaped on the server), so nothing floats over other blocks.
# A click (or Enter) on a generated token moves the hint chip there at once and marks every token whose numbers will
# change as pending; the server's answer then replaces the strip. On touch, a long press shows a token's details
# instead of moving the hint. After each redraw, focus comes back to the strip unless the user is typing.
STRIP_JS = """
const strip = () => element.querySelector('.opd-strip');
const tokens = () => Array.from(element.querySelectorAll('.opd-tok[data-i]'));
let shown = null, quiet = false;  // the token whose details are up; a focus the script moves shows nothing new
const show = (target) => {
  const chip = target && target.closest && target.closest('.opd-tok[data-i]');
  const panel = element.querySelector('.opd-detail');
  const tip = chip && chip.querySelector('.opd-tip');
  if (panel && tip) { panel.innerHTML = tip.innerHTML; shown = chip.dataset.i; }
};
const cue = (message) => {
  const panel = element.querySelector('.opd-detail');
  if (panel) { panel.textContent = message; panel.classList.add('opd-flash');
               setTimeout(() => panel.classList.remove('opd-flash'), 900); }
  if (window.opdCue) window.opdCue(message);
};
element.addEventListener('mouseover', (event) => show(event.target));
element.addEventListener('focusin', (event) => { if (!quiet) show(event.target); });
const preview = (chip) => {
  const root = strip();
  if (!root || root.dataset.oneshot === '1' || root.dataset.placement === 'feedback') return;
  let ghost = root.querySelector('.opd-ghost');
  const old = ghost && ghost.nextElementSibling && ghost.nextElementSibling.dataset
    ? Number(ghost.nextElementSibling.dataset.i) : Number(chip.dataset.i);
  if (!ghost) { ghost = document.createElement('span'); ghost.className = 'opd-ghost';
                ghost.textContent = '·(Hint:·check·this·step·again.)'; }
  chip.before(ghost);
  const from = Math.min(old, Number(chip.dataset.i));
  for (const t of tokens()) if (Number(t.dataset.i) >= from && t.classList.contains('opd-student'))
    t.classList.add('opd-pending');
  root.dataset.stage = 'local'; root.dataset.hint = chip.dataset.i;
};
const place = (chip) => {
  if (!chip.classList.contains('opd-student')) {
    cue('prompt tokens cannot take a hint: click a generated token'); return;
  }
  preview(chip);
  trigger('click', {token: Number(chip.dataset.i)});
};
let pressTimer = null, pressed = false;
element.addEventListener('pointerdown', (event) => {
  if (event.pointerType !== 'touch') return;
  pressed = false; clearTimeout(pressTimer);
  const target = event.target;
  pressTimer = setTimeout(() => { pressed = true; show(target); }, 450);
});
for (const name of ['pointerup', 'pointercancel', 'pointermove'])
  element.addEventListener(name, () => clearTimeout(pressTimer));
element.addEventListener('contextmenu', (event) => { if (pressed) event.preventDefault(); });
element.addEventListener('click', (event) => {
  if (pressed) { pressed = false; return; }
  const chip = event.target.closest('.opd-tok[data-i]');
  if (chip) place(chip);
});
element.addEventListener('keydown', (event) => {
  const chip = event.target.closest('.opd-tok[data-i]');
  if (!chip) return;
  const all = tokens().filter((t) => t.classList.contains('opd-student')); const at = all.indexOf(chip);
  const jump = (flag) => { for (let k = at + 1; k < all.length; k++) if (all[k].dataset[flag] === '1') return all[k]; };
  let next = null;
  if (event.shiftKey && (event.key === 'ArrowRight' || event.key === 'ArrowLeft')) {  // move the hint itself
    const root = strip();
    const hinted = all.findIndex((t) => t.dataset.i === (root && root.dataset.hint));
    const from = hinted >= 0 ? hinted : at;
    const target = all[from + (event.key === 'ArrowRight' ? 1 : -1)];
    if (target) { place(target); target.focus(); } else cue('the hint cannot move further');
    event.preventDefault(); event.stopPropagation();
    return;
  }
  if (event.key === 'ArrowRight') next = all[at + 1] || cue('this is the last token');
  else if (event.key === 'ArrowLeft') next = all[at - 1] || cue('this is the first token');
  else if (event.key === 'n') next = jump('low') || cue('no later token below p 0.1');
  else if (event.key === 'm') next = jump('highkl') || cue('no later token with KL above 1');
  else if (event.key === 'Enter' || event.key === ' ') place(chip);
  else return;
  event.preventDefault(); event.stopPropagation();
  if (next) next.focus();
});
const typing = (t) => t && (t.tagName === 'TEXTAREA' || t.isContentEditable ||
  (t.tagName === 'INPUT' && !['radio', 'checkbox', 'range', 'button', 'submit', 'file'].includes(t.type)));
let rendered = null;
new MutationObserver(() => {
  const root = strip();
  if (!root || root.dataset.render === rendered) return;  // only a new render from the server, not a hover
  rendered = root.dataset.render;
  if (shown !== null) show(root.querySelector(`.opd-tok[data-i='${shown}']`));  // the same token's new numbers
  const active = document.activeElement;
  if (typing(active) || (element.contains(active) && active !== root) || !element.offsetParent) return;
  const target = root && (root.querySelector(`.opd-tok[data-i='${root.dataset.hint}']`) ||
                          root.querySelector('.opd-tok.opd-student'));
  if (target) { quiet = true; target.focus({preventScroll: true}); quiet = false; }
}).observe(element, {childList: true, subtree: true});
"""
