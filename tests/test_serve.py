"""`serve` through the official `openai` client: chat, logprobs/top_logprobs and streaming, to the OpenAI spec; and
generation through it (`remote.RemoteGenerator`) with the exact sampled ids."""

import threading

import pytest

from opd_studio.batching import GenerationJob
from opd_studio.remote import RemoteConfig, RemoteGenerator, SampledToken
from opd_studio.rollout import SamplingConfig, generate
from opd_studio.serve import make_server

openai = pytest.importorskip("openai")

QUESTION = [{"role": "user", "content": "What is 17 + 25? Answer with the sum 🌞."}]


@pytest.fixture(scope="module")
def server(tiny_model, tokenizer):
    server = make_server(tiny_model, tokenizer, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0)


def test_chat_with_logprobs_matches_local_generation(client, tiny_model, tokenizer):
    model_id = client.models.list().data[0].id
    reply = client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=12, temperature=0,
                                           logprobs=True, top_logprobs=3)
    local, table = generate(tiny_model, tokenizer, QUESTION, SamplingConfig(max_new_tokens=12, top_k_alternatives=3))
    choice = reply.choices[0]
    assert choice.message.content == local.messages[-1]["content"]
    assert choice.finish_reason == ("stop" if local.meta["finished"] else "length")
    entries = choice.logprobs.content
    content_ids = local.response_token_ids[:-1] if local.meta["finished"] else local.response_token_ids
    assert len(entries) == len(content_ids)
    assert b"".join(bytes(e.bytes) for e in entries).decode() == choice.message.content
    for entry, row in zip(entries, table.itertuples()):
        assert entry.logprob == pytest.approx(row.logp, abs=1e-5)
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.logprob - 1e-6  # greedy: the sampled token is the top one
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs),
                                                                 reverse=True)
    assert reply.usage.completion_tokens == len(local.response_token_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 12


def test_stream_gives_the_same_turn_chunk_by_chunk(client):
    model_id = client.models.list().data[0].id
    request = dict(model=model_id, messages=QUESTION, max_tokens=12, temperature=0, logprobs=True, top_logprobs=2)
    whole = client.chat.completions.create(**request).choices[0]
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.message.content
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.logprob for e in streamed] == [e.logprob for e in whole.logprobs.content]
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= len(streamed)


def test_unsupported_options_are_refused_not_ignored(client):
    model_id = client.models.list().data[0].id
    with pytest.raises(openai.BadRequestError, match="n > 1"):
        client.chat.completions.create(model=model_id, messages=QUESTION, n=2)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model=model_id, messages=QUESTION, logprobs=True, top_logprobs=21)


def test_remote_generation_keeps_the_sampled_ids(server, tiny_model, tokenizer):
    config = SamplingConfig(max_new_tokens=12, temperature=1.0, seed=5)
    jobs = [GenerationJob(f"r{n}", QUESTION, SamplingConfig(max_new_tokens=12, temperature=1.0, seed=5 + n))
            for n in range(3)]
    remote = RemoteGenerator(RemoteConfig(server, top_logprobs=2, concurrency=2), tokenizer)
    records = list(remote.generate(jobs))
    assert [r.id for r in records] == ["r0", "r1", "r2"]
    for job, record in zip(jobs, records):
        local, _ = generate(tiny_model, tokenizer, QUESTION, job.config)  # the server samples with the same seed
        assert record.meta["remote"]["token_ids"] == "server"
        ids = local.response_token_ids
        assert record.response_token_ids == (ids[:-1] if local.meta["finished"] else ids)
        assert record.messages == local.messages
        assert len(record.meta["remote"]["logprobs"]) == len(record.response_token_ids)
    assert config.seed == 5


def test_ids_from_bytes_when_the_server_sends_text_tokens(client, server, tokenizer):
    """A server without vLLM's token-id option (llama.cpp, OpenAI): the ids come from each token's bytes."""
    model_id = client.models.list().data[0].id
    reply = client.chat.completions.create(model=model_id, messages=QUESTION, max_tokens=16, temperature=0,
                                           logprobs=True, top_logprobs=1).choices[0]
    tokens = [SampledToken(e.token, bytes(e.bytes), e.logprob, []) for e in reply.logprobs.content]
    ids, source = RemoteGenerator(RemoteConfig(server), tokenizer).token_ids(tokens, reply.message.content)
    assert source == "bytes" and tokenizer.decode(ids) == reply.message.content
    # text that is not what the tokens spell: no ids, said so
    assert RemoteGenerator(RemoteConfig(server), tokenizer).token_ids(tokens, reply.message.content + "!") == \
        (None, "retokenized")
