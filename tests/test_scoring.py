"""Hinted scoring against the obviously-correct path: two full forward passes with no cache."""

import contextlib
import math

import numpy as np
import pytest
import torch

from opd_studio.records import Hint, Record
from opd_studio.alignment import place_hints, splice
from opd_studio.scoring import COLUMNS, HintScorer, logits_from_hidden
from opd_studio.trajectory import build_trajectory
from tests.conftest import ADD, MULTI_TURN


@torch.no_grad()
def naive_log_softmax(model, ids):
    return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)  # (T, V)


def naive_table(model, tokenizer, trajectory, hints):
    """Reference: full forward on the original and on the hinted sequence; index by the splice map."""
    placed = place_hints(tokenizer, trajectory, hints)
    hinted, position = splice(trajectory.input_ids, placed)
    log_p, log_q = naive_log_softmax(model, trajectory.input_ids), naive_log_softmax(model, hinted)
    rows = {}
    for i in range(1, len(trajectory)):
        if not trajectory.student_mask[i]:
            continue
        token = trajectory.input_ids[i]
        p, q = log_p[i - 1], log_q[position[i] - 1]
        rows[i] = dict(logp_before=p[token].item(), logp_after=q[token].item(),
                       rank_before=int((p > p[token]).sum()) + 1, rank_after=int((q > q[token]).sum()) + 1,
                       entropy_before=-(p.exp() * p).sum().item(), entropy_after=-(q.exp() * q).sum().item(),
                       kl=(q.exp() * (q - p)).sum().item())
    return rows


def assert_matches_naive(table, reference):
    for i, expected in reference.items():
        row = table.loc[i]
        for column, value in expected.items():
            assert row[column] == pytest.approx(value, abs=1e-4), (i, column)


HINT_SETS = {
    "inline": [Hint(text=" (Hint: 7 + 5 = 12.) ", message=1, char=10)],
    "feedback": [Hint(text="Check the carry.", message=1, char=10, placement="feedback")],
    "template": [Hint(text="carry the one", message=1, char=10, placement="template", template=" [note: {hint}] ")],
    "two": [Hint(text=" (a)", message=1, char=5), Hint(text=" (b) ", message=1, char=10)],
}


@pytest.mark.parametrize("name", HINT_SETS)
def test_cached_scoring_equals_naive_full_forward(tiny_model, tokenizer, name):
    trajectory = build_trajectory(tokenizer, Record.from_dict(ADD))
    table = HintScorer(tiny_model, tokenizer, trajectory).score(HINT_SETS[name]).table
    assert list(table.columns) == COLUMNS
    assert_matches_naive(table, naive_table(tiny_model, tokenizer, trajectory, HINT_SETS[name]))


def test_multi_turn_with_three_hints_equals_naive(tiny_model, tokenizer):
    record = Record.from_dict(MULTI_TURN)
    trajectory = build_trajectory(tokenizer, record)
    hints = [Hint(text=" (check Rome)", message=6, char=8), Hint(text=" (tool says 18)", message=4, char=6),
             Hint(text="Call the tool.", message=2, char=0, placement="feedback")]
    table = HintScorer(tiny_model, tokenizer, trajectory).score(hints, span="response").table
    assert_matches_naive(table, naive_table(tiny_model, tokenizer, trajectory, hints))
    # context rows carry no numbers, student rows all do
    assert table.loc[~table.student, "logp_before"].isna().all()
    assert table.loc[table.student & (table.i > 0), "logp_after"].notna().all()


def test_positions_before_the_first_hint_are_unchanged(tiny_model, tokenizer):
    trajectory = build_trajectory(tokenizer, Record.from_dict(ADD))
    scores = HintScorer(tiny_model, tokenizer, trajectory).score(HINT_SETS["inline"])
    table, (anchor,) = scores.table, scores.anchors
    early = table[table.student & (table.i < anchor)]
    assert len(early) > 3
    assert (early.logp_before == early.logp_after).all() and (early.kl == 0).all()
    assert table.loc[anchor, "hint"] and table.hint.sum() == 1
    assert table.loc[anchor, "kl"] > 0


def test_incremental_rescoring_equals_fresh_scoring(tiny_model, tokenizer):
    """Edit text, move the hint later, move it earlier, add a second one: each equals a fresh scorer."""
    trajectory = build_trajectory(tokenizer, Record.from_dict(MULTI_TURN))
    scorer = HintScorer(tiny_model, tokenizer, trajectory)
    edits = [
        [Hint(text=" (hint one)", message=4, char=6)],
        [Hint(text=" (hint one, edited)", message=4, char=6)],
        [Hint(text=" (hint one, edited)", message=4, char=13)],
        [Hint(text=" (hint one, edited)", message=2, char=0)],
        [Hint(text=" (first)", message=4, char=6), Hint(text=" (second)", message=6, char=5)],
        [Hint(text=" (first)", message=4, char=6), Hint(text=" (second, edited)", message=6, char=5)],
    ]
    for hints in edits:
        incremental = scorer.score(hints).table
        fresh = HintScorer(tiny_model, tokenizer, trajectory).score(hints).table
        numeric = ["logp_before", "logp_after", "entropy_after", "kl"]
        np.testing.assert_allclose(incremental[numeric].to_numpy(float), fresh[numeric].to_numpy(float),
                                   atol=1e-4, equal_nan=True)
        assert (incremental.rank_after.fillna(0) == fresh.rank_after.fillna(0)).all()


@contextlib.contextmanager
def counted_passes(model):
    """The length of every decoder pass `model` runs inside the block."""
    seen = []
    original_forward = model.model.forward

    def counting_forward(*args, **kwargs):
        seen.append(kwargs["input_ids"].shape[1])
        return original_forward(*args, **kwargs)

    model.model.forward = counting_forward
    try:
        yield seen
    finally:
        del model.model.forward


def test_editing_a_later_hint_reuses_the_earlier_hinted_prefix(tiny_model, tokenizer):
    trajectory = build_trajectory(tokenizer, Record.from_dict(MULTI_TURN))
    scorer = HintScorer(tiny_model, tokenizer, trajectory)
    with counted_passes(tiny_model) as seen:
        first = [Hint(text=" (first)", message=4, char=6), Hint(text=" (second)", message=6, char=5)]
        scorer.score(first)
        scorer.score([first[0], Hint(text=" (second, edited)", message=6, char=5)])
    full, hinted, edited = seen
    assert full == len(trajectory)
    placed = place_hints(tokenizer, trajectory, [Hint(text=" (second, edited)", message=6, char=5)])
    # the edit recomputes from the second hint on: its tokens plus the suffix after it
    assert edited == len(trajectory) - placed[0].insert_at + len(placed[0].ids) - 2  # shares " (second"
    first_placed = place_hints(tokenizer, trajectory, first)
    assert hinted == len(trajectory) + sum(len(p.ids) for p in first_placed) - first_placed[0].insert_at


def test_top_alternatives_are_sorted_probabilities(tiny_model, tokenizer):
    trajectory = build_trajectory(tokenizer, Record.from_dict(ADD))
    scores = HintScorer(tiny_model, tokenizer, trajectory, top_k=5).score(HINT_SETS["inline"])
    row = scores.table.loc[scores.anchors[0]]
    probs = [p for _, p in row.top_before]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    if row.rank_before == 1:
        assert row.top_before[0][0] == row.text
        assert math.log(probs[0]) == pytest.approx(row.logp_before, abs=1e-5)


def test_logits_from_hidden_equals_the_model_head(tiny_model):
    ids = torch.tensor([[5, 17, 300, 2000, 41]])
    with torch.no_grad():
        hidden = tiny_model.get_decoder()(input_ids=ids).last_hidden_state[0]
        torch.testing.assert_close(logits_from_hidden(tiny_model, hidden), tiny_model(ids).logits[0].float())


# ------------------------------------------------------------------------------------------------------------------
# The placebo lane


def test_placebo_columns_equal_naive_full_forward(tiny_model, tokenizer):
    from opd_studio.records import default_placebo
    from opd_studio.scoring import PLACEBO_COLUMNS, STYLE_MIN_DROP, STYLE_SHARE

    trajectory = build_trajectory(tokenizer, Record.from_dict(MULTI_TURN))
    hints = [Hint(text=" (Hint: tool says 18.)", message=4, char=6), Hint(text=" (check Rome)", message=6, char=8)]
    scores = HintScorer(tiny_model, tokenizer, trajectory).score(hints, span="response", placebo="default")
    table = scores.table
    assert list(table.columns) == COLUMNS + PLACEBO_COLUMNS
    placebos = [default_placebo(h) for h in hints]
    assert scores.placebo == [" (Hint: check this step.)", " (check this step.)"]
    reference = naive_table(tiny_model, tokenizer, trajectory, placebos)
    assert_matches_naive(table.rename(columns={"logp_placebo": "logp_after", "rank_placebo": "rank_after",
                                               "logp_after": "_", "rank_after": "__"}),
                         {i: {"logp_after": r["logp_after"], "rank_after": r["rank_after"]}
                          for i, r in reference.items()})
    student = table[table.student & (table.i > 0)]
    assert (student.content_drop == student.logp_after - student.logp_placebo).all()
    raw, placebo_drop = student.logp_after - student.logp_before, student.logp_placebo - student.logp_before
    assert (student["style"] == ((raw < -STYLE_MIN_DROP) & (placebo_drop <= STYLE_SHARE * raw))).all()
    assert student.content_drop.abs().max() > 0  # the hints differ from their placebos somewhere
    assert not table.loc[~table.student, "style"].any()


def test_placebo_pass_has_its_own_cache(tiny_model, tokenizer):
    """Editing the hint reruns only the hinted suffix; the placebo, unchanged, is not run again."""
    trajectory = build_trajectory(tokenizer, Record.from_dict(MULTI_TURN))
    scorer = HintScorer(tiny_model, tokenizer, trajectory)
    with counted_passes(tiny_model) as seen:
        scorer.score([Hint(text=" (Hint: one)", message=4, char=6)], placebo="default")
        first = len(seen)
        edited = scorer.score([Hint(text=" (Hint: one, edited)", message=4, char=6)], placebo="default").table
    assert first == 3 and len(seen) == 4  # original, hinted, placebo; then the edited hint only
    fresh = HintScorer(tiny_model, tokenizer, trajectory).score([Hint(text=" (Hint: one, edited)", message=4, char=6)],
                                                                placebo="default").table
    np.testing.assert_allclose(edited.logp_placebo.to_numpy(float), fresh.logp_placebo.to_numpy(float), atol=1e-4,
                               equal_nan=True)
