"""Rounds of the on-policy loop (`opd_studio/rounds.py`) on the tiny random model: a round regenerates, proposes,
curates, trains from the active weights (teacher and anchors = the start of the round) and names its parent; the
counts compare each answer with the one the round started from."""

import copy

import pytest
import torch

from tests.conftest import ADD, random_llama
from opd_studio.hints import HINT_MODELS
from opd_studio.hints.propose import propose_record
from opd_studio.plots import rounds_figure
from opd_studio.records import Record
from opd_studio.rounds import (RoundConfig, answered, as_prompt, compare, round_history, round_prompts, rounds_done,
                               run_round)
from opd_studio.store import Store
from opd_studio.train import TrainConfig
from opd_studio.workspace import Weights, Workspace

QUICK = TrainConfig(steps=2, lr=3e-2, drift_weight=0.0, drift_threshold=None, batch_size=4)


@pytest.fixture(scope="module")
def base_model(tokenizer):
    return random_llama(tokenizer, 4)


def prompt(text: str) -> Record:
    return Record(f"p-{abs(hash(text))}", [{"role": "user", "content": text}], meta={"family": "arithmetic"})


def test_compare_counts_right_suppressed_corrected_broken_and_looping():
    arithmetic = HINT_MODELS["arithmetic"]()
    prompts = [prompt("What is 17 + 25?"), prompt("What is 6 * 7?"), prompt("What is 9 - 4?"),
               prompt("What is 3 + 3?")]
    before = ["17 + 25 = 32.", "6 * 7 = 42.", "9 - 4 = 6.", "3 + 3 = 6."]
    after = ["17 + 25 = 42.", "6 * 7 = 41.", "9 - 4 = 7.", "3 + 3 = 6. " + "3 + 3 = 6. " * 5]
    flagged = []
    for p, text in zip(prompts, before):
        record, result = propose_record(arithmetic, answered(p, text))
        flagged.append(record if result.proposals else None)
    counts = compare(prompts, before, after, flagged, arithmetic)
    # 17 + 25: 32 → 42 corrected (and 32 suppressed); 6 * 7: right → wrong, broken; 9 - 4: 6 → 7 still wrong but
    # the flagged "= 6" is gone; 3 + 3 loops (a right answer repeated: still right, and counted as looping).
    assert counts == {"answers": 4, "right": 2, "flagged": 2, "suppressed": 2, "corrected": 1, "broken": 1,
                      "looping": 1}


def test_round_prompts_are_the_records_prompts_once_each(tmp_path):
    workspace = Workspace(Store(tmp_path / "s.sqlite"))
    workspace.store.save(Record.from_dict(ADD), status="accepted")
    again = Record.from_dict({**ADD, "id": "other", "messages": [ADD["messages"][0],
                                                                  {"role": "assistant", "content": "17 + 25 = 42."}]})
    workspace.store.save(again, status="pending")
    prompts = round_prompts(workspace, [prompt("What is 2 + 2?")])
    assert [p.messages[-1]["content"] for p in prompts] == ["What is 2 + 2?", "What is 17 + 25?"]
    assert all(p.messages[-1]["role"] == "user" for p in prompts)


def test_rounds_train_from_the_active_weights_and_name_their_parent(tmp_path, base_model, tokenizer):
    store = Store(tmp_path / "studio.sqlite")
    store.save(Record.from_dict(ADD), status="accepted")
    workspace = Workspace(store)
    weights = Weights(copy.deepcopy(base_model), tokenizer)
    config = RoundConfig(accept="verifier", max_new_tokens=8, train=QUICK)
    heldout = [as_prompt(Record.from_dict({**ADD, "id": "held", "messages": [
        {"role": "user", "content": "What is 11 + 12?"}, {"role": "assistant", "content": "11 + 12 = 23."}]}))]

    first = list(run_round(workspace, weights, config, heldout=heldout))
    assert first[0].status == "round 1: regenerating 1 curated prompts with the base weights…"
    outcome = first[-1].round
    assert outcome is not None and outcome.round == 1 and outcome.parent is None and outcome.run == 1
    assert store.active_run() == 1 == weights.run_id and store.run(1)["parent"] is None
    assert outcome.counts["curated"]["answers"] == 1 and outcome.counts["heldout"]["answers"] == 1
    assert any(r.meta.get("round") == 1 for r in store.records(None))  # the regenerated answer is in the store
    with torch.no_grad():
        ids = tokenizer("What is 17 + 25?", return_tensors="pt").input_ids
        after_first = weights.model(input_ids=ids).logits

    reports = list(run_round(workspace, weights, config, heldout=heldout))
    assert reports[0].status == "round 2: 1 curated prompts, answered by the trained (run 1) weights after round 1"
    second = reports[-1]
    assert second.round.round == 2 and second.round.parent == 1 and store.run(2)["parent"] == 1
    assert store.active_run() == 2 and rounds_done(workspace) == 2
    # Trained from run 1's weights, anchored to them: before its first update the round has not drifted at all
    # (anchored to the base, the adapter run 1 trained would already be measured as drift).
    assert second.history[0].drift < 1e-6 < 1e-3 < first[-1].history[-1].drift
    # The round started from the answers round 1 regenerated after training (same weights, nothing generated again).
    assert second.round.counts["curated"]["answers"] == 1
    with torch.no_grad():
        assert not torch.allclose(weights.model(input_ids=ids).logits, after_first)

    history = round_history(workspace)
    assert list(history["round"]) == [1, 1, 2, 2] and list(history["split"]) == ["curated", "heldout"] * 2
    assert list(history["parent"].fillna(0)) == [0, 0, 1, 1]
    figure = rounds_figure(history)  # right answers from round 0 (where round 1 started) to round 2, per split
    assert [list(t.x) for t in figure.data if t.name.startswith("right")] == [[0, 1, 2], [0, 1, 2]]


def test_a_round_without_a_heldout_set_counts_the_curated_prompts_only(tmp_path, base_model, tokenizer):
    store = Store(tmp_path / "studio.sqlite")
    store.save(Record.from_dict(ADD), status="accepted")
    weights = Weights(copy.deepcopy(base_model), tokenizer)
    last = list(run_round(Workspace(store), weights, RoundConfig(max_new_tokens=4, train=QUICK), heldout=[]))[-1]
    assert set(last.round.counts) == {"curated", "heldout"} and last.round.counts["heldout"]["answers"] == 0
    assert list(round_history(Workspace(store)).split) == ["curated"]


def test_a_round_without_prompts_says_what_to_do(tmp_path, base_model, tokenizer):
    workspace = Workspace(Store(tmp_path / "empty.sqlite"))
    weights = Weights(copy.deepcopy(base_model), tokenizer)
    with pytest.raises(ValueError, match="no prompts"):
        list(run_round(workspace, weights, RoundConfig(train=QUICK)))


@pytest.mark.parametrize("placement", [None, "feedback"])
def test_a_round_places_the_proposals_as_asked(tokenizer, placement):
    """`hint_placement="feedback"`: the hint model's proposal becomes a feedback turn at the same anchor, and the
    trajectory scores (the teacher continues the student's own sentence after the hint turn)."""
    from opd_studio.rounds import RoundOutcome, _curate
    from opd_studio.trajectory import build_trajectory
    question = prompt("What is 17 + 25?")
    config = RoundConfig(accept="verifier", hint_placement=placement)
    records, statuses, flagged = _curate([question], ["17 + 25 = 32."], [[]], HINT_MODELS["answer"](), config,
                                         tokenizer, RoundOutcome(1, None, None, "answer", "verifier"))
    (record,) = records
    assert statuses[record.id] == "accepted" and flagged == [record]
    (hint,) = record.hints
    assert hint.placement == (placement or "inline") and "42" in hint.text
    assert build_trajectory(tokenizer, record).anchor_token(hint)[0] is not None
    with pytest.raises(ValueError, match="hint placement 'template' is not one of inline, feedback"):
        RoundConfig(hint_placement="template")


def test_the_loop_command_defaults_to_the_round_defaults():
    """`opd-studio loop` with no placement or training flags runs what `RoundConfig()` runs (the defaults chosen on
    the held-out family: feedback hints, the error span, 20 steps)."""
    from opd_studio.cli import build_parser

    args = build_parser().parse_args(["loop", "--input", "p.jsonl", "--rounds", "1"])
    defaults = RoundConfig()
    assert args.hint_placement == defaults.hint_placement == "feedback"
    assert (args.span, args.steps) == (defaults.train.span, defaults.train.steps) == ("error", 20)
