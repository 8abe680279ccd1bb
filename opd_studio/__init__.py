"""OPD Studio: inspect, annotate and train targeted on-policy self-distillation with hints.

The engine (model, trajectory, rollout, scoring, losses, hints, train, store) imports without Gradio;
`opd_studio.ui` is the thin app on top.
"""

__version__ = "0.2.0"
