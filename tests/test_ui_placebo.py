"""The studio's placebo lane, gradient map and step timeline as plain session functions, on the real default model:
the per-record placebo is stored with the record, the strip shows before / hinted / placebo / content, bad input
answers with one line that says what to do, and the timeline of a CLI-style run is read back from the store."""

import copy

import numpy as np
import pytest

from opd_studio.records import Record, default_placebo
from opd_studio.scoring import PLACEBO_COLUMNS
from opd_studio.train import TrainConfig, train
from opd_studio.ui import session as actions
from opd_studio.ui.strip import render_strip, render_timeline
from opd_studio.workspace import Workspace
from opd_studio.store import Store
from tests.conftest import ADD

pytestmark = pytest.mark.integration


@pytest.fixture
def opened(default_model):
    model, tokenizer = default_model
    return actions.open_record(actions.Session(), model, tokenizer, Record.from_dict(ADD))


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 240, text
    return text


def test_placebo_lane_in_the_table_strip_and_record(opened, tmp_path):
    assert "logp_placebo" not in opened.scores.table
    assert actions.placebo_shown(opened) == default_placebo(opened.hints[0]).text
    actions.set_placebo(opened, True)
    assert set(PLACEBO_COLUMNS) <= set(opened.scores.table.columns)
    assert opened.scores.placebo == [default_placebo(opened.hints[0]).text]
    html = render_strip(opened.scores, "content", opened.scorer.trajectory)
    assert "p before / hinted / placebo" in html and "content (hinted − placebo)" in html
    assert "opd-key-style" in html and "turn on the placebo lane" not in html
    if opened.scores.table["style"].any():
        assert "opd-style" in html.split("</div>", 1)[1]
    # a placebo of the reviewer's own is kept with the hint and stored with the record
    actions.set_placebo(opened, True, " (Note: fine, go on.) ")
    assert opened.scores.placebo == [" (Note: fine, go on.) "] and opened.hints[0].placebo
    actions.edit_hint(opened, " (Hint: 7 + 5 = 12.) ", "inline")  # editing the hint keeps its placebo
    assert opened.hints[0].placebo == " (Note: fine, go on.) "
    stored = actions.review(opened, Store(tmp_path / "s.sqlite"), "accepted")
    assert stored.hints[0].placebo == " (Note: fine, go on.) "
    # the lane off: the plain table, and the placebo views say how to get them
    actions.set_placebo(opened, False)
    assert "logp_placebo" not in opened.scores.table
    assert "turn on the placebo lane" in render_strip(opened.scores, "placebo", opened.scorer.trajectory)


def test_window_first_then_whole_with_the_placebo(default_model):
    model, tokenizer = default_model
    long_answer = {**ADD, "messages": [ADD["messages"][0], {"role": "assistant", "content": (
        "17 + 25 = 32. So the answer is 32: I added the tens and then the ones, and checked it twice.")}]}
    opened = actions.open_record(actions.Session(), model, tokenizer, Record.from_dict(long_answer))
    actions.set_placebo(opened, True)
    actions.move_hint(opened, 46, score=actions.rescore_window)
    window = opened.scores.table
    upto = opened.scores.pending_from
    oneshot = opened.scorer.score(opened.hints, span=opened.span, error=opened.error, placebo="default").table
    assert upto is not None and "logp_placebo" not in window  # the lane comes with the whole strip
    columns = ["logp_before", "logp_after", "kl"]
    assert np.allclose(window[columns][:upto], oneshot[columns][:upto], atol=1e-4, equal_nan=True)
    assert window.target.equals(oneshot.target)
    actions.rescore(opened)  # the second update: the one-shot table, placebo lane included
    columns += ["logp_placebo", "content_drop"]
    assert np.allclose(opened.scores.table[columns], oneshot[columns], atol=1e-4, equal_nan=True)
    assert opened.scores.table["style"].equals(oneshot["style"])
    # a window that is the whole strip is scored whole at once, with the lane
    actions.move_hint(opened, len(opened.scores.table) - 3, score=actions.rescore_window)
    assert opened.scores.pending_from is None and "logp_placebo" in opened.scores.table


def test_gradient_map_in_the_token_details(opened):
    gradient = actions.gradient_map(opened, "hinted")
    assert gradient.target == "hinted" and len(gradient.frame) == int(opened.scores.table.target.sum())
    html = render_strip(opened.scores, "delta", opened.scorer.trajectory, gradient=opened.gradient)
    assert "gradient map (hinted target)" in html and "opd-mapped" in html
    table = actions.gradient_table(gradient)
    assert list(table.i) == list(gradient.frame.i) and table["target's top"].str.len().min() > 0
    actions.set_placebo(opened, True)
    assert opened.gradient is None  # a change of what is scored drops the old map
    for target in ("contrast", "evidence", "unleaked"):
        assert len(actions.gradient_map(opened, target, 1.0).frame) == len(gradient.frame)


def test_bad_input_gives_one_line_that_says_what_to_do(opened):
    before = opened.scores.table.copy()
    with pytest.raises(ValueError) as exc:  # a construction that needs a placebo, with no placebo lane
        actions.gradient_map(opened, "contrast", 1.0)
    assert "tick 'Placebo lane'" in one_line(exc)
    actions.set_placebo(opened, True)
    with pytest.raises(ValueError) as exc:  # α outside (0, 4]
        actions.gradient_map(opened, "contrast", 5)
    assert "alpha must be in (0, 4]" in one_line(exc)
    lane = opened.scores.table.copy()
    with pytest.raises(ValueError) as exc:  # a placebo longer than the model's context
        actions.set_placebo(opened, True, " (Note: " + "very " * 9000 + "long.)")
    assert "longer than the model's context" in one_line(exc) and "shorter" in one_line(exc)
    assert opened.scores.table.equals(lane) and opened.placebo_on and opened.hints[0].placebo is None
    actions.set_placebo(opened, False)
    assert opened.scores.table.equals(before)
    with pytest.raises(ValueError) as exc:
        TrainConfig(target="contrast", alpha=0)
    one_line(exc)
    with pytest.raises(ValueError) as exc:  # training from stored placebos only, on a record without one
        actions.require_placebos([opened.record], "contrast", "stored")
    assert "write its Placebo" in one_line(exc)
    actions.require_placebos([opened.record], "contrast", "default")


def test_timeline_of_a_run_read_back_from_the_store(default_model, tmp_path):
    model, tokenizer = default_model
    workspace = Workspace(Store(tmp_path / "s.sqlite"))
    record = Record.from_dict(ADD)
    record.hints[0].status = "accepted"
    workspace.store.add([record], origin="uploaded", status="accepted")
    records = workspace.training_records()
    assert records, "the curated set holds the record"
    # a copy: training adds and trains an adapter in the model it is given, and the default model is shared
    result = train(copy.deepcopy(model), tokenizer, records, TrainConfig(steps=2, lr=5e-3, drift_threshold=None))
    workspace.register_run(result, tokenizer, activate=False)
    shown = actions.run_timeline(workspace, tokenizer, 1)
    assert shown.record_ids == [record.id] and shown.timeline.steps == [0, 1, 2]
    assert shown.timeline.positions == result.timeline(record.id).positions
    first, last = (render_timeline(shown.trajectory, shown.timeline, k, shown.error_span) for k in (0, 2))
    assert "step 2 of 2" in last and first != last
    with pytest.raises(ValueError) as exc:
        actions.run_timeline(workspace, tokenizer, 7)
    assert "there is no run 7" in one_line(exc)
