"""The studio in a real browser (Debian's Chromium driven by Playwright) against `python app.py` on the real
default model. Screenshots go to test-artifacts/ (look at them); click-to-redraw latency to test-artifacts/."""

from __future__ import annotations

import io
import json
import math
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


@pytest.fixture
def fresh_page(browser, tmp_path):
    """A page on a studio of its own (base weights, empty store), for a test that needs the base model's fresh
    rollout of a demo task which the module's studio has already stored, or trained on."""
    studio = StudioServer(tmp_path / "studio-data").start()
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    page.goto(studio.url)
    page.wait_for_selector("#opd-generate")
    yield page
    page.close()
    studio.stop()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def status_text(page) -> str:
    return page.locator("#opd-status [data-testid=markdown]").inner_text()


def wait_hint_before(page, token: int, timeout: float = 60_000, preview: bool = False) -> None:
    """A hint chip stands right before token `token`: in the server's whole redraw, or (`preview`) already in the
    page's own preview of a move, which comes before the server's answer (and the status it brings)."""
    strip = "#opd-strip .opd-strip" if preview else f"#opd-strip .opd-strip[data-stage='full'][data-hint='{token}']"
    page.wait_for_selector(f"{strip} .opd-ghost + .opd-tok[data-i='{token}']", timeout=timeout)


def wait_text(page, selector: str, text: str, timeout: float = 60_000) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
                           arg=[selector, text], timeout=timeout)


def upload(page, path: Path) -> None:
    page.locator("#opd-upload input[type=file]").set_input_files(str(path))


def visible_error_badges(page) -> int:
    """'Error' labels shown on components (the toast, the one message, is not counted)."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('*')).filter(e => e.children.length === 0
        && (e.textContent || '').trim() === 'Error' && e.offsetParent !== null
        && !e.closest('[class*=toast]')).length""")


def visible_toasts(page, text: str) -> int:
    return page.evaluate("""(t) => Array.from(document.querySelectorAll('[class*=toast-body]'))
        .filter(e => e.offsetParent !== null && e.innerText.includes(t)).length""", text)


def strip_render(page) -> str:
    return page.evaluate("document.querySelector('#opd-strip .opd-strip').dataset.render")


def press_and_wait_for_redraw(page, key: str, timeout: float = 60_000) -> float:
    """Press `key` (as a user would, on whatever has focus) and wait until the server redraws the strip."""
    before = strip_render(page)
    start = time.perf_counter()
    page.keyboard.press(key)
    page.wait_for_function("(r) => document.querySelector('#opd-strip .opd-strip').dataset.render !== r",
                           arg=before, timeout=timeout)
    return time.perf_counter() - start


def choose_view(page, view: str) -> None:
    """Click a "Colour by" radio button and wait for the strip in that view."""
    page.locator(f"#opd-view label:has-text('{view}')").click()
    page.wait_for_selector(f"#opd-strip .opd-strip[data-view='{view}']", timeout=30_000)


def unhinted_demo_rollouts(path: Path, n: int = 10) -> list[dict]:
    """`n` arithmetic rollouts from the demo set, hints and error spans taken out: the hint model must find them."""
    rows = [json.loads(line) for line in (ROOT / "assets" / "demo_rollouts.jsonl").read_text().splitlines()]
    chosen = [r for r in rows if r["meta"]["family"] == "arithmetic"][:n]
    for row in chosen:
        row["id"], row["hints"], row["error"] = f"kb-{row['id']}", [], None
    path.write_text("".join(json.dumps(row) + "\n" for row in chosen))
    return chosen


def test_generate_edit_accept_persist_export_import(page, server, tmp_path):
    # 1. a demo task → Generate → the strip appears with the verifier's hint before the wrong "32"
    page.locator("#opd-demo input").click()
    page.get_by_role("option", name="arith-001 · What is 17 + 25?").click()
    page.click("#opd-generate")
    page.wait_for_selector("#opd-strip .opd-ghost", timeout=120_000)
    wait_hint_before(page, 48)
    assert "17·+·25·=" in page.locator("#opd-strip").inner_text()
    assert page.locator("#opd-strip .opd-tok.opd-error").count() == 2  # "3", "2" outlined
    record_id = status_text(page).split(" ")[0]
    assert record_id.startswith("arith-001")
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
    wait_text(page, "#opd-curated", record_id)
    server.stop()
    server.start()
    page.goto(server.url)
    page.get_by_role("tab", name="Curated set").click()
    wait_text(page, "#opd-curated", record_id)
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
    assert record["id"] == record_id and record["hints"][0]["text"] == "(Note: continue.) "
    assert record["hints"][0]["status"] == "accepted"

    fresh = StudioServer(tmp_path / "fresh").start()
    try:
        page.goto(fresh.url)
        page.get_by_role("tab", name="Curated set").click()
        page.locator("#opd-import input[type=file]").set_input_files(str(exported))
        wait_text(page, "#opd-curated", record_id)
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


def test_bad_upload_shows_one_error_resets_the_box_and_keeps_the_session(page, tmp_path):
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
    assert visible_error_badges(page) == 0
    # the upload box is ready for the next file (not holding the bad one under an overlay)
    page.wait_for_selector("#opd-upload input[type=file]", state="attached", timeout=10_000)
    page.wait_for_function("!document.querySelector('#opd-upload').innerText.includes('bad.jsonl')", timeout=10_000)
    shot(page, "07-bad-upload")


def test_hint_moves_at_the_click_and_the_final_strip_equals_a_one_shot_rescoring(page, tmp_path):
    from bench.common import rollout_of_length
    from opd_studio.model import load_model_cached
    from opd_studio.records import Hint, write_records
    from opd_studio.scoring import HintScorer
    from opd_studio.trajectory import build_trajectory
    from opd_studio.ui.session import DEFAULT_HINT

    model, tokenizer = load_model_cached()
    record = rollout_of_length(tokenizer, 200, "long-200")
    path = tmp_path / "long.jsonl"
    write_records(path, [record])
    upload(page, path)
    page.wait_for_selector("#opd-strip .opd-tok[data-i='100']", timeout=60_000)
    first = int(page.locator("#opd-strip .opd-tok.opd-student").first.get_attribute("data-i"))
    timings = []
    for offset in (150, 60, 120, 90, 170):
        token = first + offset
        start = time.perf_counter()
        # The click and the check run in one task of the page: no answer from the server can arrive in between.
        ghost_before, stage, pending = page.evaluate("""(t) => {
            document.querySelector(`#opd-strip .opd-tok[data-i='${t}']`).click();
            const ghost = document.querySelector('#opd-strip .opd-ghost');
            return [ghost.nextElementSibling.dataset.i, document.querySelector('#opd-strip .opd-strip').dataset.stage,
                    document.querySelectorAll('#opd-strip .opd-tok.opd-pending').length]; }""", token)
        assert (ghost_before, stage) == (str(token), "local") and pending > 0
        page.wait_for_selector(f"#opd-strip .opd-strip[data-hint='{token}']:is([data-stage='window'], "
                               f"[data-stage='full'])", timeout=60_000)
        window = time.perf_counter() - start
        page.wait_for_selector(f"#opd-strip .opd-strip[data-stage='full'][data-hint='{token}']", timeout=60_000)
        timings.append({"error_numbers_s": window, "strip_s": time.perf_counter() - start})
        wait_hint_before(page, token)
        assert page.locator("#opd-strip .opd-tok.opd-pending").count() == 0
    shot(page, "08-long-rollout")
    # shift → moves the hint one generated token on, in the page first
    page.locator(f"#opd-strip .opd-tok[data-i='{token}']").focus()
    page.keyboard.press("Shift+ArrowRight")
    wait_hint_before(page, token + 1, timeout=5_000, preview=True)
    page.wait_for_selector(f"#opd-strip .opd-strip[data-stage='full'][data-hint='{token + 1}']", timeout=60_000)
    page.keyboard.press("Shift+ArrowLeft")
    page.wait_for_selector(f"#opd-strip .opd-strip[data-stage='full'][data-hint='{token}']", timeout=60_000)

    # The final strip's numbers are those of a one-shot rescoring with the hint where the last click put it.
    trajectory = build_trajectory(tokenizer, record)
    message, char = trajectory.token_to_char(token)
    table = HintScorer(model, tokenizer, trajectory).score([Hint(text=DEFAULT_HINT, token=token, message=message,
                                                                 char=char)], span="turn").table
    shown = page.evaluate("""Array.from(document.querySelectorAll('#opd-strip .opd-tok[data-kl]'))
        .map(c => [Number(c.dataset.i), Number(c.dataset.p), Number(c.dataset.q), Number(c.dataset.kl)])""")
    assert len(shown) == int(table.logp_before.notna().sum())
    for i, p_before, p_after, kl in shown:
        row = table.loc[i]
        assert abs(p_before - math.exp(row.logp_before)) < 1e-4 and abs(p_after - math.exp(row.logp_after)) < 1e-4
        assert abs(kl - row.kl) < 1e-4
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "click_latency.json").write_text(json.dumps(timings, indent=1))


def test_first_load_says_what_to_do(browser, server):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url)
    page.wait_for_selector("#opd-generate")
    wait_text(page, "#opd-status", "Start here")
    assert "No rollout open yet" in page.locator("#opd-strip").inner_text()
    for button in ("#opd-accept", "#opd-reject", "#opd-right", "#opd-undo", "#opd-apply"):
        assert page.locator(button).is_disabled(), button
    assert page.locator("#opd-demo").is_visible() and page.locator("#opd-prompt").is_hidden()
    assert page.locator("#opd-template").is_hidden()  # only for template placement
    page.keyboard.press("a")  # a key with nothing to do says so
    wait_text(page, "#opd-keycue", "open a record first")
    page.keyboard.press("?")
    assert page.locator("#opd-keys").is_visible() and "keep as right" in page.locator("#opd-keys").inner_text()
    shot(page, "00-first-load")
    page.keyboard.press("Escape")
    assert page.locator("#opd-keys").is_hidden()
    page.locator("#opd-source-kind label:has-text('Prompt')").click()
    page.locator("#opd-prompt").wait_for(state="visible")
    assert page.locator("#opd-demo").is_hidden()
    page.locator("#opd-placement label:has-text('template')").click()
    page.locator("#opd-template").wait_for(state="visible")
    page.close()


def test_keyboard_only_review_of_a_ten_record_upload(browser, tmp_path):
    studio = StudioServer(tmp_path / "data").start()  # a queue of exactly these ten records
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(studio.url)
        page.wait_for_selector("#opd-generate")
        path = tmp_path / "ten.jsonl"
        rows = unhinted_demo_rollouts(path)
        upload(page, path)
        wait_text(page, "#opd-status", "kb-")
        page.wait_for_selector("#opd-strip .opd-tok.opd-student", timeout=60_000)
        proposals, seconds = {}, []
        for n in range(len(rows) + 1):  # one record is skipped with j and comes back at the end
            record_id = status_text(page).split(" ")[0]
            if not record_id.startswith("kb-"):
                break
            text = page.locator("#opd-proposals [data-testid=markdown]").inner_text()
            proposals[record_id] = text
            assert "Hint model:" in text and "none run" not in text, text  # every record that opens is proposed
            hinted = bool(page.locator("#opd-hint-text textarea").input_value().strip())
            if n % 3 == 0:  # a radio was clicked: keys still work
                choose_view(page, "kl")
            elif n % 3 == 1:  # Escape leaves the hint box, back to the strip
                page.keyboard.press("e")
                assert page.evaluate("document.activeElement.tagName") == "TEXTAREA"
                page.keyboard.press("Escape")
                assert page.evaluate("document.activeElement.closest('#opd-strip') !== null")
            else:
                choose_view(page, "delta")
            if n == 2:
                press_and_wait_for_redraw(page, "j")  # skip it for now
                assert status_text(page).split(" ")[0] != record_id
                continue
            key = "a" if hinted else "r"  # a wrong answer gets its proposed hint accepted; a right one is kept
            if n == 4:
                key = "x"
            seconds.append(press_and_wait_for_redraw(page, key))
            # focus is back on the strip
            page.wait_for_function("document.activeElement.closest('#opd-strip') !== null", timeout=5_000)
        assert set(proposals) == {row["id"] for row in rows}
        assert sum("verifier:arithmetic" in text for text in proposals.values()) >= 4  # the wrong answers
        wait_text(page, "#opd-counts", "10 / 10 reviewed")
        shot(page, "10-keyboard-review-done")
        median = statistics.median(seconds)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "review_seconds.json").write_text(json.dumps({"median_s": median, "all_s": seconds}))
        assert median < 5  # a correctness bound on a shared machine; bench/ui_latency.py reports the real one
    finally:
        page.close()
        studio.stop()


def test_one_error_is_one_message_and_the_hint_box_keeps_the_stored_hint(page):
    page.click("#opd-generate")
    page.wait_for_selector("#opd-strip .opd-ghost", timeout=120_000)
    stored = page.locator("#opd-hint-text textarea").input_value()
    assert stored.strip()
    page.locator("#opd-hint-text textarea").fill("")
    page.click("#opd-apply")
    page.wait_for_selector("text=the hint text is empty", timeout=30_000)
    assert visible_toasts(page, "the hint text is empty") == 1
    assert visible_error_badges(page) == 0
    page.wait_for_function("(v) => document.querySelector('#opd-hint-text textarea').value === v", arg=stored,
                           timeout=30_000)  # the box shows the hint that Accept would save
    assert page.locator("#opd-strip .opd-tok.opd-pending").count() == 0
    shot(page, "11-one-error")


def test_phone_layout(browser, server):
    page = browser.new_page(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    try:
        page.goto(server.url)
        page.wait_for_selector("#opd-generate")
        page.click("#opd-generate")
        page.wait_for_selector("#opd-strip .opd-ghost", timeout=120_000)
        page.wait_for_selector("#opd-logprob-plot .main-svg .legend", timeout=60_000)
        generate, strip = page.locator("#opd-generate").bounding_box(), page.locator("#opd-strip").bounding_box()
        assert generate["y"] < strip["y"] < generate["y"] + 250  # the strip right under the source controls
        assert strip["y"] < 844  # on the first screen
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        for plot in ("#opd-logprob-plot", "#opd-kl-plot"):
            if page.locator(f"{plot} .legend").count() == 0:  # one trace: plotly draws no legend
                continue
            legend = page.locator(f"{plot} .legend").bounding_box()
            data = page.locator(f"{plot} .nsewdrag").first.bounding_box()
            assert legend["y"] >= data["y"] + data["height"], plot  # the legend under the data, not over it
        # a long press shows a token's details and leaves the hint where it is
        chip = page.locator("#opd-strip .opd-tok.opd-student").first
        index = chip.get_attribute("data-i")
        hint_at = page.evaluate("document.querySelector('#opd-strip .opd-strip').dataset.hint")
        chip.dispatch_event("pointerdown", {"pointerType": "touch", "bubbles": True})
        page.wait_for_timeout(700)
        chip.dispatch_event("pointerup", {"pointerType": "touch", "bubbles": True})
        chip.dispatch_event("click")
        wait_text(page, "#opd-strip .opd-detail", f"#{index}")
        page.wait_for_timeout(500)
        assert page.evaluate("document.querySelector('#opd-strip .opd-strip').dataset.hint") == hint_at
        page.screenshot(path=str(ARTIFACTS / "12-phone.png"))
        shot(page, "12-phone-full")
    finally:
        page.close()


def curate_a_typed_prompt(page, timeout: float = 60_000) -> None:
    """Type "What is 48 + 37?", generate, and accept the verifier's proposed hint."""
    page.locator("label:has-text('Prompt') input[type=radio]").first.check()
    page.locator("#opd-prompt textarea").fill("What is 48 + 37?")
    page.click("#opd-generate")
    wait_text(page, "#opd-strip", "48·+·37·=", timeout)
    page.wait_for_selector("#opd-strip .opd-ghost", timeout=timeout)
    page.click("#opd-accept")
    wait_text(page, "#opd-counts", "curated", timeout)


def test_train_three_steps_and_watch_the_curves(page):
    curate_a_typed_prompt(page)
    page.get_by_role("tab", name="Train").click()
    page.locator("#opd-train").wait_for()
    # nothing empty takes space before it has content
    assert page.locator("#opd-train-plot").is_hidden() and page.locator("#opd-run-file").is_hidden()
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
    assert "active weights" in text or "now uses it" in text
    run_id = int(text.split("run ")[1].split(":")[0])
    # what to do next; the Run box holds the latest run; the step axis has whole steps only
    wait_text(page, "#opd-train-next", "fix rate")
    page.wait_for_function("(n) => document.querySelector('#opd-run-id input').value === String(n)", arg=run_id,
                           timeout=30_000)
    ticks = page.eval_on_selector_all("#opd-train-plot .xtick text", "ts => ts.map(t => t.textContent)")
    assert ticks and all(tick.strip().lstrip("−-").isdigit() for tick in ticks), ticks
    shot(page, "09-trained")

    # The step timeline: the run's curated record across its steps; the slider redraws its strip.
    page.set_viewport_size({"width": 1440, "height": 900})
    page.wait_for_selector("#opd-timeline-strip .opd-timeline[data-step='3']", timeout=60_000)
    last = page.locator("#opd-timeline-strip .opd-timeline").inner_html()
    assert page.locator("#opd-timeline-strip .opd-tok.opd-error").count() >= 1
    page.locator("#opd-timeline-strip").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "13-timeline-step3.png"))
    step_box = page.locator("#opd-timeline-step input[type=number]")
    step_box.fill("0")
    step_box.press("Enter")
    page.wait_for_selector("#opd-timeline-strip .opd-timeline[data-step='0']", timeout=30_000)
    first = page.locator("#opd-timeline-strip .opd-timeline").inner_html()
    assert first != last
    p_error = [float(page.locator("#opd-timeline-strip .opd-error-p").inner_text())]
    page.locator("#opd-timeline-strip").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "14-timeline-step0.png"))
    step_box.fill("3")
    step_box.press("Enter")
    page.wait_for_selector("#opd-timeline-strip .opd-timeline[data-step='3']", timeout=30_000)
    p_error.append(float(page.locator("#opd-timeline-strip .opd-error-p").inner_text()))
    assert page.locator("#opd-timeline-strip .opd-timeline").inner_html() != first  # the slider scrubs back
    page.set_viewport_size({"width": 1500, "height": 1400})

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
    # the tests after this one read the base model's answers (the demo's hint before "32")
    page.click("#opd-reset")
    wait_text(page, "#opd-train-status", "reset to base")


def test_placebo_lane_and_gradient_map_on_a_demo_record(fresh_page):
    page = fresh_page  # the verifier's hint before "32" of the base model's answer, not a stored or trained one
    page.set_viewport_size({"width": 1440, "height": 900})
    page.locator("#opd-demo input").click()
    page.get_by_role("option", name="arith-001 · What is 17 + 25?").click()
    page.click("#opd-generate")
    page.wait_for_selector("#opd-strip .opd-ghost", timeout=120_000)
    wait_hint_before(page, 48)
    page.wait_for_function("() => document.querySelector('#opd-placebo textarea').value.includes('check this step')",
                           timeout=30_000)  # the default placebo: the hint's frame, content-free words
    # the placebo lane: the strip gains the style key and the placebo / content numbers
    page.locator("#opd-placebo-on input").check()
    page.wait_for_selector("#opd-strip .opd-key-style", timeout=60_000)
    choose_view(page, "content")
    page.locator("#opd-strip .opd-tok[data-i='48']").hover()
    wait_text(page, "#opd-strip .opd-detail", "before / hinted / placebo")
    assert "content (hinted − placebo)" in page.locator("#opd-strip .opd-detail").inner_text()
    page.wait_for_selector("#opd-logprob-plot .scatterlayer .trace:nth-child(3)", timeout=30_000)
    assert "placebo teacher" in page.locator("#opd-logprob-plot").inner_text()
    page.locator("#opd-strip").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "15-placebo-lane.png"))
    page.locator("#opd-logprob-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "16-placebo-plot.png"))

    # the gradient map of the contrast target: a table, and the details of each target token
    page.get_by_role("tab", name="Gradient map").click()
    page.locator("#opd-gradient-target input").click()
    page.get_by_role("option", name="contrast").click()
    page.click("#opd-gradient")
    page.wait_for_selector("#opd-gradient-table table", timeout=60_000)
    page.wait_for_selector("#opd-strip .opd-tok.opd-mapped", timeout=30_000)
    assert "target's top" in page.locator("#opd-gradient-table").inner_text()
    page.locator("#opd-strip .opd-tok.opd-mapped").first.hover()
    wait_text(page, "#opd-strip .opd-detail", "gradient map (contrast target)")
    page.locator("#opd-strip").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "17-gradient-map-details.png"))
    page.locator("#opd-gradient-table").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "18-gradient-map-table.png"))

    # bad input: α outside its range, then a target that needs the placebo with the lane off: one message each
    page.locator("#opd-gradient-alpha input").fill("5")
    page.click("#opd-gradient")
    page.wait_for_selector("text=alpha must be in (0, 4]", timeout=30_000)
    page.locator("#opd-gradient-alpha input").fill("1")
    page.locator("#opd-placebo-on input").uncheck()
    page.wait_for_function("() => !document.querySelector('#opd-strip .opd-key-style')", timeout=60_000)
    page.click("#opd-gradient")
    page.wait_for_selector("text=tick 'Placebo lane'", timeout=30_000)
    assert page.locator("#opd-gradient-table").is_hidden()  # the map of the lane-on strip went with it
    page.screenshot(path=str(ARTIFACTS / "19-gradient-map-needs-placebo.png"))
    badges = page.evaluate("""() => Array.from(document.querySelectorAll('*')).filter(e => e.children.length === 0
        && (e.textContent || '').trim() === 'Error' && e.offsetParent !== null && !e.closest('[class*=toast]'))
        .map(e => e.parentElement.parentElement.outerHTML.slice(0, 600))""")
    assert not badges, badges
