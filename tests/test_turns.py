"""Turns on the model (ui/turns.py): background work never takes the model between two actions of a busy queue."""

from __future__ import annotations

import threading
import time

from opd_studio.ui.turns import Turns


def background_worker(turns: Turns, stop: threading.Event, pieces: list[float], piece_s: float = 0.01):
    def work():
        while not stop.is_set():
            with turns.background(stop) as mine:
                if not mine:
                    return
                pieces.append(time.monotonic())
                time.sleep(piece_s)
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_background_work_waits_while_actions_follow_each_other_and_runs_once_the_model_is_idle():
    turns, stop, pieces = Turns(threading.RLock(), quiet_s=0.5), threading.Event(), []
    busy_until = time.monotonic() + 1.0
    worker = None
    while time.monotonic() < busy_until:  # a busy queue: each action starts right after the last one ended
        with turns.action():
            worker = worker or background_worker(turns, stop, pieces)
            time.sleep(0.05)
        time.sleep(0.005)
    ended = turns.last_end
    assert pieces == [], "background work took the model between two actions"
    deadline = time.monotonic() + 5.0
    while not pieces and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pieces and pieces[0] - ended >= 0.5, "idle: it runs, after the quiet time"
    stop.set()
    worker.join(2)
    assert not worker.is_alive()


def test_an_action_counts_while_it_waits_and_a_stopped_piece_is_skipped():
    turns, stop = Turns(threading.RLock(), quiet_s=0.0), threading.Event()
    held, release = threading.Event(), threading.Event()

    def long_action():
        with turns.action():
            held.set()
            release.wait(2)
    holder = threading.Thread(target=long_action)
    holder.start()
    held.wait(2)
    assert not turns.idle()
    stop.set()  # its session acted: the waiting piece gives up without the model
    with turns.background(stop) as mine:
        assert mine is False
    release.set()
    holder.join(2)
    assert turns.idle()
    with turns.background(threading.Event()) as mine:
        assert mine is True
