"""The LLM critic: forgiving parsing, quote location, and the real HTTP path against our own server."""

import json
import threading
import urllib.error
import urllib.request

import pytest

from opd_studio.hints.critic import LLMCritic, LocalChat, OpenAIChat, locate_quote, parse_critique
from opd_studio.hints.propose import propose_record
from opd_studio.records import Record
from opd_studio.serve import make_server
from tests.conftest import ADD


@pytest.mark.parametrize("raw, expected", [
    ('{"wrong_quote": "32", "hint": "carry the 1"}', ("32", "carry the 1")),
    ('Sure! Here is my analysis:\n```json\n{"wrong_quote": "32",\n "hint": "7 + 5 = 12"}\n```\nHope it helps.',
     ("32", "7 + 5 = 12")),
    ("The mistake: {'quote': '= 32', 'feedback': 'recheck the ones'} — done", ("= 32", "recheck the ones")),
    ('{"Mistake": "32."}', ("32.", None)),
    ('{"wrong_quote": null, "hint": null}', (None, None)),
    ('prose first {"unrelated": 1} then {"error": "32", "correction": "42"}', ("32", "42")),
])
def test_messy_replies_parse(raw, expected):
    assert parse_critique(raw) == expected


@pytest.mark.parametrize("raw", ["I think the answer is fine.", "{not json at all", '{"verdict": "bad"}', ""])
def test_unusable_replies_give_no_proposal_and_keep_the_raw_text(raw):
    assert parse_critique(raw) is None
    result = LLMCritic(chat=lambda messages: raw).propose(Record.from_dict(ADD))
    assert result.proposals == [] and result.raw == raw and "no usable JSON" in result.reason


@pytest.mark.parametrize("quote, span", [
    ("32", (10, 12)), ("= 32", (8, 12)), ("25 =  32", (5, 12)), ("25 = 23", (5, 11)), ("banana split", None),
])
def test_quotes_are_located_exactly_then_fuzzily(quote, span):
    located = locate_quote("17 + 25 = 32.", quote)
    assert (located[:2] if located else None) == span


def test_critic_proposal_lands_on_the_quoted_tokens(tokenizer):
    critic = LLMCritic(chat=lambda messages: '{"wrong_quote": "32", "hint": "7 + 5 = 12, carry the 1"}')
    record, result = propose_record(critic, Record.from_dict({**ADD, "hints": [], "error": None}), tokenizer)
    (proposal,) = result.proposals
    assert (proposal.char_start, proposal.char_end) == (10, 12)
    assert (proposal.token_start, proposal.token_end) == (48, 50)
    assert record.hints[0].status == "proposed" and "carry the 1" in record.hints[0].text
    assert record.error.char_start == 10


@pytest.mark.integration
def test_http_critic_against_a_real_openai_compatible_server(default_model):
    model, tokenizer = default_model
    server = make_server(model, tokenizer, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base_url = f"http://127.0.0.1:{server.server_port}/v1"
        record = Record.from_dict({**ADD, "hints": [], "error": None})
        over_http = LLMCritic(OpenAIChat(base_url, max_tokens=48)).propose(record)
        local = LLMCritic(LocalChat(model, tokenizer, max_new_tokens=48)).propose(record)
        # the same greedy reply whichever way it travels, and parsed the same way
        assert over_http.raw == local.raw and over_http.raw
        assert over_http.reason == local.reason
        assert [p.char_start for p in over_http.proposals] == [p.char_start for p in local.proposals]
        # a malformed request gets a 400 with an OpenAI-style error body, and the server keeps serving
        request = urllib.request.Request(base_url + "/chat/completions", data=b'{"nope": 1}',
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request)
        assert error.value.code == 400 and json.load(error.value)["error"]["message"].startswith("bad request")
        models = json.load(urllib.request.urlopen(base_url + "/models"))
        assert models["data"][0]["id"] == model.config.name_or_path
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_endpoint_is_a_clear_error():
    with pytest.raises(RuntimeError, match="unreachable"):
        OpenAIChat("http://127.0.0.1:9/v1", timeout=2)([{"role": "user", "content": "hi"}])
