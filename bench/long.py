"""Long rollouts (issue 17): open, read and edit a 2k–8k-token trace, each engine path beside its baseline in one run.

Data: `addition_rollout` (seeded): a user asks for a long sum; the assistant writes numbered addition steps
("Step k: a + b = c.") until the trajectory holds the asked number of tokens, with ONE wrong step, a hint just
before it and the error span on its result. Hint *late*: the wrong step is ~90% of the way in; *middle*: ~50%.

Per length, one child process (fresh memory, so its peak RSS is its own) loads the model and measures, on CPU
wall-clock, medians of `--repeats` (the spread, min–max, is reported):

- *forward*: one full forward pass over the trajectory: decoder + the vocabulary projection and log-softmax at
  every position (in chunks). The unit of the goals below; *two forward passes* = 2 × forward.
- *open, one-shot*: a fresh `HintScorer.score` (today's open: the whole table in one go).
- *open → window*: a fresh `HintScorer.score_window`: the numbers around the hint and the error span first;
  *open → whole*: that window, then `score` on the same scorer (the rest; the whole table).
- *strip data*: the whole table's long strip as the page receives it (`strip.pack_strip`, in the page's text area),
  beside the same columns as plain JSON (the payload before packing), in bytes.
- *click → error span*: the hint moved to the wrong step's result (the person clicks near the error) on a scorer
  whose record is open: `ui.incremental.window_table` (the error-span numbers) beside the one-shot rescoring
  `HintScorer.score` on a scorer in the same state.

And per length and placement, `opd-studio score` runs on the record alone as a command of its own (a subprocess),
`--score-repeats` times, each run between two forward passes over the same trajectory (its own baseline, so its
ratio does not depend on how the machine drifted since the studio paths ran): the seconds it prints (scoring, after
the model loaded) and its peak RSS (ru_maxrss: model, passes and output writing). With `--random-init` (not a model
the CLI loads) the CLI's path, `batching.score_records`, runs in a child.

Goals (issue 17, CPU, default model, ratios within one run): open → window ≤ 0.9× forward (late), ≤ 0.6× (middle);
click → error span ≤ 0.15× one-shot rescoring; open → whole ≤ 1.1× open one-shot; `score` (late) ≤ 0.6× two
forward passes; peak RSS ≤ 2 GiB at 8k.

    python -m bench.long                 # 2k, 4k, 8k (about 9 minutes alone on 2 CPU cores)
    python -m bench.long --quick         # 2k only, one repeat (about a minute)
    python -m bench.long --lengths 8192 --score-only --score-repeats 3 --out bench/results/long_score.json
    python -m bench.long --lengths 32768 --random-init --device cuda   # bench/gpu.sh: a random-initialised
                                         # long-context config of the default architecture
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "long.json"
PLACEMENTS = {"late": 0.9, "middle": 0.5}


# ------------------------------------------------------------------------------------------------------------------
# Data


HINT_ROOM = 32  # tokens left free under the asked length, so that the hinted sequence fits an n-token context


def addition_rollout(tokenizer, n_tokens: int, wrong_at: float, seed: int = 0, record_id: str = "long"):
    """A record of at most `n_tokens - HINT_ROOM` trajectory tokens (as many whole steps as fit): numbered addition
    steps, the one at `wrong_at` (a fraction of the steps) wrong by one, a hint before it and the error span on its
    result. Seeded: same arguments, same record."""
    from opd_studio.trajectory import build_trajectory

    rng = random.Random(seed)
    terms = [rng.randint(10, 999) for _ in range(max(8, n_tokens // 4))]
    def fits(k: int) -> bool:
        return len(build_trajectory(tokenizer, _steps_record(terms[:k], wrong_at, record_id))) <= n_tokens - HINT_ROOM

    low, high = 4, len(terms)  # the most steps that fit: binary search (one tokenization per probe)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return _steps_record(terms[:low], wrong_at, record_id)


def _steps_record(terms: list[int], wrong_at: float, record_id: str):
    from opd_studio.records import Record

    wrong = min(len(terms) - 2, int(wrong_at * len(terms)))
    text, total, hint_char, error = "", 0, 0, (0, 0)
    for k, term in enumerate(terms):
        shown = total + term + (1 if k == wrong else 0)
        line = f"Step {k + 1}: {total} + {term} = {shown}.\n"
        if k == wrong:
            hint_char = len(text)
            start = len(text) + line.index("= ") + 2
            error = (start, start + len(str(shown)))
        text += line
        total += term
    return Record.from_dict({
        "id": record_id, "messages": [{"role": "user", "content": "Add these numbers one at a time, every step."},
                                      {"role": "assistant", "content": text}],
        "hints": [{"message": 1, "char": hint_char, "text": " (Hint: add the ones first and check the carry.) "}],
        "error": {"message": 1, "char_start": error[0], "char_end": error[1]}})


# ------------------------------------------------------------------------------------------------------------------
# Children


def load(model_name: str, device: str, random_init: int | None):
    """The model: the default (or `model_name`) as trained, or with `random_init` a random-initialised copy of its
    architecture whose context is `random_init` tokens (bf16 on CUDA)."""
    import torch

    from opd_studio.model import load_model

    model, tokenizer = load_model(model_name, device=device)
    if random_init:
        from transformers import AutoModelForCausalLM

        config = model.config
        config.max_position_embeddings = random_init
        torch.manual_seed(0)
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    return model, tokenizer


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def sync(model):
    import torch

    if model.device.type == "cuda":
        torch.cuda.synchronize()


def timed(model, fn) -> tuple[float, object]:
    sync(model)
    start = time.perf_counter()
    out = fn()
    sync(model)
    return time.perf_counter() - start, out


def forward_seconds(model, ids: list[int], chunk: int = 256) -> float:
    """One full forward pass: decoder, then projection + log-softmax at every position, in chunks."""
    import torch

    from opd_studio.scoring import logits_from_hidden

    @torch.no_grad()
    def run():
        hidden = model.get_decoder()(input_ids=torch.tensor([ids], device=model.device)).last_hidden_state[0]
        for a in range(0, len(ids), chunk):
            torch.log_softmax(logits_from_hidden(model, hidden[a: a + chunk]), dim=-1)

    return timed(model, run)[0]


def moved_to_error(scorer, record):
    """The record's hints with the first one moved to the error's first token (a click near the error)."""
    import copy

    hints = copy.deepcopy(record.hints)
    token = scorer.trajectory.error_token_span(record.error)[0]
    message, char = scorer.trajectory.token_to_char(token)
    hints[0].token, hints[0].message, hints[0].char = token, message, char
    return hints


def measure_length(n_tokens: int, repeats: int, model_name: str, device: str, random_init: int | None) -> dict:
    """Child process: every engine path for one length, both placements."""
    from opd_studio.scoring import HintScorer
    from opd_studio.trajectory import build_trajectory
    from opd_studio.ui import incremental

    model, tokenizer = load(model_name, device, random_init)
    out = {"tokens": n_tokens, "placements": {}}
    records = {where: addition_rollout(tokenizer, n_tokens, frac) for where, frac in PLACEMENTS.items()}
    trajectories = {where: build_trajectory(tokenizer, r) for where, r in records.items()}
    forward_seconds(model, trajectories["late"].input_ids[:256])  # warm-up
    samples: dict[str, list[float]] = {}

    def add(key, seconds):
        samples.setdefault(key, []).append(seconds)
        print(f"  {n_tokens} {key}: {seconds:.2f}s", file=sys.stderr, flush=True)

    for _ in range(repeats):
        add("forward", forward_seconds(model, trajectories["late"].input_ids))
        for where, record in records.items():
            trajectory = trajectories[where]
            add(f"{where}/open_oneshot", timed(model, lambda: HintScorer(model, tokenizer, trajectory).score(
                record.hints, "turn", record.error))[0])
            scorer = HintScorer(model, tokenizer, trajectory)
            window_s, window = timed(model, lambda: scorer.score_window(record.hints, "turn", record.error))
            rest_s, whole = timed(model, lambda: scorer.score(record.hints, "turn", record.error))
            add(f"{where}/open_window", window_s)
            add(f"{where}/open_whole", window_s + rest_s)
            # a click near the error on the open record: the same state for both paths
            moved = moved_to_error(scorer, record)
            twin = scorer.fork()
            add(f"{where}/click_window", timed(model, lambda: incremental.window_table(
                scorer, moved, "turn", record.error))[0])
            add(f"{where}/click_oneshot", timed(model, lambda: twin.score(moved, "turn", record.error))[0])
            out["placements"][where] = {"trajectory_tokens": len(trajectory), "window": list(scorer.window(
                record.hints, record.error)), "hint_token": window.hints[0].insert_at,
                "strip_bytes": strip_bytes(whole, trajectory)}
    out["seconds"] = {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
                      for k, v in samples.items()}
    out["peak_rss_gib"] = peak_rss_gib()
    return out


def strip_bytes(scores, trajectory) -> dict:
    """The long strip's data as the page receives it (`strip.pack_strip`, escaped into the page) beside the same
    columns as plain JSON (what the page received before packing), in bytes."""
    import html

    from opd_studio.ui import strip

    data = strip.strip_data(scores, "delta", trajectory)
    size = lambda value: len(html.escape(json.dumps(value, ensure_ascii=False, separators=(",", ":")),  # noqa: E731
                                         quote=False).encode())
    return {"sent": size(strip.pack_strip(data)), "plain": size(data)}


def measure_score(n_tokens: int, where: str, model_name: str, device: str, random_init: int | None,
                  repeats: int = 1) -> dict:
    """`opd-studio score` on one record, `repeats` times, each run beside its own baseline: a forward pass over
    the same trajectory in this process just before and just after the command (their mean is the run's
    *forward*; the ratio is taken run by run, so the machine's drift between runs cancels). Per run: the seconds
    the command prints (the scoring, after the model loaded) and its peak RSS (ru_maxrss of the waited child; the
    command's own, model and output writing included). A random-initialised model is not a CLI model: that case
    runs the CLI's path (`batching.score_records`) in this process."""
    model, tokenizer = load(model_name, device, random_init)
    record = addition_rollout(tokenizer, n_tokens, PLACEMENTS[where])
    ids = build_trajectory_ids(tokenizer, record)
    forward_seconds(model, ids[:256])  # warm-up
    runs = []
    for _ in range(repeats):
        before = forward_seconds(model, ids)
        run = score_once(model, tokenizer, record, model_name, device, random_init)
        run["forward"] = (before + forward_seconds(model, ids)) / 2
        run["ratio"] = run["seconds"] / (2 * run["forward"])
        runs.append(run)
    ratios = sorted(r["ratio"] for r in runs)
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "forward": statistics.median(r["forward"] for r in runs),
            "ratio": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
            "peak_rss_gib": max(r["peak_rss_gib"] for r in runs), "command": runs[0]["command"], "runs": runs}


def build_trajectory_ids(tokenizer, record) -> list[int]:
    from opd_studio.trajectory import build_trajectory

    return build_trajectory(tokenizer, record).input_ids


def score_once(model, tokenizer, record, model_name: str, device: str, random_init: int | None) -> dict:
    """One `opd-studio score` run on `record` (see `measure_score`)."""
    import os
    import re
    import subprocess
    import tempfile

    if random_init:
        from opd_studio.batching import prepare_scoring, score_records

        seconds, results = timed(model, lambda: list(score_records(model, tokenizer,
                                                                    prepare_scoring(tokenizer, [record]))))
        assert len(results) == 1 and results[0][1].table.kl.notna().any()
        return {"seconds": seconds, "peak_rss_gib": peak_rss_gib(), "command": "score_records (in process)"}
    with tempfile.TemporaryDirectory() as tmp:
        records, scores = Path(tmp, "record.jsonl"), Path(tmp, "scores.jsonl")
        records.write_text(record.to_json() + "\n")
        command = [sys.executable, "-m", "opd_studio", "score", "--model", model_name, "--device", device,
                   "--input", str(records), "--output", str(scores)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        with open(Path(tmp, "stderr.txt"), "w+") as err:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT)
            # wait4: this run's own peak (RUSAGE_CHILDREN would give the largest of every run so far)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            err.seek(0)
            stderr = err.read()
        if process.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
        rss = usage.ru_maxrss / 2**20  # KiB on Linux
        assert scores.stat().st_size > 0
    seconds = float(re.search(r"tokens in ([\d.]+) s", stderr).group(1))
    return {"seconds": seconds, "peak_rss_gib": rss, "command": "opd-studio score"}


def in_child(fn, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ------------------------------------------------------------------------------------------------------------------
# Report


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "-"


def score_ratio(score: dict) -> str:
    """`score` over two forward passes measured beside it: the median of its runs, and their range."""
    spread = f", {score['ratio_min']:.2f}–{score['ratio_max']:.2f}" if len(score["runs"]) > 1 else ""
    return f"{score['ratio']:.2f}×{spread}"


def payload_cell(placement: dict) -> str:
    sizes = placement.get("strip_bytes")
    return f"{sizes['sent'] / 1000:,.0f} ({sizes['plain'] / 1000:,.0f})" if sizes else "-"


def score_report(results: list[dict]) -> str:
    """`--score-only`: the `score` command beside its forward passes, per length and placement."""
    lines = ["| tokens | hint | forward s (beside) | score s/record | × 2 forward (median, range) | runs | "
             "peak RSS GiB |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for where, score in r["score"].items():
            lines.append(f"| {r['tokens']} | {where} | {score['forward']:.1f} | {score['seconds']:.1f} | "
                         f"{score_ratio(score)} | {len(score['runs'])} | {score['peak_rss_gib']:.2f} |")
    return "\n".join(lines)


def report(results: list[dict]) -> str:
    header = ("| tokens | hint | forward s | open one-shot s | open → window s (× forward) | open → whole s "
              "(× one-shot) | click one-shot s | click → error span s (× one-shot) | score s/record (× 2 forward) "
              "| peak RSS score / studio GiB | strip data KB sent (plain JSON) |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        s = {k: v["median"] for k, v in r["seconds"].items()}
        forward = s["forward"]
        for where in PLACEMENTS:
            get = lambda name: s[f"{where}/{name}"]  # noqa: E731
            score = r["score"].get(where)
            score_cell = f"{score['seconds']:.1f} ({score_ratio(score)})" if score else "-"
            rss_cell = f"{score['peak_rss_gib']:.2f}" if score else "-"
            lines.append(
                f"| {r['placements'][where]['trajectory_tokens']} | {where} | {forward:.1f} | "
                f"{get('open_oneshot'):.1f} | {get('open_window'):.1f} ({ratio(get('open_window'), forward)}) | "
                f"{get('open_whole'):.1f} ({ratio(get('open_whole'), get('open_oneshot'))}) | "
                f"{get('click_oneshot'):.2f} | "
                f"{get('click_window'):.2f} ({ratio(get('click_window'), get('click_oneshot'))}) | "
                f"{score_cell} | {rss_cell} / {r['peak_rss_gib']:.2f} | {payload_cell(r['placements'][where])} |")
    for r in results:  # the spread of the repeats: (max − min) / median, the widest of the length's timings
        spreads = [(v["max"] - v["min"]) / v["median"] for v in r["seconds"].values() if v["n"] > 1 and v["median"]]
        n = r["seconds"]["forward"]["n"]
        lines.append(f"\n{r['tokens']} tokens: medians of {n}" + (f", widest spread {max(spreads):.0%} of the median"
                                                                   if spreads else " (one repeat: no spread)"))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=0, help="0: 2 below 4k tokens, 1 from 4k on (8k ≈ 4 min)")
    parser.add_argument("--score-placements", nargs="+", default=["late"], choices=list(PLACEMENTS))
    parser.add_argument("--score-repeats", type=int, default=1, help="runs of the `score` command, each beside "
                        "its own forward passes")
    parser.add_argument("--score-only", action="store_true", help="only the `score` command beside its forward "
                        "passes (no studio paths)")
    parser.add_argument("--quick", action="store_true", help="2k tokens, one repeat")
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--random-init", action="store_true",
                        help="a random-initialised copy of the model's architecture with a context of the longest "
                             "length (+1024): for lengths past the trained model's context")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    lengths = [2048] if args.quick else args.lengths
    random_init = max(lengths) + 1024 if args.random_init else None
    results = []
    started = time.perf_counter()
    for n in lengths:
        repeats = 1 if args.quick else (args.repeats or (2 if n < 4096 else 1))
        result = ({"tokens": n} if args.score_only else
                  in_child(measure_length, n, repeats, args.model, args.device, random_init))
        result["score"] = {where: in_child(measure_score, n, where, args.model, args.device, random_init,
                                           args.score_repeats)
                           for where in args.score_placements}
        results.append(result)
        print(f"{n} tokens done after {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    table = score_report(results) if args.score_only else report(results)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": args.device, "model": args.model, "random_init": random_init,
                                    "results": results, "table": table,
                                    "seconds": time.perf_counter() - started}, indent=1))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
