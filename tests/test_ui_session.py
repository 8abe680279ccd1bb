"""Studio actions as plain functions (tiny model): edits, undo, errors that leave the session intact, review,
and the strip's escaping of untrusted token text."""

import pytest

from opd_studio.records import Record
from opd_studio.store import Store
from opd_studio.ui import session as actions
from opd_studio.ui.strip import render_strip
from tests.conftest import ADD


@pytest.fixture
def opened(tiny_model, tokenizer):
    return actions.open_record(actions.Session(), tiny_model, tokenizer, Record.from_dict(ADD))


def anchors(session):
    return session.scores.anchors


def test_move_edit_undo(opened):
    assert anchors(opened) == [48]
    actions.move_hint(opened, 45)
    assert anchors(opened) == [45] and opened.hints[0].status == "edited"
    assert (opened.hints[0].message, opened.hints[0].char) == (1, 6)  # stored readable as message + char too
    actions.edit_hint(opened, "(new text) ", "inline")
    assert opened.scores.hints[0].text == "(new text) "
    actions.undo(opened)
    assert opened.hints[0].text == ADD["hints"][0]["text"] and anchors(opened) == [45]
    actions.undo(opened)
    assert anchors(opened) == [48]
    with pytest.raises(ValueError, match="nothing to undo"):
        actions.undo(opened)


def test_bad_edits_change_nothing(opened):
    before = opened.scores.table.copy()
    for bad in (lambda: actions.move_hint(opened, 3), lambda: actions.move_hint(opened, 999),
                lambda: actions.edit_hint(opened, "   ", "inline"),
                lambda: actions.edit_hint(opened, "x", "template", "no placeholder")):
        with pytest.raises(ValueError):
            bad()
    assert opened.scores.table.equals(before) and anchors(opened) == [48] and opened.undo_stack == []


def test_span_changes_targets(opened):
    actions.set_span(opened, "error")
    assert opened.scores.table.index[opened.scores.table.target].tolist() == [48, 49]
    actions.set_span(opened, "response")
    assert opened.scores.table.index[opened.scores.table.target].tolist() == [48, 49, 50, 51]


def test_review_saves_what_was_edited(opened, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    actions.move_hint(opened, 47)
    stored = actions.review(opened, store, "accepted", reviewer="ana")
    again = store.get(stored.id)
    assert again.hints[0].token == 47 and again.hints[0].status == "accepted"
    assert store.table().loc[0, "reviewer"] == "ana" and store.counts()["accepted"] == 1


def test_strip_escapes_untrusted_text(tiny_model, tokenizer):
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)> {{7*7}} ' \" &"
    record = Record.from_dict({"id": "x", "messages": [{"role": "user", "content": evil},
                                                       {"role": "assistant", "content": evil}],
                               "hints": [{"message": 1, "char": 0, "text": "<b onmouseover=alert(3)>hint</b>"}]})
    session = actions.open_record(actions.Session(), tiny_model, tokenizer, record)
    html = render_strip(session.scores, "delta", session.scorer.trajectory)
    assert "<script" not in html and "<img" not in html and "<b onmouseover" not in html
    assert "&lt;" in html and "&lt;b·onmouseover=alert(3)&gt;hint&lt;/b&gt;" in html  # shown, as text


def test_keep_as_right_stores_an_anchor_only_record(tiny_model, tokenizer, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    unhinted = actions.open_record(actions.Session(), tiny_model, tokenizer, Record.from_dict({**ADD, "hints": []}))
    with pytest.raises(ValueError, match="keep the record as right"):
        actions.review(unhinted, store, "accepted")
    assert store.counts()["accepted"] == 0
    stored = actions.review(unhinted, store, "accepted", reviewer="ana", as_right=True)
    again = store.get(stored.id)
    assert again.hints == [] and again.error is None and store.counts()["accepted"] == 1
