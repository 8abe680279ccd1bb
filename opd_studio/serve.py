"""A minimal OpenAI-compatible chat server for a model the core can load (`python -m opd_studio serve`).

    GET  /v1/models             → {"data": [{"id": <model>}]}
    POST /v1/chat/completions   → {"choices": [{"message": …, "logprobs": …, "finish_reason": …}], "usage": …}
    POST /v1/completions        → prompt log-probabilities (scoring): {"choices": [{"text", "logprobs",
                                  "prompt_logprobs", …}]}

What the official `openai` client sends, to the OpenAI spec: `max_tokens` / `max_completion_tokens`,
`temperature`, `top_p`, `seed`, `tools`; `logprobs` + `top_logprobs` (0-20: per generated token its text, log-prob,
UTF-8 `bytes` and the top alternatives, from the model's raw distribution); `stream` (server-sent events, one chunk
per token with its logprobs, then `[DONE]`; `stream_options.include_usage` adds the usage chunk). The turn is
decoded in full before the first chunk is sent: the stream has the spec's shape, not lower latency. vLLM's
`return_tokens_as_token_ids` is honoured too ("token_id:123"), so a client can keep the exact sampled ids. `n` > 1,
`stop` and penalties are refused with a 400 rather than ignored.

`/v1/completions` scores prompts, the way `served.ServedScorer` asks vLLM or llama.cpp's server to: `prompt` is
token ids (a list of ints, or a list of such lists; a string is tokenized without special tokens), `echo: true` +
`logprobs: k` gives the legacy `logprobs` object over the prompt (`tokens`, `token_logprobs`, `top_logprobs`,
`text_offset`; the first prompt token has none), and vLLM's `prompt_logprobs: k` gives per prompt position a map
"<token id>" → {logprob, rank, decoded_token} holding the prompt token (with its rank in the full vocabulary) and the
top k. `max_tokens` is 0 or 1 (one greedy token after the prompt, as vLLM needs at least one): it scores, it does
not generate; `/v1/chat/completions` generates.

It lets the LLM critic (or any OpenAI client) use the studio's own model over HTTP, the same way it would use a
vLLM or TGI server. One request at a time (the model is shared), loopback by default, stdlib only; not meant as a
production inference server.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from .alignment import predicting_rows
from .rollout import SamplingConfig, generate, prompt_ids
from .scoring import forward_reusing, logits_from_hidden, token_stats
from .token_bytes import token_bytes

MAX_BODY_BYTES = 1_000_000
MAX_TOP_LOGPROBS = 20
REFUSED = ("stop", "presence_penalty", "frequency_penalty", "logit_bias", "response_format")


class BadRequest(ValueError):
    pass


def parse_request(request: dict) -> tuple[SamplingConfig, dict]:
    """Sampling settings and response options from a chat completion request; BadRequest says what is wrong."""
    if not isinstance(request.get("messages"), list) or not request["messages"]:
        raise BadRequest("'messages' must be a non-empty list")
    if int(request.get("n") or 1) != 1:
        raise BadRequest("n > 1 is not supported; send one request per sample")
    for name in REFUSED:
        if request.get(name) not in (None, [], {}, 0, 0.0):
            raise BadRequest(f"'{name}' is not supported by this server")
    top = request.get("top_logprobs")
    top = 0 if top is None else int(top)
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise BadRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    logprobs = bool(request.get("logprobs"))
    if top and not logprobs:
        raise BadRequest("top_logprobs needs logprobs: true")
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens") or 128
    config = SamplingConfig(max_new_tokens=int(max_tokens),
                            temperature=float(1.0 if request.get("temperature") is None else request["temperature"]),
                            top_p=float(request.get("top_p") or 1.0), seed=int(request.get("seed") or 0),
                            top_k_alternatives=max(top, 1))
    options = {"logprobs": logprobs, "top_logprobs": top, "stream": bool(request.get("stream")),
               "include_usage": bool((request.get("stream_options") or {}).get("include_usage")),
               "token_ids": bool(request.get("return_tokens_as_token_ids"))}
    return config, options


def _entry(tokenizer, token_id: int, logprob: float, as_id: bool) -> dict:
    raw = token_bytes(tokenizer, token_id)
    token = f"token_id:{token_id}" if as_id else raw.decode("utf-8", errors="replace")
    return {"token": token, "logprob": logprob, "bytes": list(raw)}


def logprob_entries(tokenizer, table, n_content: int, top: int, as_id: bool) -> list[dict]:
    """OpenAI `logprobs.content`: one entry per content token (the end-of-turn token is not content)."""
    entries = []
    for row in table.head(n_content).itertuples():
        entry = _entry(tokenizer, row.token_id, row.logp, as_id)
        entry["top_logprobs"] = [_entry(tokenizer, t, lp, as_id) for t, lp in zip(row.top_ids[:top], row.top_logp)]
        entries.append(entry)
    return entries


def content_pieces(tokenizer, ids: list[int]) -> list[str]:
    """Per token, the text it completes: a token inside a multi-byte character adds "", the one that ends it adds
    the character, so the pieces join to the decoded content."""
    pieces, done = [], ""
    for k in range(len(ids)):
        text = tokenizer.decode(ids[: k + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if text.endswith("\ufffd") and k + 1 < len(ids):
            pieces.append("")
            continue
        pieces.append(text[len(done):])
        done = text
    return pieces


def parse_completion_request(request: dict, tokenizer) -> tuple[list[list[int]], dict]:
    """The prompts (token ids) and options of a scoring `/v1/completions` request; BadRequest says what is wrong."""
    prompt = request.get("prompt")
    if isinstance(prompt, str):
        prompts = [tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) and p and all(isinstance(t, int) for t in p)
                                                     for p in prompt):
        prompts = prompt
    else:
        raise BadRequest("'prompt' must be a string, a list of token ids, or a list of such lists")
    vocab = len(tokenizer)
    if any(not 0 <= t < vocab for p in prompts for t in p):
        raise BadRequest(f"a prompt token id is outside the vocabulary (0 … {vocab - 1})")
    if int(request.get("n") or 1) != 1:
        raise BadRequest("n > 1 is not supported")
    max_tokens = request.get("max_tokens")
    max_tokens = 16 if max_tokens is None else int(max_tokens)
    if max_tokens not in (0, 1):
        raise BadRequest("this server's /v1/completions scores prompts: max_tokens must be 0 or 1 "
                         "(generate with /v1/chat/completions)")
    counts = {}
    for name in ("logprobs", "prompt_logprobs"):
        value = request.get(name)
        counts[name] = None if value is None else int(value)
        if counts[name] is not None and not 0 <= counts[name] <= MAX_TOP_LOGPROBS:
            raise BadRequest(f"{name} must be between 0 and {MAX_TOP_LOGPROBS}")
    return prompts, {"echo": bool(request.get("echo")), "max_tokens": max_tokens, **counts,
                     "token_ids": bool(request.get("return_tokens_as_token_ids"))}


@torch.no_grad()
def prompt_logprobs(model, ids: list[int], top: int):
    """Per prompt position t ≥ 1: `scoring.TokenStats` of p(· | ids_<t) at the prompt token (the in-process scorer's
    own passes and statistics, so served and in-process figures are the same numbers), and the greedy next token."""
    hidden = forward_reusing(model, ids).hidden  # (T, H)
    logprobs = torch.log_softmax(logits_from_hidden(model, hidden), dim=-1)  # (T, V)
    scored = range(1, len(ids))  # every prompt token but the first has a row that predicts it
    stats = token_stats(logprobs[predicting_rows(scored)], torch.tensor(ids[1:], device=logprobs.device), max(top, 1))
    next_id = int(logprobs[-1].argmax())
    return stats, next_id, float(logprobs[-1, next_id])


def completion_choice(tokenizer, index: int, ids: list[int], options: dict, stats, next_id: int,
                      next_logp: float) -> dict:
    """One `choices[]` entry of a scoring completion: echoed text and logprobs, and/or vLLM's prompt_logprobs."""
    def key(token_id: int) -> str:
        return f"token_id:{token_id}" if options["token_ids"] else token_bytes(tokenizer, token_id).decode(
            "utf-8", errors="replace")

    generated = [next_id] if options["max_tokens"] else []
    choice = {"index": index, "finish_reason": "length", "logprobs": None,
              "text": tokenizer.decode((ids if options["echo"] else []) + generated, skip_special_tokens=False,
                                       clean_up_tokenization_spaces=False)}
    k = options["logprobs"]
    if k is not None:
        tokens = (ids if options["echo"] else []) + generated
        token_logprobs = ([None] + [float(v) for v in stats.logp] if options["echo"] else []) + [next_logp] * len(
            generated)
        tops = [None] if options["echo"] else []
        if options["echo"]:
            tops += [{key(int(t)): float(v) for t, v in zip(stats.top_ids[n, :k], stats.top_logp[n, :k])}
                     for n in range(len(ids) - 1)]
        tops += [{key(next_id): next_logp}] * len(generated)
        offsets, text = [], ""
        for token_id in tokens:
            offsets.append(len(text))
            text += tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        choice["logprobs"] = {"tokens": [key(t) for t in tokens], "token_logprobs": token_logprobs,
                              "top_logprobs": tops, "text_offset": offsets}
    k = options["prompt_logprobs"]
    if k is not None:
        entries = [None]
        for n, token_id in enumerate(ids[1:]):
            entry = {str(int(t)): {"logprob": float(v), "rank": r + 1, "decoded_token": key(int(t))}
                     for r, (t, v) in enumerate(zip(stats.top_ids[n, :k], stats.top_logp[n, :k]))}
            entry[str(token_id)] = {"logprob": float(stats.logp[n]), "rank": int(stats.rank[n]),
                                    "decoded_token": key(token_id)}
            entries.append(entry)
        choice["prompt_logprobs"] = entries
    return choice


def make_server(model, tokenizer, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    lock = threading.Lock()
    model_id = model.config.name_or_path

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test and CLI output clean
            pass

        def _send(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error"}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0,
                                                             "owned_by": "opd-studio"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:
            route = self.path.rstrip("/")
            if route not in ("/v1/chat/completions", "/v1/completions"):
                return self._error(404, f"no route {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                return self._error(413, f"request body over {MAX_BODY_BYTES} bytes")
            if route == "/v1/completions":
                return self._complete(length)
            try:
                request = json.loads(self.rfile.read(length))
                config, options = parse_request(request)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return self._error(400, f"bad request: {exc}")
            try:
                with lock:
                    record, table = generate(model, tokenizer, request["messages"], config,
                                             tools=request.get("tools"))
            except ValueError as exc:
                return self._error(400, str(exc))
            ids = record.response_token_ids
            finished = record.meta["finished"]
            n_content = len(ids) - 1 if finished else len(ids)
            entries = (logprob_entries(tokenizer, table, n_content, options["top_logprobs"], options["token_ids"])
                       if options["logprobs"] else None)
            prompt = len(prompt_ids(tokenizer, record.messages[:-1], request.get("tools")))
            usage = {"prompt_tokens": prompt, "completion_tokens": len(ids), "total_tokens": prompt + len(ids)}
            base = {"id": f"chatcmpl-{time.time_ns()}", "created": int(time.time()), "model": model_id}
            reason = "stop" if finished else "length"
            if options["stream"]:
                return self._stream(base, content_pieces(tokenizer, ids[:n_content]), entries, reason,
                                    usage if options["include_usage"] else None)
            self._send(200, {
                **base, "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": reason,
                             "message": {"role": "assistant", "content": record.messages[-1]["content"]},
                             "logprobs": {"content": entries} if entries is not None else None}],
                "usage": usage,
            })

        def _complete(self, length: int) -> None:
            try:
                prompts, options = parse_completion_request(json.loads(self.rfile.read(length)), tokenizer)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return self._error(400, f"bad request: {exc}")
            limit = getattr(model.config, "max_position_embeddings", None)
            if limit and max(map(len, prompts)) > limit:
                return self._error(400, f"a prompt is longer than the model's context ({limit} tokens)")
            choices = []
            with lock:
                for index, ids in enumerate(prompts):
                    top = max(options["logprobs"] or 0, options["prompt_logprobs"] or 0)
                    choices.append(completion_choice(tokenizer, index, ids, options,
                                                     *prompt_logprobs(model, ids, top)))
            generated = sum(1 for _ in prompts) * options["max_tokens"]
            prompt_tokens = sum(map(len, prompts))
            self._send(200, {"id": f"cmpl-{time.time_ns()}", "object": "text_completion", "created": int(time.time()),
                             "model": model_id, "choices": choices,
                             "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                                       "total_tokens": prompt_tokens + generated}})

        def _stream(self, base: dict, pieces: list[str], entries: list[dict] | None, reason: str,
                    usage: dict | None) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()

            def chunk(delta: dict, finish_reason=None, logprobs=None, **extra) -> None:
                payload = {**base, "object": "chat.completion.chunk", **extra,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                        "logprobs": logprobs}]}
                self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")

            chunk({"role": "assistant", "content": ""})
            for k, piece in enumerate(pieces):
                chunk({"content": piece}, logprobs={"content": [entries[k]]} if entries is not None else None)
            chunk({}, finish_reason=reason)
            if usage is not None:
                self.wfile.write(b"data: " + json.dumps({**base, "object": "chat.completion.chunk", "choices": [],
                                                         "usage": usage}).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return ThreadingHTTPServer((host, port), Handler)
