"""The server's side of a click in the studio, on whatever device the model runs (CUDA where present).

What the studio does when a token is clicked, without the browser and Gradio's queue: move the hint before the
clicked token and rescore (`ui.session.move_hint`, the window-first update the page shows first, then the whole
table), then render the strip's HTML (`ui.strip.render_strip`). For rollouts of 200 and 2048 tokens, `--clicks`
clicks spread over the response; medians and spread. bench/ui_latency.py times the same from the browser (needs
Chromium); on a GPU box without one, this is the click→redraw number.

    python -m bench.click_server [--lengths 200 2048] [--clicks 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from bench.common import rollout_of_length
from opd_studio.model import load_model
from opd_studio.ui import session as ui
from opd_studio.ui.strip import render_strip

RESULTS = ROOT / "bench" / "results" / "click_server.json"


def sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def clicks(model, tokenizer, length: int, n_clicks: int) -> dict:
    record = rollout_of_length(tokenizer, length)
    session = ui.open_record(ui.Session(), model, tokenizer, record)
    first, last = session.scorer.trajectory.student_token_spans[1]
    session = ui.move_hint(session, first + (last - first) // 2)
    positions = [first + 1 + (k * 7919) % (last - first - 2) for k in range(n_clicks)]  # spread, not in order
    window_ms, whole_ms, html_ms = [], [], []
    for token in positions:
        sync(model)
        started = time.perf_counter()
        session = ui.move_hint(session, token, score=ui.rescore_window)
        sync(model)
        window_ms.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        session = ui.rescore(session)
        sync(model)
        whole_ms.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        render_strip(session.scores, "delta", session.scorer.trajectory)
        html_ms.append(1000 * (time.perf_counter() - started))

    def spread(values):
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {"length": length, "clicks": n_clicks, "window_ms": spread(window_ms), "whole_ms": spread(whole_ms),
            "strip_html_ms": spread(html_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 2048])
    parser.add_argument("--clicks", type=int, default=15)
    args = parser.parse_args()
    model, tokenizer = load_model("default")
    device = torch.cuda.get_device_name() if model.device.type == "cuda" else "CPU"
    clicks(model, tokenizer, 200, 2)  # warm-up
    rows = [clicks(model, tokenizer, length, args.clicks) for length in args.lengths]
    print(f"Server side of a click ({device}, {next(model.parameters()).dtype}), medians (min–max) of {args.clicks}:")
    print(f"{'tokens':>8}{'window ms':>22}{'whole table ms':>22}{'strip HTML ms':>22}")
    for row in rows:
        cells = [f"{row[k]['median']:.0f} ({row[k]['min']:.0f}–{row[k]['max']:.0f})"
                 for k in ("window_ms", "whole_ms", "strip_html_ms")]
        print(f"{row['length']:>8}" + "".join(f"{c:>22}" for c in cells))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"device": device, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
