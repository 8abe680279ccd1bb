"""Tokenization and position mapping: the place where distillation code silently goes wrong."""

import pytest

from opd_studio.records import ErrorSpan, Hint, Record
from opd_studio.alignment import place_hints, splice, target_mask
from opd_studio.trajectory import TrajectoryError, build_trajectory
from tests.conftest import ADD, MULTI_TURN


def test_tokens_match_the_chat_template_and_student_mask_covers_the_answer(tokenizer):
    record = Record.from_dict(ADD)
    trajectory = build_trajectory(tokenizer, record)
    rendered = tokenizer.apply_chat_template(record.messages, tokenize=False)
    assert trajectory.text == rendered
    assert trajectory.input_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    student = "".join(t for t, s in zip(trajectory.token_texts, trajectory.student_mask) if s)
    assert student == "17 + 25 = 32.<|im_end|>"


def test_char_to_token_is_exact_and_snaps_inside_a_token(tokenizer):
    trajectory = build_trajectory(tokenizer, Record.from_dict(ADD))
    token, snapped = trajectory.char_to_token(1, 10)
    assert trajectory.token_texts[token] == "3" and not snapped
    # char 3 is the '+' of the token " +" (chars 2-3): it snaps to that token's start
    token, snapped = trajectory.char_to_token(1, 3)
    assert trajectory.token_texts[token] == " +" and snapped
    assert trajectory.token_to_char(token) == (1, 2)
    # the end of the content is the end-of-turn token
    token, _ = trajectory.char_to_token(1, len("17 + 25 = 32."))
    assert trajectory.token_texts[token] == "<|im_end|>"


def test_multi_turn_with_tool_calls_maps_every_message(tokenizer):
    record = Record.from_dict(MULTI_TURN)
    trajectory = build_trajectory(tokenizer, record)
    # every message's content sits verbatim at its span, and its tokens cover it
    for m, message in enumerate(record.messages):
        start, end = trajectory.content_spans[m]
        if message["content"]:
            assert trajectory.text[start:end] == message["content"]
        first, last = trajectory.turn_token_spans[m]
        assert set(trajectory.message_index[first:last]) == {m}
    # SmolLM2's template drops tool_calls, so the call is written into the turn: generated tokens
    call_turn = "".join(trajectory.token_texts[a] for a in range(*trajectory.student_token_spans[2]))
    assert call_turn == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    # tool results, users and system are context; all three assistant turns are student tokens
    for m, role in enumerate(trajectory.roles):
        first, last = trajectory.turn_token_spans[m]
        assert any(trajectory.student_mask[first:last]) == (role == "assistant")
    token, _ = trajectory.char_to_token(6, record.messages[6]["content"].index("25"))
    assert trajectory.token_texts[token] == "2" and trajectory.message_index[token] == 6


def test_response_token_ids_are_used_verbatim(tokenizer):
    content = "Rome is 25°C 🌞 and clear."
    ids = tokenizer(content, add_special_tokens=False)["input_ids"]
    plain = build_trajectory(tokenizer, Record.from_dict(MULTI_TURN))
    exact = build_trajectory(tokenizer, Record.from_dict({**MULTI_TURN, "response_token_ids": [None, None, ids]}))
    assert exact.input_ids == plain.input_ids
    assert exact.text == plain.text
    # A different (non-canonical) split of the same text is kept as given: "1","7" → one id per character.
    rest = tokenizer(" + 25 = 32.", add_special_tokens=False)["input_ids"]
    unusual = [tokenizer.convert_tokens_to_ids(c) for c in "17"] + rest
    record = Record.from_dict({**ADD, "response_token_ids": unusual})
    trajectory = build_trajectory(tokenizer, record)
    first, last = trajectory.student_token_spans[1]
    assert trajectory.input_ids[first:last - 1] == unusual
    assert trajectory.input_ids[last - 1] == tokenizer.eos_token_id
    assert trajectory.char_to_token(1, 10)[0] == first + unusual.index(tokenizer.convert_tokens_to_ids("3"))


def test_response_token_ids_that_do_not_match_the_text_are_refused(tokenizer):
    wrong = tokenizer("17 + 25 = 42.", add_special_tokens=False)["input_ids"]
    with pytest.raises(TrajectoryError, match="decode to '17 \\+ 25 = 42."):
        build_trajectory(tokenizer, Record.from_dict({**ADD, "response_token_ids": wrong}))


def test_splice_maps_original_positions_through_several_hints(tokenizer):
    record = Record.from_dict(MULTI_TURN)
    trajectory = build_trajectory(tokenizer, record)
    hints = [Hint(text=" (check Rome)", message=6, char=8),
             Hint(text=" (use the tool result)", message=4, char=6),
             Hint(text="Use the tool.", message=4, char=6, placement="feedback")]
    placed = place_hints(tokenizer, trajectory, hints)
    assert [p.hint.placement for p in placed] == ["feedback", "inline", "inline"]
    hinted, position = splice(trajectory.input_ids, placed)
    assert len(hinted) == len(trajectory) + sum(len(p.ids) for p in placed)
    # every original token is where the map says, in order
    assert [hinted[position[i]] for i in range(len(trajectory))] == trajectory.input_ids
    assert position == sorted(position)
    # hint tokens sit right before their insertion points
    for p in placed:
        assert hinted[position[p.insert_at] - len(p.ids): position[p.insert_at]] == p.ids
    feedback = placed[0]
    assert tokenizer.decode(feedback.ids) == "<|im_start|>user\nConsider this feedback: Use the tool.<|im_end|>\n"
    assert feedback.insert_at == trajectory.turn_token_spans[4][0]  # before "<|im_start|>assistant"
    assert feedback.anchor == placed[1].anchor


def test_target_spans(tokenizer):
    record = Record.from_dict(MULTI_TURN)
    trajectory = build_trajectory(tokenizer, record)
    placed = place_hints(tokenizer, trajectory, [Hint(text=" (hint)", message=4, char=6)])
    anchor = placed[0].anchor
    turn = target_mask(trajectory, placed, "turn")
    assert [i for i, t in enumerate(turn) if t] == list(range(anchor, trajectory.student_token_spans[4][1]))
    response = target_mask(trajectory, placed, "response")
    expected = [i for i in range(anchor, len(trajectory)) if trajectory.student_mask[i]]
    assert [i for i, t in enumerate(response) if t] == expected
    error = trajectory.error_token_span(ErrorSpan(message=4, char_start=6, char_end=10))
    assert [i for i, t in enumerate(target_mask(trajectory, placed, "error", error)) if t] == list(range(*error))
    assert "".join(trajectory.token_texts[i] for i in range(*error)) == "18°C"


@pytest.mark.parametrize("hint, message", [
    (Hint(text="x", message=1, char=3), "message 1, a user message"),
    (Hint(text="x", message=3, char=0), "a tool message"),
    (Hint(text="x", message=9, char=0), "message 9 does not exist"),
    (Hint(text="x", message=4, char=500), "character 500 is outside message 4"),
    (Hint(text="x", token=100000), "token 100000 is out of range"),
    (Hint(text="x", token=0), "a system message"),
    (Hint(text="", message=4, char=0), "hint 0 is empty"),
])
def test_misplaced_hints_get_clear_errors(tokenizer, hint, message):
    trajectory = build_trajectory(tokenizer, Record.from_dict(MULTI_TURN))
    with pytest.raises(TrajectoryError) as error:
        place_hints(tokenizer, trajectory, [hint])
    assert message in str(error.value)
