"""The Train tab's "Next round" in a real browser (Debian's Chromium, Playwright) against `python app.py` on the real
default model: a round on a tiny budget (1 step), its hints placed as feedback turns, lands in the store, the round
history and its plot."""

from __future__ import annotations

import pytest

from opd_studio.store import Store
from tests.test_ui_browser import ARTIFACTS, curate_a_typed_prompt, wait_text
from tests.test_ui_browser import browser  # noqa: F401 - the shared Chromium fixture
from tests.ui_server import StudioServer

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    studio = StudioServer(tmp_path_factory.mktemp("rounds-data")).start()
    yield studio
    studio.stop()


def test_next_round_adds_a_row_to_the_round_history(browser, server):  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url)
    page.wait_for_selector("#opd-generate")
    curate_a_typed_prompt(page, timeout=400_000)  # a shared 2-core machine can be that slow

    page.get_by_role("tab", name="Train").click()
    page.locator("#opd-next-round").wait_for()
    assert page.locator("#opd-rounds").is_hidden() and page.locator("#opd-rounds-plot").is_hidden()
    steps = page.get_by_label("Steps").first
    steps.fill("1")
    steps.press("Enter")
    page.locator("#opd-round-accept input[type=checkbox]").check()
    page.locator("#opd-round-placement input[value=feedback]").check()
    # no held-out demo prompts: the round regenerates the one curated prompt only (tests/test_rounds.py measures
    # a held-out set)
    page.locator("label:has-text('Measure drift on held-out demo rollouts') input[type=checkbox]").uncheck()
    page.click("#opd-next-round")
    wait_text(page, "#opd-train-status", "round 1", timeout=60_000)
    wait_text(page, "#opd-train-status", "→ run 1", timeout=900_000)
    wait_text(page, "#opd-rounds", "curated", timeout=60_000)
    status = page.locator("#opd-train-status").inner_text()
    assert "round 1 → run 1 (parent base)" in status, status
    table = page.locator("#opd-rounds").inner_text()
    assert "curated" in table and "heldout" not in table
    # "48 + 37 = 114" again under the base weights: flagged, accepted as proposed, its hint a feedback turn
    [flagged] = [r for r in Store(server.data_dir / "opd_studio.sqlite").records()
                 if r.meta.get("round") == 1 and r.hints]
    assert [h.placement for h in flagged.hints] == ["feedback"], flagged.hints
    page.wait_for_selector("#opd-rounds-plot .scatterlayer .trace", timeout=30_000)
    assert "Right answers across rounds" in page.locator("#opd-rounds-plot").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#opd-next-round").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "20-round-history.png"))
    page.locator("#opd-rounds-plot").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "21-round-plot.png"))

    # The history is the store's: a reload shows it again.
    page.reload()
    page.get_by_role("tab", name="Train").click()
    wait_text(page, "#opd-rounds", "curated", timeout=120_000)
    page.close()
