"""Long rollouts (tiny model with a short context): the model's context is the only limit; the window-first and
prefix-shared paths equal a naive full forward pass; the gradient map and a training step run at that length."""

import copy

import numpy as np
import pytest

from opd_studio import scoring
from opd_studio.batching import prepare_scoring, score_records
from opd_studio.records import Hint, Record
from opd_studio.scoring import HintScorer, check_trajectory_length, context_limit, score_record
from opd_studio.targets import TargetSpec
from opd_studio.train import TrainConfig, train
from opd_studio.trajectory import TrajectoryError, build_trajectory
from opd_studio.ui import session as actions
from tests.conftest import random_llama
from tests.test_scoring import naive_table

CONTEXT = 640  # the tiny model's context here: the records below are a few hundred tokens


def addition_record(steps: int, hint_step: int, record_id: str = "long") -> Record:
    """Numbered addition steps, one wrong (step `hint_step`), with a hint before it and the error span on it."""
    lines = [f"Step {k}: {k} + {k} = {2 * k + (1 if k == hint_step else 0)}." for k in range(steps)]
    text = "\n".join(lines)
    wrong = text.index(f"Step {hint_step}:")
    result = text.index("=", wrong) + 2
    return Record.from_dict({"id": record_id, "messages": [{"role": "user", "content": "Add step by step."},
                                                           {"role": "assistant", "content": text}],
                             "hints": [{"message": 1, "char": wrong, "text": " (Hint: check the sum.) "}],
                             "error": {"message": 1, "char_start": result, "char_end": result + 2}})


@pytest.fixture(scope="module")
def short_context_model(tokenizer):
    model = random_llama(tokenizer, 4)
    model.config.max_position_embeddings = CONTEXT  # RoPE does not depend on it: only the limit changes
    return model


def assert_rows_match_naive(table, reference, rows, rank_slack: int = 0):
    """`rank_slack`: a pass computed in other block sizes may order the tail's near-tied logits otherwise."""
    for i in rows:
        for column, value in reference[i].items():
            if column.startswith("rank") and rank_slack:
                assert abs(table.loc[i, column] - value) <= rank_slack, (i, column)
            else:
                assert table.loc[i, column] == pytest.approx(value, abs=1e-4), (i, column)


def test_past_the_context_is_one_clear_error_everywhere(short_context_model, tokenizer):
    record = addition_record(80, 70)
    n = len(build_trajectory(tokenizer, record))
    assert n > CONTEXT and context_limit(short_context_model) == CONTEXT
    expected = f"record 'long' is {n:,} tokens long, longer than the model's context of {CONTEXT:,} tokens"
    with pytest.raises(TrajectoryError, match=expected):
        score_record(short_context_model, tokenizer, record)
    with pytest.raises(TrajectoryError, match=expected):  # the CLI's batched path, before any model work
        list(score_records(short_context_model, tokenizer, prepare_scoring(tokenizer, [record])))
    with pytest.raises(ValueError, match=expected):  # the studio
        actions.open_record(actions.Session(), short_context_model, tokenizer, record)
    check_trajectory_length(short_context_model, CONTEXT)  # exactly the context fits


@pytest.mark.parametrize("where, pass_chunk", [("late", None), ("middle", None), ("middle", 48)])
def test_window_whole_and_batched_equal_the_naive_full_forward(short_context_model, tokenizer, where, pass_chunk,
                                                                monkeypatch):
    if pass_chunk:  # the extension past the window and the hinted pass run in several chunks on their caches
        monkeypatch.setattr(scoring, "PASS_CHUNK", pass_chunk)
    record = addition_record(32, 28 if where == "late" else 18)
    trajectory = build_trajectory(tokenizer, record)
    assert 500 < len(trajectory) <= CONTEXT  # far past the old 200-token records, within the context
    reference = naive_table(short_context_model, tokenizer, trajectory, record.hints)
    scorer = HintScorer(short_context_model, tokenizer, trajectory, chunk_size=64)  # several projection chunks

    start, end = scorer.window(record.hints, record.error)
    window = scorer.score_window(record.hints, "turn", record.error)
    assert 0 < start and end < len(trajectory)  # a real window on a fresh open: neither end computed
    assert window.pending_before == start and window.pending_from == end
    assert len(scorer.original_pass().ids) >= end
    shown = [i for i in reference if start <= i < end]
    assert shown and all(window.table.loc[i, "logp_after"] == window.table.loc[i, "logp_after"] for i in shown)
    assert_rows_match_naive(window.table, reference, shown)
    assert window.table.loc[[i for i in reference if i < start], "logp_before"].isna().all()  # not computed yet

    whole = scorer.score(record.hints, "turn", record.error)  # extends the window's passes
    assert whole.pending_from is None and whole.pending_before is None
    assert_rows_match_naive(whole.table, reference, reference, rank_slack=2 if pass_chunk else 0)
    fresh = HintScorer(short_context_model, tokenizer, trajectory).score(record.hints, "turn", record.error)
    np.testing.assert_allclose(whole.table.kl.to_numpy(float), fresh.table.kl.to_numpy(float), atol=1e-4)

    short = addition_record(6, 3, "short")  # batched with a short record: prefixes left-padded in one batch
    results = dict((r.id, s.table) for r, s in score_records(
        short_context_model, tokenizer, prepare_scoring(tokenizer, [record, short], placebo="default")))
    assert_rows_match_naive(results["long"], reference, reference)
    short_reference = naive_table(short_context_model, tokenizer, build_trajectory(tokenizer, short), short.hints)
    assert_rows_match_naive(results["short"], short_reference, short_reference)


def test_window_without_hints_is_around_the_error(short_context_model, tokenizer):
    record = addition_record(32, 24)
    scorer = HintScorer(short_context_model, tokenizer, build_trajectory(tokenizer, record))
    start, end = scorer.window([], record.error)
    error = scorer.trajectory.error_token_span(record.error)
    assert start < error[0] < error[1] < end < len(scorer.trajectory)
    window = scorer.score_window([], "turn", record.error)
    rows = window.table.iloc[start:end]
    assert rows.loc[rows.student & (rows.i > 0), "logp_before"].notna().all() and window.pending_from == end


def test_gradient_map_and_a_training_step_at_the_context_length(short_context_model, tokenizer):
    record = addition_record(34, 30)
    assert CONTEXT - 40 < len(build_trajectory(tokenizer, record)) <= CONTEXT - 12  # the hint must fit too
    scorer = HintScorer(short_context_model, tokenizer, build_trajectory(tokenizer, record))
    gradient = scorer.gradient_map(record.hints, TargetSpec(kind="contrast"), span="error", error=record.error)
    assert len(gradient.frame) > 0 and gradient.frame.p_target.notna().all()
    result = train(copy.deepcopy(short_context_model), tokenizer, [record], TrainConfig(steps=1, lr=1e-3))
    assert result.steps == 1 and np.isfinite(result.history[-1].loss)

    too_long = Record.from_dict({**record.to_dict(), "hints": [
        {**record.to_dict()["hints"][0], "text": " (Hint: " + "check the sum again. " * 12 + ")"}]})
    with pytest.raises(TrajectoryError, match=f"longer than the model's context \\({CONTEXT}\\)"):
        HintScorer(short_context_model, tokenizer, build_trajectory(tokenizer, too_long)).score(too_long.hints)


def test_hint_objects_round_trip():  # addition_record's hint is where the wrong step starts
    record = addition_record(10, 4)
    assert isinstance(record.hints[0], Hint)
    text = record.messages[1]["content"]
    assert text[record.hints[0].char:].startswith("Step 4: 4 + 4 = 9.")
    assert text[record.error.char_start: record.error.char_end] == "9."


def test_a_reused_prefix_cache_is_read_not_copied(short_context_model, tokenizer):
    """`kv_cache` hands the cached keys/values to the model as they are, and a pass that keeps no cache
    (`grow=False`, `forward_reusing(keep_cache=False)`) gives the hidden states of one that does, leaving the
    reused pass's cache as it was: the memory of long records (README: Long rollouts)."""
    import torch

    from opd_studio.scoring import forward_reusing, kv_cache

    ids = build_trajectory(tokenizer, addition_record(12, 9)).input_ids
    original = forward_reusing(short_context_model, ids)
    cache = kv_cache(short_context_model, original.kv, grow=False)
    assert [layer.keys.data_ptr() for layer in cache.layers] == [k.data_ptr() for k, _ in original.kv]  # no copy
    hinted = ids[:40] + [7, 8, 9] + ids[40:]
    before = [k.clone() for k, _ in original.kv]
    kept = forward_reusing(short_context_model, hinted, original)
    read = forward_reusing(short_context_model, hinted, original, keep_cache=False)
    assert read.kv == [] and torch.equal(read.hidden, kept.hidden)
    assert all(torch.equal(k, b) for (k, _), b in zip(original.kv, before))  # the original's cache is untouched
    whole = forward_reusing(short_context_model, hinted)  # no reuse at all: the same numbers up to float rounding
    torch.testing.assert_close(read.hidden, whole.hidden, atol=1e-4, rtol=1e-4)


def test_plots_of_a_long_trace_show_the_positions_around_the_hint_and_error(short_context_model, tokenizer,
                                                                             monkeypatch):
    """Thousands of SVG points kept the browser drawing for seconds: a long trace's plots keep
    `PLOT_MAX_POSITIONS` student positions, the hint and the error span among them, and say which."""
    from opd_studio import plots
    record = addition_record(30, 22)
    trajectory = build_trajectory(tokenizer, record)
    scores = HintScorer(short_context_model, tokenizer, trajectory).score(record.hints, error=record.error)
    student = int((scores.table.student & scores.table.logp_before.notna()).sum())
    whole = plots.logprob_figure(scores)
    assert len(whole.data[0].x) == student and "positions" not in whole.layout.title.text
    monkeypatch.setattr(plots, "PLOT_MAX_POSITIONS", 60)
    for figure in (plots.logprob_figure(scores), plots.kl_figure(scores)):
        shown = list(figure.data[0].x)
        assert len(shown) == 60 < student
        assert shown[0] <= scores.anchors[0] and scores.error_span[1] - 1 <= shown[-1]
        assert f"positions {shown[0]}–{shown[-1]} of " in figure.layout.title.text
    assert plots.kl_figure(scores).data[0].textposition == "none"  # tokens in the hover, not drawn on the bars
