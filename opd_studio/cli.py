"""`python -m opd_studio …`: the engine on JSONL files, for the rollouts of a real training run.

    python -m opd_studio generate --input prompts.jsonl --output rollouts.jsonl [--temperature 0.7 --samples 4]
    python -m opd_studio propose  --hint-model arithmetic --input rollouts.jsonl --output proposed.jsonl
    python -m opd_studio score    --input proposed.jsonl --output scores.jsonl   (or .parquet)
    python -m opd_studio serve    --port 8000     (an OpenAI-compatible endpoint for the model, on loopback)

Every command reads everything and validates before it writes, and writes through a temporary file, so a failure
leaves no half-written output. Errors are one line on stderr and exit code 2 (bad input) or 1 (anything else).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .records import RecordError, read_records, write_atomic, write_records


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="'default', a hub id, a local directory or a .gguf file")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a model's own code to run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m opd_studio", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="sample an assistant turn for every record")
    _add_model_args(gen)
    gen.add_argument("--input", required=True, help="JSONL records (a trailing assistant message is replaced)")
    gen.add_argument("--output", required=True, help="JSONL records with the rollout and its exact token ids")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--samples", type=int, default=1, help="rollouts per record (seeds seed, seed+1, …)")

    propose = commands.add_parser("propose", help="run a hint model and attach its proposals as hints")
    _add_model_args(propose)
    propose.add_argument("--hint-model", required=True, choices=["arithmetic", "tools", "reference", "critic"])
    propose.add_argument("--input", required=True, help="JSONL records with rollouts")
    propose.add_argument("--output", required=True, help="JSONL records with proposed hints added")
    propose.add_argument("--style", choices=["nudge", "reveal"], default=None, help="arithmetic hint style")
    propose.add_argument("--critic-url", default=None,
                         help="OpenAI-compatible base URL for the critic (default: $OPD_CRITIC_BASE_URL, else --model)")
    propose.add_argument("--critic-model", default=None, help="model name to send to the critic endpoint")

    serve = commands.add_parser("serve", help="serve the model as an OpenAI-compatible chat endpoint")
    _add_model_args(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    score = commands.add_parser("score", help="per-token probabilities before and after each record's hints")
    _add_model_args(score)
    score.add_argument("--input", required=True, help="JSONL records with hints")
    score.add_argument("--output", required=True, help=".jsonl (one token a line) or .parquet")
    score.add_argument("--span", default="turn", choices=["error", "turn", "response"], help="loss span")
    score.add_argument("--top-k", type=int, default=5, help="alternatives listed per token")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .model import ModelLoadError
    from .trajectory import TrajectoryError

    try:
        if args.command == "generate":
            _generate(args)
        elif args.command == "score":
            _score(args)
        elif args.command == "propose":
            _propose(args)
        elif args.command == "serve":
            _serve(args)
    except (RecordError, TrajectoryError, ModelLoadError, ValueError) as exc:
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
    from .model import load_model

    _quiet_transformers()
    return load_model(args.model, args.device, args.dtype, trust_remote_code=args.trust_remote_code)


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _generate(args) -> None:
    from .rollout import SamplingConfig, generate

    records = read_records(args.input)
    if args.samples < 1:
        raise ValueError("--samples must be at least 1")
    configs = [SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              seed=args.seed + n) for n in range(args.samples)]
    model, tokenizer = _load(args)
    rollouts = []
    for record in records:
        for n, config in enumerate(configs):
            record_id = record.id if args.samples == 1 else f"{record.id}#{n}"
            rollout, _ = generate(model, tokenizer, record.messages, config, tools=record.tools,
                                  record_id=record_id, meta=record.meta)
            rollout.reference = record.reference
            rollouts.append(rollout)
        print(f"generated {record.id}", file=sys.stderr)
    write_records(args.output, rollouts)


def _score(args) -> None:
    import pandas as pd

    from .scoring import HintScorer
    from .trajectory import TrajectoryError, build_trajectory

    records = read_records(args.input)
    model, tokenizer = _load(args)
    tables = []
    for record in records:
        try:
            trajectory = build_trajectory(tokenizer, record)
            hints = [h for h in record.hints if h.status != "rejected"]
            table = HintScorer(model, tokenizer, trajectory, top_k=args.top_k).score(hints, args.span, record.error)
        except TrajectoryError as exc:
            raise TrajectoryError(f"record {record.id!r}: {exc}") from None
        table.insert(0, "record_id", record.id)
        tables.append(table)
    scores = pd.concat(tables, ignore_index=True)
    output = Path(args.output)
    if output.suffix == ".parquet":
        # Arrow has no mixed-type lists: the [token_text, prob] pairs travel as JSON text in Parquet.
        flat = scores.assign(**{c: scores[c].map(json.dumps) for c in ("top_before", "top_after")})
        write_atomic(output, lambda tmp: flat.to_parquet(tmp, index=False))
    else:
        rows = scores.astype(object).where(scores.notna(), None).to_dict("records")
        write_atomic(output, lambda tmp: Path(tmp).write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"))
    print(f"scored {len(records)} records, {len(scores)} tokens → {output}", file=sys.stderr)


def _propose(args) -> None:
    import os

    from .hints.propose import propose_record

    records = read_records(args.input)
    model, tokenizer = _load(args)  # the tokenizer places proposals in tokens; the model may be the critic
    if args.hint_model == "critic":
        from .hints.critic import LLMCritic, LocalChat, OpenAIChat

        url = args.critic_url or os.environ.get("OPD_CRITIC_BASE_URL")
        if url:
            hint_model = LLMCritic(OpenAIChat(url, args.critic_model or os.environ.get("OPD_CRITIC_MODEL", "default"),
                                              os.environ.get("OPD_CRITIC_API_KEY")))
        else:
            hint_model = LLMCritic(LocalChat(model, tokenizer))
    else:
        from .hints import HINT_MODELS

        options = {"style": args.style} if args.style and args.hint_model == "arithmetic" else {}
        hint_model = HINT_MODELS[args.hint_model](**options)
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
