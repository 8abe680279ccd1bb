"""The studio in a real browser (Debian's Chromium driven by Playwright) against `python app.py` on the real
default model. Screenshots go to test-artifacts/ (look at them); click-to-redraw latency to test-artifacts/."""

from __future__ import annotations

import io
import json
import statistics
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.ui_server import CHROMIUM, CHROMIUM_ARGS, ROOT, StudioServer

pytestmark = [pytest.mark.integration, pytest.mark.browser]
ARTIFACTS = ROOT / "test-artifacts"
XSS = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\"> {{7*7}} ${7*7} &amp; done"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    studio = StudioServer(tmp_path_factory.mktemp("studio-data")).start()
    yield studio
    studio.stop()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api").sync_playwright().start()
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    page.goto(server.url)
    page.wait_for_selector("#opd-generate")
    yield page
    page.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def status_text(page) -> str:
    return page.locator("#opd-status").inner_text()


def wait_hint_before(page, token: int, timeout: float = 60_000) -> None:
    """The redraw is done when a hint chip stands right before token `token`."""
    page.wait_for_selector(f"#opd-strip .opd-ghost + .opd-tok[data-i='{token}']", timeout=timeout)


def wait_text(page, selector: str, text: str, timeout: float = 60_000) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
                           arg=[selector, text], timeout=timeout)


def upload(page, path: Path) -> None:
    page.locator("#opd-upload input[type=file]").set_input_files(str(path))


def test_generate_edit_accept_persist_export_import(page, server, tmp_path):
    # 1. a demo task → Generate → the strip appears with the verifier's hint before the wrong "32"
    page.locator("#opd-demo input").click()
    page.get_by_role("option", name="arith-001 · What is 17 + 25?").click()
    page.click("#opd-generate")
    page.wait_for_selector("#opd-strip .opd-ghost", timeout=120_000)
    wait_hint_before(page, 48)
    assert "17·+·25·=" in page.locator("#opd-strip").inner_text()
    assert page.locator("#opd-strip .opd-error").count() == 2  # "3", "2" outlined
    shot(page, "01-generated")

    # 2. click a token to move the hint there
    page.locator("#opd-strip .opd-tok[data-i='46']").click()
    wait_hint_before(page, 46)
    moved = status_text(page)
    shot(page, "02-moved")

    # 3. edit the hint text: the after-probabilities change
    page.locator("#opd-hint-text textarea").fill("(Note: continue.) ")
    page.click("#opd-apply")
    page.wait_for_function("(before) => !document.querySelector('#opd-status').innerText.includes(before)",
                           arg=moved.split("at the hint:")[1], timeout=60_000)
    assert "(Note:·continue.)" in page.locator("#opd-strip .opd-ghost").inner_text()
    shot(page, "03-edited")

    # 4. hovering a token shows its details: p, rank, entropy before → after, top-5 under each
    page.locator("#opd-strip .opd-tok[data-i='48']").hover()
    wait_text(page, "#opd-strip .opd-detail", "#48")
    detail = page.locator("#opd-strip .opd-detail").inner_text()
    assert "rank 1 →" in detail and "entropy" in detail and "before" in detail and "after" in detail
    shot(page, "04-tooltip")

    # 5. accept: the curated count rises
    page.click("#opd-accept")
    wait_text(page, "#opd-counts", "1 curated")

    # 6. reload the page, then restart the server: the record is still there
    page.reload()
    page.get_by_role("tab", name="Curated set").click()
    wait_text(page, "#opd-curated", "arith-001-s0-t0")
    server.stop()
    server.start()
    page.goto(server.url)
    page.get_by_role("tab", name="Curated set").click()
    wait_text(page, "#opd-curated", "arith-001-s0-t0")
    shot(page, "05-curated-after-restart")

    # 7. export, then re-import into a fresh data directory
    page.click("#opd-export")
    link = page.locator("#opd-export-file a").first
    link.wait_for(timeout=30_000)
    with page.expect_download() as download:
        link.click()
    exported = tmp_path / "curated.jsonl"
    download.value.save_as(exported)
    record = json.loads(exported.read_text().splitlines()[0])
    assert record["id"] == "arith-001-s0-t0" and record["hints"][0]["text"] == "(Note: continue.) "
    assert record["hints"][0]["status"] == "accepted"

    fresh = StudioServer(tmp_path / "fresh").start()
    try:
        page.goto(fresh.url)
        page.get_by_role("tab", name="Curated set").click()
        page.locator("#opd-import input[type=file]").set_input_files(str(exported))
        wait_text(page, "#opd-curated", "arith-001-s0-t0")
    finally:
        fresh.stop()


def test_xss_rollout_renders_as_text(page, tmp_path):
    path = tmp_path / "xss.jsonl"
    path.write_text(json.dumps({"id": "xss", "messages": [{"role": "user", "content": "<b>hi</b> {{x}}"},
                                                          {"role": "assistant", "content": XSS}]}) + "\n")
    upload(page, path)
    page.wait_for_selector("#opd-strip .opd-tok", timeout=60_000)
    strip = page.locator("#opd-strip").inner_text()
    assert "<script>" in strip.replace("·", " ") and "onerror" in strip and "{{7*7}}" in strip
    assert "<b>hi</b>" in strip
    assert page.evaluate("window.__xss") is None
    # the probability plot draws, with the tag as text in its labels
    page.wait_for_selector("#opd-logprob-plot .main-svg", timeout=30_000)
    # the strip wraps: nothing overflows the page
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # no element came out of the text: only our own tags (the tooltip's <b> sits inside .opd-tip)
    assert page.locator("#opd-strip img, #opd-strip script, #opd-strip .opd-tok > b").count() == 0
    shot(page, "06-xss-inert")


def test_bad_upload_shows_an_error_and_keeps_the_session(page, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": "ok", "messages": [{"role": "user", "content": "Hi"},
                                                         {"role": "assistant", "content": "Hello there."}]}) + "\n")
    upload(page, good)
    page.wait_for_selector("#opd-strip .opd-tok", timeout=60_000)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "messages": [{"role": "robot", "content": "hi"}]}\n')
    upload(page, bad)
    page.wait_for_selector("text=role 'robot' is not one of", timeout=30_000)
    assert "Hello" in page.locator("#opd-strip").inner_text()  # the open record is untouched
    assert "Traceback" not in page.content()
    shot(page, "07-bad-upload")


def test_click_to_redraw_latency_on_a_200_token_rollout(page, tmp_path):
    from bench.common import rollout_of_length
    from opd_studio.model import load_model_cached
    from opd_studio.records import write_records

    _, tokenizer = load_model_cached()
    path = tmp_path / "long.jsonl"
    write_records(path, [rollout_of_length(tokenizer, 200, "long-200")])
    upload(page, path)
    page.wait_for_selector("#opd-strip .opd-tok[data-i='100']", timeout=60_000)
    first = int(page.locator("#opd-strip .opd-tok.opd-student").first.get_attribute("data-i"))
    latencies = []
    for offset in (150, 120, 90, 170, 60, 140, 110):
        token = first + offset
        start = time.perf_counter()
        page.locator(f"#opd-strip .opd-tok[data-i='{token}']").click()
        wait_hint_before(page, token)
        latencies.append(time.perf_counter() - start)
    ARTIFACTS.mkdir(exist_ok=True)
    median = statistics.median(latencies)
    (ARTIFACTS / "click_latency.json").write_text(json.dumps({"median_s": median, "all_s": latencies}))
    shot(page, "08-long-rollout")
    assert median < 5  # a correctness bound on a shared machine; `make bench` reports the real median


def test_train_three_steps_and_watch_the_curves(page):
    page.locator("label:has-text('Prompt') input[type=radio]").first.check()
    page.locator("#opd-prompt textarea").fill("What is 48 + 37?")
    page.click("#opd-generate")
    wait_text(page, "#opd-strip", "48·+·37·=")
    page.wait_for_selector("#opd-strip .opd-ghost", timeout=60_000)
    page.click("#opd-accept")
    wait_text(page, "#opd-counts", "curated")
    page.get_by_role("tab", name="Train").click()
    page.locator("#opd-train").wait_for()
    steps = page.get_by_label("Steps").first
    steps.fill("3")
    steps.press("Enter")
    page.click("#opd-train")
    seen = set()
    deadline = time.time() + 300
    while time.time() < deadline:  # the status streams "step k / 3" while the curves grow
        text = page.locator("#opd-train-status").inner_text()
        seen.add(text.split("·")[0].strip())
        if "stopped by" in text:
            break
        time.sleep(0.2)
    assert "stopped by steps" in text and "run" in text, text
    assert len(seen) >= 2  # at least one intermediate update before the final one
    # one solid curve per curated record (student) plus its dashed teacher target, four points each (steps 0-3)
    page.wait_for_selector("#opd-train-plot .scatterlayer .trace", timeout=30_000)
    points = page.locator("#opd-train-plot .scatterlayer .trace").first.locator(".point").count()
    assert points == 4
    page.wait_for_selector("#opd-runs >> text=steps", timeout=30_000)
    assert "now uses it" in text
    run_id = int(text.split("run ")[1].split(":")[0])
    shot(page, "09-trained")

    # The run is kept: reset to base, then switch back to it by number.
    page.click("#opd-reset")
    wait_text(page, "#opd-train-status", "reset to base")
    page.locator("#opd-run-id input").fill(str(run_id))
    page.click("#opd-use-run")
    wait_text(page, "#opd-train-status", f"using the weights of run {run_id}")
    page.click("#opd-download-run")
    link = page.locator(f"#opd-run-file a[download='opd-studio-run-{run_id}.zip']")
    link.wait_for(timeout=60_000)
    with zipfile.ZipFile(io.BytesIO(urllib.request.urlopen(link.get_attribute("href")).read())) as archive:
        assert {"adapter_config.json", "adapter_model.safetensors", "run.json"} <= set(archive.namelist())
    page.locator("#opd-run-id input").fill("999")
    page.click("#opd-use-run")
    page.wait_for_selector("text=there is no run 999", timeout=30_000)
