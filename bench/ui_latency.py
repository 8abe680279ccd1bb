"""Editing latency in the browser, new path vs the old one-shot path, and keyboard review speed.

Debian's Chromium driven by Playwright against `python app.py` on the default model (CPU). For each rollout length
(200 and 2048 tokens by default) the same clicks run twice, each on a fresh server: the studio as it is, and with
`OPD_STUDIO_ONESHOT=1` (the old path: no preview in the page, no window-first update, no read-ahead). Each click
moves the hint to another point of the response; the page times, from the click:

  hint_visible_ms     the hint chip stands before the clicked token (the page's own preview; the old path shows it
                      only with the server's answer)
  error_numbers_ms    the server's numbers from the hint to just past the error span are in the strip
  strip_ms            the whole strip is in (the plots follow in a chained event, not timed)

Then keyboard review: ten short demo rollouts (their hints removed, so the hint model proposes), reviewed with a / x
/ j after a short read of each record; seconds from the key to the next record's strip.

Writes bench/results/ui_latency.json. Run it alone on the machine (other load skews every number):

    .venv/bin/python -m bench.ui_latency --update-readme # 200 and 2048 tokens, 15 clicks each, both paths
    .venv/bin/python -m bench.ui_latency --quick         # a smoke run: 200 tokens, 5 clicks, 4 records
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


from bench.common import rollout_of_length, update_readme
from opd_studio.model import load_model
from opd_studio.records import write_records
from tests.ui_server import CHROMIUM, CHROMIUM_ARGS, ROOT, StudioServer

OFFSETS = (0.75, 0.20, 0.60, 0.45, 0.85, 0.30, 0.70, 0.55, 0.10, 0.90, 0.38, 0.65, 0.50, 0.80, 0.25)  # of the response
READ_S = 0.8  # a pause between actions, as a person reads (the page is idle then, the plots have arrived)

# One click, timed inside the page: the chip moves, the window arrives, the whole strip arrives.
CLICK_JS = """
async (t) => {
  const t0 = performance.now(); const out = {hint: null, error: null, strip: null};
  const check = () => {
    const root = document.querySelector('#opd-strip .opd-strip');
    if (!root) return false;
    const ghost = root.querySelector('.opd-ghost');
    const now = performance.now() - t0;
    if (out.hint === null && ghost && ghost.nextElementSibling && ghost.nextElementSibling.dataset
        && ghost.nextElementSibling.dataset.i === String(t)) out.hint = now;
    if (root.dataset.hint === String(t) && ['window', 'full'].includes(root.dataset.stage)) {
      if (out.error === null) out.error = now;
      if (root.dataset.stage === 'full' && !root.querySelector('.opd-pending')) out.strip = now;
    }
    return out.strip !== null;
  };
  return await new Promise((resolve) => {
    const target = document.querySelector('#opd-strip');
    const observer = new MutationObserver(() => { if (check()) { observer.disconnect(); resolve(out); } });
    observer.observe(target, {childList: true, subtree: true, attributes: true});
    document.querySelector(`#opd-strip .opd-tok[data-i='${t}']`).click();
    requestAnimationFrame(() => { if (check()) { observer.disconnect(); resolve(out); } });
    setTimeout(() => { observer.disconnect(); resolve(out); }, 180000);
  });
}
"""


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 1), "p90": round(p90, 1), "n": len(ordered)}


def studio(work: Path, oneshot: bool) -> StudioServer:
    os.environ["OPD_STUDIO_ONESHOT"] = "1" if oneshot else "0"  # StudioServer passes the environment on
    try:
        return StudioServer(work).start()
    finally:
        os.environ.pop("OPD_STUDIO_ONESHOT")


def open_uploaded(browser, server, path: Path, timeout_ms: float):
    """A page on the studio with the rollouts of `path` uploaded and the first one's strip shown."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url)
    page.wait_for_selector("#opd-generate")
    page.locator("#opd-upload input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#opd-strip .opd-tok.opd-student", timeout=timeout_ms)
    return page


def clicks(browser, tokenizer, length: int, n_clicks: int, oneshot: bool, work: Path) -> dict:
    rollout = work / f"rollout-{length}.jsonl"
    write_records(rollout, [rollout_of_length(tokenizer, length, f"long-{length}")])
    server = studio(work / f"data-{length}-{'old' if oneshot else 'new'}", oneshot)
    try:
        page = open_uploaded(browser, server, rollout, timeout_ms=600_000)
        students = [int(i) for i in page.eval_on_selector_all("#opd-strip .opd-tok.opd-student[data-i]",
                                                               "cs => cs.map(c => c.dataset.i)")]
        timings = {"hint_visible_ms": [], "error_numbers_ms": [], "strip_ms": []}
        for fraction in (OFFSETS * (1 + n_clicks // len(OFFSETS)))[:n_clicks]:
            time.sleep(READ_S)
            token = students[int(fraction * (len(students) - 2))]
            out = page.evaluate(CLICK_JS, token)
            if out["strip"] is None:
                raise RuntimeError(f"no strip after clicking token {token}: {out}")
            timings["hint_visible_ms"].append(out["hint"] if out["hint"] is not None else out["strip"])
            timings["error_numbers_ms"].append(out["error"])
            timings["strip_ms"].append(out["strip"])
        page.close()
    finally:
        server.stop()
    result = {name: percentiles(values) for name, values in timings.items()}
    print(f"{length} tokens, {'old one-shot' if oneshot else 'new'} path: "
          + ", ".join(f"{name} p50 {r['p50']:.0f} / p90 {r['p90']:.0f} ms" for name, r in result.items()))
    return result


def review(browser, n_records: int, oneshot: bool, work: Path) -> float:
    """Median seconds from a/x/j to the next record's strip, on short demo rollouts with their hints removed."""
    rows = [json.loads(line) for line in (ROOT / "assets" / "demo_rollouts.jsonl").read_text().splitlines()]
    chosen = [r for r in rows if r["meta"]["family"] == "arithmetic"][:n_records]
    for row in chosen:
        row["id"], row["hints"], row["error"] = f"review-{row['id']}", [], None
    path = work / "review.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in chosen))
    server = studio(work / f"data-review-{'old' if oneshot else 'new'}", oneshot)
    seconds = []
    try:
        page = open_uploaded(browser, server, path, timeout_ms=120_000)
        for n in range(n_records - 1):
            time.sleep(READ_S)
            before = page.evaluate("document.querySelector('#opd-strip .opd-strip').dataset.render")
            hinted = bool(page.locator("#opd-hint-text textarea").input_value().strip())
            key = "j" if n % 4 == 3 else "x" if n % 4 == 2 or not hinted else "a"
            start = time.perf_counter()
            page.keyboard.press(key)
            page.wait_for_function("(r) => document.querySelector('#opd-strip .opd-strip').dataset.render !== r",
                                   arg=before, timeout=120_000)
            seconds.append(time.perf_counter() - start)
        page.close()
    finally:
        server.stop()
    median = statistics.median(seconds)
    print(f"keyboard review, {'old one-shot' if oneshot else 'new'} path: median {median:.2f} s per record "
          f"({len(seconds)} records)")
    return round(median, 3)


def markdown(results: dict, lengths: list[int]) -> str:
    """The README's table: p50 (p90) per timing, the old path beside it, and the review speed."""
    def cell(timing: dict) -> str:
        return f"{timing['p50'] / 1000:.2f} s ({timing['p90'] / 1000:.2f})" if timing["p50"] >= 100 else \
            f"{timing['p50']:.0f} ms ({timing['p90']:.0f})"
    lines = ["  | rollout | hint visible | numbers at the error span | whole strip | old path, all three |",
             "  |---|---|---|---|---|"]
    for length in lengths:
        new, old = results[str(length)], results["oneshot"][str(length)]
        lines.append(f"  | {length} tokens | {cell(new['hint_visible_ms'])} | {cell(new['error_numbers_ms'])} | "
                     f"{cell(new['strip_ms'])} | {cell(old['strip_ms'])} |")
    lines.append("")
    lines.append(f"  p50 (p90) over {results['setting']['clicks']} clicks. Keyboard review: "
                 f"{results['review_seconds_per_record']:.2f} s per record (old path "
                 f"{results['oneshot']['review_seconds_per_record']:.2f} s).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 2048])
    parser.add_argument("--clicks", type=int, default=15)
    parser.add_argument("--records", type=int, default=10, help="records in the keyboard review")
    parser.add_argument("--quick", action="store_true", help="200 tokens, 5 clicks, 4 records: a smoke run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ui_latency.json"))
    parser.add_argument("--update-readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.clicks, args.records = [200], 5, 4
    from playwright.sync_api import sync_playwright

    _, tokenizer = load_model("default")
    work = Path(tempfile.mkdtemp(prefix="opd-ui-bench-"))
    results: dict = {"oneshot": {}}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for length in args.lengths:
            results[str(length)] = clicks(browser, tokenizer, length, args.clicks, False, work)
            results["oneshot"][str(length)] = clicks(browser, tokenizer, length, args.clicks, True, work)
        results["review_seconds_per_record"] = review(browser, args.records, False, work)
        results["oneshot"]["review_seconds_per_record"] = review(browser, args.records, True, work)
        browser.close()
    results["ratio_old_over_new_p50"] = {
        str(length): {name: round(results["oneshot"][str(length)][name]["p50"] / max(r["p50"], 1e-9), 2)
                      for name, r in results[str(length)].items()} for length in args.lengths}
    results["setting"] = {"clicks": args.clicks, "records": args.records, "read_pause_s": READ_S,
                          "cpu_count": os.cpu_count(), "machine": platform.machine(),
                          "model": os.environ.get("OPD_STUDIO_MODEL", "default")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    table = markdown(results, args.lengths)
    print(table)
    if args.update_readme:
        update_readme('ui-latency', table)
        print("README.md updated")


if __name__ == "__main__":
    main()
