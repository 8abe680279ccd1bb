"""The Gradio studio: layout and events only; the work happens in the engine's plain functions."""

from .app import build_app, launch

__all__ = ["build_app", "launch"]
