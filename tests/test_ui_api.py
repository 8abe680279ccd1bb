"""The studio's API endpoints through gradio_client, as a script would drive them (state kept per client)."""

import json
import re

import pytest

from tests.ui_server import StudioServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    server = StudioServer(tmp_path_factory.mktemp("api-data")).start()
    yield Client(server.url, verbose=False)
    server.stop()


def outputs(result):
    strip, status, _logprob, _kl, hint_text, placement, _template, proposals, counts, queue = result[:10]
    return dict(strip=strip, status=status, hint=hint_text, placement=placement, proposals=proposals, counts=counts,
                queue=queue)


def test_generate_move_edit_accept_export(client):
    shown = outputs(client.predict("Prompt", None, "What is 17 + 25?", 0, 1, 32, 0, "arithmetic", "delta",
                                   api_name="/generate"))
    assert "17·+·25·=" in shown["strip"] and "verifier:arithmetic" in shown["proposals"]
    assert "<span class='opd-ghost'" in shown["strip"] and "Hint:" in shown["hint"]

    moved = outputs(client.predict(46, "delta", api_name="/move_hint"))
    assert "data-stage='full'" in moved["strip"] and "opd-pending" not in moved["strip"]  # a script gets the whole
    assert re.search(r"<span class='opd-ghost'[^>]*>[^<]*</span><span class='[^']*' data-i='46'", moved["strip"])
    logprob_plot, kl_plot = client.predict(api_name="/plots")  # edits leave the plots to a chained event
    figure = json.loads(logprob_plot["plot"])
    hint_marks = [shape for shape in figure["layout"].get("shapes", []) if shape.get("x0") == 45.5]
    assert figure["data"] and hint_marks, "the plot marks the hint at its new place"

    edited = outputs(client.predict("(Note: continue.) ", "inline", "", "delta", api_name="/edit_hint"))
    assert edited["hint"] == "(Note: continue.) " and edited["status"] != moved["status"]

    undone = outputs(client.predict("delta", api_name="/undo"))
    assert undone["hint"] == moved["hint"]

    accepted = outputs(client.predict("api-tester", "", "inline", "", "manual", "delta", api_name="/accept"))
    assert "1 curated" in accepted["counts"]

    table, counts = client.predict("accepted", "", False, api_name="/curated")
    assert [row[0] for row in table["data"]] == ["prompt-" + shown["status"].split("prompt-")[1].split("**")[0]]
    assert table["data"][0][5] == "api-tester"

    exported = client.predict("JSONL", api_name="/export")
    record = json.loads(open(exported).read().splitlines()[0])
    assert record["hints"][0]["status"] == "accepted" and record["hints"][0]["token"] == 46


def test_errors_come_back_as_messages(client):
    from gradio_client.exceptions import AppError

    client.predict("Prompt", None, "Say hi.", 0, 1, 16, 0, "manual", "delta", api_name="/generate")
    with pytest.raises(AppError, match="a hint must stand before a token the model generated"):
        client.predict(0, "delta", api_name="/move_hint")
    with pytest.raises(AppError, match="out of range"):
        client.predict(10_000, "delta", api_name="/move_hint")
    with pytest.raises(AppError, match="no hint to edit yet"):
        client.predict("text", "inline", "", "delta", api_name="/edit_hint")
    with pytest.raises(AppError, match="accepting needs a hint"):
        client.predict("someone", "", "inline", "", "manual", "delta", api_name="/accept")
    _, counts = client.predict("accepted", "", False, api_name="/curated")
    # a right answer: anchors only
    kept = outputs(client.predict("someone", "", "inline", "", "manual", "delta", api_name="/keep_as_right"))
    curated = lambda text: int(re.search(r"(\d+) curated", text).group(1))  # noqa: E731
    assert curated(kept["counts"]) == curated(counts) + 1


def test_one_users_unsaved_edits_never_reach_another(client):
    from gradio_client import Client

    other = Client(client.src, verbose=False)
    mine = outputs(client.predict("Prompt", None, "What is 17 + 25?", 0, 1, 32, 0, "arithmetic", "delta",
                                  api_name="/generate"))
    outputs(client.predict("(my private edit) ", "inline", "", "delta", api_name="/edit_hint"))
    theirs = outputs(other.predict("Prompt", None, "What is 17 + 25?", 0, 1, 32, 0, "arithmetic", "delta",
                                   api_name="/generate"))
    assert theirs["hint"] == mine["hint"] and "my private edit" not in theirs["strip"]
    # and the other user's undo has nothing of mine to undo
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="nothing to undo"):
        other.predict("delta", api_name="/undo")


def test_every_endpoint_names_its_inputs_and_outputs(client):
    """What `client.view_api()` shows a script writer: a name for every parameter and every returned value (Gradio
    falls back to `parameter_12` / `value_34` for a component without a label)."""
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/generate", "/move_hint", "/edit_hint", "/accept", "/train", "/next_round"} <= set(endpoints)
    unnamed = {name: [value.get("label") for value in (*endpoint["parameters"], *endpoint["returns"])
                      if re.fullmatch(r"(value|parameter)_\d+", value.get("label") or "")]
               for name, endpoint in endpoints.items()}
    assert not {name: labels for name, labels in unnamed.items() if labels}
    returns = [value["label"] for value in endpoints["/move_hint"]["returns"]]
    assert returns[:2] == ["Token strip (HTML)", "Status"]
