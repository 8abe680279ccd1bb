"""Work done before the person asks: the hint models' proposals, remembered per record, and the next record of the
queue opened in the background while the current one is read.

Both only save a later wait, so both take the model only while no action runs or waits for it (`turns.TURNS`), and
a record prepared here is used only if nothing it depends on changed meanwhile (the studio checks). Knows nothing
about Gradio: the studio passes in the model, the weights' version and the hint model.
"""

from __future__ import annotations

import logging
import threading

from ..hints import needs_model
from ..records import Record
from ..served import make_scorer
from ..trajectory import build_trajectory
from . import session as actions
from .turns import TURNS

log = logging.getLogger("opd_studio.ui")
READ_AHEAD_MAX_TOKENS = 512  # the next record is opened in the background only when it is short

# Proposals per (hint model, record id), from whichever session opened the record or the background prefetch.
PROPOSALS: dict[tuple[str, str], object] = {}


class RememberedHintModel:
    """A hint model whose answers are kept per record, so the queue can show them and reopening costs nothing."""

    def __init__(self, name: str, hint_model):
        self.name, self.hint_model = name, hint_model

    def propose(self, record: Record):
        key = (self.name, record.id)
        if key not in PROPOSALS:
            PROPOSALS[key] = self.hint_model.propose(record)
        return PROPOSALS[key]


def proposed(name: str | None, record_id: str):
    """The remembered proposals of `name` for a record, None if it has not run on it."""
    return PROPOSALS.get((name, record_id))


def prefetch_proposals(records: list[Record], name: str | None, hint_model_for, limit: int = 200) -> None:
    """Run the hint model `name` (`hint_model_for(name, record)` makes it) over queued records in a background
    thread: all of them (up to `limit`), or a few for one that runs on the model, one record per idle turn."""
    if name in (None, "manual"):
        return

    def work() -> None:
        for record in records[: 3 if needs_model(name) else limit]:
            if record.hints or (name, record.id) in PROPOSALS:
                continue
            try:
                if needs_model(name):
                    with TURNS.background(threading.Event()):
                        hint_model_for(name, record).propose(record)
                else:
                    hint_model_for(name, record).propose(record)
            except Exception:  # noqa: BLE001 - a record the hint model cannot read is proposed when opened
                continue

    threading.Thread(target=work, daemon=True).start()


def prepare(record: Record, like: actions.Session, stop: threading.Event, current_model, tokenizer,
            weights_version: int, hint_model) -> actions.Session | None:
    """`record` opened as the studio would open it for a session like `like`, in pieces (tokens and proposal;
    original pass; student statistics; hinted pass), each in an idle turn; None when stopped, too long to be worth
    it, or failing (it then opens the ordinary way, with its error, when the person gets there)."""
    try:
        if hint_model is not None and not record.hints:
            hint_model.propose(record)  # remembered: open_record below asks again
        trajectory = build_trajectory(tokenizer, record)
        if len(trajectory) > READ_AHEAD_MAX_TOKENS:  # its first pass alone would hold the model for seconds
            return None
        scorer = make_scorer(current_model, tokenizer, trajectory, base_weights=like.base_weights)
        for piece in (scorer.original_pass, scorer.student_stats, None):
            with TURNS.background(stop) as mine:
                if not mine:
                    return None
                if piece is not None:
                    piece()
                else:
                    ready = actions.open_record(like, current_model, tokenizer, record, hint_model, scorer=scorer)
        ready.weights_version = weights_version
        return ready
    except Exception:  # noqa: BLE001 - the record opens the ordinary way when the user gets there, with its error
        log.debug("read-ahead of %s failed", record.id, exc_info=True)
        return None


def await_read_ahead(session: actions.Session, timeout_s: float = 20) -> None:
    """The next record is being prepared in the background: wait for it rather than start over — when the model is
    otherwise idle. While other people's actions run or wait, the preparation gets no turn on the model (it yields
    to them), so waiting for it would wait for the whole queue: it is stopped, and the action opens the record
    itself in its own turn."""
    if session.speculator is None or session.prefetched is not None:
        return
    if not TURNS.idle():
        actions.stop_speculating(session)
    session.speculator.first_done.wait(timeout_s)  # at once, or after the piece in flight, once stopped
