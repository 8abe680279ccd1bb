"""A minimal OpenAI-compatible chat server for a model the core can load (`python -m opd_studio serve`).

    GET  /v1/models             → {"data": [{"id": <model>}]}
    POST /v1/chat/completions   → {"choices": [{"message": …, "logprobs": …, "finish_reason": …}], "usage": …}

What the official `openai` client sends, to the OpenAI spec: `max_tokens` / `max_completion_tokens`,
`temperature`, `top_p`, `seed`, `tools`; `logprobs` + `top_logprobs` (0-20: per generated token its text, log-prob,
UTF-8 `bytes` and the top alternatives, from the model's raw distribution); `stream` (server-sent events, one chunk
per token with its logprobs, then `[DONE]`; `stream_options.include_usage` adds the usage chunk). The turn is
decoded in full before the first chunk is sent: the stream has the spec's shape, not lower latency. vLLM's
`return_tokens_as_token_ids` is honoured too ("token_id:123"), so a client can keep the exact sampled ids. `n` > 1,
`stop` and penalties are refused with a 400 rather than ignored.

It lets the LLM critic (or any OpenAI client) use the studio's own model over HTTP, the same way it would use a
vLLM or TGI server. One request at a time (the model is shared), loopback by default, stdlib only; not meant as a
production inference server.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .rollout import SamplingConfig, generate, prompt_ids
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
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._error(404, f"no route {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                return self._error(413, f"request body over {MAX_BODY_BYTES} bytes")
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
