"""Window-first rescoring and speculation against the one-shot `HintScorer.score` (tiny model)."""

import numpy as np
import pandas as pd
import pytest

from opd_studio.records import Record
from opd_studio.scoring import HintScorer
from opd_studio.trajectory import build_trajectory
from opd_studio.ui import incremental
from opd_studio.ui import session as actions
from tests.conftest import ADD

NUMERIC = ["logp_before", "logp_after", "entropy_before", "entropy_after", "kl"]


def long_record(n_words=60):
    text = " ".join(f"{k} + {k} = {2 * k}." for k in range(n_words))
    return Record.from_dict({"id": "long", "messages": [{"role": "user", "content": "Count."},
                                                         {"role": "assistant", "content": text}],
                             "hints": [{"message": 1, "char": 40, "text": " (Hint: check.) "}],
                             "error": {"message": 1, "char_start": 40, "char_end": 48}})


def assert_rows_equal(a: pd.DataFrame, b: pd.DataFrame, exact: bool = True) -> None:
    if exact:
        np.testing.assert_array_equal(a[NUMERIC].to_numpy(float), b[NUMERIC].to_numpy(float))
    else:  # a shorter pass: the same arithmetic in other block sizes, equal to float32 rounding
        np.testing.assert_allclose(a[NUMERIC].to_numpy(float), b[NUMERIC].to_numpy(float), rtol=1e-4, atol=1e-5)
    assert (a.rank_after.fillna(0) == b.rank_after.fillna(0)).all() and (a.target == b.target).all()
    tops = lambda t: [[text for text, _ in top] for top in t.top_after]  # noqa: E731
    assert tops(a) == tops(b)


@pytest.mark.parametrize("placement", ["inline", "feedback"])
def test_window_rows_equal_the_one_shot_rows(tiny_model, tokenizer, placement):
    record = long_record()
    record.hints[0].placement = placement
    trajectory = build_trajectory(tokenizer, record)
    one_shot = HintScorer(tiny_model, tokenizer, trajectory).score(record.hints, span="turn", error=record.error)
    upto = incremental.window_end(HintScorer(tiny_model, tokenizer, trajectory), record.hints, record.error)
    window = incremental.window_table(HintScorer(tiny_model, tokenizer, trajectory), record.hints, "turn",
                                      record.error)
    assert window.pending_from == upto < len(trajectory) - 20  # a real window, not the whole record
    assert_rows_equal(window.table.iloc[:upto], one_shot.table.iloc[:upto], exact=False)
    assert window.hints == one_shot.hints and window.error_span == one_shot.error_span
    assert (window.table.iloc[upto:].kl.fillna(0) == 0).all()  # pending rows carry no teacher numbers yet


def test_window_first_then_full_equals_one_shot_in_the_session(tiny_model, tokenizer):
    session = actions.open_record(actions.Session(), tiny_model, tokenizer, long_record())
    fresh = actions.open_record(actions.Session(), tiny_model, tokenizer, long_record())
    actions.move_hint(session, 60, score=actions.rescore_window)
    assert session.scores.pending_from is not None
    actions.rescore(session)
    actions.move_hint(fresh, 60)
    assert_rows_equal(session.scores.table, fresh.scores.table)
    assert session.scores.pending_from is None


def test_speculated_results_equal_one_shot_and_stay_in_budget(tiny_model, tokenizer):
    record = long_record()
    session = actions.open_record(actions.Session(), tiny_model, tokenizer, record)
    error_start = session.scores.error_span[0]
    candidates = incremental.candidate_hints(session.hints, [], error_start, session.scorer.trajectory)
    assert len(candidates) >= 3
    speculator = incremental.Speculator(session.scorer).start([(c, "turn", session.error) for c in candidates],
                                                              delay_s=0)
    speculator.thread.join(60)
    assert len(speculator.results) == len(candidates) and speculator.used_bytes <= speculator.budget_bytes
    for hints in candidates:
        one_shot = HintScorer(tiny_model, tokenizer, session.scorer.trajectory).score(hints, "turn", session.error)
        assert_rows_equal(speculator.get(hints, "turn", session.error).table, one_shot.table)
    tiny = incremental.Speculator(session.scorer, budget_bytes=1).start([(candidates[0], "turn", None)], delay_s=0)
    tiny.thread.join(60)
    assert tiny.results == {}  # over budget: nothing kept


def test_speculation_yields_to_a_real_action(tiny_model, tokenizer):
    session = actions.open_record(actions.Session(), tiny_model, tokenizer, Record.from_dict(ADD))
    speculator = incremental.Speculator(session.scorer).start([(session.hints, "turn", None)] * 3, delay_s=5)
    speculator.stop.set()
    speculator.thread.join(5)
    assert not speculator.thread.is_alive() and speculator.results == {}


def test_a_click_on_a_speculated_position_is_served_from_memory(tiny_model, tokenizer):
    session = actions.open_record(actions.Session(), tiny_model, tokenizer, long_record())
    actions.speculate(session)
    session.speculator.thread.join(60)
    assert session.speculator.results
    error_start = session.scores.error_span[0]
    served = session.speculator.get
    calls = []
    session.speculator.get = lambda *a: calls.append(a) or served(*a)
    actions.move_hint(session, error_start + 1, score=actions.rescore_window)
    assert calls and session.scores.pending_from is None  # whole, at once
    fresh = actions.open_record(actions.Session(), tiny_model, tokenizer, long_record())
    actions.move_hint(fresh, error_start + 1)
    assert_rows_equal(session.scores.table, fresh.scores.table)


def test_an_action_does_not_wait_for_a_read_ahead_that_other_peoples_actions_keep_from_the_model(tiny_model,
                                                                                                    tokenizer):
    """Under load the read-ahead gets no turn (background work yields to every action), so the reviewer's next
    accept must not wait for it: it is stopped and the action opens the record itself (it used to wait 20 s)."""
    import threading
    import time

    from opd_studio.ui import readahead
    from opd_studio.ui.turns import TURNS

    session = actions.open_record(actions.Session(), tiny_model, tokenizer, Record.from_dict(ADD))
    took_a_turn = []

    def open_following(stop):  # the read-ahead's first piece, as `readahead.prepare` takes it
        with TURNS.background(stop) as mine:
            took_a_turn.append(mine)
    holding, release = threading.Event(), threading.Event()

    def someone_elses_action():
        with TURNS.action():
            holding.set()
            release.wait(30)
    other = threading.Thread(target=someone_elses_action)
    other.start()
    holding.wait(5)
    try:
        session.speculator = incremental.Speculator(session.scorer).start([], delay_s=0, first=open_following)
        started = time.monotonic()
        readahead.await_read_ahead(session, timeout_s=20)
        assert time.monotonic() - started < 5 and took_a_turn == [False]
    finally:
        release.set()
        other.join(5)
