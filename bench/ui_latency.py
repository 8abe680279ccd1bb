"""Click-to-redraw latency in the browser: a 200-token rollout, click a token, wait until the strip shows the hint
before it. Debian's Chromium driven by Playwright against `python app.py` on the default model (CPU).

Each click moves the hint to another point of the response, so each redraw is an incremental rescoring from the new
hint position plus the HTML and plots going over the wire and into the DOM. Median of the clicks.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import rollout_of_length  # noqa: E402
from opd_studio.model import load_model  # noqa: E402
from opd_studio.records import write_records  # noqa: E402
from tests.ui_server import CHROMIUM, CHROMIUM_ARGS, StudioServer  # noqa: E402

OFFSETS = (150, 40, 120, 90, 170, 60, 140, 110, 20, 180, 75, 130, 100, 160, 50)


def main() -> None:
    from playwright.sync_api import sync_playwright

    _, tokenizer = load_model("default")
    work = Path(tempfile.mkdtemp(prefix="opd-ui-bench-"))
    rollout = work / "long.jsonl"
    write_records(rollout, [rollout_of_length(tokenizer, 200, "long-200")])
    server = StudioServer(work / "data").start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.goto(server.url)
            page.locator("#opd-upload input[type=file]").set_input_files(str(rollout))
            page.wait_for_selector("#opd-strip .opd-tok[data-i='100']", timeout=120_000)
            first = int(page.locator("#opd-strip .opd-tok.opd-student").first.get_attribute("data-i"))
            latencies = []
            for offset in OFFSETS:
                token = first + offset
                start = time.perf_counter()
                page.locator(f"#opd-strip .opd-tok[data-i='{token}']").click()
                page.wait_for_selector(f"#opd-strip .opd-ghost + .opd-tok[data-i='{token}']", timeout=60_000)
                latencies.append(time.perf_counter() - start)
            browser.close()
    finally:
        server.stop()
    median = statistics.median(latencies)
    print(f"Click-to-redraw, 200-token rollout, CPU: median {median * 1000:.0f} ms over {len(latencies)} clicks "
          f"(min {min(latencies) * 1000:.0f}, max {max(latencies) * 1000:.0f})")
    out = Path(__file__).parent / "results" / "ui_latency.json"
    out.write_text(json.dumps({"median_s": median, "clicks_s": latencies}, indent=2))


if __name__ == "__main__":
    main()
