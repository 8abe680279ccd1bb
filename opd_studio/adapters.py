"""Trained weights on disk: save a run (adapter + run.json), load it back, merge and export, reset to base.

A run directory holds what peft writes (`adapter_config.json`, `adapter_model.safetensors`) — or, for a full
fine-tune, the whole model in safetensors — and `run.json`: the run's settings, metric rows, record ids and the
per-process weight checksums. Loading an adapter onto the same base model reproduces the trained probabilities
exactly (the adapter is the only thing that changed). Writes go to a temporary directory renamed into place, so a
killed process leaves either the old run or the new one.

Layers point one way: this module builds on `train` (what a run is), and `train` knows nothing of files.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from .files import write_directory
from .train import DriftError, is_lora, worst_drift

RUN_FILE = "run.json"


def save_run(result, directory: str | os.PathLike, tokenizer=None, force: bool = False, merge: bool = False) -> Path:
    """Write `result` (a `train.TrainResult`) to `directory`. Refuses, with `train.DriftError`, a run whose final
    drift is over its threshold unless `force`. `merge`: also write the merged full model to `directory/merged`."""
    if result.drift_exceeded and not force:
        raise DriftError(f"drift {worst_drift(result.final):.4f} nats/token is over the threshold "
                         f"{result.config.drift_threshold}: the run is not saved (force to save it anyway)")
    directory = Path(directory)

    def write(staging: Path) -> None:
        result.model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None and not is_lora(result.model):
            tokenizer.save_pretrained(staging)
        (staging / RUN_FILE).write_text(json.dumps(_jsonable(result.summary()), indent=1))
        if merge:
            export_merged(result.model, tokenizer, staging / "merged")

    write_directory(directory, write)
    return directory


def load_run(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {RUN_FILE}: not a saved training run")
    return json.loads(path.read_text())


def load_adapter(model, directory: str | os.PathLike):
    """`model` (the base) with the saved adapter attached, in eval mode. peft injects the adapter in place."""
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{directory} holds no adapter (adapter_config.json is missing); a full fine-tune "
                                "is loaded as a model: model.load_model(directory)")
    return PeftModel.from_pretrained(model, str(directory)).eval()


def export_merged(model, tokenizer, directory: str | os.PathLike) -> Path:
    """Write a standalone model with the adapter merged into the weights (safetensors), plus the tokenizer.

    Merges a copy, so `model` keeps its adapter (and the base stays reachable with the adapter disabled)."""
    merged = copy.deepcopy(model).merge_and_unload() if is_lora(model) else model
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def reset_to_base(model):
    """The base model: the adapter removed (peft `unload`, no merge). A model without an adapter is returned as is."""
    return model.unload() if is_lora(model) else model


def _jsonable(value):
    """NaN → null and tensors → lists, so run.json is strict JSON."""
    if isinstance(value, float):
        return None if value != value or value in (float("inf"), float("-inf")) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value

