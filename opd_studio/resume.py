"""Long headless work that can be interrupted and resumed, with a progress bar.

`ResumableOutput(output, read_existing)` collects finished units of work (a record's score rows, a rollout), each
under a key (the record id). Every unit is appended as one JSON line to a sidecar beside the output
(`.<name>.partial.jsonl`) the moment it is done, so an interrupted run loses at most the batch in flight. A re-run
with the same output reads what the finished output and the sidecar already hold and skips those keys; `finish`
writes the whole output atomically (old units and new, in input order) and removes the sidecar. The output file
itself is only ever written whole: a failure leaves the previous output (or none) and the sidecar.

`progress(total, unit)` is tqdm on stderr, counting tokens so the bar shows tokens/s; silent when stderr is not a
terminal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from .records import RecordError


class ResumableOutput:
    def __init__(self, output: str | os.PathLike, read_existing: Callable[[Path], dict[str, Any]]):
        self.output = Path(output)
        self.sidecar = self.output.with_name(f".{self.output.name}.partial.jsonl")
        self.done: dict[str, Any] = {}  # key → unit, from the finished output, the sidecar, then this run
        if self.output.exists():
            try:
                self.done.update(read_existing(self.output))
            except Exception as exc:
                raise RecordError(f"{self.output} exists but cannot be read as this command's output ({exc}); "
                                  "remove it or choose another --output") from None
        if self.sidecar.exists():
            with self.sidecar.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:  # the line a killed run was writing
                        continue
                    self.done[entry["key"]] = entry["unit"]
        self._handle = None

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def add(self, key: str, unit: Any) -> None:
        if self._handle is None:
            self._handle = self.sidecar.open("a", encoding="utf-8")
        self._handle.write(json.dumps({"key": key, "unit": unit}, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.done[key] = unit

    def finish(self, order: list[str], write: Callable[[list[Any]], None]) -> int:
        """`write(units)` the units in `order` (then any the output held that are not in `order`); returns how
        many."""
        self.close()
        keys = [k for k in order if k in self.done] + [k for k in self.done if k not in set(order)]
        write([self.done[k] for k in keys])
        self.sidecar.unlink(missing_ok=True)
        return len(keys)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def discard_if_empty(self) -> None:
        """After a failure before any unit was finished, leave nothing behind."""
        self.close()
        if self.sidecar.exists() and self.sidecar.stat().st_size == 0:
            self.sidecar.unlink()


def progress(total: int, unit: str = "tok", desc: str = ""):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, disable=None, dynamic_ncols=True,
                mininterval=0.5, leave=False)
