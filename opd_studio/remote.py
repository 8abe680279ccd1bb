"""Rollouts from any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp's server, `opd_studio serve`).

`RemoteGenerator(RemoteConfig(base_url, …), tokenizer).generate(jobs)` sends each job as a chat completion (or a
legacy completion on the prompt the local chat template renders) with `logprobs` and `top_logprobs`, and turns
each answer into a Record whose `response_token_ids` are the ids the server sampled, found in this order:

1. `server`: the server returned them (vLLM's `return_tokens_as_token_ids`, always asked for: "token_id:123").
2. `bytes`: every returned token's UTF-8 `bytes` is exactly one token of the local vocabulary and together they
   decode to the content (same vocabulary as the server's model; the tokens, not a re-tokenization).
3. `matched`: the server sent token texts without bytes (llama.cpp's server does; a character split over tokens
   then loses its bytes), and the local tokenization of the content agrees with them token for token.
4. `retokenized`: none of these; the record has no ids and scoring re-tokenizes the content, which may differ from
   what was sampled. `meta["remote"]["token_ids"]` says which; the CLI says so on stderr.

The server's own log-probs (of the sampled token and its top alternatives, under the server's sampling
distribution) are kept in `meta["remote"]`. The conversation is rendered by the server's chat template; scoring
renders it with the local one, so only the response tokens are guaranteed to be the server's.

Failures are `RemoteError` (a `ValueError`: the CLI prints one line): the server cannot be reached, answers with an
error, or returns no logprobs.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterator

from .batching import GenerationJob
from .records import Record
from .token_bytes import ids_from_bytes, token_bytes

ENDPOINTS = ("chat", "completions")
_TOKEN_ID = re.compile(r"^token_id:(\d+)$")


class RemoteError(ValueError):
    """The server could not give a rollout that can be scored; the message says why and what to do."""


@dataclass
class RemoteConfig:
    base_url: str  # ".../v1"
    model: str | None = None  # None: the first model the server lists
    api_key: str | None = None
    endpoint: str = "chat"  # "chat": /chat/completions; "completions": /completions on the locally rendered prompt
    top_logprobs: int = 5
    concurrency: int = 8  # requests in flight: the server batches them
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint {self.endpoint!r} is not one of {', '.join(ENDPOINTS)}")
        if not 0 <= self.top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be between 0 and 20, got {self.top_logprobs}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")


@dataclass
class SampledToken:
    text: str
    raw: bytes | None  # the token's bytes, where the server gave them (chat logprobs do)
    logprob: float
    top: list[tuple[str, float]]


class RemoteGenerator:
    def __init__(self, config: RemoteConfig, tokenizer):
        self.config, self.tokenizer = config, tokenizer
        self.base_url = config.base_url.rstrip("/")

    # -- HTTP ---------------------------------------------------------------------------------------------------

    def call(self, path: str, payload: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            body = exc.read()[:300].decode("utf-8", "replace")
            try:
                body = json.loads(body)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                pass
            message = " ".join(str(body).split())
            raise RemoteError(f"{self.base_url}{path} answered HTTP {exc.code}: {message}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"cannot reach {self.base_url} ({reason}); is the server running at that URL?") from None
        except json.JSONDecodeError:
            raise RemoteError(f"{self.base_url}{path} did not answer with JSON; is it an OpenAI-compatible API "
                              "(the base URL usually ends in /v1)?") from None

    def model_name(self) -> str:
        """The model to ask for: the configured one, else the first the server lists (also checks it answers)."""
        if self.config.model:
            return self.config.model
        listed = self.call("/models")
        try:
            self.config.model = listed["data"][0]["id"]
        except (KeyError, IndexError, TypeError):
            raise RemoteError(f"{self.base_url}/models lists no model; pass the model name") from None
        return self.config.model

    # -- generation ---------------------------------------------------------------------------------------------

    def generate(self, jobs: list[GenerationJob]) -> Iterator[Record]:
        """One record per job, in order; requests run `concurrency` at a time."""
        self.model_name()
        if not jobs:
            return
        first = self.generate_one(jobs[0])  # a server without logprobs fails here, before the others are sent
        yield first
        with ThreadPoolExecutor(self.config.concurrency) as pool:
            yield from pool.map(self.generate_one, jobs[1:])

    def generate_one(self, job: GenerationJob) -> Record:
        messages = job.messages[:-1] if job.messages and job.messages[-1]["role"] == "assistant" else job.messages
        if not messages:
            raise ValueError(f"record {job.record_id!r}: a rollout needs at least one message to answer")
        config = job.config
        payload = {"model": self.model_name(), "max_tokens": config.max_new_tokens,
                   "temperature": config.temperature, "top_p": config.top_p, "seed": config.seed,
                   "return_tokens_as_token_ids": True}
        if self.config.endpoint == "chat":
            payload.update(messages=messages, logprobs=True, top_logprobs=self.config.top_logprobs)
            if job.tools:
                payload["tools"] = job.tools
            reply = self.call("/chat/completions", payload)
            content, reason, tokens = self._parse_chat(reply)
        else:
            from .rollout import prompt_ids

            prompt = self.tokenizer.decode(prompt_ids(self.tokenizer, messages, job.tools),
                                           skip_special_tokens=False, clean_up_tokenization_spaces=False)
            payload.update(prompt=prompt, logprobs=max(self.config.top_logprobs, 1))
            reply = self.call("/completions", payload)
            content, reason, tokens = self._parse_completion(reply)
        ids, source = self.token_ids(tokens, content)
        remote = {"base_url": self.base_url, "endpoint": self.config.endpoint, "token_ids": source,
                  "logprobs": [t.logprob for t in tokens],
                  "top_logprobs": [[[text, lp] for text, lp in t.top] for t in tokens]}
        record = Record(id=job.record_id, messages=[*messages, {"role": "assistant", "content": content}],
                        tools=job.tools,
                        meta={**job.meta, "model": self.model_name(), "sampling": asdict(config),
                              "finished": reason == "stop", "remote": remote},
                        response_token_ids=ids)
        record.reference = job.reference
        return record

    def _no_logprobs(self) -> RemoteError:
        return RemoteError(f"{self.base_url} returned no logprobs; generation through a server needs one that "
                           "supports logprobs/top_logprobs (vLLM, SGLang, TGI, llama.cpp's server do)")

    def _parse_chat(self, reply: dict) -> tuple[str, str, list[SampledToken]]:
        try:
            choice = reply["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise RemoteError(f"{self.base_url} sent no choices[0].message: {str(reply)[:200]}") from None
        if message.get("tool_calls"):
            raise RemoteError(f"{self.base_url} answered with tool calls, whose tokens it does not return; "
                              "use --endpoint completions for tool-calling rollouts")
        content = message.get("content") or ""
        entries = (choice.get("logprobs") or {}).get("content")
        if entries is None or (content and not entries):
            raise self._no_logprobs()
        tokens = [SampledToken(e["token"], bytes(e["bytes"]) if e.get("bytes") is not None else None,
                               float(e["logprob"]), [(t["token"], float(t["logprob"]))
                                                     for t in e.get("top_logprobs") or []])
                  for e in entries]
        return content, choice.get("finish_reason") or "stop", tokens

    def _parse_completion(self, reply: dict) -> tuple[str, str, list[SampledToken]]:
        try:
            choice = reply["choices"][0]
            content = choice["text"] or ""
        except (KeyError, IndexError, TypeError):
            raise RemoteError(f"{self.base_url} sent no choices[0].text: {str(reply)[:200]}") from None
        logprobs = choice.get("logprobs") or {}
        texts = logprobs.get("tokens")
        if texts is None or (content and not texts):
            raise self._no_logprobs()
        tops = logprobs.get("top_logprobs") or [None] * len(texts)
        tokens = [SampledToken(text, None, float(lp if lp is not None else float("nan")),
                               sorted(((t, float(v)) for t, v in (top or {}).items()), key=lambda x: -x[1]))
                  for text, lp, top in zip(texts, logprobs.get("token_logprobs") or [], tops)]
        return content, choice.get("finish_reason") or "stop", tokens

    # -- token ids ----------------------------------------------------------------------------------------------

    def token_ids(self, tokens: list[SampledToken], content: str) -> tuple[list[int] | None, str]:
        """(the sampled ids, how they were found), or (None, "retokenized")."""
        eos = self.tokenizer.eos_token_id
        matched = [_TOKEN_ID.match(t.text) for t in tokens]
        if tokens and all(matched):
            ids = [int(m.group(1)) for m in matched]
            if ids and ids[-1] == eos:
                ids = ids[:-1]
            if self._decode(ids) == content:
                return ids, "server"
        raw = [t.raw if t.raw is not None else t.text.encode("utf-8") for t in tokens]
        ids = ids_from_bytes(self.tokenizer, raw) if tokens else None
        if ids is not None:
            if ids and ids[-1] == eos:
                ids = ids[:-1]
            if ids and self._decode(ids) == content:
                return ids, "bytes"
        ids = self._aligned(tokens, content)
        return (ids, "matched") if ids is not None else (None, "retokenized")

    def _aligned(self, tokens: list[SampledToken], content: str) -> list[int] | None:
        """The local tokenization of `content` if it agrees with the server's tokens one for one: same count, and
        each server token's text is what the local token spells (servers that send text drop the bytes of a
        character split over tokens, so a partial token may come back as "" or "\ufffd")."""
        pieces = [t.text for t in tokens]
        if pieces and _TOKEN_ID.match(pieces[0] or ""):
            return None
        ids = self.tokenizer(content, add_special_tokens=False)["input_ids"]
        if len(ids) == len(pieces) + 1 and ids[-1] == self.tokenizer.eos_token_id:
            ids = ids[:-1]
        if not ids or len(ids) != len(pieces):
            return None
        for token_id, piece in zip(ids, pieces):
            spelled = token_bytes(self.tokenizer, token_id)
            if piece not in (spelled.decode("utf-8", "ignore"), spelled.decode("utf-8", "replace")):
                return None
        return ids

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def tokenizer_for(spec: str = "default", trust_remote_code: bool = False):
    """The tokenizer of a model spec, without loading a hub model's weights (the server holds those). The default
    model and GGUF files go through `load_model`, which finds their tokenizer in the dequantized cache."""
    from .model import DEFAULT_MODEL, ModelLoadError, load_model_cached

    spec = (spec or DEFAULT_MODEL).strip()
    if spec == DEFAULT_MODEL or spec.endswith(".gguf"):  # serialized: the studio's warm-up and a request may both ask
        return load_model_cached(spec, device="cpu")[1]
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer of {spec!r} ({str(exc).splitlines()[0]}); pass --model "
                             "with the served model's hub id or a local directory holding its tokenizer") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
