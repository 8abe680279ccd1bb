"""Long rollouts in the browser: opening and editing an 8k-token trace, the staged path vs the old one-shot path.

Debian's Chromium driven by Playwright against `python app.py` on the default model (CPU). The records are seeded
addition traces (`bench.common.addition_rollout`: numbered steps, one wrong sum, a hint before it) of 2k, 4k and 8k
tokens with the hint late (90 % of the steps) and in the middle (50 %), each carrying its sampled log-probabilities
(`response_logprobs`, computed here with one forward pass over the trace: decoder + projections of every position,
timed as `forward_s`, the reference of the issue's goals). Each record is uploaded to a fresh page of two servers:
the studio as it is, and with `OPD_STUDIO_ONESHOT=1` (the old path: one whole scoring, the whole strip as HTML).
Each studio first opens a short warm-up record, not counted (the studio loads its model in the background as the
page opens). The page times, from the upload:

  useful_ms          the strip is on screen, scrolled so that the hint is in view (the staged path paints the
                     student's colours from the record's log-probabilities here, before any forward pass)
  hint_numbers_ms    the hinted numbers around the hint and the error span are in the strip
  strip_ms           the whole strip is in (nothing pending)
  token_elements     the most token elements the page held at once
  cpu_s              CPU seconds the studio and Chromium used from the upload to the numbers at the hint and to
                     the whole strip (they share the machine's cores; on a Space the browser is elsewhere)

then, from a click on the token three before the error span (the hint moves there):

  click_error_ms     the error span's numbers are in (the window update; the old path: the whole strip)
  click_strip_ms     the whole strip is in

Writes bench/results/long_ui.json. Run it alone on the machine (other load skews every number):

    .venv/bin/python -m bench.long_ui --screenshot assets/long_rollout.png   # 2k, 4k, 8k × late, middle
    .venv/bin/python -m bench.long_ui --lengths 8000     # the 8k records only
    .venv/bin/python -m bench.long_ui --quick            # a smoke run: one 1,800-token record, hint late
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import psutil

from bench.common import addition_rollout, with_sampled_logprobs
from opd_studio.model import load_model
from opd_studio.records import write_records
from opd_studio.trajectory import build_trajectory
from tests.ui_server import CHROMIUM, CHROMIUM_ARGS, ROOT, StudioServer

POSITIONS = {"late": 0.9, "middle": 0.5}
TIMEOUT_MS = 900_000

# Timestamps of what the page shows, from `window.opdT0`: kept by an observer the benchmark installs first.
WATCH_JS = """
(hint) => {
  window.opdT0 = performance.now(); window.opdSeen = {useful: null, numbers: null, strip: null, elements: 0};
  const seen = window.opdSeen;
  const check = () => {
    const root = document.querySelector('#opd-strip .opd-strip');
    seen.elements = Math.max(seen.elements, document.querySelectorAll('.opd-tok').length);
    if (!root || root.dataset.render === 'empty') return;
    const now = performance.now() - window.opdT0;
    const chip = root.querySelector(`.opd-tok[data-i='${hint}']`);
    const box = root.querySelector('.opd-scroll') || root;
    if (seen.useful === null && chip) {
      const c = chip.getBoundingClientRect(), b = box.getBoundingClientRect();
      const inView = root.dataset.windowed === '1' ? (c.top >= b.top && c.bottom <= b.bottom) : true;
      if (inView) seen.useful = now;
    }
    if (seen.numbers === null && chip && root.dataset.sampled !== '1' && chip.dataset.kl !== undefined &&
        !chip.classList.contains('opd-pending')) seen.numbers = now;
    if (seen.strip === null && root.dataset.stage === 'full' && !root.querySelector('.opd-pending')) seen.strip = now;
  };
  window.opdWatch && window.opdWatch.disconnect();
  window.opdWatch = new MutationObserver(check);
  window.opdWatch.observe(document.body, {childList: true, subtree: true, attributes: true});
}
"""

CLICK_JS = """
async (t) => {
  const t0 = performance.now(); const out = {error: null, strip: null};
  const check = () => {
    const root = document.querySelector('#opd-strip .opd-strip');
    const now = performance.now() - t0;
    if (root && root.dataset.hint === String(t) && ['window', 'full'].includes(root.dataset.stage)) {
      if (out.error === null) out.error = now;
      if (root.dataset.stage === 'full' && !root.querySelector('.opd-pending')) out.strip = now;
    }
    return out.strip !== null;
  };
  return await new Promise((resolve) => {
    const observer = new MutationObserver(() => { if (check()) { observer.disconnect(); resolve(out); } });
    observer.observe(document.querySelector('#opd-strip'), {childList: true, subtree: true, attributes: true});
    document.querySelector(`#opd-strip .opd-tok[data-i='${t}']`).click();
    setTimeout(() => { observer.disconnect(); resolve(out); }, %d);
  });
}
""" % TIMEOUT_MS


def studio(work: Path, oneshot: bool, model: str | None) -> StudioServer:
    env = {"OPD_STUDIO_ONESHOT": "1" if oneshot else "0", **({"OPD_STUDIO_MODEL": model} if model else {})}
    return StudioServer(work, env=env).start()


def measure(browser, server, path: Path, hint: int, error_start: int, screenshot: Path | None = None) -> dict:
    """Upload `path` on a fresh page, time the open, then a click three tokens before the error span. `screenshot`:
    where to save the page (1440×900, scrolled to the strip) once the record is open."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        page.goto(server.url)
        page.wait_for_selector("#opd-generate")
        page.evaluate(WATCH_JS, hint)
        cpu_start = cpu_seconds(server)
        page.locator("#opd-upload input[type=file]").set_input_files(str(path))
        page.wait_for_function("() => window.opdSeen.numbers !== null || window.opdSeen.strip !== null",
                               timeout=TIMEOUT_MS, polling=100)
        cpu_numbers = cpu_seconds(server)
        page.wait_for_function("() => window.opdSeen.strip !== null", timeout=TIMEOUT_MS, polling=100)
        cpu_strip = cpu_seconds(server)
        seen = page.evaluate("window.opdSeen")
        time.sleep(1.0)  # a person reads; the plots arrive
        if screenshot is not None:
            page.evaluate("window.scrollTo(0, document.querySelector('#opd-status').getBoundingClientRect().top"
                          " + window.scrollY - 8)")
            page.screenshot(path=str(screenshot))
        target = error_start - 3
        clicked = page.evaluate(CLICK_JS, target)
        seen["elements"] = max(seen["elements"], page.evaluate("document.querySelectorAll('.opd-tok').length"))
    finally:
        page.close()
    if clicked["strip"] is None:
        raise RuntimeError(f"no strip after clicking token {target}: {clicked}")
    return {"useful_ms": round(seen["useful"]), "hint_numbers_ms": round(seen["numbers"] or seen["strip"]),
            "strip_ms": round(seen["strip"]), "token_elements": seen["elements"],
            "click_error_ms": round(clicked["error"]), "click_strip_ms": round(clicked["strip"]),
            "cpu_s": {stage: {who: round(at[who] - cpu_start[who], 1) for who in at}
                      for stage, at in (("numbers", cpu_numbers), ("strip", cpu_strip))}}


def cpu_seconds(server) -> dict[str, float]:
    """CPU seconds used so far by the studio's process and by Chromium's (every process whose name says chrom):
    both share this machine's cores, so a browser busy drawing slows the model down."""
    def used(process) -> float:
        try:
            times = process.cpu_times()
            return times.user + times.system
        except psutil.Error:  # a process that ended between the listing and the read
            return 0.0
    browser = sum(used(p) for p in psutil.process_iter(["name"]) if "chrom" in (p.info["name"] or "").lower())
    return {"studio": used(psutil.Process(server.process.pid)), "chromium": browser}


def markdown(results: list[dict]) -> str:
    lines = ["| tokens | hint | one forward pass | upload → hint in view | → numbers at the hint | → whole strip | "
             "click → error numbers | token elements | CPU s to the numbers: studio / Chromium |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        new, old, forward = r["new"], r["old"], r["forward_s"] * 1000
        lines.append(
            f"| {r['tokens']:,} | {r['hint']} | {forward / 1000:.1f} s | {new['useful_ms'] / 1000:.1f} s "
            f"(old {old['useful_ms'] / 1000:.1f} s) | {new['hint_numbers_ms'] / 1000:.1f} s = "
            f"{new['hint_numbers_ms'] / forward:.2f}× a pass (old {old['hint_numbers_ms'] / forward:.2f}×) | "
            f"{new['strip_ms'] / 1000:.1f} s = {new['strip_ms'] / old['strip_ms']:.2f}× old | "
            f"{new['click_error_ms'] / 1000:.1f} s = {new['click_error_ms'] / old['click_error_ms']:.2f}× old | "
            f"{new['token_elements']:,} (old {old['token_elements']:,}) | "
            f"{new['cpu_s']['numbers']['studio']:.0f} / {new['cpu_s']['numbers']['chromium']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8000])
    parser.add_argument("--positions", nargs="+", choices=list(POSITIONS), default=list(POSITIONS))
    parser.add_argument("--model", default=None, help="OPD_STUDIO_MODEL for the studio (default: the default model)")
    parser.add_argument("--quick", action="store_true", help="one 1,800-token record, hint late")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "long_ui.json"))
    parser.add_argument("--screenshot", default=None,
                        help="save the longest record with the hint late, opened on the new path, as this PNG "
                             "(the README's is assets/long_rollout.png)")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.positions = [1800], ["late"]
    from playwright.sync_api import sync_playwright

    model, tokenizer = load_model(args.model or "default", device="cpu")
    work = Path(tempfile.mkdtemp(prefix="long-ui-"))
    records = []
    # A short record opened first on each studio and not counted: the studio loads its model in the background
    # as the page opens, and the first measured record would otherwise wait for that load.
    warm = addition_rollout(tokenizer, 300, POSITIONS["late"], record_id="warm-up")
    warm_path = work / "warm-up.jsonl"
    write_records(warm_path, [warm])
    warm_trajectory = build_trajectory(tokenizer, warm)
    warm_marks = (warm_trajectory.anchor_token(warm.hints[0])[0], warm_trajectory.error_token_span(warm.error)[0])
    for length in args.lengths:
        for position in args.positions:
            record = addition_rollout(tokenizer, length, POSITIONS[position], record_id=f"addition-{length}-{position}")
            start = time.perf_counter()
            with_sampled_logprobs(model, tokenizer, record)  # one forward pass: decoder + every projection
            forward_s = time.perf_counter() - start
            trajectory = build_trajectory(tokenizer, record)
            path = work / f"{record.id}.jsonl"
            write_records(path, [record])
            records.append({"tokens": len(trajectory), "hint": position, "forward_s": round(forward_s, 2),
                            "path": path, "anchor": trajectory.anchor_token(record.hints[0])[0],
                            "error_start": trajectory.error_token_span(record.error)[0]})
            print(f"{record.id}: {len(trajectory)} tokens, one forward pass {forward_s:.1f} s", flush=True)
    del model
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    results = []
    try:
        for oneshot in (False, True):
            server = studio(work / ("old" if oneshot else "new"), oneshot, args.model)
            try:
                measure(browser, server, warm_path, *warm_marks)
                shown = max(records, key=lambda r: (r["hint"] == "late", r["tokens"]))
                for r in records:
                    screenshot = Path(args.screenshot) if args.screenshot and not oneshot and r is shown else None
                    r["old" if oneshot else "new"] = measure(browser, server, r["path"], r["anchor"],
                                                             r["error_start"], screenshot)
                    print(f"{r['tokens']} tokens, hint {r['hint']}, {'old one-shot' if oneshot else 'new'} path: "
                          f"{r['old' if oneshot else 'new']}", flush=True)
            finally:
                server.stop()
    finally:
        browser.close()
        playwright.stop()
    for r in records:
        results.append({k: (str(v) if isinstance(v, Path) else v) for k, v in r.items() if k != "path"})
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
           "model": args.model or "default", "quick": args.quick, "results": results, "table": markdown(results)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(out["table"])


if __name__ == "__main__":
    main()
