"""Alignment: where hints go and which row of which pass predicts which original token, in the cases where
distillation code gets it wrong (several hints, feedback turns, templates, a hint at the first response token,
sequences longer than the context, padding on either side, batches of mixed lengths), and every consumer (the
scorer's table and gradient map, training's examples and cached targets, batched scoring, the teacher top-k export,
the leak flags) agreeing with one alignment of the same record."""

import pytest
import torch

from opd_studio.alignment import (Alignment, align, pad_id, pad_right, predicting_row, predicting_rows)
from opd_studio.batching import decoder_hidden, prepare_scoring, score_records, suffix_hidden
from opd_studio.diagnostics import hint_flags
from opd_studio.objective import HiddenAt, build_example, cache_targets, hidden_at
from opd_studio.records import Hint, Record
from opd_studio.scoring import HintScorer
from opd_studio.targets import TargetSpec
from opd_studio.teacher_topk import teacher_topk_rows
from opd_studio.trajectory import TrajectoryError, build_trajectory
from tests.conftest import ADD, FIRST_TOKEN, SEVERAL_HINTS as SEVERAL, random_llama

@pytest.fixture(scope="module")
def several(tokenizer):
    record = Record.from_dict(SEVERAL)
    return record, align(tokenizer, build_trajectory(tokenizer, record), record.hints, "turn", record.error,
                         placebo="default")


def hint_indices(spliced) -> set[int]:
    """Indices of the spliced sequence that hold hint tokens (everything the position map does not reach)."""
    return set(range(len(spliced.ids))) - set(spliced.position)


def assert_rows_predict_their_tokens(alignment: Alignment):
    """In every pass, the row of each target and error position is followed by that position's own token, and no
    hint token is ever a target."""
    ids = alignment.input_ids
    positions = alignment.targets + alignment.errors
    assert predicting_rows(positions) == [t - 1 for t in positions]
    for spliced in filter(None, (alignment.hinted, alignment.placebo)):
        assert [spliced.ids[r + 1] for r in spliced.rows(positions)] == [ids[t] for t in positions]
        assert not hint_indices(spliced) & {r + 1 for r in spliced.rows(positions)}
        # removing the hint tokens gives the trajectory back, untouched (never re-tokenized)
        assert [t for n, t in enumerate(spliced.ids) if n not in hint_indices(spliced)] == ids


def test_several_hints_in_two_turns(several, tokenizer):
    record, alignment = several
    trajectory = alignment.trajectory
    assert [p.placement for p in alignment.hints] == ["inline", "feedback", "template"]
    assert_rows_predict_their_tokens(alignment)
    # each hint's tokens sit right before its insertion point, in insertion order
    for p in alignment.hints:
        at = alignment.hinted.position[p.insert_at]
        before = alignment.hinted.ids[at - len(p.ids): at]
        stacked = [q for q in alignment.hints if q.insert_at == p.insert_at]
        assert p.ids == before or any(p.ids == q.ids for q in stacked)
    # turn span: each hint's targets run from its anchor to its turn's end, student tokens only
    expected = set()
    for p in alignment.hints:
        expected |= {t for t in range(p.anchor, trajectory.turn_end(p.anchor)) if trajectory.student_mask[t]}
    assert set(alignment.targets) == expected
    assert set(alignment.anchors) == set(alignment.student_positions) - expected
    # the error positions are the error span's student tokens
    start, end = trajectory.error_token_span(record.error)
    assert alignment.errors == [t for t in range(start, end) if trajectory.student_mask[t]]


def test_a_feedback_turn_goes_before_the_turn_and_is_never_a_target(several, tokenizer):
    _, alignment = several
    feedback = next(p for p in alignment.hints if p.placement == "feedback")
    trajectory = alignment.trajectory
    message = trajectory.message_index[feedback.anchor]
    assert feedback.insert_at == trajectory.turn_token_spans[message][0] < feedback.anchor
    assert "Consider this feedback: Rome reported 31°C today." in feedback.text
    # the template header of the turn is context: between the feedback and the anchor, nothing is a target
    assert not any(alignment.mask[t] for t in range(feedback.insert_at, feedback.anchor)
                   if t not in {p.anchor for p in alignment.hints})


def test_a_template_hint_is_the_template_around_the_text(several, tokenizer):
    _, alignment = several
    template = next(p for p in alignment.hints if p.placement == "template")
    assert template.ids == tokenizer(" [note: wind is calm] ", add_special_tokens=False)["input_ids"]


def test_a_hint_at_the_first_response_token(tokenizer):
    record = Record.from_dict(FIRST_TOKEN)
    alignment = align(tokenizer, build_trajectory(tokenizer, record), record.hints)
    first = alignment.trajectory.student_token_spans[1][0]
    (hint,) = alignment.hints
    assert hint.anchor == hint.insert_at == first == alignment.targets[0]
    # the row that predicts the first response token under the hint is the hint's last token
    row = alignment.rows("hinted", [first])[0]
    assert alignment.hinted.ids[row] == hint.ids[-1]
    assert alignment.rows("student", [first]) == [first - 1]
    assert_rows_predict_their_tokens(alignment)
    # position 0 is never a target: no row predicts it
    assert predicting_row(0) == -1 and 0 not in alignment.targets + alignment.anchors


def test_a_hinted_sequence_longer_than_the_context_is_refused_not_truncated(tokenizer):
    """A teacher prompt cut from the left would shift every row: past the context the scorer and training say so."""
    from transformers import LlamaConfig, LlamaForCausalLM

    record = Record.from_dict(ADD)
    trajectory = build_trajectory(tokenizer, record)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=len(trajectory) + 2)).eval()
    with pytest.raises(TrajectoryError, match="longer than the model's context"):
        HintScorer(model, tokenizer, trajectory).score(record.hints)
    example = build_example(tokenizer, record)
    with pytest.raises(TrajectoryError, match="longer than the model's context"):
        cache_targets(model, [example], 4, torch.float32)


def test_padding_on_the_right_and_the_left_keeps_every_row(tokenizer, tiny_model):
    """Right padding (originals) and left-padded cached prefixes (hinted suffixes) give each sequence's own rows."""
    records = [Record.from_dict(r) for r in (ADD, SEVERAL, FIRST_TOKEN)]
    alignments = [align(tokenizer, build_trajectory(tokenizer, r), r.hints, error=r.error) for r in records]
    sequences = [a.input_ids for a in alignments]
    assert len({len(s) for s in sequences}) == 3  # mixed lengths: padding on every row but the longest
    ids, mask = pad_right(sequences, pad_id(tokenizer))
    for b, s in enumerate(sequences):
        assert ids[b, : len(s)].tolist() == s and mask[b].sum() == len(s) and not mask[b, len(s):].any()
    keep = [a.hints[0].insert_at for a in alignments]  # each prefix before its first hint: left-padded to the longest
    hidden, prefixes = decoder_hidden(tiny_model, sequences, pad_id(tokenizer), keep)
    spliced = suffix_hidden(tiny_model, [a.hinted.ids[k:] for a, k in zip(alignments, keep)], prefixes,
                            pad_id(tokenizer))
    with torch.no_grad():
        for a, original, hinted in zip(alignments, hidden, spliced):
            alone = tiny_model.get_decoder()(input_ids=torch.tensor([a.input_ids])).last_hidden_state[0]
            alone_hinted = tiny_model.get_decoder()(input_ids=torch.tensor([a.hinted.ids])).last_hidden_state[0]
            rows = a.rows("student", a.targets)
            torch.testing.assert_close(original[rows], alone[rows], atol=1e-4, rtol=0)
            rows = a.rows("hinted", a.targets)
            torch.testing.assert_close(hinted[rows], alone_hinted[rows], atol=1e-4, rtol=0)


def test_a_batch_of_mixed_lengths_gathers_each_examples_rows(tokenizer, tiny_model):
    examples = [build_example(tokenizer, Record.from_dict(r)) for r in (ADD, SEVERAL)]
    rows = [ex.alignment.rows("hinted", ex.targets) for ex in examples]
    with torch.no_grad():
        batched = hidden_at(HiddenAt(tiny_model), [ex.hinted_ids for ex in examples], rows, pad_id(tokenizer), "cpu")
        alone = torch.cat([hidden_at(HiddenAt(tiny_model), [ex.hinted_ids], [r], pad_id(tokenizer), "cpu")
                           for ex, r in zip(examples, rows)])
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=0)


def test_every_consumer_agrees_with_the_alignment(tokenizer):
    """One record, one alignment: the scorer's table, its gradient map, training's example and cached target,
    batched scoring, the teacher top-k export and the leak flags all read the same positions and rows, and the
    teacher's numbers are those of a plain full forward pass at the alignment's rows."""
    model = random_llama(tokenizer, 4)
    record = Record.from_dict(SEVERAL)
    trajectory = build_trajectory(tokenizer, record)
    alignment = align(tokenizer, trajectory, record.hints, "turn", record.error, placebo="default")
    with torch.no_grad():
        log_q = torch.log_softmax(model(torch.tensor([alignment.hinted.ids])).logits[0].float(), -1)
        log_z = torch.log_softmax(model(torch.tensor([alignment.placebo.ids])).logits[0].float(), -1)
    targets, tokens = alignment.targets, alignment.tokens(alignment.targets)
    q_at = log_q[alignment.rows("hinted", targets)].gather(1, tokens[:, None])[:, 0]

    scorer = HintScorer(model, tokenizer, trajectory)
    scores = scorer.score(record.hints, "turn", record.error, placebo="default")
    assert scores.alignment.targets == targets and scores.table.target.tolist() == alignment.mask
    torch.testing.assert_close(torch.tensor(scores.table.logp_after[targets].tolist()), q_at, atol=1e-4, rtol=0)
    z_at = log_z[alignment.rows("placebo", targets)].gather(1, tokens[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(scores.table.logp_placebo[targets].tolist()), z_at, atol=1e-4, rtol=0)

    gradient = scorer.gradient_map(record.hints, TargetSpec("hinted"), error=record.error)
    assert gradient.frame.i.tolist() == targets
    torch.testing.assert_close(torch.tensor(gradient.frame.p_hinted.tolist()), q_at.exp(), atol=1e-4, rtol=0)

    example = build_example(tokenizer, record, placebo="default")
    a = example.alignment
    assert (a.targets, a.anchors, a.errors, a.hinted.ids, a.placebo.ids) == (
        targets, alignment.anchors, alignment.errors, alignment.hinted.ids, alignment.placebo.ids)
    cache_targets(model, [example], 8, torch.float32, target=TargetSpec("contrast", alpha=2.0))
    contrast = scorer.gradient_map(record.hints, TargetSpec("contrast", alpha=2.0), error=record.error)
    cached = torch.log_softmax(example.teacher_logits, -1).gather(1, tokens[:, None])[:, 0].exp()
    torch.testing.assert_close(torch.tensor(contrast.frame.p_target.tolist()), cached, atol=1e-4, rtol=0)

    (job,) = prepare_scoring(tokenizer, [record], placebo="default")
    assert job.alignment.hinted.ids == alignment.hinted.ids and job.alignment.placebo.ids == alignment.placebo.ids
    (_, batched), = score_records(model, tokenizer, [job])
    assert batched.table.target.tolist() == alignment.mask

    (export,) = teacher_topk_rows(model, tokenizer, [record], top_k=3)
    assert export["target_positions"] == targets
    top = log_q[alignment.rows("hinted", targets)].topk(3, -1)
    assert export["topk_ids"] == top.indices.tolist()

    flags = hint_flags(scorer, scores)
    assert set(flags.i) <= set(targets)


def test_a_span_change_keeps_the_passes(several):
    _, alignment = several
    error = alignment.with_span("error")
    assert error.hinted is alignment.hinted and error.placebo is alignment.placebo
    assert set(error.targets) < set(alignment.targets)
    with pytest.raises(ValueError, match="lane 'teacher'"):
        alignment.rows("teacher", alignment.targets)


def test_one_pad_rule(tokenizer):
    class Tokens:
        def __init__(self, pad, eos):
            self.pad_token_id, self.eos_token_id = pad, eos

    assert pad_id(Tokens(5, 2)) == 5 and pad_id(Tokens(None, 2)) == 2 and pad_id(Tokens(None, None)) == 0
    assert pad_id(tokenizer) == tokenizer.pad_token_id
