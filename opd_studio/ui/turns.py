"""Turns on the one model: a person's action first, background work only while the model is idle.

The studio keeps one model per process and runs one pass at a time (`MODEL_LOCK`). Two kinds of work want it:
*actions* — a person clicked and waits (generate, move, edit, accept, next …, through `ui.common.model_turn`) —
and *background work* that only saves a later wait: speculation on likely hint positions, the read-ahead of the
next record, proposals for queued records. Background work goes in small pieces and stops when its own session
acts. That alone is not enough with many reviewers: Gradio starts the next queued action a few milliseconds after
the last one ends, and every session's background work, waiting on the lock, would take one piece of the model
between every two actions — time that every waiting person pays (the load benchmark's p95 over the taking-turns
bound). So a piece of background work starts only when no action runs or waits for the model and none has ended in
the last `QUIET_S` seconds: under load it waits (or is stopped by its session's next action), and alone it runs
while the person reads, as before.

Knows nothing about Gradio.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

MODEL_LOCK = threading.RLock()  # one model pass at a time: actions and background work never run side by side
QUIET_S = 0.3  # background work starts only after this long without an action (the person reads first)
POLL_S = 0.05


class Turns:
    """Counts the actions running or waiting for the model and when the last one ended."""

    def __init__(self, lock: threading.RLock = MODEL_LOCK, quiet_s: float = QUIET_S):
        self.lock, self.quiet_s = lock, quiet_s
        self._count_lock = threading.Lock()
        self.actions = 0  # running or waiting for the lock
        self.last_end = 0.0  # time.monotonic() when the last action released the model

    @contextlib.contextmanager
    def action(self) -> Iterator[None]:
        """A person's action: counted from before it waits for the lock, so background work defers to it at once."""
        with self._count_lock:
            self.actions += 1
        try:
            with self.lock:
                yield
        finally:
            with self._count_lock:
                self.actions -= 1
                self.last_end = time.monotonic()

    def idle(self) -> bool:
        with self._count_lock:
            return self.actions == 0 and time.monotonic() - self.last_end >= self.quiet_s

    @contextlib.contextmanager
    def background(self, stop: threading.Event) -> Iterator[bool]:
        """One piece of background work: yields True holding the model once it is idle, False if `stop` was set
        first (the piece is then skipped). An action that arrives during the piece waits for that piece only."""
        while not self.idle():
            if stop.wait(POLL_S):
                yield False
                return
        with self.lock:
            yield not stop.is_set()


TURNS = Turns()
