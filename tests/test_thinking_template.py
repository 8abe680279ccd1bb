"""A chat template that is not prefix-stable (written for the test on the default tokenizer, as thinking models'
templates do): earlier assistant turns lose their <think> block once more messages follow."""

import copy

import pytest

from opd_studio.records import Record
from opd_studio.trajectory import TrajectoryError, build_trajectory

DROPS_EARLIER_THINKING = (
    "{%- for message in messages %}"
    "{%- set content = message['content'] %}"
    "{%- if message['role'] == 'assistant' and not loop.last and '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

THOUGHT = "<think>\n17 + 25: 7 + 5 = 12, carry 1, so 42.\n</think>\n"


@pytest.fixture(scope="module")
def thinking_tokenizer(tokenizer):
    thinking = copy.deepcopy(tokenizer)
    thinking.chat_template = DROPS_EARLIER_THINKING
    return thinking


def record(*assistant_turns: str) -> Record:
    messages = []
    for n, content in enumerate(assistant_turns):
        messages += [{"role": "user", "content": f"Question {n}: what is 17 + 25?"},
                     {"role": "assistant", "content": content}]
    return Record.from_dict({"id": "thinking", "messages": messages})


def test_the_template_really_drops_earlier_thinking(thinking_tokenizer):
    messages = record(THOUGHT + "42.", "Still 42.").messages
    alone = thinking_tokenizer.apply_chat_template(messages[:2], tokenize=False)
    later = thinking_tokenizer.apply_chat_template(messages, tokenize=False)
    assert "<think>" in alone and "<think>" not in later and not later.startswith(alone)


def test_a_thinking_turn_is_student_tokens_as_the_model_wrote_them(thinking_tokenizer):
    trajectory = build_trajectory(thinking_tokenizer, record(THOUGHT + "The answer is 42."))
    start, end = trajectory.student_token_spans[1]
    generated = "".join(trajectory.token_texts[start:end])
    assert generated == THOUGHT + "The answer is 42.<|im_end|>"  # the reasoning included, then the end of turn


def test_earlier_turns_without_thinking_stay_one_sequence(thinking_tokenizer):
    trajectory = build_trajectory(thinking_tokenizer, record("42.", THOUGHT + "Still 42."))
    assert "<think>" in "".join(trajectory.token_texts[slice(*trajectory.student_token_spans[3])])


def test_an_earlier_thinking_turn_is_one_clear_error(thinking_tokenizer):
    with pytest.raises(TrajectoryError, match=r"renders message 1 \(assistant\) differently once message 2 follows "
                                              r".*not one sequence\. Score each assistant turn as its own record"):
        build_trajectory(thinking_tokenizer, record(THOUGHT + "42.", "Still 42."))
    # each turn as its own record (the messages up to it) is what the model saw when it wrote that turn
    assert build_trajectory(thinking_tokenizer, record(THOUGHT + "42.")).student_token_spans[1]
