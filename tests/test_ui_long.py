"""Long rollouts in the studio (tiny model): opening in stages against the one-shot table, the windowed strip's data
against the one-shot table, the context limit, and the sampled log-probabilities a record may carry."""

import html
import json
import math
import re

import numpy as np
import pytest

from bench.common import addition_rollout, with_sampled_logprobs
from opd_studio.records import Record, RecordError
from opd_studio.scoring import HintScorer
from opd_studio.trajectory import build_trajectory
from opd_studio.ui import incremental, strip
from opd_studio.ui import session as actions
from tests.test_ui_incremental import assert_rows_equal

N_TOKENS = 1800  # over OPEN_WINDOW_MIN_TOKENS and WINDOWED_MIN_TOKENS, inside the tiny model's context


@pytest.fixture(scope="module")
def record(tokenizer):
    return addition_rollout(tokenizer, N_TOKENS, hint_at=0.8, seed=3)


def one_shot(model, tokenizer, record):
    """The one-shot table of a record as the studio opens it (its loss span: the session's default)."""
    return HintScorer(model, tokenizer, build_trajectory(tokenizer, record)).score(record.hints, actions.Session.span,
                                                                                   record.error)


def test_a_long_record_opens_in_stages_and_ends_equal_to_the_one_shot_table(tiny_model, tokenizer, record):
    record = with_sampled_logprobs(tiny_model, tokenizer, record)
    reference = one_shot(tiny_model, tokenizer, record)
    session = actions.open_record(actions.Session(), tiny_model, tokenizer, record, staged=True)
    # 1. no forward pass yet: the student's numbers are the record's sampled log-probabilities, all pending
    assert session.opening == "sampled" and session.scorer._original is None
    student = reference.table[reference.table.student & reference.table.logp_before.notna()]
    sampled = session.scores.table.loc[student.i].logp_before.dropna()  # the end-of-turn token was not sampled
    assert len(sampled) == len(record.response_token_ids)
    np.testing.assert_allclose(sampled, student.logp_before.loc[sampled.index], atol=1e-4)
    # 2. the window around the hint: its rows are the one-shot rows; the rest is pending
    session = actions.continue_opening(session)
    assert session.opening == "window"
    start, upto = session.scorer.window(session.hints, session.error)
    assert session.scores.pending_from == upto < len(reference.table) and session.scores.pending_before == start
    assert start < reference.hints[0].insert_at and upto > reference.error_span[1]
    # before the window: the record's sampled numbers, not yet the model's
    before = session.scores.table.iloc[:start]
    assert before.logp_before.notna().sum() == (before.i >= reference.table.i[reference.table.student].min()).sum()
    assert_rows_equal(session.scores.table.iloc[start:upto], reference.table.iloc[start:upto], exact=False)
    # 3. the whole table, continuing the window's passes
    session = actions.continue_opening(session)
    assert session.opening is None and session.scores.pending_from is None
    assert_rows_equal(session.scores.table, reference.table, exact=False)


def test_the_windowed_strip_carries_the_one_shot_numbers(tiny_model, tokenizer, record):
    reference = one_shot(tiny_model, tokenizer, record)
    trajectory = build_trajectory(tokenizer, record)
    page = strip.render_strip(reference, "delta", trajectory, record_id=record.id)
    assert "data-windowed='1'" in page and page.count("opd-tok") == 0  # the page draws the tokens, not the server
    packed = json.loads(html.unescape(re.search(r"<textarea class='opd-data' hidden readonly>(.*)</textarea>",
                                                page).group(1)))
    data = strip.strip_data(reference, "delta", trajectory)
    assert packed == strip.pack_strip(data)  # the page unpacks it (tests/test_ui_long_browser.py: the round trip)
    # before the first hint the teacher's columns repeat the student's: sent once
    before_hint = [k for k, i in enumerate(data["i"]) if i < reference.hints[0].insert_at and data["p"][k] is not None]
    assert before_hint and all(packed[column][k] is None for column in strip.AFTER_OF for k in before_hint)
    assert len(json.dumps(packed)) < 0.6 * len(json.dumps(data))
    table = reference.table.set_index("i").loc[data["i"]]
    scored = table.logp_before.notna().to_numpy()
    p = np.array([x if x is not None else np.nan for x in data["p"]])
    q = np.array([x if x is not None else np.nan for x in data["q"]])
    kl = np.array([x if x is not None else np.nan for x in data["kl"]])
    np.testing.assert_allclose(p[scored], np.exp(table.logp_before[scored]), atol=6e-5)
    np.testing.assert_allclose(q[scored], np.exp(table.logp_after[scored]), atol=6e-5)
    np.testing.assert_allclose(kl[scored], table.kl[scored], atol=6e-5)
    flags = np.array(data["f"])
    assert [i for i, f in zip(data["i"], flags) if f & strip.ERROR] == list(range(*reference.error_span))
    assert [i for i, f in zip(data["i"], flags) if f & strip.TARGET] == list(table.index[table.target])
    assert [i for i, f in zip(data["i"], flags) if f & strip.HIGHKL] == list(table.index[table.kl > strip.HIGH_KL])
    assert data["i"][data["hint_k"]] == reference.hints[0].insert_at
    assert data["hints"][0][1] == reference.hints[0].text


def test_the_windowed_strip_keeps_token_text_out_of_the_markup(tokenizer, tiny_model):
    xss = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\"> ' &amp; "
    content = " ".join(f"{xss}{n}" for n in range(200))
    record = Record("xss", [{"role": "user", "content": xss}, {"role": "assistant", "content": content}])
    trajectory = build_trajectory(tokenizer, record)
    assert len(trajectory) > strip.WINDOWED_MIN_TOKENS
    scores = HintScorer(tiny_model, tokenizer, trajectory).score([])
    page = strip.render_strip(scores, "before", trajectory, record_id="x' onload='alert(1)")
    assert "<script" not in page and "<img" not in page and "onerror=\"" not in page
    assert "data-record='x&#x27; onload=&#x27;alert(1)'" in page


def test_the_studio_opens_up_to_the_model_context_and_says_why_past_it(tiny_model, tokenizer):
    limit = tiny_model.config.max_position_embeddings
    fits = addition_rollout(tokenizer, limit - 100, hint_at=0.9)
    opened = actions.open_record(actions.Session(), tiny_model, tokenizer, fits, staged=True)
    assert len(opened.scorer.trajectory) > 2048 and opened.opening == "sampled"
    too_long = addition_rollout(tokenizer, limit + 50, hint_at=0.9)
    length = len(build_trajectory(tokenizer, too_long))
    with pytest.raises(ValueError) as refused:
        actions.open_record(actions.Session(), tiny_model, tokenizer, too_long)
    assert f"{length:,} tokens" in str(refused.value) and f"{limit:,} tokens" in str(refused.value)


def test_folds_and_sampled_log_probabilities(tokenizer, record):
    trajectory = build_trajectory(tokenizer, record)
    ids = record.response_token_ids
    record = Record.from_dict({**record.to_dict(), "response_logprobs": [-0.5] * len(ids)})
    assert Record.from_dict(json.loads(record.to_json())).response_logprobs == [-0.5] * len(ids)
    sampled = incremental.sampled_logprobs(trajectory, record)
    start = trajectory.student_token_spans[1][0]
    assert sorted(sampled) == list(range(start, start + len(ids))) and set(sampled.values()) == {-0.5}
    for bad in ([-0.5] * (len(ids) - 1), [0.5] * len(ids)):
        with pytest.raises(RecordError, match="response_logprobs"):
            Record.from_dict({**record.to_dict(), "response_logprobs": bad})
    long_turn = Record("turns", [{"role": "user", "content": "x " * 400}, {"role": "assistant", "content": "4"},
                                 {"role": "user", "content": "again"},
                                 {"role": "assistant", "content": "<think>" + " a" * 40 + "</think> 4"}])
    trajectory = build_trajectory(tokenizer, long_turn)
    data = strip.strip_data(_unscored(trajectory), "delta", trajectory)
    assert {label: folded for _, _, label, folded in data["folds"]} == {"user turn": True, "think block": False}


def _unscored(trajectory):
    """The table before any pass: no hint, no row computed (an empty window)."""
    return HintScorer(None, None, trajectory).score_window([], start=0, end=0)


def test_generate_writes_the_sampled_log_probabilities(tiny_model, tokenizer):
    from opd_studio.rollout import SamplingConfig, generate

    record, table = generate(tiny_model, tokenizer, [{"role": "user", "content": "2 + 2?"}],
                             SamplingConfig(max_new_tokens=6, temperature=1.0, seed=1))
    assert len(record.response_logprobs) == len(record.response_token_ids)
    np.testing.assert_allclose(record.response_logprobs, np.minimum(0, table.logp), atol=1e-6)
    assert all(math.isfinite(lp) and lp <= 0 for lp in record.response_logprobs)


def test_the_windowed_strip_carries_the_gradient_map_into_the_token_details(tiny_model, tokenizer, record):
    trajectory = build_trajectory(tokenizer, record)
    scorer = HintScorer(tiny_model, tokenizer, trajectory)
    scores = scorer.score(record.hints, error=record.error)
    gradient = scorer.gradient_map(record.hints, placebo=None, error=record.error)
    assert not gradient.frame.empty
    data = strip.strip_data(scores, "delta", trajectory, gradient=gradient)
    assert data["g_target"] == gradient.target
    mapped = {data["i"][int(k)]: push for k, push in data["g"].items()}
    assert sorted(mapped) == sorted(gradient.frame.i)  # every target position, none else
    for row in gradient.frame.itertuples():
        p_student, p_target, push, weight, trained, top_student, top_target = mapped[row.i]
        assert (p_student, p_target, push, weight) == pytest.approx(
            (row.p_student, row.p_target, row.push, row.weight), abs=6e-3)
        assert trained == row.trained and [t for t, _ in top_target] == [t for t, _ in row.top_target]
    page = strip.render_strip(scores, "delta", trajectory, gradient=gradient, record_id=record.id)
    assert "opd-windowed" in page and "gradient map (details on hover)" in page  # the legend's key
    assert "gradient map (${d.g_target} target)" in strip.STRIP_JS  # the details panel draws `g`
