"""The run lifecycle of the workspace (what the Train tab and `opd-studio train` call): runs saved and made active
through the store, weights that persist across processes (ZeroGPU runs each call in a forked worker), reset and
switching between runs, failed runs leaving the model as it was, and only accepted hints trained on."""

import copy
import multiprocessing
import threading

import pytest
import torch

from tests.conftest import ADD, random_llama
from opd_studio.records import Record
from opd_studio.store import Store
from opd_studio.train import TrainConfig, is_lora
from opd_studio.workspace import Weights, Workspace, heldout_records

QUICK = dict(steps=2, lr=5e-3, drift_threshold=None)


@pytest.fixture(scope="module")
def base_model(tokenizer):
    return random_llama(tokenizer, 4)


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "studio.sqlite")
    store.save(Record.from_dict(ADD), status="accepted")
    return store


@pytest.fixture
def weights(base_model, tokenizer):
    return Weights(copy.deepcopy(base_model), tokenizer)


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("What is 17 + 25? 17 + 25 = 32.", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


def train_in_ui(weights, store, **changes):
    updates = list(Workspace(store).train(weights, TrainConfig(**{**QUICK, **changes}), threading.Event(),
                                          use_heldout=False))
    assert "caching the teacher" in updates[0].status and updates[0].history == []  # shown before any work
    return updates[-1].status


def runs_table(store):
    return Workspace(store).runs_table()


def test_a_run_is_saved_and_becomes_the_active_run(weights, store, tokenizer):
    before = logits(weights.model, tokenizer)
    status = train_in_ui(weights, store)
    run_id = store.active_run()
    assert run_id == weights.run_id == 1 and "now the active weights" in status
    assert (store.runs_dir / "run-1" / "adapter_config.json").is_file()
    assert not torch.allclose(logits(weights.model, tokenizer), before, atol=1e-4)
    table = runs_table(store)
    assert table.loc[0, "saved"] and table.loc[0, "in use"] == "✓"


def _train_in_forked_worker(weights, store, tokenizer, pipe) -> None:
    torch.set_num_threads(1)
    train_in_ui(weights, store)
    pipe.send(logits(weights.model, tokenizer).tolist())
    pipe.close()


def test_trained_weights_persist_when_training_ran_in_another_process(weights, store, tokenizer):
    """What a ZeroGPU worker changes in memory is lost; the main process must pick the run up from disk."""
    base = logits(weights.model, tokenizer)
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    worker = multiprocessing.get_context("fork").Process(target=_train_in_forked_worker,
                                                          args=(weights, store, tokenizer, send))
    worker.start()
    assert receive.poll(timeout=300), "the worker died before it sent its logits"
    trained_in_worker = torch.tensor(receive.recv())
    worker.join(timeout=120)
    assert worker.exitcode == 0

    assert weights.run_id is None and torch.equal(logits(weights.model, tokenizer), base)  # this process: untouched
    weights.sync(store)
    assert weights.run_id == 1 and is_lora(weights.model)
    torch.testing.assert_close(logits(weights.model, tokenizer), trained_in_worker, atol=1e-5, rtol=1e-5)


def test_reset_and_switching_runs_go_through_the_store(weights, store, tokenizer):
    base = logits(weights.model, tokenizer)
    train_in_ui(weights, store, lr=5e-3)
    first = logits(weights.model, tokenizer)
    train_in_ui(weights, store, lr=2e-2)  # starts from the base weights, not from run 1
    second = logits(weights.model, tokenizer)
    assert store.active_run() == 2 and not torch.allclose(first, second, atol=1e-4)

    store.set_active_run(1)
    weights.sync(store)
    torch.testing.assert_close(logits(weights.model, tokenizer), first, atol=1e-5, rtol=1e-5)
    store.set_active_run(None)
    weights.sync(store)
    assert weights.run_id is None and not is_lora(weights.model)
    torch.testing.assert_close(logits(weights.model, tokenizer), base, atol=1e-6, rtol=1e-6)


def test_a_run_over_the_drift_threshold_is_neither_saved_nor_applied(weights, store, tokenizer):
    base = logits(weights.model, tokenizer)
    status = train_in_ui(weights, store, lr=5e-2, drift_threshold=1e-9, rollback=False)
    assert "not saved and not used" in status
    assert store.active_run() is None and weights.run_id is None and not is_lora(weights.model)
    torch.testing.assert_close(logits(weights.model, tokenizer), base, atol=1e-6, rtol=1e-6)
    assert not runs_table(store).loc[0, "saved"]
    with pytest.raises(ValueError, match="no saved weights"):
        store.set_active_run(1)


def test_a_failed_run_leaves_no_adapter_behind(weights, store, tokenizer):
    unhinted = Record.from_dict({**ADD, "id": "no-hint", "hints": [], "error": None})
    store.set_status(ADD["id"], "rejected")
    store.save(unhinted, status="accepted")
    base = logits(weights.model, tokenizer)
    with pytest.raises(ValueError, match="usable hint"):
        train_in_ui(weights, store)
    assert not is_lora(weights.model) and not any("lora_" in n for n, _ in weights.model.named_parameters())
    torch.testing.assert_close(logits(weights.model, tokenizer), base, atol=1e-6, rtol=1e-6)


def test_a_missing_adapter_falls_back_to_base_with_a_message(weights, store, tokenizer):
    import shutil

    train_in_ui(weights, store)
    shutil.rmtree(store.runs_dir / "run-1")
    fresh = Weights(weights.base if not is_lora(weights.model) else weights.model.unload(), tokenizer)
    with pytest.raises(ValueError, match="cannot be loaded"):
        fresh.sync(store)
    assert store.active_run() is None and fresh.run_id is None


def test_fix_rate_is_shown_under_the_trained_and_the_base_weights(weights, store, tokenizer):
    def measure_fix_rate(weights, store, samples):
        return Workspace(store).fix_rate(weights, samples)

    _, before = measure_fix_rate(weights, store, samples=0)
    assert set(before.weights) == {"base"}  # nothing trained yet: one set of answers
    train_in_ui(weights, store, lr=5e-2)
    summary, answers = measure_fix_rate(weights, store, samples=0)
    assert list(summary.weights.unique()) == ["trained (run 1)", "base"]
    assert set(summary.split) == {"curated", "heldout"} and set(summary["mode"]) == {"greedy"}
    # under the base weights (adapter disabled) the answers are the untrained model's, word for word
    base_answers = answers[answers.weights == "base"].answer.tolist()
    assert base_answers == before.answer.tolist()
    assert answers[answers.weights != "base"].answer.tolist() != base_answers


def test_records_kept_as_right_only_anchor(weights, store, tokenizer):
    store.save(Record.from_dict({**ADD, "id": "right-one", "hints": [], "error": None}), status="accepted")
    train_in_ui(weights, store)
    table = runs_table(store)
    assert table.loc[0, "records"] == "2 records"
    assert 0 <= table.loc[0, "mean p(error)"] < 1  # over the hinted record only: the other has no error tokens


def test_held_out_prompts_come_from_the_curated_records_families():
    arithmetic = Record.from_dict({**ADD, "meta": {"family": "arithmetic"}})
    chosen = heldout_records([arithmetic], limit=4)
    assert len(chosen) == 4 and {r.meta["family"] for r in chosen} == {"arithmetic"}
    assert all(r.meta["split"] == "heldout" for r in chosen)
    mixed = heldout_records([Record.from_dict(ADD)], limit=6)  # family unknown: every family, in turn
    assert len({r.meta["family"] for r in mixed}) == 3


def test_only_accepted_hints_are_trained_on(store):
    """A reviewer's rejected second hint stays on the record (its history) but never reaches training."""
    record = Record.from_dict(ADD)
    record.hints.append(copy.deepcopy(record.hints[0]))
    record.hints[1].text = " (Hint: the answer is 41.) "
    store.save(record, "accepted")
    workspace = Workspace(store)
    assert [h.status for h in store.get(ADD["id"]).hints] == ["accepted", "accepted"]  # status and hints agree
    stored = store.get(ADD["id"])
    stored.hints[1].status = "rejected"
    with store._connect() as db:  # a hand-edited row (an older release, a script): training still skips it
        db.execute("UPDATE records SET record = ? WHERE id = ?", (stored.to_json(), ADD["id"]))
    assert [h.text for h in workspace.training_records()[0].hints] == [ADD["hints"][0]["text"]]
