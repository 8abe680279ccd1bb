"""Scoring through a server: the student's and the hinted teacher's per-token log-probabilities from a serving engine
(vLLM, llama.cpp's server, `opd_studio serve`) instead of a model loaded in this process.

Each pass of `scoring.HintScorer` (the original trajectory, the hinted one, the placebo's) is one prompt sent as token
ids (never re-tokenized) to `/v1/completions`, which answers with prompt log-probabilities in one of two shapes:

* `prompt_logprobs` (vLLM): per prompt position, "<id>" → {logprob, rank, decoded_token} for the prompt token (with its
  rank in the whole vocabulary) and the top k.
* `echo` + `logprobs` (the legacy completions API; vLLM, llama.cpp's server): per prompt position the token's
  `token_logprobs` and a `top_logprobs` map of the top k, keyed "token_id:<id>" where the server honours vLLM's
  `return_tokens_as_token_ids`, else by token text (llama.cpp). The rank is known only when the token is in the top k.

The first request tries `prompt_logprobs` and falls back to `echo`; a server that gives neither gets one
`RemoteError` naming what it lacks. A server that takes only text prompts (llama-cpp-python's refuses a list of ids)
gets the text of the ids, special tokens written out; its own tokenization of that text is asked first
(`/extras/tokenize`), its echo is checked text for text against it, and each of our tokens takes the server's numbers
only where the server has the same token id over the same bytes (`_parse_text_echo`). Reading a token it tokenized
otherwise is a `RemoteError` naming the token. The one approximation left: where a hint was spliced in token space,
the text server tokenizes the context at the hint's edges its own way (" " + "(" → " ("), so a scored token keeps
its id but its context is the same text in slightly different tokens. `ServedScorer` is a `HintScorer` whose passes
are these answers, so its `score` returns the same `ScoreResult` (columns of docs/data.md) and `gradient_map` the
same `GradientMap`:

* log p of the written token, its rank and the top k: the server's numbers (exact, up to the server's arithmetic);
* entropy and KL: a server returns only the top k, so they are computed on the top k plus one tail bin
  (`topk_entropy`, `topk_kl`): the distributions coarsened to the tokens both sides returned and "everything else".
  Coarsening never raises entropy or KL (data-processing inequality): both are lower bounds of the full-vocabulary
  figures. `ScoreResult.topk_figures` holds k and the table gains SERVED_COLUMNS ("figures": "top-k+tail");
* the gradient map's targets are built on distributions rebuilt from the top k, with the tail's mass spread evenly
  over the rest of the vocabulary (`dense_logprobs`): p of the written token is the server's, the rest approximate.

`score_served` scores many records with `concurrency` requests in flight (the server batches them).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import torch

from .alignment import Alignment, Spliced
from .remote import RemoteConfig, RemoteError, RemoteGenerator
from .scoring import HintScorer, ScoreResult
from .token_bytes import token_bytes
from .trajectory import Trajectory

SERVED_COLUMNS = ["figures"]  # added after COLUMNS (and PLACEBO_COLUMNS) by a served scorer
PROTOCOLS = ("prompt_logprobs", "echo")
KEPT_PASSES = 8  # passes a studio scorer keeps besides the ones it was given (hint moves come back often)
_TOKEN_ID = re.compile(r"^token_id:(\d+)$")

TokenKey = int | str  # a token id, or a token's text where the server sends no ids (llama.cpp)


@dataclass
class PositionLogprobs:
    """What a server says about one prompt position: the written token and the top k alternatives."""

    token: TokenKey
    logp: float
    rank: int | None  # None: not in the top k, and the server does not say (echo + logprobs)
    top: list[tuple[TokenKey, float]]  # the top k, most likely first

    def known(self) -> dict[TokenKey, float]:
        """Every token whose log p the server gave: the top k and the written token."""
        return {**dict(self.top), self.token: self.logp}


class ServedRows(list):
    """A pass's rows; None where the server did not score our token (a text server tokenized the text otherwise
    there). Reading such a row raises `RemoteError` saying why; the rows around it are exact."""

    def __init__(self, rows: list[PositionLogprobs | None], why=None):
        super().__init__(rows)
        self.why = why  # row -> the message for a row that is None

    def __getitem__(self, r):
        row = super().__getitem__(r)
        if row is None:
            raise RemoteError(self.why(r))
        return row


@dataclass
class ServedPass:
    """A served pass, shaped like `scoring.ForwardPass` for `HintScorer`: `hidden[r]` is what predicts token r + 1."""

    ids: list[int]
    hidden: list[PositionLogprobs]  # a `ServedRows` from a text server


def topk_entropy(position: PositionLogprobs) -> float:
    """Entropy (nats) of the distribution coarsened to the known tokens plus one tail bin (≤ the full entropy)."""
    probs = [math.exp(v) for v in position.known().values()]
    tail = max(0.0, 1.0 - sum(probs))
    return -sum(p * math.log(p) for p in probs + [tail] if p > 0)


def topk_kl(teacher: PositionLogprobs, student: PositionLogprobs) -> float:
    """KL(teacher ‖ student) over the tokens both returned plus one tail bin (≤ the full KL)."""
    q_known, p_known = teacher.known(), student.known()
    shared = q_known.keys() & p_known.keys()  # holds the written token at least
    q = {t: math.exp(q_known[t]) for t in shared}
    p = {t: math.exp(p_known[t]) for t in shared}
    q_tail, p_tail = max(0.0, 1.0 - sum(q.values())), max(1e-12, 1.0 - sum(p.values()))
    kl = sum(q[t] * (q_known[t] - p_known[t]) for t in shared)
    if q_tail > 0:
        kl += q_tail * math.log(q_tail / p_tail)
    return max(0.0, kl)


# ------------------------------------------------------------------------------------------------------------------
# The client


class PromptLogprobClient:
    """Prompt log-probabilities of token-id sequences from a server's `/v1/completions`."""

    def __init__(self, config: RemoteConfig, tokenizer, top_k: int = 5):
        if not 1 <= top_k <= 20:
            raise ValueError(f"top_k must be between 1 and 20 for a served model, got {top_k}")
        self.config, self.tokenizer, self.top_k = config, tokenizer, top_k
        self.http = RemoteGenerator(config, tokenizer)  # its HTTP call, errors and model lookup
        self.base_url = self.http.base_url
        self.protocol: str | None = None  # found on the first request
        self.prompt_as = "ids"  # "text": the server takes no token ids; the prompt goes as their decoded text
        self._tokenize_endpoint = None  # a text server's /extras/tokenize (False: it has none)

    def fetch(self, ids: list[int]) -> ServedPass:
        if self.protocol is None:
            return self._first(ids)
        return self._parse(ids, self._request(ids, self.protocol), self.protocol)

    def fetch_many(self, sequences: list[tuple[int, ...]], on_tokens=None) -> dict[tuple[int, ...], ServedPass]:
        """Every sequence's pass, `concurrency` requests in flight; `on_tokens(n)` after each."""
        passes = {}

        def one(seq: tuple[int, ...]) -> ServedPass:
            result = self.fetch(list(seq))
            if on_tokens:
                on_tokens(len(seq))
            return result

        if sequences and self.protocol is None:  # the first request alone: it finds the protocol, or fails once
            passes[sequences[0]] = one(sequences[0])
        rest = [s for s in sequences if s not in passes]
        with ThreadPoolExecutor(self.config.concurrency) as pool:
            passes.update(zip(rest, pool.map(one, rest)))
        return passes

    def _first(self, ids: list[int]) -> ServedPass:
        """Ask with prompt_logprobs and echo + logprobs together; use what the server answers (a server that refuses
        the prompt_logprobs field is asked again with echo alone)."""
        for asked, prompt_as in (("prompt_logprobs", "ids"), ("echo", "ids"), ("echo", "text")):
            self.prompt_as = prompt_as
            try:
                reply = self._request(ids, asked)
            except RemoteError as exc:
                # a field or an id prompt it refuses: ask otherwise (llama-cpp-python answers a token-id prompt
                # with HTTP 500 and its request validation's errors, not a 4xx)
                refused = "HTTP 4" in str(exc) or ("HTTP 500" in str(exc) and "validation error" in str(exc))
                if refused and prompt_as == "ids":
                    continue
                raise
            for protocol in PROTOCOLS[PROTOCOLS.index(asked):]:
                if self._has(reply, protocol):
                    self.protocol = protocol
                    return self._parse(ids, reply, protocol)
        raise RemoteError(f"{self.base_url} returned no prompt log-probabilities: scoring through a server needs "
                          "/v1/completions with echo + logprobs on token-id prompts (vLLM, llama.cpp's server, "
                          "opd-studio serve) or vLLM's prompt_logprobs")

    def _request(self, ids: list[int], protocol: str) -> dict:
        # max_tokens 1: vLLM wants at least one; llama.cpp reads 0 as "until the context is full".
        if self.prompt_as == "ids":
            prompt, sent = list(ids), list(ids)
        else:
            prompt, sent = self._text_prompt(ids)
        payload = {"model": self.http.model_name(), "prompt": prompt, "max_tokens": 1, "temperature": 0,
                   "echo": True, "logprobs": self.top_k, "return_tokens_as_token_ids": True}
        if protocol == "prompt_logprobs":
            payload["prompt_logprobs"] = self.top_k
        reply = self.http.call("/completions", payload)
        reply["_sent"] = sent  # the token ids the server scored (ours, or its tokenization of our text)
        return reply

    @staticmethod
    def _has(reply: dict, protocol: str) -> bool:
        choice = (reply.get("choices") or [{}])[0]
        if protocol == "prompt_logprobs":
            return isinstance(choice.get("prompt_logprobs"), list)
        return bool((choice.get("logprobs") or {}).get("top_logprobs"))

    def _parse(self, ids: list[int], reply: dict, protocol: str) -> ServedPass:
        try:
            choice = reply["choices"][0]
            if protocol == "prompt_logprobs":
                rows = self._parse_prompt_logprobs(ids, choice["prompt_logprobs"])
            elif self.prompt_as == "text":
                rows = self._parse_text_echo(ids, reply["_sent"], choice["logprobs"])
            else:
                rows = self._parse_echo(ids, choice["logprobs"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RemoteError(f"{self.base_url} sent prompt log-probabilities this client cannot read ({exc!r}): "
                              f"{str(reply)[:200]}") from None
        return ServedPass(list(ids), rows)

    def _parse_prompt_logprobs(self, ids: list[int], entries: list) -> list[PositionLogprobs]:
        if len(entries) < len(ids):
            raise RemoteError(f"{self.base_url} returned {len(entries)} prompt positions for a {len(ids)}-token "
                              "prompt: it did not score the token ids as sent")
        rows = []
        for t in range(1, len(ids)):
            entry = {int(k): v for k, v in entries[t].items()}
            written = entry[ids[t]]
            ranked = sorted(entry.items(), key=lambda kv: kv[1].get("rank") or math.inf)
            top = sorted(((k, float(v["logprob"])) for k, v in ranked[: self.top_k]), key=lambda kv: -kv[1])
            rows.append(PositionLogprobs(ids[t], float(written["logprob"]), written.get("rank"), top))
        return rows

    def _parse_echo(self, ids: list[int], logprobs: dict) -> list[PositionLogprobs]:
        tokens, values, tops = logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]
        if len(tokens) < len(ids):
            raise RemoteError(f"{self.base_url} echoed {len(tokens)} tokens for a {len(ids)}-token prompt: it did "
                              "not score the token ids as sent")
        rows = []
        for t in range(len(ids)):
            token = _key(tokens[t])
            if token != ids[t] and (isinstance(token, int) or not self._spells(ids[t], token)):
                raise RemoteError(f"{self.base_url} echoed token {token!r} at position {t} where the prompt has "
                                  f"{ids[t]} ({self.tokenizer.decode([ids[t]])!r}): it did not score the token ids "
                                  "as sent")
            if t == 0:
                continue
            logp = float(values[t])
            top = sorted(((_key(k), float(v)) for k, v in (tops[t] or {}).items()), key=lambda kv: -kv[1])
            top = top[: self.top_k]
            # a token text names its token only when it is whole text ("" and "\ufffd" stand for many partial ones)
            in_top = any(k == token for k, _ in top) and (isinstance(token, int) or _whole(token))
            rank = 1 + sum(v > logp for _, v in top) if in_top else None
            rows.append(PositionLogprobs(ids[t] if isinstance(token, int) else token, logp, rank, top))
        return rows

    # -- servers that take only text (llama-cpp-python) ------------------------------------------------------------
    #
    # llama-cpp-python's /v1/completions declares `prompt: str | list[str]` (a list of ids fails its validation, HTTP
    # 500), tokenizes the text with special tokens parsed (so "<|im_start|>" is one token) and prepends BOS only if the
    # GGUF says add_bos_token. Its echo leaves out a leading BOS and every later token equal to BOS (SmolLM2's BOS is
    # <|im_start|>, so one entry fewer per chat turn), nulls the first entry, names tokens by their text (special ones
    # as ""), and appends the completion's entries. So: its tokenization of our text is asked first (/extras/tokenize),
    # the echo is laid over that tokenization and checked text for text, and each of our tokens gets the server's row
    # only where the server has the same token id over the same bytes. A hint spliced in token space may tokenize
    # otherwise at its edges as text (" " + "(" → " ("): those rows are None, and reading one is a `RemoteError`.

    def _text_prompt(self, ids: list[int]) -> tuple[str, list[int]]:
        """The text to send for `ids` and the token ids the server will score (its tokenization of that text)."""
        text = _text_of_ids(self.tokenizer, ids)
        sent = self._server_tokens(text)
        if sent is None:  # no tokenize endpoint: assume ours; the echo's texts are checked against it
            return text, list(ids)
        if len(sent) == len(ids) + 1 and sent[0] == sent[1] == ids[0]:  # it adds BOS and ours starts with it
            text = _text_of_ids(self.tokenizer, ids[1:])
            sent = self._server_tokens(text)
        return text, sent

    def _server_tokens(self, text: str) -> list[int] | None:
        """The server's tokenization of `text` with its BOS (llama-cpp-python's /extras/tokenize), or None when it
        has no such endpoint."""
        if self._tokenize_endpoint is False:
            return None
        if self._tokenize_endpoint is None:
            root = dataclasses.replace(self.config, base_url=re.sub(r"/v1/?$", "", self.base_url))
            self._tokenize_endpoint = RemoteGenerator(root, self.tokenizer)
        try:
            tokens = self._tokenize_endpoint.call("/extras/tokenize", {"input": text})["tokens"]
        except (RemoteError, KeyError, TypeError) as exc:
            if "HTTP 404" in str(exc) or "HTTP 405" in str(exc) or not isinstance(exc, RemoteError):
                self._tokenize_endpoint = False
                return None
            raise
        return [int(t) for t in tokens]

    def _parse_text_echo(self, ids: list[int], sent: list[int], logprobs: dict) -> ServedRows:
        tokens, values, tops = logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]
        layout = self._echo_layout(sent, tokens)
        if self._tokenize_endpoint and len(layout) == len(sent):
            # llama-cpp-python pairs echoed token i with the logits row i; that row predicts token i + 1 unless a
            # leading BOS was left out of the echo (llama.py, _create_completion), so nothing left out = shifted
            raise RemoteError(f"{self.base_url}: the prompt does not start with the model's BOS token, and then "
                              "llama-cpp-python's echo gives each prompt token the log-probabilities of the position "
                              "after it: its prompt log-probabilities cannot be used for this model; serve it with "
                              "vLLM or opd-studio serve")
        rows_of_sent = {}
        for entry, j in enumerate(layout):
            if values[entry] is None:
                continue
            token, logp = tokens[entry], float(values[entry])
            top = sorted(((_key(k), float(v)) for k, v in (tops[entry] or {}).items()), key=lambda kv: -kv[1])
            top = top[: self.top_k]
            # a token text names its token only when it is whole text ("" and "\ufffd" stand for many partial ones)
            in_top = _whole(token) and any(k == token for k, _ in top)
            rank = 1 + sum(v > logp for _, v in top) if in_top else None
            rows_of_sent[j] = PositionLogprobs(token if token else sent[j], logp, rank, top)
        # our token t ↔ the server's token j: the same id over the same bytes
        at_sent = {span: j for j, span in enumerate(self._spans(sent))}
        ours = self._spans(ids)
        rows = [rows_of_sent.get(at_sent.get(ours[t], -1)) for t in range(1, len(ids))]
        server_text = [self.tokenizer.decode([j]) for j in sent]

        def why(r: int) -> str:
            start = ours[r + 1][0]
            theirs = [text for text, (begin, _, _) in zip(server_text, self._spans(sent)) if begin >= start - 4][:4]
            return (f"{self.base_url} takes only text prompts and tokenizes this one otherwise at token {r + 1} "
                    f"({self.tokenizer.decode([ids[r + 1]])!r}; its tokens there: {theirs}), so it gives no "
                    "log-probability for that token id: score it with a server that takes token ids (vLLM, "
                    "opd-studio serve) or the model in-process")

        return ServedRows(rows, why)

    def _echo_layout(self, sent: list[int], tokens: list[str]) -> list[int]:
        """Which of the sent tokens each echo entry is: all of them in order, or (llama-cpp-python) all but the
        leading BOS and every later token equal to it. The first layout whose texts all spell the sent tokens."""
        layouts = [list(range(len(sent))), [j for j in range(1, len(sent)) if sent[j] != sent[0]]]
        for layout in layouts:
            if len(tokens) >= len(layout) and all(self._spells(sent[j], _key(tokens[e])) if isinstance(
                    _key(tokens[e]), str) else _key(tokens[e]) == sent[j] for e, j in enumerate(layout)):
                return layout
        raise RemoteError(f"{self.base_url} echoed tokens that are not the prompt's ({tokens[:8]}…): it did not "
                          "score the prompt as sent")

    def _spans(self, ids: list[int]) -> list[tuple[int, int, int]]:
        """(first byte, end byte, id) of each token in the bytes of the sequence."""
        spans, at = [], 0
        for token_id in ids:
            width = len(token_bytes(self.tokenizer, token_id))
            spans.append((at, at + width, token_id))
            at += width
        return spans

    def _spells(self, token_id: int, text: str) -> bool:
        """Whether a server's token text is token `token_id` (a text server drops the bytes of a character split
        over tokens, so a partial token may come back as "" or "\ufffd"; llama.cpp writes special tokens as "")."""
        spelled = token_bytes(self.tokenizer, token_id)
        if text == "" and token_id in self._special_ids():
            return True
        return text in (spelled.decode("utf-8", "ignore"), spelled.decode("utf-8", "replace"))

    def _special_ids(self) -> set[int]:
        return set(self.tokenizer.all_special_ids) | set(self.tokenizer.get_added_vocab().values())


def _text_of_ids(tokenizer, ids: list[int]) -> str:
    """The text a token-id sequence spells, special tokens written out (a text server parses them back)."""
    return b"".join(token_bytes(tokenizer, t) for t in ids).decode("utf-8", "replace")


def _whole(text: str) -> bool:
    return bool(text) and "\ufffd" not in text


def _key(token: str) -> TokenKey:
    match = _TOKEN_ID.match(token)
    return int(match.group(1)) if match else token


# ------------------------------------------------------------------------------------------------------------------
# The scorer


class ServedScorer(HintScorer):
    """`HintScorer` on a served model: same `score` / `gradient_map` contract, passes from `client`.

    >>> client = PromptLogprobClient(RemoteConfig("http://127.0.0.1:8000/v1"), tokenizer)
    >>> ServedScorer(client, tokenizer, build_trajectory(tokenizer, record)).score(record.hints)
    """

    def __init__(self, client: PromptLogprobClient, tokenizer, trajectory: Trajectory,
                 passes: dict[tuple[int, ...], ServedPass] | None = None):
        super().__init__(None, tokenizer, trajectory, top_k=client.top_k, chunk_size=len(trajectory) + 1)
        self.client = client
        self._given = dict(passes or {})  # a batch's passes (score_served)
        self._fetched: OrderedDict[tuple[int, ...], ServedPass] = OrderedDict()
        self._ids_of_text: dict[str, int] | None = None
        self._whole: ServedPass | None = None  # the original sequence's answer

    def score_aligned(self, alignment: Alignment) -> ScoreResult:
        return label_topk(super().score_aligned(alignment), self.top_k)

    # -- passes ---------------------------------------------------------------------------------------------------

    def _pass(self, ids: list[int]) -> ServedPass:
        key = tuple(ids)
        found = self._given.get(key) or self._fetched.get(key)
        if found is None:
            found = self._fetched[key] = self.client.fetch(list(ids))
            while len(self._fetched) > KEPT_PASSES:
                self._fetched.popitem(last=False)
        return found

    def original_pass(self, upto: int | None = None) -> ServedPass:
        """The server's answer for the whole original sequence (`upto` is moot: one request scores every token)."""
        if self._whole is None:
            self._whole = self._pass(self.trajectory.input_ids)
        return self._whole

    def spliced_pass(self, spliced: Spliced, last, what: str) -> ServedPass:
        return self._pass(spliced.ids)

    # -- statistics -----------------------------------------------------------------------------------------------

    def token_rows(self, hidden: list[PositionLogprobs], rows: list[int], positions: list[int]) -> dict[int, tuple]:
        return {i: self._row(hidden[r]) for r, i in zip(rows, positions)}

    def _row(self, position: PositionLogprobs) -> tuple:
        top = [[self._text(k), math.exp(v)] for k, v in position.top]
        return position.logp, position.rank, topk_entropy(position), top

    def teacher_stats(self, alignment: Alignment):
        changed = alignment.changed
        if not changed:
            return {}, {}
        hinted, original = self.hinted_pass(alignment), self.original_pass()
        teacher_rows, student_rows = alignment.rows("hinted", changed), alignment.rows("student", changed)
        after = self.token_rows(hinted.hidden, teacher_rows, changed)
        kl = {i: topk_kl(hinted.hidden[t], original.hidden[s]) for i, t, s in zip(changed, teacher_rows, student_rows)}
        return after, kl

    def logprobs(self, hidden: list[PositionLogprobs], rows: list[int]) -> torch.Tensor:
        return torch.stack([dense_logprobs(hidden[r], len(self.tokenizer), self._id) for r in rows])

    def _text(self, key: TokenKey) -> str:
        return self.text_of(key) if isinstance(key, int) else key

    def _id(self, key: TokenKey) -> int | None:
        if isinstance(key, int):
            return key
        if self._ids_of_text is None:  # servers that send token texts: the first id spelling each text
            self._ids_of_text = {}
            for token_id in range(len(self.tokenizer)):
                self._ids_of_text.setdefault(self.text_of(token_id), token_id)
        return self._ids_of_text.get(key)


def dense_logprobs(position: PositionLogprobs, vocab: int, id_of) -> torch.Tensor:
    """(V,) log-probabilities rebuilt from a served position: the known tokens' own, the rest of the mass spread
    evenly over the other tokens (what the gradient map's target constructions need)."""
    known = {}
    for key, logp in position.known().items():
        token_id = id_of(key)
        if token_id is not None and 0 <= token_id < vocab:
            known[token_id] = logp
    tail = max(1.0 - sum(math.exp(v) for v in known.values()), 1e-12)
    out = torch.full((vocab,), math.log(tail / max(vocab - len(known), 1)))
    out[list(known)] = torch.tensor(list(known.values()))
    return out


def label_topk(result: ScoreResult, top_k: int) -> ScoreResult:
    """Mark a served result: entropy and KL are top-k + tail figures (SERVED_COLUMNS, `topk_figures`)."""
    result.topk_figures = top_k
    result.table["figures"] = f"top-{top_k}+tail"
    return result


def score_served(client: PromptLogprobClient, tokenizer, jobs, span: str = "turn",
                 on_tokens=None) -> Iterator[tuple]:
    """(record, scores) for every `batching.ScoreJob`, as `ServedScorer.score` gives them; the passes of a group
    of records are fetched `concurrency` at a time before the group is scored."""
    group_size = max(1, client.config.concurrency * 4)
    for start in range(0, len(jobs), group_size):
        group = jobs[start: start + group_size]
        sequences = list(dict.fromkeys(s for job in group for s in job.sequences))
        passes = client.fetch_many(sequences, on_tokens)
        for job in group:
            scorer = ServedScorer(client, tokenizer, job.trajectory, passes={s: passes[s] for s in job.sequences})
            yield job.record, scorer.score_aligned(job.alignment.with_span(span))


def served_client(base_url: str, tokenizer, top_k: int = 5, model: str | None = None, api_key: str | None = None,
                  concurrency: int = 8) -> PromptLogprobClient:
    return PromptLogprobClient(RemoteConfig(base_url, model, api_key, "completions", top_k, concurrency), tokenizer,
                               top_k)


# ------------------------------------------------------------------------------------------------------------------
# The studio on a served model


class ServedModel:
    """Where the studio would hold a local model, the server that holds it: scoring (`make_scorer`) and generation
    (`generate_served`) go through it. `config.name_or_path` names it for the store, as a local model's does; it has
    no weights here, so nothing trains or loads adapters on it."""

    served = True

    def __init__(self, client: PromptLogprobClient):
        self.client = client
        self.name_or_path = f"{client.http.model_name()} @ {client.base_url}"  # also checks the server answers

    @property
    def config(self):
        return self  # model.config.name_or_path, as transformers models have it

    @classmethod
    def connect(cls, base_url: str, tokenizer, top_k: int = 5, api_key: str | None = None) -> "ServedModel":
        return cls(served_client(base_url, tokenizer, top_k, api_key=api_key))


def is_served(model) -> bool:
    return bool(getattr(model, "served", False))


def make_scorer(model, tokenizer, trajectory: Trajectory, base_weights: bool = False) -> HintScorer:
    """The scorer for `model`: in-process, or through the server of a `ServedModel` (same contract)."""
    if is_served(model):
        return ServedScorer(model.client, tokenizer, trajectory)
    return HintScorer(model, tokenizer, trajectory, base_weights=base_weights)


def generate_served(model: ServedModel, tokenizer, messages: list[dict], config, tools=None,
                    record_id: str = "rollout", meta: dict | None = None):
    """`rollout.generate`'s record, sampled by the server (its chat completions, with the exact sampled ids)."""
    from .batching import GenerationJob

    # the chat completions: the server's own template, and its sampled ids (completions here are for scoring)
    generator = RemoteGenerator(dataclasses.replace(model.client.config, endpoint="chat"), tokenizer)
    return generator.generate_one(GenerationJob(record_id, messages, config, tools, dict(meta or {})))
