"""A training step, ours vs TRL's SDFTTrainer: the same prompts, model, loss and hint placement (README "Benchmarks").

Setup, as in the issue: the default model on CPU in fp32, LoRA r16 (alpha 32) on all linear layers, 4 prompts, at
most 48 completion tokens, JSD β = 0.5 on the student's top-100 tokens plus a tail bin, the privileged text given to
the teacher as feedback before the answer, the frozen base as teacher (`teacher_model_kind="base"`), lr 1e-4.

- TRL (trl==1.16.0, `trl.experimental.sdft.SDFTTrainer`) samples 4 completions (T = 1) every step, then runs the
  teacher (adapter disabled) on prompt + feedback + completion and the student on prompt + completion, and trains.
- Ours trains on 4 rollouts sampled once from the same prompts with the same settings (the rollout is the data:
  we never regenerate). The feedback is a hint with `placement="feedback"` anchored at the first answer token and
  the loss span is the turn, so the targets are exactly TRL's completion tokens (and there is no untouched student
  token for the drift guard to anchor: the loss is the same). A second line adds gradient checkpointing.

Per step we time the *whole step* and its *training part* (teacher + student forward, loss, backward, optimizer;
for TRL the whole step minus generation). Ours also pays a one-time cost before the first step, the frozen
teacher's cached targets and the base anchors: printed, and amortized over the run. Runs alternate in one process
(ours, TRL, ours, TRL), medians over the steps after the first. Peak memory is each trainer's peak RSS in a fresh
child process (a process's peak cannot be reset; VmHWM), for both trainers in fp32 and with TRL's defaults (bf16
autocast + gradient checkpointing).

Throughput: completion tokens trained per second of the training part, and the model FLOP/s that part achieves
(a forward is 2N FLOPs per token, N = the model's parameters; a LoRA backward 2N more, since the frozen weights get
no gradient): ours does 4N per student token each step, TRL 4N per student token + 2N per teacher token, as its
teacher runs every step. MFU = that over the device's peak, printed where the peak is known (`--peak-tflops`, or an
H100/H200 in bf16). On CUDA both trainers run in bf16 (autocast), on the CPU in fp32.

    python -m bench.training [--steps 6] [--rounds 3] [--peak-tflops 989]
    python -m bench.training --profile [--steps 4]     (op by op, both trainers: where the training part goes)
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import resource
import statistics
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
warnings.filterwarnings("ignore")

from opd_studio.metrics import StepMetrics
from opd_studio.model import load_model
from opd_studio.records import Hint, Record
from opd_studio.rollout import SamplingConfig, generate
from opd_studio.train import TrainConfig, train

RESULTS = ROOT / "bench" / "results" / "training.json"
PROFILE = ROOT / "bench" / "results" / "training_profile.json"
PROMPTS = [("What is 17 + 25?", "42"), ("What is 48 + 37?", "85"), ("What is 67 + 58?", "125"),
           ("What is 36 + 89?", "125")]
MAX_COMPLETION = 48
LR = 1e-4
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")


def privileged(answer: str) -> str:
    return f"The correct answer is {answer}. Show the sum and state it."


# ------------------------------------------------------------------------------------------------------------------
# The data: 4 rollouts for ours, the same 4 prompts for TRL


def our_records(model, tokenizer) -> list[Record]:
    records = []
    for n, (question, answer) in enumerate(PROMPTS):
        record, _ = generate(model, tokenizer, [{"role": "user", "content": question}],
                             SamplingConfig(max_new_tokens=MAX_COMPLETION, temperature=1.0, seed=n), record_id=f"p{n}")
        # The feedback turn goes before the answer; its anchor is the answer's first token, so the loss span
        # "turn" covers every completion token, as TRL's does.
        record.hints = [Hint(text=privileged(answer), message=1, char=0, placement="feedback", status="accepted")]
        records.append(record)
    return records


def trl_dataset():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "privileged_context": privileged(a)}
                              for q, a in PROMPTS])


# ------------------------------------------------------------------------------------------------------------------
# Runs


def run_ours(model, tokenizer, records, steps: int, copy_model: bool = True, on_step=None, **changes) -> dict:
    config = TrainConfig(loss="jsd", beta=0.5, top_k=100, span="turn", lr=LR, steps=steps, batch_size=4,
                         drift_weight=0.0, drift_threshold=None, lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                         seed=0, **changes)
    result = train(copy.deepcopy(model) if copy_model else model, tokenizer, records, config, on_step=on_step)
    # Row k (1 ≤ k < steps) spans update k and the forward/backward of step k + 1: one whole step.
    rows = result.history[1:-1]
    completion = sum(len(ex.targets) for ex in result.examples)
    student = sum(len(ex.input_ids) for ex in result.examples)
    return {"whole": [r.seconds for r in rows], "train": [r.train_seconds for r in rows],
            "cache": result.cache_seconds, "completion_tokens": [completion] * len(rows),
            "student_tokens": [student] * len(rows), "teacher_tokens": [0] * len(rows)}


def run_trl(model, tokenizer, steps: int, defaults: bool = False, copy_model: bool = True, profiler=None) -> dict:
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    times = {"whole": [], "generation": [], "teacher": [], "student": [], "completion_tokens": [],
             "student_tokens": [], "teacher_tokens": []}
    pending = {"generation": 0.0, "teacher": 0.0, "student": 0.0, "completion_tokens": 0, "student_tokens": 0,
               "teacher_tokens": 0}

    class Timed(SDFTTrainer):
        def _prepare_inputs(self, batch):
            started = time.perf_counter()
            with torch.profiler.record_function(GENERATION):
                out = super()._prepare_inputs(batch)
            pending["generation"] += time.perf_counter() - started
            completion = int(out["completion_mask"].sum())
            pending["completion_tokens"] += completion  # regenerated each step: the count varies
            pending["student_tokens"] += int(out["prompt_mask"].sum()) + completion
            pending["teacher_tokens"] += int(out["teacher_attention_mask"].sum())
            return out

        def _forward_logits(self, model, *args, **kwargs):
            started = time.perf_counter()
            with torch.profiler.record_function("student forward" if torch.is_grad_enabled() else TEACHER):
                out = super()._forward_logits(model, *args, **kwargs)
            pending["student" if torch.is_grad_enabled() else "teacher"] += time.perf_counter() - started
            return out

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if profiler is not None and state.global_step == 1:  # the first step warms up
                profiler.start()
            self.started = time.perf_counter()
            for key in pending:
                pending[key] = 0.0

        def on_step_end(self, args, state, control, **kwargs):
            times["whole"].append(time.perf_counter() - self.started)
            if profiler is not None and state.global_step == steps:
                profiler.stop()
            for key, value in pending.items():
                times[key].append(value)

    args = SDFTConfig(
        output_dir=str(ROOT / "bench" / "results" / ".trl.tmp"), per_device_train_batch_size=len(PROMPTS),
        num_generations=1, max_completion_length=MAX_COMPLETION, temperature=1.0, distillation_mode="topk_logits",
        distillation_topk=100, distillation_add_tail=True, distillation_alpha=0.5, teacher_model_kind="base",
        teacher_prompt_template="{prompt}\n\nConsider this feedback: {privileged_context}",
        learning_rate=LR, lr_scheduler_type="constant", max_steps=steps, logging_steps=1, report_to="none",
        save_strategy="no", use_cpu=not torch.cuda.is_available(), shuffle_dataset=False, seed=0,
        disable_tqdm=True,
        **({} if defaults else {"bf16": torch.cuda.is_available(), "gradient_checkpointing": False}))
    trainer = Timed(model=copy.deepcopy(model) if copy_model else model, args=args, train_dataset=trl_dataset(),
                    processing_class=tokenizer, peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
                    callbacks=[Clock()])
    trainer.train()
    skip = slice(1, None)  # the first step warms up
    return {"whole": times["whole"][skip], "train": [w - g for w, g in zip(times["whole"], times["generation"])][skip],
            **{key: times[key][skip] for key in ("generation", "teacher", "student", "completion_tokens",
                                                 "student_tokens", "teacher_tokens")}}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def throughput(run: dict, parameters: int) -> dict:
    """Medians over steps: completion tokens trained per second of the training part, and model FLOP/s (2N per
    token forward, 2N more for the student's backward: LoRA computes no gradient of the frozen weights)."""
    flops = [4 * parameters * s + 2 * parameters * t for s, t in zip(run["student_tokens"], run["teacher_tokens"])]
    return {"tokens_per_s": median([n / s for n, s in zip(run["completion_tokens"], run["train"])]),
            "flops_per_s": median([f / s for f, s in zip(flops, run["train"])])}


# ------------------------------------------------------------------------------------------------------------------
# Where the training part goes: both trainers under torch.profiler, op by op

GENERATION, TEACHER = "trl generation", "trl teacher forward"


def profile_both(model, tokenizer, records, steps: int) -> dict:
    """Self time per op (ms per step) of ours and of TRL's training part less its teacher forward (TRL's sampling
    and teacher forward are left out through their record_function ranges), over steps 2…steps of each run."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    ours_profiler = torch.profiler.profile(activities=activities)

    def on_step(row: StepMetrics) -> None:
        if row.step == 1:
            ours_profiler.start()
        elif row.step == steps:
            ours_profiler.stop()

    run_ours(model, tokenizer, records, steps, on_step=on_step)
    trl_profiler = torch.profiler.profile(activities=activities)
    run_trl(model, tokenizer, steps, profiler=trl_profiler)
    return {"ours": op_times(ours_profiler, (), steps - 1),
            "trl": op_times(trl_profiler, (GENERATION, TEACHER), steps - 1)}


def op_times(profiler, excluded: tuple[str, ...], steps: int) -> dict[str, dict]:
    """name → {cpu_ms, device_ms, calls} per step, self times, without the events under an `excluded` range."""
    totals: dict[str, dict] = {}
    for event in profiler.events():
        parent, skip = event, False
        while parent is not None:
            if parent.name in excluded:
                skip = True
                break
            parent = parent.cpu_parent
        if skip or event.name in excluded:
            continue
        entry = totals.setdefault(event.name, {"cpu_ms": 0.0, "device_ms": 0.0, "calls": 0})
        entry["cpu_ms"] += event.self_cpu_time_total / 1000 / steps
        entry["device_ms"] += getattr(event, "self_device_time_total", 0) / 1000 / steps
        entry["calls"] += 1 / steps
    return totals


def profile_lines(profile: dict, top: int = 20) -> list[str]:
    key = "device_ms" if torch.cuda.is_available() else "cpu_ms"
    ours, trl = profile["ours"], profile["trl"]
    names = sorted(set(ours) | set(trl), key=lambda n: -max(ours.get(n, {}).get(key, 0), trl.get(n, {}).get(key, 0)))
    total = {name: sum(e[key] for n, e in side.items() if not n.startswith(("ProfilerStep", "student forward")))
             for name, side in profile.items()}
    lines = [f"Self {key.split('_')[0]} time per step, ours vs TRL's training part less its teacher forward "
             f"(total {total['ours']:.0f} ms vs {total['trl']:.0f} ms)",
             f"{'op':<48}{'ours ms':>10}{'TRL ms':>10}{'ours−TRL':>10}{'calls ours/TRL':>18}"]
    for name in names[:top]:
        a, b = ours.get(name, {}), trl.get(name, {})
        lines.append(f"{name[:47]:<48}{a.get(key, 0):>10.1f}{b.get(key, 0):>10.1f}"
                     f"{a.get(key, 0) - b.get(key, 0):>10.1f}{a.get('calls', 0):>9.0f}/{b.get('calls', 0):.0f}")
    return lines


def peak_flops(requested: float | None) -> float | None:
    """The device's peak FLOP/s for MFU: as given, or the dense bf16 peak of an H100/H200; unknown elsewhere."""
    if requested:
        return requested * 1e12
    if torch.cuda.is_available() and any(n in torch.cuda.get_device_name() for n in ("H100", "H200")):
        return 989e12
    return None


# ------------------------------------------------------------------------------------------------------------------
# Peak memory, one fresh process per trainer


MEMORY_RUNS = {  # name → what runs in the child
    "ours": {}, "ours, grad. checkpointing": {"gradient_checkpointing": True},
    "ours, bf16 + grad. checkpointing": {"gradient_checkpointing": True, "mixed_precision": "bf16"},
    "TRL fp32": "fp32", "TRL defaults (bf16 + grad. checkpointing)": "defaults"}


def _peak_child(kind: str, steps: int, records_raw: list[dict], queue) -> None:
    model, tokenizer = load_model("default")
    run = MEMORY_RUNS[kind]
    if isinstance(run, dict):
        run_ours(model, tokenizer, [Record.from_dict(r) for r in records_raw], steps, copy_model=False, **run)
    else:
        run_trl(model, tokenizer, steps, defaults=run == "defaults", copy_model=False)
    queue.put(peak_rss_mib())


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own address space; getrusage's maxrss
    would not do: Linux carries it over from the parent through fork + exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(kind: str, steps: int, records: list[Record]) -> float:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_child, args=(kind, steps, [r.to_dict() for r in records], queue))
    child.start()
    value = queue.get()
    child.join()
    return value


# ------------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per run (the first is not counted)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each trainer, interleaved")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory children")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s, for MFU")
    parser.add_argument("--profile", action="store_true",
                        help="only profile both trainers op by op (torch.profiler) and print where the time goes")
    args = parser.parse_args()
    if args.profile:
        model, tokenizer = load_model("default")
        profile = profile_both(model, tokenizer, our_records(model, tokenizer), args.steps)
        print("\n".join(profile_lines(profile)))
        PROFILE.parent.mkdir(exist_ok=True)
        PROFILE.write_text(json.dumps(profile, indent=1))
        return
    if args.memory_only:
        model, tokenizer = load_model("default")
        records = our_records(model, tokenizer)
        del model
        memory = {kind: peak_rss(kind, 2, records) for kind in MEMORY_RUNS}
        print("\n".join(memory_lines(memory)))
        if RESULTS.is_file():
            saved = json.loads(RESULTS.read_text())
            saved["peak_rss_mib"] = memory
            RESULTS.write_text(json.dumps(saved, indent=1))
        return

    model, tokenizer = load_model("default")
    records = our_records(model, tokenizer)
    ours, checkpointed, trl = {}, {}, {}
    for _ in range(args.rounds):  # interleaved, so load on the machine hits both alike
        for runs, run in ((ours, lambda: run_ours(model, tokenizer, records, args.steps)),
                          (trl, lambda: run_trl(model, tokenizer, args.steps)),
                          (checkpointed, lambda: run_ours(model, tokenizer, records, args.steps,
                                                          gradient_checkpointing=True))):
            for key, values in run().items():
                runs.setdefault(key, []).extend(values if isinstance(values, list) else [values])

    parameters = sum(p.numel() for p in model.parameters())
    m = {name: {**{key: median(values) for key, values in runs.items()}, **throughput(runs, parameters)}
         for name, runs in (("ours", ours), ("ours+gc", checkpointed), ("trl", trl))}
    peak = peak_flops(args.peak_tflops)
    amortized = m["ours"]["whole"] + m["ours"]["cache"] / args.steps
    memory = {}
    if not args.no_memory:
        for kind in MEMORY_RUNS:
            memory[kind] = peak_rss(kind, 2, records)

    device = (f"{torch.cuda.get_device_name()}, bf16" if torch.cuda.is_available()
              else f"cpu, {torch.get_num_threads()} threads, fp32")
    lines = [f"Training step, ours / TRL SDFTTrainer 1.16.0 ({device}; {len(PROMPTS)} prompts, ≤{MAX_COMPLETION} "
             f"completion tokens, LoRA r16; medians of {args.rounds} × {args.steps - 2} steps)",
             "| | ours | TRL | ours / TRL | goal |", "|---|---:|---:|---:|---:|",
             f"| whole step | {m['ours']['whole']:.2f} s | {m['trl']['whole']:.2f} s | "
             f"{m['ours']['whole'] / m['trl']['whole']:.2f}× | ≤ 0.25× |",
             f"| whole step, our one-time cache amortized over {args.steps} steps | {amortized:.2f} s | "
             f"{m['trl']['whole']:.2f} s | {amortized / m['trl']['whole']:.2f}× | |",
             f"| training part | {m['ours']['train']:.2f} s | {m['trl']['train']:.2f} s | "
             f"{m['ours']['train'] / m['trl']['train']:.2f}× | ≤ 0.7× |",
             f"| training part, ours with gradient checkpointing | {m['ours+gc']['train']:.2f} s | "
             f"{m['trl']['train']:.2f} s | {m['ours+gc']['train'] / m['trl']['train']:.2f}× | |",
             f"| TRL generation / teacher fwd / student fwd | | {m['trl']['generation']:.2f} / "
             f"{m['trl']['teacher']:.2f} / {m['trl']['student']:.2f} s | | |",
             f"| our one-time cache (frozen teacher targets + base anchors) | {m['ours']['cache']:.2f} s | | | |",
             f"| training part: completion tokens / s | {m['ours']['tokens_per_s']:.0f} | "
             f"{m['trl']['tokens_per_s']:.0f} | {m['ours']['tokens_per_s'] / m['trl']['tokens_per_s']:.2f}× | |",
             f"| training part: model TFLOP/s (MFU) | {tflops(m['ours'], peak)} | {tflops(m['trl'], peak)} | | |",
             f"| spread, whole step (min–max of {len(ours['whole'])} / {len(trl['whole'])} steps) | "
             f"{spread(ours['whole'])} | {spread(trl['whole'])} | | |",
             f"| spread, training part | {spread(ours['train'])} | {spread(trl['train'])} | | |"]
    lines += memory_lines(memory)
    print("\n".join(lines))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"device": device, "steps": args.steps, "rounds": args.rounds, "medians": m,
                                   "parameters": parameters, "peak_flops": peak,
                                   "amortized_whole": amortized, "peak_rss_mib": memory, "raw": {
                                       "ours": ours, "ours+gc": checkpointed, "trl": trl}}, indent=1))


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f} s" if values else "–"


def tflops(medians: dict, peak: float | None) -> str:
    achieved = medians["flops_per_s"]
    return f"{achieved / 1e12:.3f}" + (f" ({achieved / peak:.1%})" if peak else " (peak unknown)")


def memory_lines(memory: dict[str, float]) -> list[str]:
    if not memory:
        return []
    defaults = memory["TRL defaults (bf16 + grad. checkpointing)"]
    return [f"| peak RSS, {kind} | {value:.0f} MiB | {defaults:.0f} MiB (TRL defaults) | {value / defaults:.2f}× | "
            f"{'≤ 1.0×' if kind.startswith('ours') else ''} |" for kind, value in memory.items()]


if __name__ == "__main__":
    main()
