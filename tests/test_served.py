"""Scoring through a server (`served.ServedScorer`) against our own `serve` on loopback: the same records scored
in-process and through HTTP give the same written-token log p (fp32, same weights: within 1e-3), ranks and top-k
sets; entropy and KL are top-k + tail figures, never above the full-vocabulary ones; the placebo lane and the
gradient map run the same way; a server without prompt log-probabilities gets one clear error."""

import json
import math
import threading
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

from tests.conftest import ADD, MULTI_TURN
from tests.test_remote import NoLogprobs
from opd_studio import plots
from opd_studio.batching import prepare_scoring
from opd_studio.records import Record
from opd_studio.remote import RemoteError
from opd_studio.scoring import COLUMNS, PLACEBO_COLUMNS, HintScorer
from opd_studio.serve import make_server
from opd_studio.served import (SERVED_COLUMNS, PositionLogprobs, ServedScorer, score_served, served_client,
                               topk_entropy, topk_kl)
from opd_studio.targets import TargetSpec
from opd_studio.trajectory import build_trajectory


def serving(model, tokenizer):
    server = make_server(model, tokenizer, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/v1"


@pytest.fixture(scope="module")
def server(tiny_model, tokenizer):
    server, url = serving(tiny_model, tokenizer)
    yield url
    server.shutdown()
    server.server_close()


def assert_same_scores(served, local, top_k=5):
    """Written-token log p within 1e-3, same ranks (where the server gave one) and same top-k token sets."""
    rows = local.student.to_numpy()
    for column in ("logp_before", "logp_after"):
        assert (served[column][rows] - local[column][rows]).abs().max() < 1e-3, column
    for column in ("rank_before", "rank_after"):
        given = served[column][rows].notna()
        assert (served[column][rows][given] == local[column][rows][given]).all(), column
    for column in ("top_before", "top_after"):
        for mine, theirs in zip(served[column][rows], local[column][rows]):
            assert len(mine) == len(theirs) == top_k
            assert {t for t, _ in mine} == {t for t, _ in theirs}
            for (_, p_mine), (_, p_theirs) in zip(mine, theirs):
                assert p_mine == pytest.approx(p_theirs, abs=1e-4)
    # top-k + tail figures: lower bounds of the full ones (coarsening cannot raise entropy or KL)
    for column in ("entropy_before", "entropy_after", "kl"):
        assert (served[column][rows] <= local[column][rows] + 1e-4).all(), column
        assert (served[column][rows] >= 0).all()


@pytest.mark.parametrize("fixture", [ADD, MULTI_TURN], ids=["add", "multi-turn"])
def test_served_scores_equal_in_process_scores(server, tiny_model, tokenizer, fixture):
    record = Record.from_dict(fixture)
    trajectory = build_trajectory(tokenizer, record)
    local = HintScorer(tiny_model, tokenizer, trajectory).score(record.hints, error=record.error)
    client = served_client(server, tokenizer)
    served = ServedScorer(client, tokenizer, trajectory).score(record.hints, error=record.error)
    assert client.protocol == "prompt_logprobs"
    assert list(served.table.columns) == COLUMNS + SERVED_COLUMNS
    assert served.topk_figures == 5 and set(served.table.figures) == {"top-5+tail"}
    assert served.anchors == local.anchors and (served.table.target == local.table.target).all()
    assert_same_scores(served.table, local.table)
    # the KL plot says which KL it draws
    assert "over the top 5 + tail" in plots.kl_figure(served).layout.title.text
    assert "top" not in plots.kl_figure(local).layout.title.text


def test_the_echo_protocol_gives_the_same_numbers(server, tiny_model, tokenizer):
    """echo + logprobs (the legacy completions API llama.cpp speaks): no ranks outside the top k, same log p."""
    record = Record.from_dict(ADD)
    trajectory = build_trajectory(tokenizer, record)
    client = served_client(server, tokenizer)
    client.protocol = "echo"
    served = ServedScorer(client, tokenizer, trajectory).score(record.hints)
    local = HintScorer(tiny_model, tokenizer, trajectory).score(record.hints)
    assert_same_scores(served.table, local.table)
    rows = local.table.student
    outside = local.table.rank_after[rows] > 5
    assert served.table.rank_after[rows][outside].isna().all()
    assert (served.table.rank_after[rows][~outside] == local.table.rank_after[rows][~outside]).all()


def test_placebo_lane_and_gradient_map_through_the_server(server, tiny_model, tokenizer):
    record = Record.from_dict(ADD)
    trajectory = build_trajectory(tokenizer, record)
    local_scorer = HintScorer(tiny_model, tokenizer, trajectory)
    served_scorer = ServedScorer(served_client(server, tokenizer), tokenizer, trajectory)
    local = local_scorer.score(record.hints, placebo="default")
    served = served_scorer.score(record.hints, placebo="default")
    assert list(served.table.columns) == COLUMNS + PLACEBO_COLUMNS + SERVED_COLUMNS
    rows = local.table.student
    assert (served.table.logp_placebo[rows] - local.table.logp_placebo[rows]).abs().max() < 1e-3
    assert (served.table["style"] == local.table["style"]).all()
    for target in ("hinted", "contrast"):
        spec = TargetSpec(kind=target)
        mine = served_scorer.gradient_map(record.hints, spec)
        theirs = local_scorer.gradient_map(record.hints, spec)
        assert list(mine.frame.i) == list(theirs.frame.i)
        for column in ("p_student", "p_hinted", "p_placebo"):  # the written tokens: the server's own numbers
            assert (mine.frame[column] - theirs.frame[column]).abs().max() < 1e-3, column
        assert [[t for t, _ in top] for top in mine.frame.top_hinted] == \
            [[t for t, _ in top] for top in theirs.frame.top_hinted]


def test_many_records_batched_through_the_server(server, tiny_model, tokenizer):
    from opd_studio.batching import score_records

    records = [Record.from_dict({**ADD, "id": f"r{n}"}) for n in range(5)] + [Record.from_dict(MULTI_TURN)]
    jobs = prepare_scoring(tokenizer, records, placebo="default")
    seen = []
    client = served_client(server, tokenizer, concurrency=3)
    served = dict((r.id, s) for r, s in score_served(client, tokenizer, jobs, on_tokens=seen.append))
    local = dict((r.id, s) for r, s in score_records(tiny_model, tokenizer, jobs))
    assert sum(seen) == sum(len(s) for s in dict.fromkeys(s for j in jobs for s in j.sequences))
    for record in records:
        assert_same_scores(served[record.id].table, local[record.id].table)


def test_topk_figures_are_exact_when_the_top_k_holds_everything():
    whole = PositionLogprobs(0, math.log(0.5), 1, [(0, math.log(0.5)), (1, math.log(0.3)), (2, math.log(0.2))])
    assert topk_entropy(whole) == pytest.approx(-(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)))
    other = PositionLogprobs(0, math.log(0.2), 2, [(1, math.log(0.6)), (0, math.log(0.2)), (2, math.log(0.2))])
    expected = 0.5 * math.log(0.5 / 0.2) + 0.3 * math.log(0.3 / 0.6) + 0.2 * math.log(0.2 / 0.2)
    assert topk_kl(whole, other) == pytest.approx(expected)
    # tokens only one side returned go to the tail bin
    partial = PositionLogprobs(0, math.log(0.5), 1, [(0, math.log(0.5)), (7, math.log(0.4))])
    assert topk_kl(whole, partial) == pytest.approx(0.5 * math.log(0.5 / 0.5) + 0.5 * math.log(0.5 / 0.5))


class NoPromptLogprobs(NoLogprobs):
    """A completions server that generates but returns no prompt log-probabilities (as many do)."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._json({"choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": "length"}]})


def test_a_server_without_prompt_logprobs_gets_one_clear_error(tokenizer):
    server = ThreadingHTTPServer(("127.0.0.1", 0), NoPromptLogprobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        record = Record.from_dict(ADD)
        scorer = ServedScorer(served_client(f"http://127.0.0.1:{server.server_port}/v1", tokenizer), tokenizer,
                              build_trajectory(tokenizer, record))
        with pytest.raises(RemoteError, match="no prompt log-probabilities.*echo \\+ logprobs.*prompt_logprobs"):
            scorer.score(record.hints)
    finally:
        server.shutdown()
        server.server_close()


def test_serve_refuses_generation_on_the_scoring_route(server):
    request = urllib.request.Request(server + "/completions", data=json.dumps(
        {"prompt": [1, 2, 3], "max_tokens": 5}).encode(), headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 400 and b"max_tokens must be 0 or 1" in caught.value.read()


def test_text_prompts_and_token_texts_give_the_same_numbers(server, tiny_model, tokenizer, monkeypatch):
    """What a client gets from a server that takes text prompts and names tokens by their text (llama.cpp's): our
    serve, asked with the decoded text and without token ids in the answer."""
    client = served_client(server, tokenizer)
    client.protocol, client.prompt_as = "echo", "text"
    call = client.http.call

    def without_ids(path, payload=None):  # a server that ignores return_tokens_as_token_ids
        return call(path, payload and {k: v for k, v in payload.items() if k != "return_tokens_as_token_ids"})

    monkeypatch.setattr(client.http, "call", without_ids)
    for fixture in (ADD, MULTI_TURN):  # MULTI_TURN: chat-template special tokens and a multi-byte emoji
        record = Record.from_dict(fixture)
        trajectory = build_trajectory(tokenizer, record)
        served = ServedScorer(client, tokenizer, trajectory).score(record.hints).table
        local = HintScorer(tiny_model, tokenizer, trajectory).score(record.hints).table
        rows = local.student.to_numpy()
        for column in ("logp_before", "logp_after"):  # the written token's log p: exact whatever its text
            assert (served[column][rows] - local[column][rows]).abs().max() < 1e-3
        if fixture is ADD:  # whole-character tokens only: texts name tokens one to one
            assert_same_scores(served, local)
        for column in ("rank_before", "rank_after"):  # where a text names its token, the rank is the same
            given = served[column][rows].notna()
            assert (served[column][rows][given] == local[column][rows][given]).all()
