"""`opd-studio …` (or `python -m opd_studio …`): the studio's work from a shell, on the same store the studio uses.

    opd-studio generate --input prompts.jsonl --output rollouts.jsonl [--temperature 0.7 --samples 4] [--run N]
    opd-studio propose  --hint-model arithmetic --input rollouts.jsonl --output proposed.jsonl
    opd-studio score    --input proposed.jsonl --output scores.parquet [--run N | --adapter DIR | --base-url URL]
    opd-studio train    [--data curated.jsonl] --steps 10 --target contrast     (records the run in the store)
                        [--report-to trackio]     (and reports each step to trackio)
    opd-studio loop     --input prompts.jsonl --rounds 3 --steps 10 [--accept verifier] [--output final.jsonl]
    opd-studio runs     list | use N | reset | show N
    opd-studio curated  list | export --output F | import F | revisions ID | restore ID REV | delete ID
    opd-studio serve    --port 8000     (an OpenAI-compatible endpoint for the model, on loopback)
    opd-studio app      (the studio in the browser)

The store is the studio's: `OPD_STUDIO_DATA` (default ./opd_data). Every command reads everything and validates
before it writes, and writes through a temporary file, so a failure leaves no half-written output. Errors are one
line on stderr and exit code 2 (bad input) or 1 (anything else).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from .hints import HINT_MODELS, needs_model
from .records import PROPOSAL_PLACEMENTS, RecordError, read_records, write_records


def _add_model_args(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    parser.add_argument("--model", default="default", help="'default', a hub id, a local directory or a .gguf file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a model's own code to run")
    if weights:
        trained = parser.add_mutually_exclusive_group()
        trained.add_argument("--run", type=int, help="use the weights of run N of the store (opd-studio runs list)")
        trained.add_argument("--adapter", help="use a saved adapter directory (a run directory)")


def _add_server_args(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--base-url", default=None,
                        help=f"{verb} through an OpenAI-compatible server at this URL (…/v1: vLLM, SGLang, TGI, "
                             "llama.cpp, opd-studio serve) instead of the local model; --model then only supplies "
                             "the tokenizer")
    parser.add_argument("--remote-model", default=None, help="model name to ask the server for (default: its first)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                        help="environment variable holding the server's API key (default OPENAI_API_KEY)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight to the server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opd-studio", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="sample an assistant turn for every record")
    _add_model_args(gen)
    gen.add_argument("--input", required=True,
                     help="records (a trailing assistant message is replaced): JSONL, Parquet, a `datasets` folder "
                          "or hf://datasets/owner/name")
    gen.add_argument("--output", required=True,
                     help="JSONL records with the rollout and its exact token ids; run again with the same output "
                          "to resume")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--samples", type=int, default=1, help="rollouts per record (seeds seed, seed+1, …)")
    gen.add_argument("--batch-size", type=int, default=16, help="prompts decoded together by the local model")
    _add_server_args(gen, "generate")
    gen.add_argument("--endpoint", default="chat", choices=["chat", "completions"],
                     help="the server's chat completions, or completions on the prompt the local template renders")
    gen.add_argument("--top-logprobs", type=int, default=5, help="alternatives the server reports per token")

    propose = commands.add_parser("propose", help="run a hint model and attach its proposals as hints")
    _add_model_args(propose)
    propose.add_argument("--hint-model", required=True, choices=list(HINT_MODELS),
                         help="a registered hint model (opd_studio.hints.HINT_MODELS)")
    propose.add_argument("--input", required=True, help="JSONL records with rollouts")
    propose.add_argument("--output", required=True, help="JSONL records with proposed hints added")
    propose.add_argument("--style", choices=["nudge", "reveal"], default=None,
                         help="hint style of the verifiers that have one (arithmetic, answer, reference)")
    propose.add_argument("--critic-url", default=None,
                         help="OpenAI-compatible base URL for the critic (default: $OPD_CRITIC_BASE_URL, else --model)")
    propose.add_argument("--critic-model", default=None, help="model name to send to the critic endpoint")

    serve = commands.add_parser("serve", help="serve the model as an OpenAI-compatible chat endpoint")
    _add_model_args(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    score = commands.add_parser("score", help="per-token probabilities before and after each record's hints")
    _add_model_args(score)
    score.add_argument("--input", required=True,
                       help="records with hints: JSONL, Parquet, a `datasets` folder or hf://datasets/owner/name")
    score.add_argument("--output", required=True,
                       help=".jsonl (one token a line) or .parquet; run again with the same output to resume")
    score.add_argument("--batch-size", type=int, default=16, help="sequences per batched forward pass")
    score.add_argument("--span", default="turn", choices=["error", "turn", "response"], help="loss span")
    score.add_argument("--top-k", type=int, default=5,
                       help="alternatives listed per token (with --base-url: also what entropy and KL are computed "
                            "on, the top k plus a tail bin; at most 20)")
    _add_server_args(score, "score")
    score.add_argument("--placebo", default=None, metavar="TEXT|default",
                       help="also score a content-free hint at each hint's place and write the placebo columns: "
                            "'default' (each hint's stored placebo, else one built from its frame) or a text")

    _add_train_parser(commands)

    runs = commands.add_parser("runs", help="training runs in the store: list, use, reset, show").add_subparsers(
        dest="action", required=True)
    runs.add_parser("list", help="every run: settings, how it ended, drift, which one is in use")
    runs.add_parser("use", help="make run N the active weights (the studio and --run use them)").add_argument(
        "run", type=int)
    runs.add_parser("reset", help="back to the base weights")
    runs.add_parser("show", help="one run's settings and per-step metrics").add_argument("run", type=int)

    curated = commands.add_parser("curated", help="the curated set: list, export, import, revisions, restore")
    actions = curated.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="records with their status, prompt, answer and hint")
    listing.add_argument("--status", choices=["all", "pending", "accepted", "rejected"], default="accepted")
    export = actions.add_parser("export", help="write the curated set to a file")
    export.add_argument("--output", required=True, help="the file (or folder, for datasets formats)")
    export.add_argument("--format", default=None, choices=["jsonl", "parquet", "datasets", "trl-sdft", "teacher-topk"],
                        help="jsonl, parquet (default: from the suffix), datasets (a load_from_disk folder), "
                             "trl-sdft (prompt + privileged_context, for TRL's SDFT/SDPO trainers), teacher-topk "
                             "(the hinted teacher's top-k per target position; runs --model)")
    export.add_argument("--status", choices=["all", "pending", "accepted", "rejected"], default="accepted",
                        help="jsonl / parquet / datasets: which records (trl-sdft and teacher-topk: the curated set)")
    export.add_argument("--top-k", type=int, default=20, help="teacher-topk: token ids kept per position")
    _add_model_args(export)
    imported = actions.add_parser("import", help="bring in a file: a curated export keeps its review status, plain "
                                                 "rollouts go to the review queue; reviewed records are never replaced")
    imported.add_argument("file")
    actions.add_parser("revisions", help="every version of a record").add_argument("id")
    restore = actions.add_parser("restore", help="make an earlier revision of a record current (nothing is lost)")
    restore.add_argument("id")
    restore.add_argument("rev", type=int)
    delete = actions.add_parser("delete", help="delete a record (soft: --undo brings it back)")
    delete.add_argument("id")
    delete.add_argument("--undo", action="store_true")

    app = commands.add_parser("app", help="open the studio in the browser")
    app.add_argument("--host", default=None, help="default 127.0.0.1 (GRADIO_SERVER_NAME)")
    app.add_argument("--port", type=int, default=None, help="default 7860 (GRADIO_SERVER_PORT)")
    app.add_argument("--base-url", default=None,
                     help="no model in this process: generate and score through this server (…/v1: opd-studio serve, "
                          "vLLM, llama.cpp); --model supplies the tokenizer (OPD_STUDIO_BASE_URL)")
    app.add_argument("--model", default=None, help="the model (or, with --base-url, its tokenizer); OPD_STUDIO_MODEL")
    return parser


def _number_or_none(kind, text: str):
    return None if text.lower() == "none" else kind(text)


def _train_flags() -> argparse.ArgumentParser:
    """Every `TrainConfig` field as a flag (transformers' HfArgumentParser; help from each field's metadata)."""
    from transformers import HfArgumentParser

    from .train import TrainConfig

    flags = HfArgumentParser(TrainConfig, add_help=False)
    for action in flags._actions:  # "none" for the settings whose default is None (no top-k, no drift stop)
        if action.dest in ("top_k", "drift_threshold", "max_grad_norm") and action.type is not None:
            action.type = functools.partial(_number_or_none, action.type)
    return flags


def _add_loop_parser(commands, flags: argparse.ArgumentParser) -> None:
    """`loop`: rounds of regenerate → propose → train from the last weights (rounds.py), with every train flag."""
    from .hints import HINT_MODELS

    loop = commands.add_parser("loop", parents=[flags], help="rounds of the on-policy loop: regenerate, propose "
                                                             "hints, train from the last round's weights",
                               description="Each round regenerates the prompts (--input, plus those of the store's "
                                           "records) with the active weights, runs --hint-model on the answers, "
                                           "queues its proposals (or accepts them: --accept verifier), keeps right "
                                           "answers as anchors, trains from the active weights and makes the run "
                                           "active. --rounds counts the rounds that lead to the active weights, so "
                                           "a killed loop run again goes on after its last finished round.")
    _add_model_args(loop, weights=False)
    loop.add_argument("--input", required=True, help="prompts (records; an assistant turn is answered again): JSONL, "
                                                     "Parquet, a `datasets` folder or hf://datasets/owner/name")
    loop.add_argument("--rounds", type=int, required=True, help="rounds in all (finished ones are not run again)")
    loop.add_argument("--hint-model", default="answer", choices=list(HINT_MODELS),
                      help="the hint model that reads each answer")
    loop.add_argument("--accept", choices=["verifier"], default=None,
                      help="accept the hint model's proposals as proposed (default: they go to the review queue)")
    loop.add_argument("--hint-placement", choices=list(PROPOSAL_PLACEMENTS), default="feedback",  # RoundConfig's
                      help="place the proposals as a feedback turn before the answer (default: there the teacher "
                           "continues the student's own sentence) or inline, as the hint model proposes them")
    loop.add_argument("--samples", type=int, default=0, help="sampled answers per prompt besides the greedy one")
    loop.add_argument("--max-new-tokens", type=int, default=64)
    loop.add_argument("--heldout", help="prompts measured after each round, never trained on (default: the demo "
                                        "held-out tasks of the curated families)")
    loop.add_argument("--output", help="JSONL: the answers regenerated after the last round")
    _add_trackio_args(loop, "each round's training")


def _add_trackio_args(parser, what: str) -> None:
    parser.add_argument("--report-to", default="none", choices=["none", "trackio"],
                        help=f"also report {what} to a tracker, step by step: trackio (local: trackio show "
                             "--project PROJECT)")
    parser.add_argument("--trackio-project", default="opd-studio", help="the trackio project (default opd-studio)")
    parser.add_argument("--run-name", default=None, help="the run's name in the tracker (default: trackio's own)")
    parser.add_argument("--trackio-space", default=None, metavar="OWNER/SPACE",
                        help="log to this Hugging Face Space's trackio dashboard instead of only locally")
    parser.add_argument("--trackio-dataset", default=None, metavar="OWNER/DATASET",
                        help="with --trackio-space: keep the logs in this Hugging Face dataset")


def _trackio_target(args):
    from .tracking import TrackioTarget

    return TrackioTarget(args.trackio_project, args.run_name, args.trackio_space, args.trackio_dataset)


def _add_train_parser(commands) -> None:
    """`train`: every `TrainConfig` field is a flag."""
    flags = _train_flags()
    _add_loop_parser(commands, flags)
    train = commands.add_parser("train", parents=[flags], help="train on the curated set; the run is recorded in the "
                                                               "store and becomes the active weights",
                                description="Train on the store's curated set (accepted records, accepted hints), or "
                                            "on --data. Runs under `accelerate launch` unchanged.")
    _add_model_args(train, weights=False)
    train.add_argument("--data", help="train on this JSONL instead of the store's curated set")
    train.add_argument("--unreviewed", action="store_true",
                       help="with --data: also train on hints no one accepted (status proposed or edited)")
    train.add_argument("--heldout", help="JSONL records only measured for drift (default: the demo held-out rollouts "
                                         "of the curated records' families)")
    train.add_argument("--no-heldout", action="store_true", help="measure no held-out drift")
    train.add_argument("--out", help="also copy the run (adapter + run.json) to this directory")
    train.add_argument("--merge", action="store_true", help="with --out: also write the merged model to OUT/merged")
    train.add_argument("--force", action="store_true", help="save even when drift is over the threshold")
    train.add_argument("--keep-weights", action="store_true", help="record the run but keep the active weights")
    _add_trackio_args(train, "the run")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .model import ModelLoadError
    from .trajectory import TrajectoryError

    from .train import DriftError

    commands = {"generate": _generate, "score": _score, "propose": _propose, "serve": _serve, "train": _train,
                "loop": _loop,
                "runs": _runs, "curated": _curated, "app": _app}
    try:
        commands[args.command](args)
    except (RecordError, TrajectoryError, ModelLoadError, DriftError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # a one-line error even for the unexpected; --debug is what tracebacks are for
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _load(args):
    """The model and tokenizer of --model, carrying --run N's or --adapter's weights when given."""
    from .model import load_model

    _quiet_transformers()
    model, tokenizer = load_model(args.model, args.device, args.dtype, trust_remote_code=args.trust_remote_code)
    adapter = getattr(args, "adapter", None)
    if getattr(args, "run", None) is not None:
        run = _workspace().store.run(args.run)
        if run is None or not run["adapter_path"]:
            raise ValueError(f"run {args.run} has no saved weights in {_workspace().store.path} "
                             "(see opd-studio runs list)")
        adapter = run["adapter_path"]
    if adapter:
        from .adapters import load_adapter

        try:
            model = load_adapter(model, adapter)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
    return model, tokenizer


def _workspace():
    from .workspace import Workspace

    return Workspace.open()


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _generate(args) -> None:
    import os

    from .exports import read_input
    from .headless import generate_file
    from .rollout import SamplingConfig

    records = read_input(args.input)
    if args.samples < 1 or args.batch_size < 1:
        raise ValueError("--samples and --batch-size must be at least 1")
    configs = [SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              seed=args.seed + n) for n in range(args.samples)]
    remote, model = None, None
    if args.base_url:
        from .remote import RemoteConfig, tokenizer_for

        remote = RemoteConfig(args.base_url, args.remote_model, os.environ.get(args.api_key_env), args.endpoint,
                              args.top_logprobs, args.concurrency)
        _quiet_transformers()
        tokenizer = tokenizer_for(args.model, trust_remote_code=args.trust_remote_code)
    else:
        model, tokenizer = _load(args)
    try:
        summary = generate_file(records, args.output, configs, tokenizer=tokenizer, model=model, remote=remote,
                                batch_size=args.batch_size)
    except KeyboardInterrupt:
        print("interrupted: the finished rollouts are kept; run the same command again to resume", file=sys.stderr)
        raise
    print(summary.line("generated", args.output), file=sys.stderr)


def _score(args) -> None:
    import os

    from .exports import read_input
    from .headless import score_file

    records = read_input(args.input)
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    client = model = None
    if args.base_url:
        if args.run is not None or args.adapter:
            raise ValueError("--run and --adapter choose local weights; with --base-url the server's model scores "
                             "(serve the trained weights: opd-studio serve --run N)")
        from .served import served_client
        from .remote import tokenizer_for

        _quiet_transformers()
        tokenizer = tokenizer_for(args.model, trust_remote_code=args.trust_remote_code)
        client = served_client(args.base_url, tokenizer, args.top_k, args.remote_model,
                               os.environ.get(args.api_key_env), args.concurrency)
    else:
        model, tokenizer = _load(args)
    try:
        summary = score_file(model, tokenizer, records, args.output, args.span, args.top_k, args.batch_size,
                             placebo=args.placebo, client=client)
    except KeyboardInterrupt:
        print("interrupted: the finished records are kept; run the same command again to resume", file=sys.stderr)
        raise
    print(summary.line("scored", args.output), file=sys.stderr)


def _propose(args) -> None:
    import os

    from .hints.propose import propose_record

    records = read_records(args.input)
    model, tokenizer = _load(args)  # the tokenizer places proposals in tokens; the model may be the critic
    factory = HINT_MODELS[args.hint_model]
    if needs_model(args.hint_model):
        from .hints.critic import LocalChat, OpenAIChat

        url = args.critic_url or os.environ.get("OPD_CRITIC_BASE_URL")
        if url:
            hint_model = factory(OpenAIChat(url, args.critic_model or os.environ.get("OPD_CRITIC_MODEL", "default"),
                                            os.environ.get("OPD_CRITIC_API_KEY")))
        else:
            hint_model = factory(LocalChat(model, tokenizer))
    else:
        has_style = "style" in getattr(factory, "__dataclass_fields__", {})
        hint_model = factory(**({"style": args.style} if args.style and has_style else {}))
    updated, found = [], 0
    for record in records:
        record, result = propose_record(hint_model, record, tokenizer)
        updated.append(record)
        found += len(result.proposals)
        print(f"{record.id}: {result.reason or f'{len(result.proposals)} proposal(s)'}", file=sys.stderr)
    write_records(args.output, updated)
    print(f"{found} proposal(s) on {len(records)} records → {args.output}", file=sys.stderr)


def _serve(args) -> None:
    from .serve import make_server

    model, tokenizer = _load(args)
    server = make_server(model, tokenizer, args.host, args.port)
    print(f"serving {model.config.name_or_path} on http://{args.host}:{server.server_port}/v1", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


# ------------------------------------------------------------------------------------------------------------------
# The workspace: train, runs, curated, app


def _train(args) -> None:
    import dataclasses
    import math
    import os
    import shutil

    import torch
    from accelerate import PartialState

    from .metrics import StepMetrics
    from .model import load_model
    from .train import TrainConfig, train
    from .workspace import heldout_records

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    workspace = _workspace()
    if args.data:
        records = read_records(args.data)
        unreviewed = sum(h.status in ("proposed", "edited") for r in records for h in r.hints)
        if unreviewed and not args.unreviewed:
            raise ValueError(f"{args.data} has {unreviewed} hint(s) no one accepted (status proposed or edited): "
                             "review them first (opd-studio curated import, then the studio), or pass --unreviewed "
                             "to train on them as they are")
        keep = ("accepted", "proposed", "edited") if args.unreviewed else ("accepted",)
        for record in records:
            record.hints = [h for h in record.hints if h.status in keep]
    else:
        records = workspace.training_records()
        if not records:
            raise ValueError(f"the curated set in {workspace.store.path} is empty: accept hinted records in the "
                             "studio, import an export (opd-studio curated import FILE), or pass --data")
    heldout = [] if args.no_heldout else read_records(args.heldout) if args.heldout else heldout_records(records)
    # Without CUDA, processes started by `accelerate launch --multi_gpu` (torchrun) form a CPU (gloo) group only
    # when the state is created with cpu=True; `accelerate launch --cpu` starts a single process.
    state = PartialState(cpu=not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower()
                         in ("1", "true", "yes"))
    _quiet_transformers()
    device = "cpu" if state.device.type == "cpu" else str(state.device)
    model, tokenizer = load_model(args.model, device=device, dtype=args.dtype,
                                  trust_remote_code=args.trust_remote_code)

    tracker = None
    if args.report_to == "trackio" and state.is_main_process:
        from .tracking import TrackioReporter

        tracker = TrackioReporter(_trackio_target(args),
                                  {**dataclasses.asdict(config), "model": args.model,
                                   "data": args.data or "curated set", "records": len(records),
                                   "heldout_records": len(heldout)})

    def report(row: StepMetrics) -> None:
        print(f"step {row.step:>3}  loss {row.loss:.4f}  drift {row.drift:.4f}"
              + (f"  held-out {row.drift_heldout:.4f}" if not math.isnan(row.drift_heldout) else "")
              + f"  {row.seconds:.2f}s", file=sys.stderr, flush=True)
        if tracker:
            tracker.log(row)

    try:
        result = train(model, tokenizer, records, config, heldout=heldout or None, on_step=report)
    finally:
        if tracker:
            tracker.finish()
            print(f"reported to {tracker.where()}", file=sys.stderr)
    if state.is_main_process and result.placebo_defaulted:
        print(f"{len(result.placebo_defaulted)} of {len(records)} records had no stored placebo: used the default "
              "(records.default_placebo)", file=sys.stderr)
    if state.is_main_process:
        outcome = workspace.register_run(result, tokenizer, activate=not args.keep_weights, force=args.force)
        print(f"{outcome.message} ({result.steps} steps, stopped by {result.stopped})", file=sys.stderr)
        if not outcome.saved:
            raise ValueError(outcome.message)
        if args.out:
            from .adapters import export_merged

            source = workspace.store.runs_dir / f"run-{outcome.run_id}"
            shutil.copytree(source, args.out, dirs_exist_ok=True)
            if args.merge:
                export_merged(result.model, tokenizer, Path(args.out) / "merged")
            print(f"copied to {args.out}", file=sys.stderr)
    state.wait_for_everyone()


def _loop(args) -> None:
    import dataclasses

    from .exports import read_input
    from .model import load_model
    from .rounds import RoundConfig, active_round, answered, as_prompt, prompt_key, rounds_done, run_round
    from .train import TrainConfig
    from .workspace import Weights

    prompts = [as_prompt(r) for r in read_input(args.input)]
    heldout = [as_prompt(r) for r in read_input(args.heldout)] if args.heldout else None
    if not prompts:
        raise ValueError(f"{args.input} holds no prompts")
    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    train = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    config = RoundConfig(hint_model=args.hint_model, accept=args.accept, hint_placement=args.hint_placement,
                         samples=args.samples, max_new_tokens=args.max_new_tokens, train=train,
                         report_to=args.report_to, trackio=_trackio_target(args))
    workspace = _workspace()
    done = rounds_done(workspace)
    if done >= args.rounds:
        print(f"{done} of {args.rounds} rounds are done already (the active run is round {done}); ask for more "
              "with a larger --rounds", file=sys.stderr)
    else:
        _quiet_transformers()
        model, tokenizer = load_model(args.model, args.device, args.dtype, trust_remote_code=args.trust_remote_code)
        weights = Weights(model, tokenizer)
        if done:
            print(f"resuming after round {done} (run {workspace.store.active_run()})", file=sys.stderr)
        for number in range(done + 1, args.rounds + 1):
            last = None
            for progress in run_round(workspace, weights, config, prompts, heldout):
                last = progress
                if not progress.history or progress.outcome is not None:
                    print(f"[{number}/{args.rounds}] {progress.status}", file=sys.stderr, flush=True)
                elif progress.history[-1].step > 0:
                    print(f"[{number}/{args.rounds}]   {progress.status}", file=sys.stderr, flush=True)
            if last is None or last.round is None:
                raise ValueError(f"round {number} did not finish: {last.status if last else 'no report'}")
        if args.report_to == "trackio":
            print(f"each round reported to trackio (trackio show --project {args.trackio_project!r})",
                  file=sys.stderr)
    if args.output:
        last = active_round(workspace)
        final = last.answers.get("curated", {}) if last else {}
        keyed = {prompt_key(p): p for p in prompts}
        write_records(args.output, [answered(keyed[k], final[k]) for k in keyed if k in final])
        print(f"the answers after round {rounds_done(workspace)} → {args.output}", file=sys.stderr)


def _runs(args) -> None:
    import pandas as pd

    from .metrics import load_history

    workspace = _workspace()
    if args.action == "list":
        table = workspace.runs_table()
        print(table.to_string(index=False) if len(table) else f"no runs yet in {workspace.store.path}")
    elif args.action == "use":
        workspace.use_run(args.run)
        print(f"run {args.run} is now the active weights (the studio and --run use them)", file=sys.stderr)
    elif args.action == "reset":
        workspace.use_run(None)
        print("back on the base weights", file=sys.stderr)
    elif args.action == "show":
        run = workspace.store.run(args.run)
        if run is None:
            raise ValueError(f"there is no run {args.run} (see opd-studio runs list)")
        print(json.dumps(run["config"], indent=1))
        steps = pd.DataFrame([{k: v for k, v in row.to_dict().items() if k != "records"}
                              for row in load_history(run["metrics"])])
        print(steps.to_string(index=False))


def _curated(args) -> None:
    workspace = _workspace()
    status = None if getattr(args, "status", None) == "all" else getattr(args, "status", None)
    if args.action == "list":
        table = workspace.curated_table(status)
        print(table.to_string(index=False) if len(table) else "no records")
    elif args.action == "export":
        count = _export(args, workspace, status)
        print(f"exported {count} record(s) → {args.output}", file=sys.stderr)
    elif args.action == "import":
        print(workspace.import_file(args.file).message(), file=sys.stderr)
    elif args.action == "revisions":
        print(workspace.revisions(args.id).to_string(index=False))
    elif args.action == "restore":
        rev = workspace.restore(args.id, args.rev)
        print(f"{args.id}: revision {args.rev} restored as revision {rev}", file=sys.stderr)
    elif args.action == "delete":
        (workspace.store.restore if args.undo else workspace.store.delete)(args.id)
        print(f"{args.id}: {'restored' if args.undo else 'deleted (opd-studio curated delete --undo brings it back)'}",
              file=sys.stderr)


def _export(args, workspace, status: str | None) -> int:
    """Formats that carry records (jsonl, parquet, datasets) export every record of `status`, each marked with its
    review status; the training formats (trl-sdft, teacher-topk) export the curated set as training sees it."""
    from .exports import export_curated, write_teacher_topk

    fmt = args.format or ("parquet" if str(args.output).endswith(".parquet") else "jsonl")
    if fmt in ("jsonl", "parquet") and not str(args.output).endswith(f".{fmt}"):
        raise ValueError(f"--format {fmt} writes a .{fmt} file; name the output accordingly")
    if fmt in ("jsonl", "parquet", "datasets"):
        return workspace.export(args.output, status, fmt)
    if status != "accepted":
        raise ValueError(f"--format {fmt} exports the curated set (accepted records); leave --status out")
    records = workspace.training_records()
    if not records:
        raise ValueError(f"the curated set in {workspace.store.path} is empty")
    if fmt == "trl-sdft":
        return export_curated(records, fmt, args.output, tokenizer=_load(args)[1])
    from .teacher_topk import teacher_topk_rows

    model, tokenizer = _load(args)
    return write_teacher_topk(teacher_topk_rows(model, tokenizer, records, top_k=args.top_k), args.output)


def _app(args) -> None:
    import os

    # read by ui.common when it is imported
    if args.base_url:
        os.environ["OPD_STUDIO_BASE_URL"] = args.base_url
    if args.model:
        os.environ["OPD_STUDIO_MODEL"] = args.model
    from .ui import build_app, launch

    options = {k: v for k, v in (("server_name", args.host), ("server_port", args.port)) if v is not None}
    launch(build_app(), **options)
