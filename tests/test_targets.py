"""Target constructions against their formulas computed naively, one position and one token at a time, from full
forward passes of the tiny random model; the cached training targets and the studio's gradient map against the
same; placebo defaults and the one-line errors for bad input."""

import math

import pytest
import torch

from opd_studio.objective import build_example, cache_targets, right_text
from opd_studio.records import Hint, Record, default_placebo, placebo_for, placebo_text
from opd_studio.alignment import place_hints, splice
from opd_studio.scoring import HintScorer
from opd_studio.targets import TargetSpec, banned_tokens, construct, guided, guided_weight, leak_sets
from opd_studio.cli import build_parser
from opd_studio.train import TrainConfig, train
from opd_studio.trajectory import TrajectoryError, build_trajectory
from tests.conftest import ADD, random_llama

REVEAL = dict(ADD, hints=[{"message": 1, "char": 10, "text": "(Hint: 17 + 25 = 42.) ",
                           "source": "verifier:arithmetic", "rationale": "17 + 25 = 42, not 32"}])


@pytest.fixture(scope="module")
def small_model(tokenizer):
    """Peaked but not saturated distributions: the constructions differ visibly from each other."""
    return random_llama(tokenizer, 4)


@torch.no_grad()
def full_logp(model, ids):
    return torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)  # (T, V)


def naive_passes(model, tokenizer, record, placebo=None):
    """Per target position: (t, y, log p, log q, log z, hinted ids, teacher row) from three uncached forwards."""
    trajectory = build_trajectory(tokenizer, record)
    hints = record.hints
    placed = place_hints(tokenizer, trajectory, hints)
    hinted, position = splice(trajectory.input_ids, placed)
    z_placed = place_hints(tokenizer, trajectory, [placebo_for(h, placebo) for h in hints])
    z_ids, z_position = splice(trajectory.input_ids, z_placed)
    log_p, log_q, log_z = (full_logp(model, ids) for ids in (trajectory.input_ids, hinted, z_ids))
    example = build_example(tokenizer, record, "turn")
    return [(t, trajectory.input_ids[t], log_p[t - 1], log_q[position[t] - 1], log_z[z_position[t] - 1], hinted,
             position[t] - 1, placed) for t in example.targets]


def naive_target(kind, y, lp, lq, lz, alpha=1.0, nats=0.5, banned=()):
    """The module docstring's formulas, token by token in float64."""
    V = lp.shape[0]
    if kind == "hinted":
        return lq
    if kind == "contrast":
        scores = [lp[v] + alpha * (lq[v] - lz[v]) for v in range(V)]
        top = max(scores)
        norm = top + math.log(sum(math.exp(s - top) for s in scores))
        return torch.tensor([s - norm for s in scores], dtype=torch.float64)
    if kind == "evidence":
        return lq if float(lq[y] - lz[y]) < -nats else lp
    if kind == "guided":  # RLCSD's opsd_ectr: (1 + α) log q − α max(log z, floor), normalised; floor −5
        scores = [(1 + alpha) * float(lq[v]) - alpha * max(float(lz[v]), -5.0) for v in range(V)]
        top = max(scores)
        norm = top + math.log(sum(math.exp(s - top) for s in scores))
        return torch.tensor([s - norm for s in scores], dtype=torch.float64)
    if kind == "unleaked":
        keep = [v for v in range(V) if v not in banned or v == y]
        norm = torch.logsumexp(lq[keep], 0)
        out = torch.full((V,), -math.inf, dtype=torch.float64)
        out[keep] = lq[keep] - norm
        return out


def naive_guided_weight(lq, lz, tau):
    """w = KL(q ‖ z) / (KL(q ‖ z) + τ), the sum written out over the vocabulary."""
    kl = sum(math.exp(float(lq[v])) * (float(lq[v]) - float(lz[v])) for v in range(lq.shape[0]))
    return kl / (kl + tau)


def test_guided_equals_the_per_position_formula():
    """`guided` and `guided_weight` on (N, V) against plain-Python loops over positions and tokens (float64), with
    placebo log-probabilities on both sides of the floor."""
    generator = torch.Generator().manual_seed(3)
    log_q = torch.log_softmax(3 * torch.randn(5, 40, generator=generator, dtype=torch.float64), -1)
    log_z = torch.log_softmax(3 * torch.randn(5, 40, generator=generator, dtype=torch.float64), -1)
    assert (log_z < -5).any() and (log_z > -5).any()
    for alpha, floor, tau in ((0.5, -5.0, 1.0), (2.0, -3.0, 0.25)):
        got, weight = guided(log_q, log_z, alpha, floor), guided_weight(log_q, log_z, tau)
        for n in range(5):
            scores = [(1 + alpha) * float(log_q[n, v]) - alpha * max(float(log_z[n, v]), floor) for v in range(40)]
            norm = math.log(sum(math.exp(s) for s in scores))
            assert got[n].tolist() == pytest.approx([s - norm for s in scores], abs=1e-5)
            assert float(weight[n]) == pytest.approx(naive_guided_weight(log_q[n], log_z[n], tau), abs=1e-6)
    assert guided_weight(log_q, log_q, 1.0).abs().max() < 1e-6  # no content, no weight
    built = construct(TargetSpec("guided", alpha=0.5), log_q, torch.zeros(5, dtype=torch.long), log_z=log_z)
    torch.testing.assert_close(built.logp, guided(log_q, log_z).float())
    torch.testing.assert_close(built.weight, guided_weight(log_q, log_z).float())


def assert_same_distribution(got, expected):
    # compare probabilities: -1e4 ("banned", finite) and -inf are both zero
    torch.testing.assert_close(got.double().exp(), expected.exp(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind,alpha", [("hinted", 1.0), ("contrast", 1.0), ("contrast", 2.5), ("evidence", 1.0),
                                        ("unleaked", 1.0), ("guided", 0.5), ("guided", 2.0)])
def test_cached_targets_equal_naive_formula(tokenizer, small_model, kind, alpha):
    record = Record.from_dict(REVEAL)
    spec = TargetSpec(kind, alpha=alpha, evidence_nats=0.2)
    example = build_example(tokenizer, record, "turn", placebo="default" if spec.needs_placebo else None)
    with torch.no_grad():
        cache_targets(small_model, [example], 16, torch.float32, target=spec)
    naive = naive_passes(small_model, tokenizer, record)
    assert [t for t, *_ in naive] == example.targets and len(example.targets) == 4
    trained = []
    for n, (t, y, lp, lq, lz, hinted, row, placed) in enumerate(naive):
        prefix = example.input_ids[: placed[0].insert_at]
        banned = banned_tokens(prefix, [p.ids for p in placed], hinted[row])
        expected = naive_target(kind, y, lp, lq, lz, alpha, 0.2, banned)
        assert_same_distribution(torch.log_softmax(example.teacher_logits[n].double(), -1), expected)
        trained.append(float(lq[y] - lz[y]) < -0.2)
    if kind == "evidence":
        assert example.target_trained.tolist() == trained
    if kind == "guided":
        assert example.target_weight.tolist() == pytest.approx([naive_guided_weight(lq, lz, 1.0)
                                                                for _, _, _, lq, lz, *_ in naive], abs=1e-5)
    # the metric's teacher value is the target's own probability of the error tokens
    expected_error = sum(naive_target(kind, y, lp, lq, lz, alpha, 0.2,
                                      banned_tokens(example.input_ids[:48], [p.ids for p in placed], hinted[row]))[y]
                         for t, y, lp, lq, lz, hinted, row, placed in naive if t in example.errors)
    assert example.teacher_error_logp == pytest.approx(float(expected_error), abs=1e-3)


@pytest.mark.parametrize("kind", ["contrast", "evidence", "unleaked", "guided"])
def test_moving_teacher_targets_equal_the_cached_ones_at_the_base(tokenizer, small_model, kind):
    """A live teacher builds the same target in one padded batch (hinted, unhinted and placebo sequences) as the
    frozen cache does pass by pass, while the weights are still the base."""
    from opd_studio.objective import moving_teacher

    spec = TargetSpec(kind, alpha=2.0, evidence_nats=0.2)
    longer = dict(REVEAL, id="longer", messages=[REVEAL["messages"][0], {
        "role": "assistant", "content": "17 + 25 = 32. That is all, I hope it helps you today."}])
    examples = [build_example(tokenizer, Record.from_dict(r), "turn", placebo="default") for r in (REVEAL, longer)]
    with torch.no_grad():
        cache_targets(small_model, examples, 16, torch.float32, target=spec)
    logits, weights, error_logp = moving_teacher(small_model, examples, tokenizer.pad_token_id, "cpu", spec)
    for ex, moving, weight, error in zip(examples, logits, weights, error_logp):
        assert (weight is None) == (ex.target_weight is None) == (kind != "guided")
        if weight is not None:
            torch.testing.assert_close(weight, ex.target_weight, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(torch.log_softmax(moving, -1).exp(), torch.log_softmax(ex.teacher_logits, -1).exp(),
                                   atol=1e-5, rtol=1e-4)
        assert error == pytest.approx(ex.teacher_error_logp, abs=1e-3)


def test_the_constructions_differ_where_they_should(tokenizer, small_model):
    """contrast with α → 0 is the student; the unleaked target puts no mass on the hint's own tokens."""
    record = Record.from_dict(REVEAL)
    (t, y, lp, lq, lz, hinted, row, placed), *_ = naive_passes(small_model, tokenizer, record)
    weak = construct(TargetSpec("contrast", alpha=1e-6), lq[None], torch.tensor([y]), lp[None], lz[None]).logp[0]
    torch.testing.assert_close(weak.double().exp(), lp.exp(), atol=1e-5, rtol=1e-4)
    sets = leak_sets(build_trajectory(tokenizer, record).input_ids, hinted, [(p.insert_at, p.ids) for p in placed],
                     [t], [row])
    assert sets[0] and y not in sets[0] - {y}
    from opd_studio.targets import banned_mask

    target = construct(TargetSpec("unleaked"), lq[None], torch.tensor([y]), banned=banned_mask(sets, lq.shape[0],
                                                                                                "cpu")).logp[0]
    assert float(target[sorted(sets[0] - {y})].exp().sum()) < 1e-12
    assert float(lq[sorted(sets[0] - {y})].exp().sum()) > 1e-6  # and the hinted teacher had some there


def test_gradient_map_equals_naive_passes(tokenizer, small_model):
    record = Record.from_dict(REVEAL)
    scorer = HintScorer(small_model, tokenizer, build_trajectory(tokenizer, record))
    gradient = scorer.gradient_map(record.hints, TargetSpec("contrast", alpha=2.0), placebo="default")
    assert gradient.target == "contrast"
    frame = gradient.frame
    naive = naive_passes(small_model, tokenizer, record)
    assert frame.i.tolist() == [t for t, *_ in naive]
    for row, (t, y, lp, lq, lz, *_rest) in zip(frame.itertuples(), naive):
        r = naive_target("contrast", y, lp, lq, lz, alpha=2.0)
        assert row.p_student == pytest.approx(float(lp[y].exp()), abs=1e-5)
        assert row.p_hinted == pytest.approx(float(lq[y].exp()), abs=1e-5)
        assert row.p_placebo == pytest.approx(float(lz[y].exp()), abs=1e-5)
        assert row.p_target == pytest.approx(float(r[y].exp()), abs=1e-5)
        assert row.kl_target == pytest.approx(float((r.exp() * (r - lp)).sum()), abs=1e-4)
        assert row.push == pytest.approx(float(r[y] - lp[y]), abs=1e-3)
        assert row.weight == pytest.approx(1 / len(naive)) and row.trained
        assert [p for _, p in row.top_target] == sorted((p for _, p in row.top_target), reverse=True)
    with pytest.raises(ValueError, match="needs a placebo"):
        scorer.gradient_map(record.hints, TargetSpec("contrast"), placebo=None)
    guided_map = scorer.gradient_map(record.hints, TargetSpec("guided", alpha=0.5), placebo="default").frame
    for row, (t, y, lp, lq, lz, *_rest) in zip(guided_map.itertuples(), naive):
        assert row.p_target == pytest.approx(float(naive_target("guided", y, lp, lq, lz, alpha=0.5)[y].exp()), abs=1e-5)
        assert row.weight == pytest.approx(naive_guided_weight(lq, lz, 1.0) / len(naive), abs=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# Placebos, right answers, bad input


def test_default_placebo_keeps_the_frame_and_the_place():
    hint = Hint(text=" (Hint: 356 + 478 = 834.)", message=1, char=7, placement="inline")
    placebo = default_placebo(hint)
    assert placebo.text == " (Hint: check this step.)" and (placebo.message, placebo.char) == (1, 7)
    assert placebo_text("(Hint: a much longer hint about carrying the one over.) ").startswith("(Hint: look at")
    assert placebo_text("(Hint: x) ", body="keep going.") == "(Hint: keep going.) "
    stored = Hint(text="(Hint: 42.)", message=1, char=7, placebo="(Hint: hmm.)")
    assert placebo_for(stored).text == "(Hint: hmm.)" and placebo_for(stored, "other").text == "(Hint: hmm.)"
    assert placebo_for(hint, "(Hint: other.)").text == "(Hint: other.)"
    # stored with the record, and read back; records without it stay as they were
    record = Record.from_dict(dict(ADD, hints=[dict(ADD["hints"][0], placebo=" (Hint: check.) ")]))
    assert Record.from_dict(record.to_dict()).hints[0].placebo == " (Hint: check.) "
    assert "placebo" not in Record.from_dict(ADD).to_dict()["hints"][0]


def test_right_text_comes_from_the_verifier_rationale(tokenizer):
    assert right_text(Record.from_dict(REVEAL)) == "42"
    assert right_text(Record.from_dict(ADD)) is None
    example = build_example(tokenizer, Record.from_dict(REVEAL))
    assert tokenizer.decode([example.right_token]) == "4"


def test_bad_input_is_one_line_that_says_what_to_do(tokenizer, small_model):
    for bad, match in [(dict(alpha=0.0), "alpha must be in"), (dict(alpha=9.0), "alpha must be in"),
                       (dict(target="oracle"), "not one of"), (dict(guided_floor=0.5), "floor .* must be < 0"),
                       (dict(guided_tau=0.0), "τ must be > 0")]:
        with pytest.raises(ValueError, match=match) as info:
            TrainConfig(**bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="has no placebo; store one") as info:
        build_example(tokenizer, Record.from_dict(REVEAL), placebo="stored")
    assert "\n" not in str(info.value)
    long_placebo = " (Hint: " + "check " * 5000 + ")"
    scorer = HintScorer(small_model, tokenizer, build_trajectory(tokenizer, Record.from_dict(REVEAL)))
    with pytest.raises(TrajectoryError, match="longer than the model's context.*shorter placebo") as info:
        scorer.score(Record.from_dict(REVEAL).hints, placebo=long_placebo)
    assert "\n" not in str(info.value)
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--target", "contrast", "--alpha", "1.5"])
    assert args.target == "contrast" and args.alpha == 1.5


def test_training_with_each_construction_keeps_a_timeline(tokenizer, small_model):
    import copy

    record = Record.from_dict(REVEAL)
    for kind, teacher in (("contrast", "frozen"), ("evidence", "frozen"), ("unleaked", "frozen"), ("contrast", "live"),
                          ("contrast", "ema"), ("guided", "frozen"), ("guided", "live")):
        result = train(copy.deepcopy(small_model), tokenizer, [record],
                       TrainConfig(target=kind, alpha=2.0, steps=2, lr=5e-3, drift_threshold=None, teacher=teacher))
        assert result.steps == 2 and (result.examples[0].teacher_logits is not None) == (teacher == "frozen")
        assert result.placebo_defaulted == ([record.id] if kind != "unleaked" else [])
        line = result.timeline(record.id)
        assert line.steps == [0, 1, 2] and line.positions == result.examples[0].targets
        assert len(line.p_target) == 3 and all(len(p) == len(line.positions) for p in line.p_target)
        assert line.right_text == "42" and line.p_right is not None and len(line.p_right) == 3
        assert line.p_target[0] != line.p_target[-1]  # the student moved
        # step 0 is the base: the timeline's first row equals the scorer's p_before
        table = HintScorer(small_model, tokenizer, build_trajectory(tokenizer, record)).score([]).table
        for i, p in zip(line.positions, line.p_target[0]):
            assert p == pytest.approx(math.exp(table.loc[i, "logp_before"]), rel=1e-4)
        frame = line.frame()
        assert len(frame) == 3 * len(line.positions) and set(frame.step) == {0, 1, 2}


# ------------------------------------------------------------------------------------------------------------------
# The command line, as a user runs it


@pytest.fixture(scope="module")
def model_dir(tokenizer, small_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    small_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_module(module, *args, env=None):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300,
                          cwd=root, env=env)


def test_cli_score_writes_the_placebo_columns(model_dir, tmp_path):
    import json

    import pandas as pd

    from opd_studio.scoring import PLACEBO_COLUMNS

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(REVEAL) + "\n")
    for name in ("scores.jsonl", "scores.parquet"):
        done = run_module("opd_studio", "score", "--input", str(source), "--output", str(tmp_path / name),
                          "--model", str(model_dir), "--placebo", "default")
        assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert set(PLACEBO_COLUMNS) <= set(rows[0])
    three = next(r for r in rows if r["hint"])
    assert three["content_drop"] == pytest.approx(three["logp_after"] - three["logp_placebo"], abs=1e-9)
    table = pd.read_parquet(tmp_path / "scores.parquet")
    assert table.loc[table.hint, "logp_placebo"].item() == pytest.approx(three["logp_placebo"], abs=1e-5)
    assert json.loads(table.loc[table.hint, "top_placebo"].item())[0][1] > 0
    without = run_module("opd_studio", "score", "--input", str(source), "--output", str(tmp_path / "plain.jsonl"),
                         "--model", str(model_dir))
    assert without.returncode == 0 and "logp_placebo" not in (tmp_path / "plain.jsonl").read_text()


def test_train_module_runs_the_contrast_target(model_dir, tmp_path):
    import json

    data = tmp_path / "curated.jsonl"
    data.write_text(json.dumps(REVEAL) + "\n")
    args = ["--data", str(data), "--out", str(tmp_path / "run"), "--model", str(model_dir), "--steps", "1",
            "--unreviewed", "--no-heldout", "--drift-threshold", "none"]
    env = {"OPD_STUDIO_DATA": str(tmp_path / "data")}
    done = run_module("opd_studio", "train", *args, "--target", "contrast", "--alpha", "1.0", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 of 1 records had no stored placebo: used the default" in done.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["target"] == "contrast" and run["targets"][REVEAL["id"]]["right_text"] == "42"
    bad = run_module("opd_studio", "train", *args, "--target", "contrast", "--alpha", "7", env=env)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and errors == [bad.stderr.splitlines()[-1]] and "alpha must be in (0, 4]" in errors[0]


# ------------------------------------------------------------------------------------------------------------------
# The real default model: what the contrast adds


@pytest.mark.integration
def test_contrast_puts_the_right_digit_on_top_where_the_hinted_target_puts_a_line_break(default_model):
    """The issue's measurement on the demo rollouts: at the first error token of every flagged greedy arithmetic
    rollout, the hinted teacher's top token is rarely the right answer's first token (a line break, mostly), the
    placebo raises the same line break, and the contrast target puts the right digit on top in most records."""
    import json
    from pathlib import Path

    model, tokenizer = default_model
    lines = (Path(__file__).resolve().parents[1] / "assets" / "demo_rollouts.jsonl").read_text().splitlines()
    records = [Record.from_dict(json.loads(line)) for line in lines]
    records = [r for r in records if r.meta.get("family") == "arithmetic" and r.meta.get("run") == "greedy"
               and r.hints]
    on_top = {"hinted": 0, "contrast": 0}
    style = 0
    for record in records:
        record.hints = record.hints[:1]
        right = tokenizer.decode([build_example(tokenizer, record).right_token])
        scorer = HintScorer(model, tokenizer, build_trajectory(tokenizer, record))
        for kind in on_top:
            first = scorer.gradient_map(record.hints, TargetSpec(kind, alpha=2.0), span="error",
                                        error=record.error).frame.iloc[0]
            on_top[kind] += first.top_target[0][0] == right
        table = scorer.score(record.hints, error=record.error, placebo="default").table
        style += bool(table.loc[table.target, "style"].any())
    assert len(records) == 12
    assert on_top["hinted"] <= 3 and on_top["contrast"] >= 9, on_top
    assert style >= 6  # most records have a target token whose drop the placebo reproduces
