"""Training: alignment of targets and anchors, the loss against a naive full forward, batching, the frozen teacher,
the drift guard, adapters on disk, two-process DDP, and the real model's error probability falling."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ADD, random_llama
from opd_studio.adapters import export_merged, load_adapter, load_run, save_run
from opd_studio.fix_rate import (FixRateConfig, corrected, error_signature, fix_rate, summarize, suppressed,
                                 verifiers_for)
from opd_studio.losses import per_token_loss
from opd_studio.metrics import StepMetrics, load_history
from opd_studio.records import Record, write_records
from opd_studio.objective import HiddenAt, batch_loss, build_example, cache_targets
from opd_studio.scoring import HintScorer, logits_from_hidden
from opd_studio.cli import build_parser
from opd_studio.train import DriftError, TrainConfig, prepare_model, train, weights_checksum
from opd_studio.trajectory import build_trajectory

ROOT = Path(__file__).resolve().parents[1]

# A second curated record of a different length, so batches have padding.
LONGER = {"id": "add-48-37",
          "messages": [{"role": "user", "content": "Please add 48 and 37 for me."},
                       {"role": "assistant", "content": "Sure! 48 + 37 = 75. Let me know if you need more help."}],
          "hints": [{"message": 1, "char": 16, "text": " (Hint: 8 + 7 = 15, so carry the 1.) "}],
          "error": {"message": 1, "char_start": 16, "char_end": 18}}


@pytest.fixture(scope="module")
def small_model(tokenizer):
    """Peaked distributions whose gradients do not vanish (the shared `tiny_model` is scaled to saturation)."""
    return random_llama(tokenizer, 4)


def fresh(model):
    """training attaches an adapter in place: never hand a shared fixture to `train`."""
    return copy.deepcopy(model)


def records(*raw):
    return [Record.from_dict(r) for r in raw]


def perturbed_lora(model, config, seed=1):
    """A LoRA model whose adapter is not zero, so student ≠ base and every term of the loss is non-trivial."""
    peft_model = prepare_model(fresh(model), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return peft_model


# ------------------------------------------------------------------------------------------------------------------
# Alignment


def test_targets_are_exactly_the_student_tokens_after_the_hint(tokenizer):
    example = build_example(tokenizer, records(ADD)[0], span="turn")
    texts = build_trajectory(tokenizer, records(ADD)[0]).token_texts
    # "17 + 25 = 32.<|im_end|>" is tokens 40-51; the hint stands before "3" (48); "\n" (52) is template context.
    assert [texts[t] for t in range(40, 53)] == ["1", "7", " +", " ", "2", "5", " =", " ", "3", "2", ".",
                                                "<|im_end|>", "\n"]
    assert example.targets == [48, 49, 50, 51]
    assert example.anchors == list(range(40, 48))  # the rest of the answer; no prompt, system or template token
    assert example.errors == [48, 49]
    hint_ids = tokenizer(" (Hint: 7 + 5 = 12, so carry the 1.) ", add_special_tokens=False)["input_ids"]
    # The hinted sequence is the original with the hint's tokens spliced in before position 48, not re-tokenized.
    assert example.hinted_ids == example.input_ids[:48] + hint_ids + example.input_ids[48:]
    # The teacher row of each target predicts that same token; the first one is the hint's last token.
    teacher_rows = example.alignment.rows("hinted", example.targets)
    assert teacher_rows == [48 + len(hint_ids) - 1 + k for k in range(4)]
    for t, row in zip(example.targets, teacher_rows):
        assert example.hinted_ids[row + 1] == example.input_ids[t]
    # No hint token is ever a target: targets are original positions, hint tokens only exist in hinted_ids.
    hint_rows = set(range(48, 48 + len(hint_ids)))
    assert not hint_rows & {row + 1 for row in teacher_rows}


def test_error_span_and_response_span(tokenizer):
    error = build_example(tokenizer, records(ADD)[0], span="error")
    assert error.targets == [48, 49]
    assert error.anchors == list(range(40, 48)) + [50, 51]  # after the error the turn is anchored, not trained
    # An inline hint before the space (how the verifiers place it): the error span still starts at the error.
    spaced = dict(ADD, hints=[{"message": 1, "char": 9, "text": " (Hint: 17 + 25 = 42.)"}])
    example = build_example(tokenizer, records(spaced)[0], span="error")
    assert example.targets == [48, 49]
    assert build_example(tokenizer, records(spaced)[0], span="turn").targets == [47, 48, 49, 50, 51]


def test_rejected_hints_are_left_out(tokenizer):
    rejected = dict(ADD, hints=[dict(ADD["hints"][0], status="rejected")])
    example = build_example(tokenizer, records(rejected)[0])
    assert example.targets == [] and example.hinted_ids == example.input_ids


# ------------------------------------------------------------------------------------------------------------------
# The loss, against the textbook computation on full-sequence logits


@pytest.mark.parametrize("kind,top_k", [("jsd", None), ("forward_kl", 20), ("sampled", None)])
def test_loss_equals_naive_full_forward(tokenizer, small_model, kind, top_k):
    config = TrainConfig(loss=kind, top_k=top_k, drift_weight=0.3, anchor_top_k=32)
    model = perturbed_lora(small_model, config)
    example = build_example(tokenizer, records(ADD)[0], span="turn")
    with torch.no_grad(), model.disable_adapter():
        cache_targets(model, [example], config.anchor_top_k, torch.float32)
    head = lambda h: model.get_output_embeddings()(h).float()  # noqa: E731
    out = batch_loss(HiddenAt(model), head, [example], config.loss_config, config.drift_weight,
                     tokenizer.pad_token_id, "cpu")

    with torch.no_grad():
        student = torch.log_softmax(model(torch.tensor([example.input_ids])).logits[0], -1)  # (T, V)
        with model.disable_adapter():
            teacher = torch.log_softmax(model(torch.tensor([example.hinted_ids])).logits[0], -1)
            base = torch.log_softmax(model(torch.tensor([example.input_ids])).logits[0], -1)
    targets, anchors = [48, 49, 50, 51], list(range(40, 48))
    hint_len = len(example.hinted_ids) - len(example.input_ids)
    tokens = torch.tensor([example.input_ids[t] for t in targets])
    distill = per_token_loss(student[[t - 1 for t in targets]], teacher[[t - 1 + hint_len for t in targets]],
                             config.loss_config, tokens).mean()
    kl = []
    for t in anchors:  # KL(base ‖ student) on the base's top-32 tokens plus one bin for the rest
        b, p = base[t - 1], student[t - 1]
        top = b.topk(32).indices
        qb = torch.cat([b[top].exp(), 1 - b[top].exp().sum(0, keepdim=True)])
        qp = torch.cat([p[top].exp(), 1 - p[top].exp().sum(0, keepdim=True)])
        kl.append((qb * (qb.log() - qp.log())).sum())
    expected = distill + 0.3 * torch.stack(kl).mean()
    assert out.distill == pytest.approx(float(distill), abs=1e-5)
    assert float(out.loss.detach()) == pytest.approx(float(expected), abs=1e-5)
    assert out.anchor > 1e-4  # the perturbed adapter really moved the anchored positions


def test_batch_of_two_equals_the_two_separately(tokenizer, small_model):
    config = TrainConfig(drift_weight=0.5)
    model = perturbed_lora(small_model, config)
    examples = [build_example(tokenizer, r) for r in records(ADD, LONGER)]
    assert len(examples[0].input_ids) != len(examples[1].input_ids)  # right padding is exercised
    with torch.no_grad(), model.disable_adapter():
        cache_targets(model, examples, config.anchor_top_k, torch.float32)
    student, head = HiddenAt(model), (lambda h: logits_from_hidden(model, h))
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(batch):
        loss = batch_loss(student, head, batch, config.loss_config, config.drift_weight, tokenizer.pad_token_id,
                          "cpu").loss
        return loss.detach(), torch.autograd.grad(loss, params)

    both, grads_both = loss_and_grads(examples)
    parts = [loss_and_grads([ex]) for ex in examples]
    assert float(both) == pytest.approx(float(parts[0][0] + parts[1][0]) / 2, abs=1e-6)
    for g, g0, g1 in zip(grads_both, parts[0][1], parts[1][1]):
        torch.testing.assert_close(g, (g0 + g1) / 2, atol=1e-6, rtol=1e-4)


def test_an_anchor_only_record_widens_the_guard_without_diluting_the_distillation(tokenizer, small_model):
    """A record without hints (a rollout accepted as right, or replay) adds anchors; the distillation term stays
    the mean over the hinted records, the anchor term becomes the mean over all records."""
    config = TrainConfig(drift_weight=0.5)
    model = perturbed_lora(small_model, config)
    hinted, plain = [build_example(tokenizer, r) for r in records(ADD, {**LONGER, "hints": [], "error": None})]
    assert plain.targets == [] and plain.anchors
    with torch.no_grad(), model.disable_adapter():
        cache_targets(model, [hinted, plain], config.anchor_top_k, torch.float32)
    student, head = HiddenAt(model), (lambda h: logits_from_hidden(model, h))

    def run(batch):
        return batch_loss(student, head, batch, config.loss_config, config.drift_weight, tokenizer.pad_token_id,
                          "cpu")

    both, alone, anchors_only = run([hinted, plain]), run([hinted]), run([plain])
    assert both.distill == pytest.approx(alone.distill, abs=1e-6)
    assert both.anchor == pytest.approx((alone.anchor + anchors_only.anchor) / 2, abs=1e-6)
    assert anchors_only.distill == 0 and both.records[plain.record_id].drift > 0


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tokenizer, small_model):
    config = TrainConfig(drift_weight=0.5)
    model = perturbed_lora(small_model, config)
    examples = [build_example(tokenizer, r) for r in records(ADD, LONGER)]
    with torch.no_grad(), model.disable_adapter():
        cache_targets(model, examples, config.anchor_top_k, torch.float32)
    params = [p for p in model.parameters() if p.requires_grad]
    head = lambda h: logits_from_hidden(model, h)  # noqa: E731
    plain = batch_loss(HiddenAt(model), head, examples, config.loss_config, 0.5, tokenizer.pad_token_id, "cpu").loss
    plain_grads = torch.autograd.grad(plain, params)
    model.activation_checkpointing_enable({"use_reentrant": False})
    student = HiddenAt(model, checkpoint_layers=True)
    saved = []  # what autograd keeps from the forward: with checkpointing, only each layer's inputs
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        checkpointed = batch_loss(student, head, examples, config.loss_config, 0.5, tokenizer.pad_token_id,
                                  "cpu").loss
    grads = torch.autograd.grad(checkpointed, params)
    assert float(checkpointed) == pytest.approx(float(plain), abs=1e-6)
    for g, h in zip(grads, plain_grads):
        torch.testing.assert_close(g, h, atol=1e-6, rtol=1e-5)
    without = []
    model.activation_checkpointing_disable()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: without.append(t.numel()) or t, lambda t: t):
        batch_loss(HiddenAt(model), head, examples, config.loss_config, 0.5, tokenizer.pad_token_id, "cpu")
    assert sum(saved) < 0.7 * sum(without)  # (the rest is the loss inputs, e.g. the (targets, V) teacher logits)


# ------------------------------------------------------------------------------------------------------------------
# The loop


@pytest.mark.parametrize("target", ["hinted", "contrast"])
def test_frozen_teacher_stays_frozen_and_base_weights_untouched(tokenizer, small_model, target):
    """The cached targets, the placebo pass included for the contrast, equal the targets recomputed after training
    under the base weights."""
    model = fresh(small_model)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, tokenizer, records(ADD, LONGER), TrainConfig(steps=3, lr=5e-3, drift_threshold=None,
                                                                       target=target, alpha=2.0))
    trained = result.model
    cached = [ex.teacher_logits.clone() for ex in result.examples]
    # The base weights did not move: only the adapter trained.
    base_after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                  for k, v in trained.state_dict().items() if "lora_" not in k}
    for name, value in base_before.items():
        assert torch.equal(base_after[name], value), name
    # Recomputing the teacher now (adapter disabled) gives exactly the cached targets: the teacher did not move…
    recomputed = [copy.copy(ex) for ex in result.examples]
    with torch.no_grad(), trained.disable_adapter():
        cache_targets(trained, recomputed, 8, torch.float32, target=result.config.target_spec)
    for old, new in zip(cached, recomputed):
        torch.testing.assert_close(new.teacher_logits, old, atol=1e-5, rtol=0)
    # …while the student did (a random model hardly reacts to hints; the error probability falling is tested on
    # the real model below).
    assert any(float(p.abs().max()) > 0 for n, p in trained.named_parameters() if "lora_B" in n)
    assert result.history[0].drift == pytest.approx(0.0, abs=1e-6) and result.final.drift > 1e-6
    assert [row.step for row in result.history] == [0, 1, 2, 3] and result.stopped == "steps"


@pytest.mark.parametrize("teacher", ["live", "ema"])
def test_moving_teachers_recompute_targets(tokenizer, small_model, teacher):
    result = train(fresh(small_model), tokenizer, records(ADD), TrainConfig(steps=2, lr=5e-3, teacher=teacher,
                                                                           drift_threshold=None))
    assert result.examples[0].teacher_logits is None  # nothing cached: the teacher moves
    values = [row.records["add-17-25"].logp_teacher for row in result.history]
    assert len(set(values)) > 1 and all(math.isfinite(v) for v in values)


def test_drift_guard_stops_rolls_back_and_refuses_to_save(tokenizer, small_model, tmp_path):
    config = TrainConfig(steps=5, lr=5e-2, drift_threshold=1e-5, drift_weight=0.0)
    rolled = train(fresh(small_model), tokenizer, records(ADD), config)
    assert rolled.stopped == "drift" and rolled.steps < 5
    assert rolled.final.drift <= 1e-5 and not rolled.drift_exceeded  # back to the last step under it
    kept = train(fresh(small_model), tokenizer, records(ADD), dataclass_replace(config, rollback=False))
    assert kept.stopped == "drift" and kept.drift_exceeded
    with pytest.raises(DriftError, match="over the threshold"):
        save_run(kept, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    save_run(kept, tmp_path / "forced", force=True)
    assert load_run(tmp_path / "forced")["drift_exceeded"] is True


def test_metric_rows_keep_their_stored_layout(tokenizer, small_model, tmp_path):
    """Rows are typed in memory and stored as they always were; run.json (NaN written as null) reads back the same."""
    config = TrainConfig(steps=5, lr=5e-2, drift_threshold=1e-5, drift_weight=0.0)
    rolled = train(fresh(small_model), tokenizer, records(ADD), config)
    row = rolled.final.to_dict()
    assert list(row) == ["step", "loss", "distill", "anchor", "drift", "drift_heldout", "lr", "grad_norm", "seconds",
                         "train_seconds", "records", "rolled_back_from"]
    assert row["rolled_back_from"] == rolled.steps + 1
    assert list(row["records"]["add-17-25"]) == ["logp_error", "logp_teacher", "drift", "target_logp", "right_logp"]
    assert all(0 < r.train_seconds <= r.seconds for r in rolled.history)  # the step's training is part of the step
    save_run(rolled, tmp_path / "run")
    stored = load_history(load_run(tmp_path / "run")["history"])
    assert json.dumps([r.to_dict() for r in stored]) == json.dumps([r.to_dict() for r in rolled.history])


def test_rows_of_earlier_releases_read_with_nan_for_what_they_lack():
    old = StepMetrics.from_dict({"step": 3, "loss": 0.2, "drift": 0.001, "drift_heldout": None,
                                 "records": {"r": {"logp_error": -1.6, "logp_teacher": -5.0, "drift": 0.001}}})
    assert (old.step, old.loss, old.rolled_back_from) == (3, 0.2, None)
    assert all(math.isnan(v) for v in (old.distill, old.drift_heldout, old.grad_norm, old.train_seconds))
    assert old.records["r"].target_logp == [] and math.isnan(old.records["r"].right_logp)
    assert load_history({"not": "a list"}) == []


def test_should_stop_cancels_between_steps(tokenizer, small_model):
    seen = []
    result = train(fresh(small_model), tokenizer, records(ADD), TrainConfig(steps=10, lr=1e-3),
                   on_step=seen.append, should_stop=lambda: len(seen) >= 2)
    assert result.stopped == "cancelled" and result.steps == 1 and len(seen) == 2


def test_held_out_drift_is_measured(tokenizer, small_model):
    heldout = [Record.from_dict(dict(LONGER, id="held", hints=[], error=None))]
    result = train(fresh(small_model), tokenizer, records(ADD), TrainConfig(steps=2, lr=5e-3, drift_threshold=None),
                   heldout=heldout)
    assert result.history[0].drift_heldout == pytest.approx(0.0, abs=1e-6) and result.final.drift_heldout > 1e-6


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


# ------------------------------------------------------------------------------------------------------------------
# The real default model: the error's probability falls, and the saved adapter reproduces it


@pytest.fixture(scope="module")
def trained_default(default_model):
    model, tokenizer = default_model
    config = TrainConfig(steps=2, lr=5e-4, span="turn")
    return train(fresh(model), tokenizer, records(ADD), config)


@pytest.mark.integration
def test_training_lowers_error_probability_on_default_model(trained_default, default_model):
    _, tokenizer = default_model
    first, last = trained_default.history[0], trained_default.final
    p_before = math.exp(first.records["add-17-25"].logp_error)
    p_after = math.exp(last.records["add-17-25"].logp_error)
    assert p_before > 0.5 and p_after < 0.5 * p_before
    assert last.drift < 0.05
    # The metric is what the scorer sees: p("3") · p("2") under the trained model, unhinted.
    record = records(ADD)[0]
    table = HintScorer(trained_default.model, tokenizer, build_trajectory(tokenizer, record)).score([]).table
    assert table.loc[[48, 49], "logp_before"].sum() == pytest.approx(math.log(p_after), abs=1e-4)


@pytest.mark.integration
def test_saved_adapter_reproduces_the_probabilities(trained_default, default_model, tmp_path):
    base, tokenizer = default_model
    save_run(trained_default, tmp_path / "run", tokenizer)
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
    saved = load_run(tmp_path / "run")
    assert saved["config"]["lr"] == 5e-4 and saved["steps"] == 2 and len(saved["history"]) == 3
    loaded = load_adapter(fresh(base), tmp_path / "run")
    ids = torch.tensor([build_trajectory(tokenizer, records(ADD)[0]).input_ids])
    with torch.no_grad():
        expected = torch.log_softmax(trained_default.model(ids).logits, -1)
        actual = torch.log_softmax(loaded(ids).logits, -1)
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
        with loaded.disable_adapter():  # and the base is still underneath
            torch.testing.assert_close(loaded(ids).logits, base(ids).logits, atol=1e-5, rtol=0)
    merged_dir = export_merged(loaded, tokenizer, tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        # merging rounds W + BA once in fp32: equal up to ~1e-4 nats even in the far tail of the vocabulary
        torch.testing.assert_close(torch.log_softmax(merged(ids).logits, -1), expected, atol=5e-4, rtol=0)


# ------------------------------------------------------------------------------------------------------------------
# Two processes under accelerate launch


def test_two_process_accelerate_launch_agrees_on_weights(tokenizer, small_model, tmp_path):
    small_model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    write_records(tmp_path / "curated.jsonl", records(ADD, LONGER))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPD_STUDIO_DATA=str(tmp_path / "data"))
    # `--multi_gpu` starts the processes through torchrun; without CUDA our state joins them in a CPU (gloo) group.
    # (`--cpu --num_processes 2` starts one process: accelerate only launches multi-CPU through mpirun.)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(29500 + os.getpid() % 1000), "-m", "opd_studio", "train", "--data", str(tmp_path / "curated.jsonl"),
               "--out", str(tmp_path / "run"), "--model", str(tmp_path / "model"), "--steps", "2",
               "--batch-size", "1", "--lr", "5e-3", "--drift-threshold", "none", "--unreviewed", "--no-heldout"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    checksums = run["process_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]  # DDP kept the two processes' weights identical
    # Each process saw one record per step, so without gradient averaging the weights would differ; and they moved.
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert any(float(v.abs().max()) > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero


def test_cli_flags_cover_every_setting():
    args = build_parser().parse_args(["train", "--data", "d.jsonl", "--out", "o", "--top-k", "none", "--full-finetune",
                                      "true", "--target-modules", "q_proj,v_proj", "--drift-threshold", "0.1"])
    assert args.top_k is None and args.full_finetune is True and args.drift_threshold == 0.1
    assert args.target_modules == "q_proj,v_proj"
    with pytest.raises(ValueError, match="teacher"):
        TrainConfig(teacher="oracle")


def test_full_finetune_and_selected_lora_modules(tokenizer, small_model):
    lora = train(fresh(small_model), tokenizer, records(ADD),
                 TrainConfig(steps=1, lr=1e-3, target_modules="q_proj,v_proj", drift_threshold=None))
    names = {n for n, p in lora.model.named_parameters() if p.requires_grad}
    assert names and all(("q_proj" in n or "v_proj" in n) and "lora_" in n for n in names)
    full = train(fresh(small_model), tokenizer, records(ADD),
                 TrainConfig(steps=2, lr=1e-3, full_finetune=True, drift_threshold=None))
    assert full.steps == 2 and full.examples[0].teacher_logits is not None  # cached before the weights moved
    assert weights_checksum(full.model) != weights_checksum(small_model)


# ------------------------------------------------------------------------------------------------------------------
# Fix rate


def test_suppressed_and_corrected_are_different_verdicts():
    record = records(dict(ADD, meta={"family": "arithmetic"}, reference="42"))[0]
    signature = error_signature(record)
    assert signature == (1, "17 + 25 = ", "32")
    assert not suppressed(signature, "17 + 25 = 32.")
    assert suppressed(signature, "17 + 25 = 42.") and suppressed(signature, "17 + 25 = 320.")
    verifiers = verifiers_for(record)
    assert {v.name for v in verifiers} == {"arithmetic", "reference"}

    def answer(text):
        return Record(record.id, [record.messages[0], {"role": "assistant", "content": text}],
                      reference=record.reference, meta=record.meta)

    assert corrected(answer("17 + 25 = 42."), verifiers) is True
    assert corrected(answer("17 + 25 = 41."), verifiers) is False  # suppressed, not corrected
    assert corrected(answer("The answer is 42."), verifiers) is True
    assert corrected(answer("I like numbers."), verifiers) is False  # the reference does not match


def test_fix_rate_table(tokenizer, small_model):
    curated = records(dict(ADD, meta={"family": "arithmetic"}, reference="42"))
    heldout = [Record("h", [{"role": "user", "content": "What is 9 + 4?"}], reference="13",
                      meta={"family": "arithmetic"})]
    table = fix_rate(small_model, tokenizer, curated, heldout, FixRateConfig(samples=2, max_new_tokens=4))
    assert list(table["split"]) == ["curated"] * 3 + ["heldout"] * 3
    assert list(table["mode"]) == ["greedy", "sampled", "sampled"] * 2
    assert table.loc[table.split == "curated", "suppressed"].notna().all()
    assert table.loc[table.split == "heldout", "suppressed"].isna().all()
    summary = summarize(table)
    assert set(summary["split"]) == {"curated", "heldout"} and (summary["answers"] > 0).all()


def test_schedules_are_transformers_with_warmup():
    from opd_studio.train import make_scheduler

    def lrs(schedule, warmup=0, steps=4):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make_scheduler(optimizer, TrainConfig(schedule=schedule, warmup_steps=warmup, steps=steps))
        values = []
        for _ in range(steps):
            values.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return values

    assert lrs("constant") == [1.0] * 4
    assert lrs("linear") == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert lrs("cosine") == pytest.approx([1.0, 0.8536, 0.5, 0.1464], abs=1e-4)
    assert lrs("constant", warmup=2) == pytest.approx([0.0, 0.5, 1.0, 1.0])
