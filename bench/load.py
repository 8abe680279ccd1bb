"""Many reviewers, one studio: N concurrent reviewers through `gradio_client` against `python app.py`.

Each reviewer is a client of its own (its own Gradio session) and works through rounds of generate (a prompt of
its own, the default model) → move the hint → edit its text → accept → step back (k), as fast as the answers come
(no reading pause: the worst case for the queue), after one untimed warm-up generate. Per action: p50 and p95 of
the wall time a reviewer waits, and the errors. Afterwards the store file is opened and every acknowledged accept
is checked: present, accepted, the reviewer's name, the hint text the reviewer wrote. The goal (README): 0 errors,
0 lost reviews, and no worse than taking turns — p95 at N ≤ its single-reviewer p95 + (N − 1) × the slowest
action's single-reviewer p95.

Local mode (one workspace, the reviewer's name typed in the review form). A Space-like start with each reviewer
signed in as a different user is not driven here: Hugging Face OAuth cannot be completed by `gradio_client`.

    .venv/bin/python -m bench.load                   # N = 1, 4, 8 (about 6 minutes on 2 CPU cores)
    .venv/bin/python -m bench.load --update-readme   # and write the table into the README
    .venv/bin/python -m bench.load --quick           # a smoke run: N = 1, 2, two rounds each
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import update_readme
from opd_studio.store import Store
from tests.ui_server import StudioServer

ACTIONS = ("generate", "move", "edit", "accept", "step")
VIEW = "delta"


@dataclass
class Reviewer:
    """One reviewer's timings (seconds, per action), errors, and the reviews the studio acknowledged."""

    name: str
    seconds: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in ACTIONS})
    errors: list[str] = field(default_factory=list)
    acknowledged: dict[str, str] = field(default_factory=dict)  # record id → the hint text accepted


def student_token(strip_html: str) -> int:
    """A student token of the strip to move the hint to: the second of the answer (the first may hold it)."""
    tokens = [int(i) for cls, i in re.findall(r"class='([^']*)' data-i='(\d+)'", strip_html) if "opd-student" in cls]
    if not tokens:
        raise RuntimeError("the strip shows no student token")
    return tokens[min(1, len(tokens) - 1)]


def record_id(status_markdown: str) -> str:
    match = re.match(r"\*\*([^*]+)\*\*", status_markdown)
    if not match:
        raise RuntimeError(f"no record id in the status line: {status_markdown[:120]!r}")
    return match.group(1)


def review_rounds(url: str, reviewer: Reviewer, rounds: int, max_tokens: int, start: threading.Barrier) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    start.wait()

    def timed(action: str, *args, api_name: str):
        began = time.perf_counter()
        try:
            return client.predict(*args, api_name=api_name)
        finally:
            reviewer.seconds[action].append(time.perf_counter() - began)

    for n in range(rounds):
        try:
            a, b = 100 + 37 * n + len(reviewer.name), 10 + n
            prompt = f"{reviewer.name}, round {n}: what is {a} + {b}? Answer in one sentence."
            shown = timed("generate", "Prompt", None, prompt, 0.0, 1.0, max_tokens, n, "arithmetic", VIEW,
                          api_name="/generate")
            opened = record_id(shown[1])
            timed("move", student_token(shown[0]), VIEW, api_name="/move_hint")
            hint = f" (Hint from {reviewer.name}, round {n}: {a} + {b} = {a + b}.) "
            timed("edit", hint, "inline", "", VIEW, api_name="/edit_hint")
            accepted = timed("accept", reviewer.name, hint, "inline", "", "arithmetic", VIEW, api_name="/accept")
            reviewer.acknowledged[opened] = hint  # the studio answered: the review is stored
            if "curated" not in accepted[8]:
                raise RuntimeError(f"the accept's counts say nothing curated: {accepted[8]!r}")
            # The accept opened the next pending record (the warm-up's); k steps back to the one before it.
            timed("step", "all", "arithmetic", VIEW, api_name="/previous")
        except Exception as exc:  # noqa: BLE001 - every error is counted and shown
            reviewer.errors.append(f"round {n}: {type(exc).__name__}: {str(exc)[:200]}")


def warm_up(url: str, max_tokens: int) -> None:
    """One untimed generate: the model is loaded and has run once before any reviewer starts. Its record stays
    pending, so every reviewer's accept has a next pending record to open."""
    from gradio_client import Client

    Client(url, verbose=False).predict("Prompt", None, "Warm-up: what is 2 + 2?", 0.0, 1.0, max_tokens, 0,
                                       "arithmetic", VIEW, api_name="/generate")


def lost_reviews(store_path: Path, reviewers: list[Reviewer]) -> list[str]:
    """Every acknowledged accept, looked up in the store file: what is missing or not as the reviewer left it."""
    store, lost = Store(store_path), []
    table = store.table(status="accepted").set_index("id")
    for reviewer in reviewers:
        for rid, hint in reviewer.acknowledged.items():
            record = store.get(rid)
            if rid not in table.index or record is None:
                lost.append(f"{rid} ({reviewer.name}): not accepted in the store")
            elif table.loc[rid, "reviewer"] != reviewer.name:
                lost.append(f"{rid}: reviewer {table.loc[rid, 'reviewer']!r}, not {reviewer.name!r}")
            elif [h.text for h in record.hints] != [hint]:
                lost.append(f"{rid}: hints {[h.text for h in record.hints]!r}, not [{hint!r}]")
    return lost


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def run_level(n_reviewers: int, rounds: int, max_tokens: int, work: Path) -> dict:
    """One studio started as a user would, `n_reviewers` at once, then the store checked."""
    data = work / f"n{n_reviewers}"
    server = StudioServer(data).start()
    try:
        warm_up(server.url, max_tokens)
        reviewers = [Reviewer(f"reviewer-{k + 1}") for k in range(n_reviewers)]
        start = threading.Barrier(n_reviewers)
        threads = [threading.Thread(target=review_rounds, args=(server.url, r, rounds, max_tokens, start))
                   for r in reviewers]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
    finally:
        server.stop()
    lost = lost_reviews(data / "opd_studio.sqlite", reviewers)
    actions = {}
    for action in ACTIONS:
        seconds = [s for r in reviewers for s in r.seconds[action]]
        actions[action] = {"p50": round(statistics.median(seconds), 2) if seconds else None,
                           "p95": round(percentile(seconds, 0.95), 2) if seconds else None, "n": len(seconds)}
    errors = [e for r in reviewers for e in r.errors]
    return {"reviewers": n_reviewers, "rounds": rounds, "wall_s": round(wall, 1), "actions": actions,
            "errors": errors, "acknowledged": sum(len(r.acknowledged) for r in reviewers), "lost": lost,
            "reviews_per_minute": round(60 * sum(len(r.acknowledged) for r in reviewers) / wall, 1)}


def with_bounds(levels: list[dict]) -> None:
    """The taking-turns bound of each action at each N, from the single-reviewer run of the same invocation."""
    single = next((lv for lv in levels if lv["reviewers"] == 1), None)
    if single is None:
        return
    slowest = max(a["p95"] for a in single["actions"].values() if a["p95"] is not None)
    for level in levels:
        for action, timing in level["actions"].items():
            alone = single["actions"][action]["p95"]
            if timing["p95"] is None or alone is None:
                continue
            timing["bound_p95"] = round(alone + (level["reviewers"] - 1) * slowest, 2)
            timing["within_bound"] = timing["p95"] <= timing["bound_p95"]


def markdown(levels: list[dict]) -> str:
    header = "  | reviewers | " + " | ".join(ACTIONS) + " | errors | reviews lost | reviews / min |"
    lines = [header, "  |---|" + "---|" * len(ACTIONS) + "---|---|---|"]
    for level in levels:
        cells = []
        for action in ACTIONS:
            t = level["actions"][action]
            mark = "" if t.get("within_bound", True) else " ✗"
            cells.append(f"{t['p50']:.1f} / {t['p95']:.1f}{mark}" if t["p50"] is not None else "–")
        lines.append(f"  | {level['reviewers']} | " + " | ".join(cells) +
                     f" | {len(level['errors'])} | {len(level['lost'])} of {level['acknowledged']} | "
                     f"{level['reviews_per_minute']} |")
    lines.append("")
    lines.append("  Seconds a reviewer waits per action, p50 / p95 (✗: over the taking-turns bound, single p95 + "
                 "(N − 1) × the slowest single p95).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reviewers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per reviewer (generate … step)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per generated answer")
    parser.add_argument("--quick", action="store_true", help="N = 1, 2; two rounds; 16 tokens: a smoke run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "load.json"))
    parser.add_argument("--update-readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    if args.quick:
        args.reviewers, args.rounds, args.max_tokens = [1, 2], 2, 16
    work = Path(tempfile.mkdtemp(prefix="opd-load-bench-"))
    levels = []
    for n in args.reviewers:
        levels.append(run_level(n, args.rounds, args.max_tokens, work))
        print(f"N = {n}: {levels[-1]['wall_s']} s, {len(levels[-1]['errors'])} errors, "
              f"{len(levels[-1]['lost'])} lost of {levels[-1]['acknowledged']}", flush=True)
        for error in levels[-1]["errors"] + levels[-1]["lost"]:
            print("   ", error)
    with_bounds(levels)
    results = {"levels": levels,
               "setting": {"rounds": args.rounds, "max_tokens": args.max_tokens, "cpu_count": os.cpu_count(),
                           "machine": platform.machine(), "model": os.environ.get("OPD_STUDIO_MODEL", "default")}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    table = markdown(levels)
    print(table)
    if args.update_readme:
        update_readme('load', table)
        print("README.md updated")
    if any(level["errors"] or level["lost"] for level in levels):
        raise SystemExit("errors or lost reviews (above)")


if __name__ == "__main__":
    main()
