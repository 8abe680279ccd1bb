"""A minimal OpenAI-compatible chat server for a model the core can load (`python -m opd_studio serve`).

    GET  /v1/models             → {"data": [{"id": <model>}]}
    POST /v1/chat/completions   → {"choices": [{"message": {"role": "assistant", "content": …}}], "usage": …}

It lets the LLM critic (or any OpenAI client) use the studio's own model over HTTP, the same way it would use a
vLLM or TGI server. One request at a time (the model is shared), loopback by default, stdlib only; not meant as a
production inference server.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .rollout import SamplingConfig, generate

MAX_BODY_BYTES = 1_000_000


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
                self._send(200, {"object": "list", "data": [{"id": model_id, "object": "model"}]})
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
                messages = request["messages"]
                config = SamplingConfig(max_new_tokens=int(request.get("max_tokens") or 128),
                                        temperature=float(request.get("temperature") or 0.0),
                                        top_p=float(request.get("top_p") or 1.0), seed=int(request.get("seed") or 0))
            except (ValueError, KeyError, TypeError) as exc:
                return self._error(400, f"bad request: {exc}")
            try:
                with lock:
                    record, table = generate(model, tokenizer, messages, config, tools=request.get("tools"))
            except ValueError as exc:
                return self._error(400, str(exc))
            finished = record.meta["finished"]
            self._send(200, {
                "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": model_id,
                "choices": [{"index": 0, "finish_reason": "stop" if finished else "length",
                             "message": {"role": "assistant", "content": record.messages[-1]["content"]}}],
                "usage": {"completion_tokens": len(table)},
            })

    return ThreadingHTTPServer((host, port), Handler)
