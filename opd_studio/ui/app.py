"""A first studio page: generate a rollout, place an inline hint, see per-token probabilities before and after.

Layout and event wiring only; the work is done by the engine (`rollout.generate`, `scoring.HintScorer`).
"""

from __future__ import annotations

import math

import gradio as gr
import pandas as pd

from ..model import load_model_cached
from ..records import Hint, RecordError
from ..rollout import SamplingConfig, generate
from ..scoring import HintScorer
from ..trajectory import TrajectoryError, build_trajectory

TABLE_COLUMNS = ["i", "text", "p_before", "p_after", "rank_before", "rank_after", "kl", "target"]


def rollout_and_score(prompt: str, hint_char: float, hint_text: str, temperature: float, seed: float):
    """Generate an answer to `prompt`, insert `hint_text` at character `hint_char` of it, score both."""
    if not prompt.strip():
        raise gr.Error("Write a prompt first.")
    model, tokenizer = load_model_cached()
    record, _ = generate(model, tokenizer, [{"role": "user", "content": prompt}],
                         SamplingConfig(temperature=float(temperature), seed=int(seed), max_new_tokens=96))
    answer = record.messages[-1]["content"]
    try:
        hints = [Hint(text=hint_text, message=len(record.messages) - 1, char=int(hint_char))] if hint_text else []
        table = HintScorer(model, tokenizer, build_trajectory(tokenizer, record)).score(hints)
    except (RecordError, TrajectoryError) as exc:
        raise gr.Error(str(exc)) from None
    student = table[table.student & table.logp_before.notna()].copy()
    student["p_before"] = student.logp_before.map(math.exp).round(4)
    student["p_after"] = student.logp_after.map(math.exp).round(4)
    student["kl"] = student.kl.round(4)
    return answer, student[TABLE_COLUMNS]


def build_app() -> gr.Blocks:
    with gr.Blocks(title="OPD Studio") as app:
        gr.Markdown("# OPD Studio\nOn-policy self-distillation with hints: see how a hint moves every token.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", value="What is 17 + 25?", scale=3)
            temperature = gr.Slider(0, 1.5, value=0, step=0.05, label="Temperature (0 = greedy)")
            seed = gr.Number(value=0, precision=0, label="Seed")
        with gr.Row():
            hint_char = gr.Number(value=10, precision=0, label="Hint position (character in the answer)")
            hint_text = gr.Textbox(label="Hint text", value=" (Hint: 7 + 5 = 12, so carry the 1.) ", scale=3)
        run = gr.Button("Generate and score", variant="primary")
        answer = gr.Textbox(label="Rollout", interactive=False)
        table = gr.Dataframe(headers=TABLE_COLUMNS, label="Per-token probabilities", interactive=False)
        run.click(rollout_and_score, [prompt, hint_char, hint_text, temperature, seed], [answer, table],
                  api_name="rollout_and_score")
    return app


def launch(app: gr.Blocks, **kwargs) -> None:
    app.queue(default_concurrency_limit=1).launch(server_name=kwargs.pop("server_name", "127.0.0.1"),
                                                  server_port=kwargs.pop("server_port", 7860), **kwargs)


if __name__ == "__main__":  # pragma: no cover
    launch(build_app())
