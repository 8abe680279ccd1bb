"""`score_file` / `generate_file`: batched work into an output that resumes, written whole or not at all."""

import json

import pandas as pd
import pytest

from opd_studio.headless import generate_file, score_file
from opd_studio.records import Record
from opd_studio.resume import ResumableOutput
from opd_studio.rollout import SamplingConfig
from opd_studio.scoring import score_record
from tests.conftest import ADD
from tests.test_batching import assert_same_table, scoring_records


def test_scores_in_both_formats_equal_one_at_a_time_scoring(tiny_model, tokenizer, tmp_path):
    records = scoring_records()
    for name in ("scores.jsonl", "scores.parquet"):
        summary = score_file(tiny_model, tokenizer, records, tmp_path / name, batch_size=4)
        assert summary.done == len(records) and summary.resumed == 0 and summary.tokens > 0
    rows = pd.DataFrame([json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()])
    parquet = pd.read_parquet(tmp_path / "scores.parquet")
    assert rows.record_id.unique().tolist() == [r.id for r in records]  # input order, whatever the batching
    for record in records:
        single = score_record(tiny_model, tokenizer, record).table
        from_jsonl = rows[rows.record_id == record.id].drop(columns="record_id").reset_index(drop=True)
        from_jsonl["rank_before"] = from_jsonl["rank_before"].astype("Int64")
        from_jsonl["rank_after"] = from_jsonl["rank_after"].astype("Int64")
        assert_same_table(from_jsonl, single)
        table = parquet[parquet.record_id == record.id].reset_index(drop=True)
        assert table.rank_after.tolist() == single.rank_after.tolist()
        assert [json.loads(t) for t in table.top_after] == [[[x, pytest.approx(p, abs=1e-4)] for x, p in t]
                                                            for t in single.top_after]


def test_rerun_skips_what_the_output_and_an_interrupted_run_hold(tiny_model, tokenizer, tmp_path):
    records = scoring_records()
    output = tmp_path / "scores.jsonl"
    score_file(tiny_model, tokenizer, records[:2], output)
    # an interrupted run: two records finished into the sidecar, the third was being written when it died
    interrupted = ResumableOutput(output, lambda path: {})
    for record in records[2:4]:
        rows = score_file.__globals__["_rows"](record.id, score_record(tiny_model, tokenizer, record).table)
        interrupted.add(record.id, rows)
    interrupted.close()
    with interrupted.sidecar.open("a") as handle:
        handle.write('{"key": "long", "unit": [{"record_id": "lo')
    summary = score_file(tiny_model, tokenizer, records, output)
    assert summary.resumed == 4 and summary.done == len(records)
    assert not interrupted.sidecar.exists()
    ids = [json.loads(line)["record_id"] for line in output.read_text().splitlines()]
    assert list(dict.fromkeys(ids)) == [r.id for r in records]
    # the torn line was scored again, once
    assert ids.count("long") == len(score_record(tiny_model, tokenizer, records[5]).table)
    again = score_file(tiny_model, tokenizer, records, output)
    assert again.resumed == len(records) and again.tokens == 0


def test_a_bad_record_writes_nothing(tiny_model, tokenizer, tmp_path):
    from opd_studio.trajectory import TrajectoryError

    bad = Record.from_dict({**ADD, "id": "bad", "hints": [{"message": 1, "char": 99, "text": "x"}]})
    with pytest.raises(TrajectoryError, match="record 'bad'"):
        score_file(tiny_model, tokenizer, [Record.from_dict(ADD), bad], tmp_path / "s.parquet")
    assert list(tmp_path.iterdir()) == []


def test_generate_file_batches_samples_and_resumes(tiny_model, tokenizer, tmp_path):
    prompts = [Record(f"q{n}", [{"role": "user", "content": text}], meta={"family": "demo"})
               for n, text in enumerate(["What is 2 + 2?", "Say hi.", "List three animals, one per line."])]
    configs = [SamplingConfig(max_new_tokens=8, temperature=1.0, seed=s) for s in (0, 1)]
    output = tmp_path / "rollouts.jsonl"
    first = generate_file(prompts[:2], output, configs, tokenizer=tokenizer, model=tiny_model, batch_size=3)
    assert first.done == 4
    summary = generate_file(prompts, output, configs, tokenizer=tokenizer, model=tiny_model, batch_size=3)
    assert summary.resumed == 4 and summary.done == 6
    rollouts = [Record.from_dict(json.loads(line)) for line in output.read_text().splitlines()]
    assert [r.id for r in rollouts] == ["q0#0", "q0#1", "q1#0", "q1#1", "q2#0", "q2#1"]
    assert all(r.meta["family"] == "demo" and r.response_token_ids for r in rollouts)
    assert rollouts[0].meta["sampling"]["seed"] == 0 and rollouts[1].meta["sampling"]["seed"] == 1
