"""The answer verifier on prose answers (issue 18's examples and the default model's own phrasings), and the
registries: every registered hint model and target construction is offered by the CLI and the studio."""

import pytest

from opd_studio.hints import HINT_MODELS, needs_model
from opd_studio.hints.answer import AnswerVerifier, question_result, stated_results
from opd_studio.records import Record


def answered(question, answer, reference=None):
    return Record("r", [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                  reference=reference)


def flagged(record):
    """The wrong text and what precedes it, or None when the verifier passes the answer."""
    result = AnswerVerifier().propose(record)
    if not result.proposals:
        return None
    p = result.proposals[0]
    content = record.messages[p.message]["content"]
    assert p.hint_char <= p.char_start and content[p.hint_char: p.char_start].strip() == ""
    return content[p.char_start: p.char_end]


@pytest.mark.parametrize("question,answer,reference,wrong", [
    # the prose answers: the result stated after "which is" / "which gives you"
    ("What is 63 + 32?", "To find the sum, add the tens and ones of 63 + 32, which is 199.", None, "199"),
    ("Subtract 84 from 65.", "To do this, subtract 84 from 65, which gives you 11. So the result is -19.", None, "11"),
    ("Multiply 21 by 12.", "To multiply 21 by 12, we get 242. The product is 252.", None, "242"),
    ("Tom had 495 marbles and lost 147. How many marbles does Tom have left?",
     "Tom had 495 marbles and lost 147, so he has 495 - 147 = 358 marbles left.", "348", "358"),
    ("Compute 115 plus 80.", "The answer is 185.", None, "185"),
    ("What is 17 + 25?", "We add the numbers: \\boxed{43}", None, "43"),
    ("A baker made 192 rolls and sold 129 of them. How many rolls are left?",
     "The baker has some rolls left over after the sale: 73 rolls.", "63", "73"),
    ("What is 1,234 + 1,000?", "1,234 + 1,000 equals 2,334.", None, "2,334"),
])
def test_a_wrong_stated_result_is_flagged_at_its_first_character(question, answer, reference, wrong):
    assert flagged(answered(question, answer, reference)) == wrong


@pytest.mark.parametrize("question,answer,reference", [
    ("What is 63 + 32?", "63 + 32, which is 95.", None),
    ("Subtract 84 from 165.", "Subtract 84 from 165, which gives you 81.", None),
    ("Multiply 21 by 12.", "First 21 × 2 = 42 and 21 × 10 = 210; 42 + 210 = 252. The answer is 252.", None),
    ("Maria has 194 stickers and her friend gives her 140 more. How many stickers does Maria have now?",
     "Maria now has 334 stickers.", "334"),
    ("What is 1,234 + 1,000?", "The answer is \\boxed{2234}.", None),
    ("What is 10 / 4?", "10 / 4 = 2.5", None),
    ("Add 324 and 150. What do you get?", "The answer is 324 + 150 = 474.", "474"),
])
def test_a_right_answer_passes_and_partial_steps_are_not_judged(question, answer, reference):
    record = answered(question, answer, reference)
    result = AnswerVerifier().propose(record)
    assert result.proposals == [] and result.checked >= 1, result.reason


def test_what_cannot_be_checked_says_why():
    assert "no expected result" in AnswerVerifier().propose(answered("Tell me a story.", "Once 3 cats…")).reason
    assert AnswerVerifier().propose(answered("What is 2 + 3?", "I am not sure.")).reason == "the answer states no result"
    assert question_result("Subtract 84 from 65.") == -19 and question_result("the product of 6 and 7") == 42
    assert stated_results("So 5 + 7 = 12.", [5, 7]) == [(11, 13)]
    # an answer cut off at the token limit has not concluded: its last number is not its result
    cut = answered("Multiply 31 by 20.", "We need a common multiple of 31 and 20.\n\nMultiples of 31 are 31, 62, ")
    assert AnswerVerifier().propose(cut).reason == "the answer states no result"
    assert flagged(answered("Multiply 31 by 20.", "We need multiples of 31 and 20. That makes 640 in all.")) == "640"


def test_the_hint_reveals_or_nudges():
    record = answered("What is 63 + 32?", "63 + 32, which is 199.")
    assert AnswerVerifier().propose(record).proposals[0].text.strip() == "(Hint: the answer is 95.)"
    assert "199 is not the result" in AnswerVerifier(style="nudge").propose(record).proposals[0].text
    with pytest.raises(ValueError, match="style 'loud' is not one of"):
        AnswerVerifier(style="loud")


# ------------------------------------------------------------------------------------------------------------------
# Registries are the one list


def test_every_registered_hint_model_and_target_is_in_the_cli_and_the_studio():
    from opd_studio.cli import build_parser
    from opd_studio.targets import TARGETS, TargetSpec
    from opd_studio.train import TrainConfig
    from opd_studio.ui.annotate_tab import HINT_MODEL_CHOICES

    def choices(parser, command, flag):
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        return list(next(a for a in sub._actions if flag in a.option_strings).choices)

    parser = build_parser()
    assert choices(parser, "propose", "--hint-model") == list(HINT_MODELS)
    assert [c for c in HINT_MODEL_CHOICES if c not in ("auto", "manual")] == list(HINT_MODELS)
    assert "answer" in HINT_MODELS and choices(parser, "train", "--target") == list(TARGETS)
    assert "guided" in TARGETS
    for kind in TARGETS:
        assert TrainConfig(target=kind).target_spec == TargetSpec(kind, alpha=2.0, floor=-5.0, tau=1.0)
    # the model-backed hint model says so as a property, not by its name
    assert [name for name in HINT_MODELS if needs_model(name)] == ["critic"]
    # the studio's dropdowns, as built
    import gradio as gr

    from opd_studio.ui.app import build_app

    dropdowns = {b.elem_id: [value for _, value in b.choices] for b in build_app().blocks.values()
                 if isinstance(b, gr.Dropdown)}
    assert dropdowns["opd-hint-model"] == ["auto", *HINT_MODELS, "manual"]
    assert dropdowns["opd-target"] == dropdowns["opd-gradient-target"] == list(TARGETS)
