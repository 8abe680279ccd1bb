"""End to end on the real default model: a demo arithmetic prompt → greedy rollout → the verifier's proposal →
hinted scoring, where the error tokens' probability falls. And the `propose` CLI on the same path."""

import json
import math
import subprocess
import sys

import pytest

from opd_studio.hints import ArithmeticVerifier
from opd_studio.hints.propose import propose_record
from opd_studio.rollout import generate
from opd_studio.scoring import score_record
from opd_studio.ui.session import demo_tasks

pytestmark = pytest.mark.integration


def test_demo_prompt_to_proposal_to_falling_error_probability(default_model):
    model, tokenizer = default_model
    task = next(r for r in demo_tasks() if r.id == "arith-001")
    rollout, _ = generate(model, tokenizer, task.messages)
    record, result = propose_record(ArithmeticVerifier(style="reveal"), rollout, tokenizer)
    (proposal,) = result.proposals
    wrong = rollout.messages[-1]["content"][proposal.char_start:proposal.char_end]
    assert wrong == "32"
    scores = score_record(model, tokenizer, record, span="error")
    error = scores.table.iloc[proposal.token_start:proposal.token_end]
    assert "".join(error.text) == "32" and error.target.all()
    p_before, p_after = math.exp(error.logp_before.sum()), math.exp(error.logp_after.sum())
    assert p_after < p_before / 10, (p_before, p_after)
    # the hint sits right before the error token, the trajectory's own space in front of it
    assert scores.anchors == [proposal.token_start]


def test_propose_cli(tmp_path):
    rollout = {"id": "r", "messages": [{"role": "user", "content": "What is 48 + 37?"},
                                       {"role": "assistant", "content": "48 + 37 = 114, and 2 + 2 = 4."}]}
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps(rollout) + "\n")
    done = subprocess.run([sys.executable, "-m", "opd_studio", "propose", "--hint-model", "arithmetic",
                           "--input", str(source), "--output", str(output)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads(output.read_text())
    assert record["error"] == {"message": 1, "char_start": 10, "char_end": 13}
    assert record["hints"][0]["status"] == "proposed" and "85" in record["hints"][0]["text"]
