"""The Inspect & annotate tab: its layout, its events, and the handlers they call (thin: validate, call the session
action, render) for the strip and the hint editor. The work happens in `ui.session`, `ui.incremental` and the
engine; the analysis sub-tabs are `ui.analysis_tabs`, the proposals cache and the read-ahead `ui.readahead`, the
page's scripts and styles files under assets/studio/.

Edits answer in up to three steps: the page moves the hint chip at once (the strip's script), the server sends the
numbers from the hint to just past the error span, then the whole strip; the plots follow in a chained event. Every
record that opens (generate, upload, next, previous, after a review) runs the chosen hint model; its proposals are
remembered per record, and the queue shows which records have them.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time

import gradio as gr

from ..alignment import LOSS_SPANS
from ..hints import HINT_MODELS, needs_model
from ..records import PLACEMENTS, Record
from ..rollout import SamplingConfig
from ..served import is_served
from ..workspace import asset_text, prompt_id
from . import session as actions
from .common import (MODEL_WORK, counts_markdown, gpu, guarded, guarded_stream, model, model_turn, opened,
                     signed_in, store, synced, weights, workspace)
from . import readahead
from . import analysis_tabs
from .strip import ONESHOT, STRIP_JS, VIEWS, strip_html

log = logging.getLogger("opd_studio.ui")
HINT_MODEL_CHOICES = ["auto", *HINT_MODELS, "manual"]  # the registry, between "auto" and hand-placed hints
EMPTY_STRIP = ("<div class='opd-strip' data-render='empty'>No rollout open yet. Pick a demo task and press "
               "<b>Generate</b>, write a prompt, or upload rollouts (JSONL).</div>")
FIRST_STATUS = ("**Start here:** pick a demo task (or switch to *Prompt*) and press **Generate**, or upload a JSONL "
                "file of rollouts. Then click a token to move the hint, `a` accept, `x` reject, `j` next. "
                "Press `?` for all keys.")
KEYS = [("click / Enter", "move the hint before the token"), ("← →", "previous / next token"),
        ("shift ← →", "move the hint one token"),
        ("n / m", "next low-p / high-KL token"), ("a", "accept"), ("x", "reject"), ("r", "keep as right (no hint)"),
        ("u", "undo"), ("j / k", "next / previous record"), ("e", "edit the hint text"),
        ("Esc", "leave a text box (back to the strip)"), ("s", "go to the strip"), ("?", "show / hide this")]
KEYS_MARKDOWN = " · ".join(f"`{key}` {what}" for key, what in KEYS)


def hint_model_for(name: str, record: Record):
    if name in (None, "manual"):
        return None
    chat = None
    if needs_model(name):
        from ..hints.critic import LocalChat, OpenAIChat

        current, tokenizer = model()
        if is_served(current):  # a model-backed hint model asks the server's chat completions
            chat = OpenAIChat(current.client.base_url, current.client.http.model_name(), current.client.config.api_key)
        else:
            chat = LocalChat(current, tokenizer)  # it runs on the process's model as it is now
    return readahead.RememberedHintModel(name, actions.hint_model_for(name, record, chat=chat))


# ------------------------------------------------------------------------------------------------------------------
# Views


def status_markdown(session: actions.Session) -> str:
    if session.record is None:
        return FIRST_STATUS
    record, table = session.record, session.scores.table
    which = "base weights" if session.base_weights else f"{weights(session).label} weights"
    parts = [f"**{record.id}** · {len(table)} tokens · loss span: {session.span} · {which}"]
    anchors = session.scores.anchors
    if anchors:
        row = table.loc[anchors[0]]
        placebo = ""
        if "logp_placebo" in table and not math.isnan(row.logp_placebo):
            placebo = (f" (placebo {math.exp(row.logp_placebo):.3f}: "
                       + ("style, the placebo does it too)" if row["style"] else
                          f"content {row.content_drop:+.2f} nats)"))
        pending = session.scores.pending_from is not None and anchors[0] >= session.scores.pending_from
        before = "…" if math.isnan(row.logp_before) else f"{math.exp(row.logp_before):.3f}"
        after = "… (scoring: the numbers are on the way)" if pending else f"{math.exp(row.logp_after):.3f}"
        parts.append(f"at the hint: p({row.text!r}) {before} → {after}{placebo}")
    else:
        parts.append("no hint: click a token to place one, `r` if the answer is right, `x` to reject")
    if session.notice:
        parts.append(f"⚠ {session.notice}")
    return " · ".join(parts)


def queue_markdown(session: actions.Session, name: str | None, around: int = 6) -> str:
    """The review queue near the open record: each record's status, and whether the hint model proposed a hint."""
    table = store(session).table()
    if table.empty:
        return "*The review queue is empty: generate or upload rollouts.*"
    ids, statuses = table.id.tolist(), dict(zip(table.id, table.status))
    current = session.record.id if session.record else None
    at = ids.index(current) if current in ids else 0
    lines = []
    for record_id in ids[max(0, at - 2): max(0, at - 2) + around]:
        proposals = readahead.proposed(name, record_id)
        mark = ("· **proposed**" if proposals is not None and proposals.proposals
                else "· nothing to propose" if proposals is not None else "")
        here = "▶ " if record_id == current else ""
        lines.append(f"{here}`{actions.md_escape(record_id)}` {statuses[record_id]} {mark}")
    proposed = sum(1 for record_id in ids if readahead.proposed(name, record_id) is not None)
    return f"**Queue** · {len(ids)} records · {proposed} run through the hint model  \n" + "  \n".join(lines)


# [session, strip, status, logprob plot, KL plot, hint text, placement, template, proposals, counts, queue,
#  apply, accept, reject, keep as right, undo]
N_ACTION_BUTTONS = 5


def render(session: actions.Session, view: str, hint_model_name: str | None = None, queue: bool = True,
           done: str = ""):
    """Everything that shows the open record. Plots are left as they are (`gr.skip()`): they follow in a chained
    event (`on_plots`), so what the user did answers first. `queue`: also redraw the counts and the queue. `done`:
    what the last action did, said at the end of the status line (a toast per record would pile up)."""
    is_open = session.record is not None
    buttons = [gr.update(interactive=is_open)] * N_ACTION_BUTTONS
    counts = counts_markdown(session=session) if queue else gr.skip()
    queue_md = queue_markdown(session, hint_model_name) if queue else gr.skip()
    if not is_open:
        hidden = gr.update(value=None, visible=False)
        return (session, EMPTY_STRIP, status_markdown(session), hidden, hidden, "", "inline",
                gr.update(value="", visible=False), "", counts, queue_md, *buttons)
    hint = session.hints[0] if session.hints else None
    placement = hint.placement if hint else "inline"
    return (session, strip_html(session, view),
            status_markdown(session) + (f" · ✓ {done}" if done else ""), gr.skip(), gr.skip(),
            hint.text if hint else "", placement,
            gr.update(value=(hint.template or "") if hint else "", visible=placement == "template"),
            actions.proposals_markdown(session), counts, queue_md, *buttons)


@guarded
def on_queue(session: actions.Session, hint_model_name: str):
    return queue_markdown(session, hint_model_name)


@guarded
def on_hint_fields(session: actions.Session):
    """The hint box, placement and template as the session holds them (after a refused edit: they never disagree)."""
    hint = session.hints[0] if session.record is not None and session.hints else None
    placement = hint.placement if hint else "inline"
    return (hint.text if hint else "", placement,
            gr.update(value=(hint.template or "") if hint else "", visible=placement == "template"))


@guarded
def on_redraw(session: actions.Session, view: str):
    """The strip again (after a refused click, so the page's preview of the move goes away)."""
    if session.record is None:
        return EMPTY_STRIP
    return strip_html(session, view)


@guarded
def on_placebo_field(session: actions.Session):
    """The placebo box as the session holds it: the first hint's placebo (its own, else the default)."""
    return actions.placebo_shown(session) if session is not None else ""


@guarded
def on_placebo(session, on, text, default, view):
    """Turn the placebo lane on or off with this placebo text (kept with the hint; stored when the record is
    reviewed) and this default for hints without their own."""
    session = synced(session)
    with model_turn(session):
        session = actions.set_placebo(session, bool(on), text, default)
    return render(session, view, queue=False)


# ------------------------------------------------------------------------------------------------------------------
# Handlers


def _open(session: actions.Session, record: Record, hint_model_name: str | None,
          staged: bool = False) -> actions.Session:
    """Open `record` with the hint model run on it: from the read-ahead when it prepared this very record.
    `staged`: a long record opens without a forward pass (`actions.open_record`); `_opened_stages` goes on."""
    name = hint_model_name or "manual"
    ready = session.prefetched
    if (ready is not None and ready.record.id == record.id and ready.hint_model_name == name
            and ready.weights_version == weights(session).version and ready.base_weights == session.base_weights
            and ready.span == session.span and ready.placebo_on == session.placebo_on
            and ready.placebo_default == session.placebo_default):
        actions.stop_speculating(session)
        ready.opened_at, ready.timeline = time.time(), session.timeline
        session = ready
    else:
        with model_turn(session):
            current_model, tokenizer = model(session)
            session.hint_model_name = name
            session = opened(actions.open_record(session, current_model, tokenizer, record,
                                                 hint_model_for(name, record), staged=staged and not ONESHOT))
    return session if session.opening else read_ahead(session)


def _opened_stages(session: actions.Session, view: str, hint_model_name: str | None, done: str = ""):
    """Stream a record opened with `_open(staged=True)`: what shows now (the layout at the hint, the sampled
    colours), the window around the hint and the error span, then the whole strip. The model lock is taken per
    stage, never across a yield (a generator may resume on another thread)."""
    yield render(session, view, hint_model_name, done=done)
    if not session.opening:
        return  # opened in one piece: `_open` started the read-ahead
    while session.opening:
        with model_turn(session):
            session = actions.continue_opening(session)
        yield render(session, view, hint_model_name, queue=False, done=done)
    read_ahead(session)


def read_ahead(session: actions.Session) -> actions.Session:
    """While the user reads: open the next pending record of the queue (so that a, x, r and j move on at once),
    then score the hint positions the user is likely to click (`incremental.Speculator`). A real action stops it;
    the model lock is taken one piece at a time, so an action waits for at most one piece."""
    if ONESHOT or session.record is None:
        return session
    following = _neighbour(session, session.record.id, +1, "pending")
    name = session.hint_model_name
    if (following is None or needs_model(name)
            or (session.prefetched is not None and session.prefetched.record.id == following.id)):
        return actions.speculate(session)
    like = actions.Session(span=session.span, base_weights=session.base_weights, hint_model_name=name,
                           user=session.user, placebo_on=session.placebo_on, placebo_default=session.placebo_default)

    def open_following(stop: threading.Event) -> None:
        try:
            current_model, tokenizer = model(like)
            session.prefetched = readahead.prepare(following, like, stop, current_model, tokenizer,
                                                   weights(like).version, hint_model_for(name, following))
        except Exception:  # noqa: BLE001 - it opens the ordinary way when the user gets there, with its error
            log.debug("read-ahead of %s failed", following.id, exc_info=True)
    return actions.speculate(session, first=open_following)


@guarded
@gpu
def on_generate(session, source_kind, demo_id, prompt, temperature, top_p, max_tokens, seed, hint_model_name, view,
                profile: gr.OAuthProfile | None = None):
    session = signed_in(session, profile)
    if source_kind == "Demo task":
        source = next((r for r in actions.demo_tasks() if r.id == demo_id), None)
        if source is None:
            raise ValueError("choose a demo task")
    else:
        if not prompt or not prompt.strip():
            raise ValueError("write a prompt first")
        if len(prompt) > 8000:
            raise ValueError(f"the prompt has {len(prompt)} characters; keep it under 8000")
        source = Record(id=prompt_id(prompt), messages=[{"role": "user", "content": prompt}])
    sampling = SamplingConfig(max_new_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p),
                              seed=int(seed))
    with model_turn(session):
        current_model, tokenizer = model(session)
        session.hint_model_name = hint_model_name
        # Stored (unless the visitor may not write); a rollout already in the workspace opens as reviewed.
        session = opened(actions.generate_and_open(session, current_model, tokenizer, source, sampling,
                                                   hint_model_for(hint_model_name, source), workspace(profile)))
    return render(read_ahead(session), view, hint_model_name)


@guarded_stream
@gpu
def on_upload(session, file, hint_model_name, view, profile: gr.OAuthProfile | None = None):
    session = signed_in(session, profile)
    records = actions.parse_upload(file)
    current = workspace(profile)
    if current.writable:
        report = current.add_rollouts(records, origin="uploaded")
        message = f"Uploaded {report.message()}"
    else:  # a visitor explores the file without storing it
        message = f"Opened {len(records)} record(s) to explore; {current.read_only} (nothing is stored)"
    first = current.store.get(records[0].id) or records[0]  # a reviewed record opens as reviewed
    session = _open(session, first, hint_model_name, staged=True)
    readahead.prefetch_proposals(records[1:], hint_model_name, hint_model_for)
    gr.Info(message, duration=5)
    for shown in _opened_stages(session, view, hint_model_name, done=actions.md_escape(message)):
        yield (*shown, None)  # None clears the file box, ready for the next upload


def _edited(session, view, change):
    """Stream an edit: the window around the hint and the error first, then the whole strip (one update when the
    table was speculated, or on the old one-shot path)."""
    session = synced(session)
    # A generator may resume on another worker thread: the model lock is taken per step, never across a yield.
    with model_turn(session):
        session = change(session, actions.rescore if ONESHOT else actions.rescore_window)
    yield render(session, view, queue=False)
    if session.scores.pending_from is not None:
        with model_turn(session):
            session = actions.rescore(session)
        yield render(session, view, queue=False)
    read_ahead(session)


@guarded_stream
def on_token_click(session, view, evt: gr.EventData):
    token = getattr(evt, "token", None)
    if token is None:
        raise ValueError("click a token of the strip")
    yield from _edited(session, view, lambda s, score: actions.move_hint(s, int(token), score=score))


@guarded_stream
def on_move(session, token, view):
    if token is None:
        raise ValueError("give a token index")
    yield from _edited(session, view, lambda s, score: actions.move_hint(s, int(token), score=score))


@guarded_stream
def on_edit(session, text, placement, template, view):
    yield from _edited(session, view, lambda s, score: actions.edit_hint(s, text, placement, template or None,
                                                                        score=score))


@guarded
def on_span(session, span, view):
    session = synced(session)
    if session.record is None:
        return render(session, view, queue=False)
    with model_turn(session):
        return render(actions.set_span(session, span), view, queue=False)


@guarded
def on_view(session, view):
    return render(session, view, queue=False)


@guarded
def on_undo(session, view):
    session = synced(session)
    with model_turn(session):
        return render(actions.undo(session), view, queue=False)


@guarded
def on_use_proposal(session, number, view):
    with model_turn(session):
        return render(actions.use_proposal(session, int(number or 1) - 1), view, queue=False)


@guarded
def on_score_with(session, which, view):
    current = weights(session)
    with model_turn(session):
        session = actions.use_weights(session, current.model, current.tokenizer, which == "base", current.version)
    return render(session, view, queue=False)


def _neighbour(session: actions.Session, record_id: str | None, step: int, status: str | None) -> Record | None:
    """The record after/before `record_id` in the session's review queue (store order), restricted to `status`."""
    queue = store(session)
    table = queue.table()
    ids = table.id.tolist()
    if not ids:
        return None
    at = ids.index(record_id) if record_id in ids else -1
    order = ids[at + 1:] + ids[:at] if step > 0 else list(reversed(ids[:at])) + list(reversed(ids[at + 1:]))
    statuses = dict(zip(table.id, table.status))
    for candidate in order:
        if status is None or statuses[candidate] == status:
            return queue.get(candidate)
    return None


@guarded_stream
@gpu
def on_review(status, session, reviewer, text, placement, template, hint_model_name, view,
              profile: gr.OAuthProfile | None = None):
    """Save the open record as the page shows it (an unapplied hint text is applied first), then open the next
    pending record with the hint model run on it. On a Space the reviewer is the signed-in name."""
    actions.require_open(session)
    session = signed_in(session, profile)
    workspace(profile).require_write("review records")
    readahead.await_read_ahead(session)
    hint = session.hints[0] if session.hints else None
    if status == "accepted" and hint and text and text.strip() and (
            (text, placement, template or None) != (hint.text, hint.placement, hint.template)):
        with model_turn(session):
            session = actions.edit_hint(synced(session), text, placement, template or None)
    as_right = status == "right"
    stored = actions.review(session, workspace(profile), "accepted" if as_right else status, reviewer,
                            as_right=as_right)
    done = (f"saved {stored.id} as right (its tokens anchor training)" if as_right
            else f"saved {stored.id} as {status}")
    following = _neighbour(session, stored.id, +1, "pending")
    if following is not None:
        session = _open(session, following, hint_model_name, staged=True)
    else:
        done += " · the queue has no pending record left"
    yield from _opened_stages(session, view, hint_model_name, done=actions.md_escape(done))


@guarded_stream
@gpu
def on_step(step, session, queue_status, hint_model_name, view, profile: gr.OAuthProfile | None = None):
    session = signed_in(session, profile)
    current = session.record.id if session.record else None
    if step > 0 and queue_status == "pending":
        readahead.await_read_ahead(session)
    following = _neighbour(session, current, step, None if queue_status == "all" else queue_status)
    if following is None:
        raise ValueError(f"no other {queue_status} record in the queue" if queue_status != "all"
                         else "the queue is empty: generate or upload rollouts")
    yield from _opened_stages(_open(session, following, hint_model_name, staged=True), view, hint_model_name)


# ------------------------------------------------------------------------------------------------------------------
# Keys and layout


# One keyboard model: keys act unless a text field has focus (radios, sliders and buttons do not swallow them);
# Escape leaves a text field for the strip; a key with nothing to do says so (`opdCue`).
KEYS_JS = asset_text("keys.js")

# The page updates the hint chip's text at Apply / Enter, before the server answers, and marks what follows pending.
PREVIEW_TEXT_JS = asset_text("preview_text.js")

CSS = asset_text("annotate.css")


def build(session: gr.State, counts: gr.Markdown) -> tuple[gr.Markdown, gr.Dropdown]:
    """The Inspect & annotate tab: layout, then its events. Returns the queue and the hint model (the page's load
    fills the queue)."""
    demo_choices = [(f"{r.id} · {r.messages[-1]['content'][:60]}", r.id) for r in actions.demo_tasks()]
    with gr.Row(elem_id="opd-main-row"):
        with gr.Column(scale=1, min_width=300, elem_id="opd-side"):
            with gr.Group(elem_id="opd-source"):
                source_kind = gr.Radio(["Demo task", "Prompt"], value="Demo task", label="Rollout source",
                                       elem_id="opd-source-kind")
                demo_id = gr.Dropdown(demo_choices, value=demo_choices[0][1] if demo_choices else None,
                                      label="Demo task", elem_id="opd-demo")
                prompt = gr.Textbox(label="Prompt", value="What is 17 + 25?", lines=2, elem_id="opd-prompt",
                                    visible=False)
                hint_model = gr.Dropdown(HINT_MODEL_CHOICES, value="auto", label="Hint model (runs on every record)",
                                         elem_id="opd-hint-model")
                with gr.Accordion("Sampling", open=False):
                    temperature = gr.Slider(0, 1.5, value=0, step=0.05, label="Temperature (0 = greedy)")
                    top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p")
                    max_tokens = gr.Slider(8, 512, value=128, step=8, label="Max new tokens")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                generate_button = gr.Button("Generate", variant="primary", elem_id="opd-generate")
            with gr.Group(elem_id="opd-queue-box"):
                upload = gr.File(label="…or upload rollouts (JSONL)", file_types=[".jsonl"], elem_id="opd-upload",
                                 height=150)
                queue_status = gr.Dropdown(["pending", "accepted", "rejected", "all"], value="pending",
                                           label="Queue: step through", elem_id="opd-queue-status")
                with gr.Row():
                    prev_button = gr.Button("← prev (k)", elem_id="opd-prev", size="sm")
                    next_button = gr.Button("next (j) →", elem_id="opd-next", size="sm")
                queue = gr.Markdown(elem_id="opd-queue", label="Review queue", show_label=False)
                reviewer = gr.Textbox(label="Reviewer", value="anonymous")
        with gr.Column(scale=3, elem_id="opd-main"):
            status = gr.Markdown(FIRST_STATUS, elem_id="opd-status", label="Status", show_label=False)
            strip = gr.HTML(EMPTY_STRIP, js_on_load=STRIP_JS, elem_id="opd-strip", label="Token strip (HTML)",
                            show_label=False)
            with gr.Row():
                view = gr.Radio(list(VIEWS), value="delta", label="Colour by", elem_id="opd-view")
                span = gr.Radio(list(LOSS_SPANS), value=actions.Session.span, label="Loss span", elem_id="opd-span")
                score_with = gr.Radio(["current", "base"], value="current", label="Weights", elem_id="opd-weights")
            gr.Markdown("Click a token to move the hint before it · `a` accept · `x` reject · `r` keep as right · "
                        "`j`/`k` next/previous record · `?` all keys", elem_classes=["opd-help"])
            gr.Markdown(KEYS_MARKDOWN, elem_id="opd-keys", elem_classes=["opd-help"])
            with gr.Row():
                hint_text = gr.Textbox(label="Hint text (Enter applies, Esc leaves)", scale=3,
                                       elem_id="opd-hint-text")
                placement = gr.Radio(list(PLACEMENTS), value="inline", label="Placement",
                                     elem_id="opd-placement")
            template = gr.Textbox("", label="Template (with {hint})", visible=False, placeholder=" [note: {hint}] ",
                                  elem_id="opd-template")
            with gr.Row(elem_id="opd-placebo-row"):
                placebo_on = gr.Checkbox(False, label="Placebo lane: also score a content-free hint here",
                                         elem_id="opd-placebo-on", scale=1)
                placebo_text = gr.Textbox(label="Placebo of this hint (kept with the record; Enter applies)",
                                          elem_id="opd-placebo", scale=2)
                placebo_default = gr.Textbox(label="Default placebo, every record (empty: built from the hint)",
                                             elem_id="opd-placebo-default", scale=2)
            with gr.Row():
                apply_button = gr.Button("Apply edit", elem_id="opd-apply", interactive=False)
                accept_button = gr.Button("Accept (a)", variant="primary", elem_id="opd-accept", interactive=False)
                reject_button = gr.Button("Reject (x)", variant="stop", elem_id="opd-reject", interactive=False)
                right_button = gr.Button("Keep as right (r)", elem_id="opd-right", interactive=False)
                undo_button = gr.Button("Undo (u)", elem_id="opd-undo", interactive=False)
            with gr.Row(visible=False):  # API endpoints for scripted use (gradio_client)
                move_token = gr.Number(precision=0, elem_id="opd-move-token", label="Token index (place the hint before it)")
                move_button = gr.Button("move", elem_id="opd-move")
                proposal_number = gr.Number(value=1, precision=0, label="Proposal number (1 = first)")
                proposal_button = gr.Button("use proposal")
                plots_button = gr.Button("plots")
            proposals = gr.Markdown(elem_id="opd-proposals", label="Hint model proposals", show_label=False)
            analysis = analysis_tabs.build(session, strip, view)

    # -- events -------------------------------------------------------------------------------------------------
    # Model work waits in the one model queue (`MODEL_WORK`); the place and the timer show on the status line, and
    # edits still redraw in place.
    model_work = MODEL_WORK
    quick = dict(show_progress="full", show_progress_on=[status], **model_work)
    logprob_plot, kl_plot = analysis.logprob_plot, analysis.kl_plot
    shown = [session, strip, status, logprob_plot, kl_plot, hint_text, placement, template, proposals, counts, queue,
             apply_button, accept_button, reject_button, right_button, undo_button]
    figures = [logprob_plot, kl_plot]
    hint_fields = [hint_text, placement, template]

    def then_plots(event):
        event.success(analysis_tabs.on_plots_shown, [session], figures, api_name=False, show_progress="hidden")
        event.success(on_placebo_field, [session], [placebo_text], api_name=False, show_progress="hidden")
        event.success(analysis_tabs.on_gradient_shown, [session], [analysis.gradient_table], api_name=False,
                      show_progress="hidden")
        return event

    source_kind.change(lambda kind: (gr.update(visible=kind == "Demo task"), gr.update(visible=kind == "Prompt")),
                       [source_kind], [demo_id, prompt], queue=False, api_name=False, show_progress="hidden")
    placement.change(lambda where: gr.update(visible=where == "template"), [placement], [template], queue=False,
                     api_name=False, show_progress="hidden")
    then_plots(generate_button.click(on_generate, [session, source_kind, demo_id, prompt, temperature, top_p,
                                                   max_tokens, seed, hint_model, view], shown,
                                     api_name="generate", show_progress="full", show_progress_on=[status, strip],
                                     **model_work))
    # The upload's progress shows on the status line only: the strip paints within a second and marks what is
    # still computing itself, and Gradio's pulsing border over it cost the browser a sixth of a core (measured at
    # 4k tokens: Chromium 4.7 → 3.3 CPU-s until the hint's numbers), taken from the model on a shared machine.
    uploaded = upload.upload(on_upload, [session, upload, hint_model, view], [*shown, upload], api_name="upload",
                             show_progress="full", show_progress_on=[status], **model_work)
    then_plots(uploaded).failure(lambda: None, None, [upload], api_name=False, queue=False)  # ready for another
    then_plots(strip.click(on_token_click, [session, view], shown, api_name=False, **quick)).failure(
        on_redraw, [session, view], [strip], api_name=False, show_progress="hidden")
    then_plots(move_button.click(on_move, [session, move_token, view], shown, api_name="move_hint", **quick))
    edit_inputs = [session, hint_text, placement, template, view]
    for trigger, api in ((apply_button.click, "edit_hint"), (hint_text.submit, False)):
        trigger(None, [hint_text], None, js=PREVIEW_TEXT_JS, api_name=False, queue=False)
        edited = then_plots(trigger(on_edit, edit_inputs, shown, api_name=api, **quick))
        refused = edited.failure(on_hint_fields, [session], hint_fields, api_name=False, show_progress="hidden")
        refused.then(on_redraw, [session, view], [strip], api_name=False, show_progress="hidden")
    then_plots(span.input(on_span, [session, span, view], shown, api_name="set_span", **quick))
    then_plots(undo_button.click(on_undo, [session, view], shown, api_name="undo", **quick))
    view.input(on_view, [session, view], shown, api_name=False, show_progress="hidden")  # no model: a redraw
    plots_button.click(analysis_tabs.on_plots, [session], figures, api_name="plots")
    then_plots(proposal_button.click(on_use_proposal, [session, proposal_number, view], shown,
                                     api_name="use_proposal", **quick))
    review_inputs = [session, reviewer, hint_text, placement, template, hint_model, view]
    for status_name, button, api in (("accepted", accept_button, "accept"), ("right", right_button, "keep_as_right"),
                                     ("rejected", reject_button, "reject")):
        then_plots(button.click(functools.partial(on_review, status_name), review_inputs, shown, api_name=api,
                                **quick)).failure(on_hint_fields, [session], hint_fields, api_name=False,
                                                  show_progress="hidden")
    for step, button, api in ((+1, next_button, "next"), (-1, prev_button, "previous")):
        then_plots(button.click(functools.partial(on_step, step), [session, queue_status, hint_model, view], shown,
                                api_name=api, **quick))
    placebo_inputs = [session, placebo_on, placebo_text, placebo_default, view]
    for trigger, api in ((placebo_on.input, "placebo"), (placebo_text.submit, False), (placebo_default.submit, False)):
        then_plots(trigger(on_placebo, placebo_inputs, shown, api_name=api, **quick)).failure(
            on_placebo_field, [session], [placebo_text], api_name=False, show_progress="hidden")
    then_plots(score_with.input(on_score_with, [session, score_with, view], shown, api_name="score_with", **quick))
    return queue, hint_model
