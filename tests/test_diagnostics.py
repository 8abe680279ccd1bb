"""Position sweep and text comparison against one-by-one scoring; leak and contamination flags on the real model."""

import pytest

from opd_studio.diagnostics import compare_hint_texts, hint_flags, position_sweep, summarize_flags
from opd_studio.records import Hint, Record, placebo_text
from opd_studio.scoring import HintScorer
from opd_studio.trajectory import build_trajectory
from tests.conftest import ADD, MULTI_TURN


def one_by_one_drop(model, tokenizer, trajectory, text, k, error):
    table = HintScorer(model, tokenizer, trajectory).score([Hint(text=text, token=k)]).table
    rows = table.loc[error[0]: error[1] - 1]
    return (rows.logp_after - rows.logp_before).sum()


def test_sweep_equals_one_by_one_scoring(tiny_model, tokenizer):
    trajectory = build_trajectory(tokenizer, Record.from_dict(ADD))
    error = (48, 50)
    sweep = position_sweep(HintScorer(tiny_model, tokenizer, trajectory), " (carry the 1) ", error, window=6)
    assert sweep.insert_at.tolist() == list(range(42, 49))
    for row in sweep.itertuples():
        assert row.drop == pytest.approx(one_by_one_drop(tiny_model, tokenizer, trajectory, " (carry the 1) ",
                                                         row.insert_at, error), abs=1e-4)
    assert sweep.recommended.sum() == 1
    # the placebo, swept the same way, against one-by-one scoring of the placebo text
    placebo = placebo_text(" (carry the 1) ")
    assert placebo == " (check this step.) "
    for row in sweep.itertuples():
        assert row.placebo_drop == pytest.approx(one_by_one_drop(tiny_model, tokenizer, trajectory, placebo,
                                                                 row.insert_at, error), abs=1e-4)
        assert row.content_drop == pytest.approx(row.drop - row.placebo_drop, abs=1e-9)
    assert "content_drop" not in position_sweep(HintScorer(tiny_model, tokenizer, trajectory), " (x) ", error,
                                                window=2, placebo=None)


def test_sweep_stays_inside_the_turn_and_rejects_context(tiny_model, tokenizer):
    trajectory = build_trajectory(tokenizer, Record.from_dict(MULTI_TURN))
    scorer = HintScorer(tiny_model, tokenizer, trajectory)
    first, _ = trajectory.student_token_spans[4]
    sweep = position_sweep(scorer, " (x)", (first + 2, first + 3), window=50)
    assert sweep.insert_at.min() == first
    with pytest.raises(ValueError, match="context"):
        position_sweep(scorer, " (x)", (0, 1))


def test_text_comparison_equals_one_by_one_scoring(tiny_model, tokenizer):
    trajectory = build_trajectory(tokenizer, Record.from_dict(ADD))
    texts = [" (a much longer hint about carrying the one) ", " (short) ", " [42] "]
    table = compare_hint_texts(HintScorer(tiny_model, tokenizer, trajectory), texts, anchor=48, error=(48, 50))
    assert sorted(table.text) == sorted(texts) and table["rank"].tolist() == [1, 2, 3]
    assert table["drop"].is_monotonic_increasing
    for row in table.itertuples():
        assert row.drop == pytest.approx(one_by_one_drop(tiny_model, tokenizer, trajectory, row.text, 48, (48, 50)),
                                         abs=1e-4)
        placebo = one_by_one_drop(tiny_model, tokenizer, trajectory, placebo_text(row.text), 48, (48, 50))
        assert row.placebo_drop == pytest.approx(placebo, abs=1e-4)
        assert row.content_drop == pytest.approx(row.drop - placebo, abs=1e-4)
    # texts of different frames get different placebos: " (check this step.) " and " check this step. "
    assert table.set_index("text").loc[" [42] ", "placebo_drop"] != table.set_index("text").loc[
        " (short) ", "placebo_drop"]


@pytest.mark.integration
def test_flags_catch_a_copied_hint_and_a_leaked_answer(default_model):
    model, tokenizer = default_model
    scorer = HintScorer(model, tokenizer, build_trajectory(tokenizer, Record.from_dict(ADD)))

    def flags(text):
        hints = [Hint(text=text, token=48)]
        return hint_flags(scorer, scorer.score(hints))

    # The teacher restarts the hint's "17 + 25 …" instead of continuing the answer: contamination.
    copied = flags(" (Hint: 17 + 25 = 42.) ")
    assert copied.loc[0, "teacher_top"] == "1" and copied.loc[0, "continues_hint"]
    # "4" appears only in the hint, and the teacher now puts it first: the answer leaked from the hint.
    leaked = flags("42, not ")
    assert leaked.loc[0, "teacher_top"] == "4" and leaked.loc[0, "leak"]
    assert summarize_flags(leaked)["leaks"] >= 1
    # A pure nudge leaks nothing at the error token.
    assert not flags(" (check the carry) ").loc[0, "leak"]
