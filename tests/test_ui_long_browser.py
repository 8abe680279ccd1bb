"""An 8k-token reasoning trace in a real browser (Debian's Chromium driven by Playwright) against `python app.py`.

The studio runs the tiny random Llama of tests/conftest.py, saved with an 8,192-token context, so that an 8k-token
record scores in seconds: what is tested here is the page (windowed strip, minimap, keys, staged open), and the
numbers it shows against a one-shot scoring by the same weights in this process. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import math

import pytest

from bench.common import addition_rollout, with_sampled_logprobs
from tests.conftest import random_llama
from tests.ui_server import CHROMIUM, CHROMIUM_ARGS, ROOT, StudioServer

pytestmark = [pytest.mark.browser]
ARTIFACTS = ROOT / "test-artifacts"
MAX_TOKEN_ELEMENTS = 2000
STRIP = "#opd-strip .opd-strip"


@pytest.fixture(scope="module")
def long_model(tokenizer, tmp_path_factory):
    model = random_llama(tokenizer, 40)
    model.config.max_position_embeddings = 8192
    folder = tmp_path_factory.mktemp("tiny-8k")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def server(long_model, tmp_path_factory):
    studio = StudioServer(tmp_path_factory.mktemp("studio-long"), env={"OPD_STUDIO_MODEL": str(long_model[1])})
    yield studio.start()
    studio.stop()


@pytest.fixture(scope="module")
def page(server):
    playwright = pytest.importorskip("playwright.sync_api").sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = chromium.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url)
    page.wait_for_selector("#opd-generate")
    yield page
    chromium.close()
    playwright.stop()


def token_elements(page) -> int:
    return page.evaluate("document.querySelectorAll('.opd-tok').length")


def in_view(page, i: int) -> bool:
    """Token `i` is drawn and inside the strip's scroll box's visible area."""
    return page.evaluate("""(i) => {
        const chip = document.querySelector(`#opd-strip .opd-tok[data-i='${i}']`);
        const box = document.querySelector('#opd-strip .opd-scroll');
        if (!chip || !box) return false;
        const c = chip.getBoundingClientRect(), b = box.getBoundingClientRect();
        return c.top >= b.top - 1 && c.bottom <= b.bottom + 1; }""", i)


def focused(page) -> int | None:
    value = page.evaluate("document.activeElement && document.activeElement.dataset.i")
    return None if value is None else int(value)


def strip_numbers(page) -> dict:
    return page.evaluate("() => { const d = window.opdLongStrip.data; "
                         "return {i: d.i, p: d.p, q: d.q, kl: d.kl, f: d.f}; }")


def test_an_8k_trace_opens_at_its_hint_and_reads_across_the_whole_trace(page, long_model, tokenizer, tmp_path):
    from opd_studio.records import write_records
    from opd_studio.scoring import HintScorer
    from opd_studio.trajectory import build_trajectory
    from opd_studio.ui import strip

    model, _ = long_model
    record = with_sampled_logprobs(model, tokenizer, addition_rollout(tokenizer, 8000, hint_at=0.9, seed=7,
                                                                      record_id="addition-8k"))
    trajectory = build_trajectory(tokenizer, record)
    assert len(trajectory) > 8000
    hint = trajectory.anchor_token(record.hints[0])[0]
    path = tmp_path / "addition-8k.jsonl"
    write_records(path, [record])

    # 1. upload: the strip opens windowed, scrolled to the hint, with the minimap beside it
    page.locator("#opd-upload input[type=file]").set_input_files(str(path))
    page.wait_for_selector(f"{STRIP}[data-windowed='1'] .opd-tok[data-i='{hint}']", timeout=120_000)
    assert in_view(page, hint)
    assert page.locator("#opd-strip .opd-map").bounding_box()["height"] > 100
    assert token_elements(page) <= MAX_TOKEN_ELEMENTS
    page.wait_for_selector(f"{STRIP}[data-stage='full']", timeout=120_000)
    page.wait_for_function("() => !document.querySelector('#opd-strip .opd-pending')", timeout=120_000)
    assert in_view(page, hint) and token_elements(page) <= MAX_TOKEN_ELEMENTS
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "long-01-opened.png"))

    # 2. the windowed strip's numbers are those of a one-shot scoring (the same weights, in this process)
    reference = HintScorer(model, tokenizer, trajectory).score(record.hints, error=record.error)
    shown = strip_numbers(page)
    table = reference.table.set_index("i")
    scored = [(k, i) for k, i in enumerate(shown["i"]) if not math.isnan(table.logp_before[i])]
    assert len(scored) == int(table.logp_before.notna().sum())
    for k, i in scored:
        row = table.loc[i]
        assert abs(shown["p"][k] - math.exp(row.logp_before)) < 1e-3
        assert abs(shown["q"][k] - math.exp(row.logp_after)) < 1e-3 and abs(shown["kl"][k] - row.kl) < 1e-3

    # the page's unpacking of the payload gives back the server's columns exactly
    data = strip.strip_data(reference, "delta", trajectory)
    assert page.evaluate("(text) => window.opdUnpackStrip(JSON.parse(text))",
                         json.dumps(strip.pack_strip(data), ensure_ascii=False)) == data

    # 3. a click at the top of the minimap jumps to the start of the trace
    box = page.locator("#opd-strip .opd-map").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + 2)
    first = shown["i"][0]
    page.wait_for_function(f"() => document.querySelector(\"#opd-strip .opd-tok[data-i='{first + 5}']\")",
                           timeout=5_000)
    assert not in_view(page, hint) and any(in_view(page, first + d) for d in range(0, 40))
    assert token_elements(page) <= MAX_TOKEN_ELEMENTS

    # 4. n / m jump to the next low-p / high-KL token anywhere in the trace, and the view follows
    students = [i for i, f in zip(shown["i"], shown["f"]) if f & strip.STUDENT]
    page.locator(f"#opd-strip .opd-tok[data-i='{students[0]}']").focus()
    jumped = 0
    for key, flag in (("m", strip.HIGHKL), ("n", strip.LOW), ("m", strip.HIGHKL), ("n", strip.LOW)):
        start = focused(page)
        expected = next((i for i, f in zip(shown["i"], shown["f"]) if i > start and f & strip.STUDENT and f & flag),
                        start)  # none later: the focus stays (and the page says so)
        page.keyboard.press(key)
        assert focused(page) == expected and in_view(page, expected)
        jumped += expected - start
    assert jumped > 1000  # the jumps went past the drawn part of the strip

    # 5. the minimap's bottom: the end of the trace; ← steps back token by token
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] - 2)
    last = students[-1]
    page.wait_for_function(f"() => document.querySelector(\"#opd-strip .opd-tok[data-i='{last}']\")", timeout=5_000)
    page.locator(f"#opd-strip .opd-tok[data-i='{last}']").focus()
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    assert focused(page) == students[-4] and in_view(page, students[-4])
    # `s` goes back to the hint, 800 tokens up
    page.keyboard.press("s")
    assert focused(page) == hint and in_view(page, hint)

    # 6. move the hint with a click far from where it was (late, so the rescoring is short), then shift → moves it
    # one generated token on; the server's whole redraw has it, and the view stays where the reader is
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] - 2)
    target = students[-60]
    page.wait_for_function(f"() => document.querySelector(\"#opd-strip .opd-tok[data-i='{target}']\")",
                           timeout=5_000)
    page.locator(f"#opd-strip .opd-tok[data-i='{target}']").click()
    page.wait_for_selector(f"{STRIP}[data-stage='full'][data-hint='{target}'] .opd-ghost + .opd-tok[data-i='{target}']",
                           timeout=240_000)
    page.wait_for_function("() => !document.querySelector('#opd-strip .opd-pending')", timeout=240_000)
    assert in_view(page, target) and not in_view(page, hint)
    page.locator(f"#opd-strip .opd-tok[data-i='{target}']").focus()
    page.keyboard.press("Shift+ArrowRight")
    after = students[students.index(target) + 1]
    page.wait_for_selector(f"{STRIP}[data-stage='full'][data-hint='{after}'] .opd-ghost + .opd-tok[data-i='{after}']",
                           timeout=240_000)
    assert in_view(page, after) and token_elements(page) <= MAX_TOKEN_ELEMENTS
    page.screenshot(path=str(ARTIFACTS / "long-02-moved.png"))
