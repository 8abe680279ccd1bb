"""Waiting says so (ui/waiting.py): in a real browser, an action that waits for the model behind other sessions'
shows how many actions are ahead of it, and its result still lands where the person acted; a full queue refuses an
action with one line. Other sessions are `gradio_client` clients of the same `python app.py` (default model)."""

from __future__ import annotations

import re
import time

import pytest

from tests.test_ui_browser import ARTIFACTS, browser, wait_hint_before  # noqa: F401 - the browser fixture
from tests.ui_server import StudioServer

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("OPD_STUDIO_QUEUE_SIZE", "2")  # two actions may wait
    studio = StudioServer(tmp_path_factory.mktemp("queue-data")).start()
    yield studio
    studio.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def long_generate(client, prompt: str):
    """Another reviewer's generate that holds the model for many seconds: 512 tokens sampled at temperature 1.5
    (so hot that the end-of-turn token practically never comes first; at temperature 1 a story sometimes ended
    after a few dozen tokens, and the action meant to wait behind it ran at once)."""
    return client.submit("Prompt", None, prompt, 1.5, 1, 512, 0, "manual", "delta", api_name="/generate")


def holds_the_model(job, timeout: float = 60.0) -> None:
    """Wait until another client's queued action is running (it has the model), so that what we send next waits."""
    deadline = time.monotonic() + timeout
    while job.status().code.name != "PROCESSING":
        assert time.monotonic() < deadline and not job.done(), f"the other action never ran: {job.status()}"
        time.sleep(0.05)
    time.sleep(0.3)


def in_queue(job, timeout: float = 60.0) -> None:
    """Wait until another client's action has its place in the queue."""
    deadline = time.monotonic() + timeout
    while job.status().code.name not in ("IN_QUEUE", "PROCESSING", "ITERATING", "PROGRESS"):
        assert time.monotonic() < deadline and not job.done(), f"the other action never queued: {job.status()}"
        time.sleep(0.05)
    time.sleep(0.3)


def test_a_waiting_action_shows_its_place_and_lands_and_a_full_queue_says_so(browser, small_queue_server):  # noqa: F811
    from gradio_client import Client

    others = [Client(small_queue_server.url, verbose=False) for _ in range(2)]
    pages = [browser.new_page(viewport={"width": 1440, "height": 900}) for _ in range(2)]
    for each in pages:
        each.goto(small_queue_server.url)
        each.wait_for_selector("#opd-generate")
    page, refused = pages
    page.click("#opd-generate")  # arith-001, alone: no wait to show
    wait_hint_before(page, 48, timeout=120_000)
    assert not page.locator("#opd-wait").is_visible()

    # A move waits behind another reviewer's generate, says so, and lands where it was made.
    running = long_generate(others[0], "Tell me a long story about a cat and a dog.")
    holds_the_model(running)
    page.locator("#opd-strip .opd-tok[data-i='46']").click()
    page.wait_for_selector("#opd-wait.opd-shown", timeout=20_000)
    waiting = page.locator("#opd-wait").inner_text()
    assert re.search(r"\b1 action ahead of yours", waiting), waiting
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "20-waiting-in-queue.png"))
    assert running.status().code.name == "PROCESSING", "the other generate ended before the test could look"
    wait_hint_before(page, 46, timeout=300_000)
    page.wait_for_function("() => !document.querySelector('#opd-wait').classList.contains('opd-shown')")
    running.result(timeout=300)

    # A full queue (two waiting) refuses the next action with one line. Each step waits for the one before it to
    # hold its place, while the running generate holds the model for many seconds: nothing here races the model.
    running = long_generate(others[0], "Tell me a long story about a cat and a dog.")
    holds_the_model(running)
    queued = long_generate(others[1], "Tell me a long story about a dog.")
    in_queue(queued)
    page.click("#opd-generate")  # the second waiting action: the queue (2) is full
    page.wait_for_function("() => /2 actions ahead of yours/.test(document.querySelector('#opd-wait').innerText)",
                           timeout=20_000)
    refused.click("#opd-generate")
    refused.wait_for_function("() => document.body.innerText.includes('busy. Please try again')", timeout=20_000)
    lines = {line.strip() for line in refused.inner_text("body").splitlines() if "busy" in line}
    assert lines == {"This application is currently busy. Please try again."}  # Gradio's one line, nothing else
    assert running.status().code.name == "PROCESSING", "the other generate ended before the test could look"
    refused.close()
    for job in (running, queued):
        job.result(timeout=300)
    page.wait_for_function("() => !document.querySelector('#opd-wait').classList.contains('opd-shown')",
                           timeout=300_000)
    page.close()
