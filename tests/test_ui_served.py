"""The studio split in two processes: `opd-studio serve` holds the default model, `python app.py` with
OPD_STUDIO_BASE_URL holds none and generates, scores, runs the placebo lane and the gradient map through it. The
served strip equals what the same weights give in-process; the page is shot at 1440×900 (test-artifacts/)."""

import math
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.ui_server import CHROMIUM, CHROMIUM_ARGS, ROOT, StudioServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process = subprocess.Popen([sys.executable, "-m", "opd_studio", "serve", "--port", str(port)], cwd=ROOT,
                               stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(url + "/models", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    pytest.fail(f"opd-studio serve did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, model_server):
    server = StudioServer(tmp_path_factory.mktemp("served-studio"), env={"OPD_STUDIO_BASE_URL": model_server}).start(timeout=600)
    yield server
    server.stop()


def strip_probabilities(strip: str) -> dict[int, tuple[float, float]]:
    """token → (p before, p after) as the strip carries them (4 decimals)."""
    return {int(i): (float(p), float(q))
            for i, p, q in re.findall(r"data-i='(\d+)' data-p='([0-9.]+)' data-q='([0-9.]+)'", strip)}


def test_the_studio_scores_through_a_served_model(studio, default_model):
    from gradio_client import Client

    from opd_studio.scoring import HintScorer
    from opd_studio.store import Store
    from opd_studio.trajectory import build_trajectory

    client = Client(studio.url, verbose=False, httpx_kwargs={"timeout": 600})
    strip = client.predict("Prompt", None, "What is 17 + 25?", 0, 1, 32, 0, "arithmetic", "delta",
                           api_name="/generate")[0]
    assert "17·+·25·=" in strip and "(top-5 + tail)" in strip and "opd-ghost" in strip

    # the rollout the server generated went to the review queue with its proposed hint: scored in-process by the
    # same weights, it gives the p the served strip shows
    [record] = Store(studio.data_dir / "opd_studio.sqlite").records(status="pending")
    model, tokenizer = default_model
    local = HintScorer(model, tokenizer, build_trajectory(tokenizer, record)).score(record.usable_hints).table
    shown = strip_probabilities(strip)
    compared = [row for row in local.itertuples() if row.student and row.i in shown]
    assert len(compared) > 10
    for row in compared:
        assert shown[row.i][0] == pytest.approx(math.exp(row.logp_before), abs=2e-4)
        assert shown[row.i][1] == pytest.approx(math.exp(row.logp_after), abs=2e-4)

    moved = client.predict(46, "delta", api_name="/move_hint")[0]
    assert "data-stage='full'" in moved and re.search(r"opd-ghost[^>]*>[^<]*</span><span [^>]*data-i='46'", moved)
    with_placebo = client.predict(True, "", "", "delta", api_name="/placebo")[0]
    assert "p before / hinted / placebo" in with_placebo
    strip, gradient = client.predict("contrast", 1.0, "delta", api_name="/gradient_map")  # (the session is state)
    table = gradient.get("value", gradient)  # the table comes as an update (it is shown once there is a map)
    assert table["data"] and "gradient map (contrast target)" in strip


def test_a_screenshot_at_1440_by_900(studio):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(studio.url)
        page.wait_for_selector("#opd-generate")
        page.locator("#opd-generate").click()
        page.wait_for_selector("#opd-strip .opd-strip[data-stage='full'] .opd-tok", timeout=120_000)
        page.locator("#opd-strip .opd-tok").nth(12).hover()
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "test-artifacts" / "served-studio.png"))
        assert "served at" in page.inner_text("body")
        browser.close()
