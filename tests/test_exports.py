"""Curated-set exports load with `datasets`, read back as the same records, and TRL trains a step on its export."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from opd_studio.exports import export_curated, read_input, write_teacher_topk
from opd_studio.records import Record, RecordError
from opd_studio.scoring import score_record
from opd_studio.teacher_topk import teacher_topk_rows
from tests.conftest import ADD, MULTI_TURN

datasets = pytest.importorskip("datasets")
ROOT = Path(__file__).resolve().parents[1]


def curated():
    add = Record.from_dict({**ADD, "hints": [{**ADD["hints"][0], "status": "accepted"}]})
    multi = Record.from_dict({**MULTI_TURN, "hints": [
        {"message": 6, "char": 8, "text": "Rome is 25°C.", "placement": "feedback", "status": "accepted"}],
        "meta": {"family": "tools"}, "response_token_ids": None})
    kept = Record.from_dict({**ADD, "id": "kept-as-right", "hints": []})
    return [add, multi, kept]


@pytest.mark.parametrize("fmt, name", [("jsonl", "set.jsonl"), ("parquet", "set.parquet"), ("datasets", "set")])
def test_record_formats_load_with_datasets_and_read_back(tmp_path, fmt, name):
    records = curated()
    output = tmp_path / name
    assert export_curated(records, fmt, output) == 3
    if fmt == "datasets":
        loaded = datasets.load_from_disk(str(output))
        assert loaded.column_names == ["id", "messages", "record"]
        assert loaded[0]["messages"][1] == {"role": "assistant", "content": "17 + 25 = 32."}
    else:
        loaded = datasets.load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(output),
                                       split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded["id"] == [r.id for r in records]
    assert [r.to_dict() for r in read_input(output)] == [r.to_dict() for r in records]


def test_a_plain_messages_dataset_reads_as_records(tmp_path):
    rows = [{"id": 7, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
             "source": "web"},
            {"id": 8, "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
             "source": "web"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "plain"))
    records = read_input(tmp_path / "plain")
    assert [r.id for r in records] == ["7", "8"] and records[1].messages[1]["content"] == "4"
    datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "Hi"}],
                                 "completion": [{"role": "assistant", "content": "Yo"}]}]).to_parquet(
        str(tmp_path / "trl.parquet"))
    assert read_input(tmp_path / "trl.parquet")[0].messages[-1] == {"role": "assistant", "content": "Yo"}


def test_a_dataset_without_the_needed_columns_is_one_clear_line(tmp_path):
    datasets.Dataset.from_list([{"question": "Hi", "answer": "Hello"}]).save_to_disk(str(tmp_path / "qa"))
    with pytest.raises(RecordError, match=r"no 'record' or 'messages' column .* \['answer', 'question'\]") as error:
        read_input(tmp_path / "qa")
    assert "\n" not in str(error.value)
    with pytest.raises(RecordError, match="cannot load it from the Hugging Face hub|no such"):
        read_input("hf://datasets/opd-studio/surely-not-a-dataset-here")


def test_trl_sdft_export_has_trls_columns(tmp_path):
    output = tmp_path / "sdft"
    assert export_curated(curated(), "trl-sdft", output) == 2  # the record without a hint has nothing to distil
    loaded = datasets.load_from_disk(str(output))
    assert set(loaded.column_names) == {"id", "prompt", "privileged_context"}
    assert loaded[0]["prompt"] == [{"role": "user", "content": "What is 17 + 25?"}]
    assert loaded[0]["privileged_context"] == "(Hint: 7 + 5 = 12, so carry the 1.)"
    assert [m["role"] for m in loaded[1]["prompt"]] == ["system", "user", "assistant", "tool", "assistant", "user"]


def test_teacher_topk_is_the_hinted_teachers_distribution(tmp_path, tiny_model, tokenizer):
    records = curated()
    output = tmp_path / "topk"
    assert write_teacher_topk(teacher_topk_rows(tiny_model, tokenizer, records, top_k=8), output) == 2
    loaded = datasets.load_from_disk(str(output))
    for row, record in zip(loaded, records[:2]):
        table = score_record(tiny_model, tokenizer, record, top_k=5).table
        assert row["target_positions"] == table.index[table.target & (table.i > 0)].tolist()
        assert row["input_ids"][0] == tokenizer(table.text[0])["input_ids"][0]
        for i, ids, logprobs in zip(row["target_positions"], row["topk_ids"], row["topk_logprobs"]):
            top_after = table.top_after[i]
            assert [tokenizer.decode([t]) for t in ids[:5]] == [text for text, _ in top_after]
            assert [math.exp(lp) for lp in logprobs[:5]] == pytest.approx([p for _, p in top_after], abs=1e-4)
            assert logprobs == sorted(logprobs, reverse=True) and len(ids) == 8
    assert write_teacher_topk(teacher_topk_rows(tiny_model, tokenizer, records), tmp_path / "topk.parquet") == 2
    assert json.loads(json.dumps(datasets.load_dataset("parquet", data_files=str(tmp_path / "topk.parquet"),
                                                       split="train", cache_dir=str(tmp_path / "c"))[0]["id"]))


# TRL's Trainer sets accelerate's process-wide state (its mixed precision and all), which no later Accelerator in the
# same process may change: the step runs in a child process, so the rest of the suite trains as users do.
TRL_STEP = """
import json, math, sys
import datasets, torch
from peft import LoraConfig
from trl.experimental.sdft import SDFTConfig, SDFTTrainer
from opd_studio.model import load_model
from tests.conftest import random_llama

out = sys.argv[1]
_, tokenizer = load_model("default", device="cpu")
dataset = datasets.load_from_disk(out + "/sdft")  # as exported, id column and all
args = SDFTConfig(output_dir=out + "/trl", per_device_train_batch_size=2, num_generations=1, max_completion_length=8,
                  max_steps=1, learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True, logging_steps=1,
                  disable_tqdm=True, teacher_model_kind="base",
                  teacher_prompt_template="{prompt}\\n\\nConsider this feedback: {privileged_context}")
trainer = SDFTTrainer(model=random_llama(tokenizer, 1.0), args=args, train_dataset=dataset,
                      processing_class=tokenizer,
                      peft_config=LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear"))
lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
trainer.train()
moved = any(not torch.equal(lora[n], p) for n, p in trainer.model.named_parameters() if n in lora)
print(json.dumps({"step": trainer.state.global_step, "loss": trainer.state.log_history[0]["loss"], "moved": moved}))
"""


def test_one_trl_sdft_step_on_the_export(tmp_path):
    pytest.importorskip("trl")
    export_curated(curated(), "trl-sdft", tmp_path / "sdft")
    done = subprocess.run([sys.executable, "-c", TRL_STEP, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["step"] == 1 and math.isfinite(result["loss"]) and result["moved"]
