"""Batched scoring and generation against the one-record-at-a-time paths they replace."""

import copy

import numpy as np
import pandas as pd
import pytest

from opd_studio.batching import GenerationJob, generate_batch, generate_records, length_batches, prepare_scoring, \
    score_records
from opd_studio.records import Record
from opd_studio.rollout import SamplingConfig, generate
from opd_studio.scoring import score_record
from tests.conftest import ADD, MULTI_TURN


def scoring_records():
    add = Record.from_dict(ADD)
    feedback = Record.from_dict({**ADD, "id": "feedback", "hints": [
        {"message": 1, "char": 10, "text": "Check the carry.", "placement": "feedback"}]})
    two = Record.from_dict({**ADD, "id": "two-hints", "hints": [
        {"message": 1, "char": 3, "text": " (think) "}, {"message": 1, "char": 10, "text": " (carry) "}]})
    plain = Record.from_dict({**ADD, "id": "no-hint", "hints": []})
    multi = Record.from_dict({**MULTI_TURN, "hints": [{"message": 6, "char": 8, "text": " (Hint: it is 25.) "}]})
    long = Record.from_dict({"id": "long", "messages": [
        {"role": "user", "content": "Count."},
        {"role": "assistant", "content": " ".join(str(n) for n in range(60))}],
        "hints": [{"message": 1, "char": 40, "text": " (Hint: skip nothing.) "}]})
    return [add, feedback, two, plain, multi, long]


NUMERIC = ["logp_before", "logp_after", "entropy_before", "entropy_after", "kl"]


def assert_same_table(batched: pd.DataFrame, single: pd.DataFrame):
    assert list(batched.columns) == list(single.columns)
    for column in batched.columns:
        if column in NUMERIC or column in ("logp_placebo", "content_drop"):
            np.testing.assert_allclose(batched[column].to_numpy(float), single[column].to_numpy(float),
                                       atol=2e-4, rtol=1e-4, err_msg=column)
        elif column.startswith("top_"):
            for b, s in zip(batched[column], single[column]):
                assert [t for t, _ in b] == [t for t, _ in s]
                np.testing.assert_allclose([p for _, p in b], [p for _, p in s], atol=1e-4)
        else:
            assert batched[column].tolist() == single[column].tolist(), column


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_scoring_matches_one_at_a_time(tiny_model, tokenizer, batch_size):
    records = scoring_records()
    jobs = prepare_scoring(tokenizer, records)
    ran = []
    results = dict((r.id, s.table) for r, s in score_records(tiny_model, tokenizer, jobs, top_k=5, batch_size=batch_size,
                                                         on_tokens=ran.append))
    assert set(results) == {r.id for r in records}
    # an original and a hinted pass per hinted record, the original alone otherwise; a sequence that two records
    # of one group share (the same rollout under other hints) runs once
    unique = {s for j in jobs for s in j.sequences}
    assert sum(len(s) for s in unique) <= sum(ran) <= sum(j.n_tokens for j in jobs)
    for record in records:
        assert_same_table(results[record.id], score_record(tiny_model, tokenizer, record, top_k=5).table)


def test_batched_scoring_with_placebo(tiny_model, tokenizer):
    from opd_studio import scoring

    if "placebo" not in scoring.score_record.__code__.co_varnames:
        pytest.skip("this scoring.py has no placebo option")
    records = scoring_records()[:3]
    jobs = prepare_scoring(tokenizer, records, placebo="default")
    for record, scores in score_records(tiny_model, tokenizer, jobs, batch_size=4):
        single = score_record(tiny_model, tokenizer, record, placebo="default")
        assert_same_table(scores.table, single.table)
        assert scores.hints == single.hints and scores.placebo == single.placebo


def test_a_bad_record_fails_before_any_work_and_names_itself(tokenizer):
    from opd_studio.trajectory import TrajectoryError

    bad = Record.from_dict({**ADD, "id": "bad", "hints": [{"message": 0, "char": 2, "text": "x"}]})
    with pytest.raises(TrajectoryError, match="record 'bad'"):
        prepare_scoring(tokenizer, [Record.from_dict(ADD), bad])


def test_length_batches_respect_both_limits():
    lengths = [5, 100, 7, 60, 6, 1000, 8]
    batches = length_batches(lengths, batch_size=3, max_batch_tokens=300)
    assert sorted(n for b in batches for n in b) == list(range(len(lengths)))
    assert [5] in batches  # longer than the budget: alone
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or max(lengths[n] for n in batch) * len(batch) <= 300


PROMPTS = ["What is 17 + 25?", "Name a colour.", "Write the numbers from one to twelve, in words, please.", "Hi"]


def jobs(config):
    return [GenerationJob(f"p{n}", [{"role": "user", "content": text}], copy.copy(config))
            for n, text in enumerate(PROMPTS)]


def test_batched_greedy_generation_matches_transformers_generate(tiny_model, tokenizer):
    config = SamplingConfig(max_new_tokens=12)
    batched = {r.id: r for r in generate_records(tiny_model, tokenizer, jobs(config), batch_size=4)}
    for job in jobs(config):
        single, _ = generate(tiny_model, tokenizer, job.messages, config, record_id=job.record_id)
        assert batched[job.record_id].response_token_ids == single.response_token_ids
        assert batched[job.record_id].messages == single.messages
        assert batched[job.record_id].meta == single.meta


def test_batched_sampling_is_independent_of_the_batch(tiny_model, tokenizer):
    config = SamplingConfig(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3)
    together = generate_batch(tiny_model, tokenizer, jobs(config))
    alone = [generate_batch(tiny_model, tokenizer, [job])[0] for job in jobs(config)]
    assert [r.response_token_ids for r in together] == [r.response_token_ids for r in alone]
    reseeded = jobs(config)
    reseeded[0].config.seed = 4
    assert generate_batch(tiny_model, tokenizer, reseeded)[1].response_token_ids == together[1].response_token_ids


@pytest.mark.integration
def test_batched_greedy_matches_on_the_real_model(default_model):
    """Padding changes float rounding: on the real model greedy decoding still picks the same tokens."""
    from pathlib import Path

    from opd_studio.records import read_records

    model, tokenizer = default_model
    tasks = read_records(Path(__file__).resolve().parents[1] / "assets" / "demo_tasks.jsonl")[::13][:4]
    config = SamplingConfig(max_new_tokens=24)
    batched = {r.id: r for r in generate_records(model, tokenizer, [GenerationJob(t.id, t.messages, config, t.tools)
                                                                    for t in tasks])}
    for task in tasks:
        single, _ = generate(model, tokenizer, task.messages, config, tools=task.tools, record_id=task.id)
        assert batched[task.id].response_token_ids == single.response_token_ids
