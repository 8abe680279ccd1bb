"""Records in from the Hugging Face data ecosystem, curated sets out to it (and to TRL).

    read_input("rollouts.jsonl" | "rollouts.parquet" | "a_datasets_dir/" | "hf://datasets/owner/name[/file]")
    export_curated(records, "jsonl" | "parquet" | "datasets" | "trl-sdft", output)
    write_teacher_topk(teacher_topk.teacher_topk_rows(model, tokenizer, records), output)

Reading: a row is a record (records.py) from its `record` column (JSON, as our exports write it), else from its
columns (`id`, `messages`, `hints`, …; JSON text where a column holds structures), else from TRL's conversational
`prompt` + `completion`. Anything else is one `RecordError` naming the columns that were found.

Export formats:
- `jsonl`: one record a line (the data format). `parquet`: one row per record, `id` + `record` (JSON), as the
  store's export. `datasets`: a folder `datasets.load_from_disk` opens, columns `id`, `messages` (role + content)
  and `record` (the whole record, lossless).
- `trl-sdft`: TRL's self-distillation columns for `SDFTTrainer` / `SDPOTrainer`: `prompt` (the conversation before
  the hinted assistant turn, chat messages) and `privileged_context` (the accepted hint texts), plus `id`; one row
  per record with a hint, as a `datasets` folder. TRL samples its own completions: the rollout is not exported.
- `teacher-topk`: offline distillation targets. Per record: `input_ids` (the original trajectory), and per target
  position i (hinted turn, student tokens; `alignment.target_mask`) the hinted teacher's top-k next-token ids and
  log-probs for predicting token i: `target_positions`, `topk_ids` (n × k), `topk_logprobs` (n × k). The
  rows come from the model (`teacher_topk.py`, beside the engine); this module only writes them: a `datasets`
  folder, or a Parquet file when `output` ends in `.parquet`.

Every export is written beside `output` and renamed into place: a failure leaves no partial output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .files import write_atomic, write_directory
from .records import Record, RecordError, read_records, write_records

RECORD_FORMATS = ("jsonl", "parquet", "datasets", "trl-sdft")  # written from the records alone
FORMATS = (*RECORD_FORMATS, "teacher-topk")  # teacher-topk runs the model first (teacher_topk.py)
RECORD_FIELDS = ("id", "messages", "tools", "hints", "error", "reference", "meta", "response_token_ids",
                 "response_logprobs")
_STRUCTURED = ("messages", "tools", "hints", "error", "meta", "response_token_ids", "response_logprobs")

# ------------------------------------------------------------------------------------------------------------------
# Reading


def read_input(source: str | os.PathLike) -> list[Record]:
    """Records from JSONL, Parquet, a `datasets` folder or `hf://datasets/owner/name[/path/to/file]`."""
    text = str(source)
    if text.startswith("hf://"):
        return _read_hub(text)
    path = Path(source)
    if path.is_dir():
        return records_from_rows(_load_dataset_dir(path), str(path))
    if not path.is_file():
        raise RecordError(f"{path}: no such file or directory")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:
            raise RecordError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
        return records_from_rows(rows, str(path))
    return read_records(path)


def _load_dataset_dir(path: Path) -> list[dict]:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except Exception as exc:
        raise RecordError(f"{path}: not a folder saved by datasets.save_to_disk ({_first_line(exc)})") from None
    if isinstance(dataset, DatasetDict):
        dataset = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
    return dataset.to_list()


def _read_hub(uri: str) -> list[Record]:
    prefix = "hf://datasets/"
    if not uri.startswith(prefix) or len(uri[len(prefix):].split("/")) < 2:
        raise RecordError(f"{uri}: a hub input is hf://datasets/owner/name or hf://datasets/owner/name/path/file")
    parts = uri[len(prefix):].split("/")
    repo, inside = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        if inside:
            from huggingface_hub import HfFileSystem

            with HfFileSystem().open(uri, "rb") as handle:
                data = handle.read()
            if inside.endswith(".parquet"):
                import io

                import pyarrow.parquet as pq

                return records_from_rows(pq.read_table(io.BytesIO(data)).to_pylist(), uri)
            from .records import parse_records

            return parse_records(data.decode("utf-8").splitlines(), source=uri)
        from datasets import load_dataset

        return records_from_rows(load_dataset(repo, split="train").to_list(), uri)
    except RecordError:
        raise
    except Exception as exc:
        raise RecordError(f"{uri}: cannot load it from the Hugging Face hub ({_first_line(exc)}); download it where "
                          "the hub is reachable and pass the local file or folder") from None


def records_from_rows(rows: list[dict], source: str) -> list[Record]:
    """Records from table rows (see the module docstring); the first bad row raises, naming it."""
    if not rows:
        raise RecordError(f"{source}: no rows")
    columns = set(rows[0])
    if "record" not in columns and "messages" not in columns and not {"prompt", "completion"} <= columns:
        raise RecordError(f"{source}: no 'record' or 'messages' column (nor TRL's 'prompt' + 'completion'); "
                          f"its columns are {sorted(columns)}")
    records, seen = [], set()
    for n, row in enumerate(rows):
        try:
            record = Record.from_dict(_record_dict(row, n))
        except RecordError as exc:
            raise RecordError(f"{source}, row {n}: {exc}") from None
        if record.id in seen:
            raise RecordError(f"{source}, row {n}: id {record.id!r} is used twice")
        seen.add(record.id)
        records.append(record)
    return records


def _record_dict(row: dict, n: int) -> dict:
    if row.get("record") is not None:
        raw = row["record"]
        try:
            return json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            raise RecordError("the 'record' column is not JSON") from None
    raw = {k: row[k] for k in RECORD_FIELDS if row.get(k) is not None}
    for key in _STRUCTURED:
        if isinstance(raw.get(key), str):
            try:
                raw[key] = json.loads(raw[key])
            except json.JSONDecodeError:
                raise RecordError(f"column {key!r} holds text that is not JSON") from None
    if "messages" not in raw:  # TRL conversational prompt-completion
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        raw["messages"] = list(prompt or []) + list(completion or [])
    # Arrow gives every message every key of the column's struct type; a missing key comes back as None.
    raw["messages"] = [{k: v for k, v in m.items() if v is not None or k == "content"}
                       if isinstance(m, dict) else m for m in raw["messages"]]
    raw.setdefault("id", str(n))
    if not isinstance(raw["id"], str):
        raw["id"] = str(raw["id"])
    return raw


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------------------------------------------------------
# Exporting


def export_curated(records: list[Record], fmt: str, output: str | os.PathLike, tokenizer=None) -> int:
    """Write `records` as `fmt` (RECORD_FORMATS) to `output`; returns the number of rows written. `tokenizer` is
    needed by `trl-sdft` only, when a hint is placed by token. The `teacher-topk` rows come from the model
    (`teacher_topk.teacher_topk_rows`) and are written by `write_teacher_topk`."""
    if fmt not in RECORD_FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {', '.join(RECORD_FORMATS)}")
    output = Path(output)
    if fmt == "jsonl":
        write_records(output, records)
        return len(records)
    if fmt == "parquet":
        import pandas as pd

        frame = pd.DataFrame({"id": [r.id for r in records], "record": [r.to_json() for r in records]})
        write_atomic(output, lambda tmp: frame.to_parquet(tmp, index=False))
        return len(records)
    if fmt == "datasets":
        rows = [{"id": r.id, "messages": [{"role": m["role"], "content": m.get("content") or ""} for m in r.messages],
                 "record": r.to_json()} for r in records]
        return _save_dataset(rows, output)
    return _save_dataset(trl_sdft_rows(records, tokenizer), output)


def write_teacher_topk(rows: list[dict[str, Any]], output: str | os.PathLike) -> int:
    """Write `teacher_topk.teacher_topk_rows` as a `datasets` folder, or a Parquet file when `output` ends in
    `.parquet`; returns the number of rows written."""
    output = Path(output)
    if output.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        write_atomic(output, lambda tmp: pq.write_table(pa.Table.from_pylist(rows), tmp))
        return len(rows)
    return _save_dataset(rows, output)


def _save_dataset(rows: list[dict], output: Path) -> int:
    from datasets import Dataset

    if not rows:
        raise RecordError("nothing to export: no record has what this format needs")
    write_directory(output, lambda staging: Dataset.from_list(rows).save_to_disk(str(staging)))
    return len(rows)


def trl_sdft_rows(records: list[Record], tokenizer=None) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        hints = record.usable_hints
        if not hints:
            continue
        message = _hinted_message(record, hints[0], tokenizer)
        prompt = [{"role": m["role"], "content": m.get("content") or ""} for m in record.messages[:message]]
        rows.append({"id": record.id, "prompt": prompt,
                     "privileged_context": "\n".join(h.text.strip() for h in hints)})
    return rows


def _hinted_message(record: Record, hint, tokenizer) -> int:
    if hint.message is not None:
        return hint.message
    if tokenizer is None:
        raise ValueError(f"record {record.id!r} places its hint by token: pass the tokenizer")
    from .trajectory import build_trajectory

    return build_trajectory(tokenizer, record).message_index[hint.token]
