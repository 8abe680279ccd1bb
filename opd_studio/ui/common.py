"""What every tab of the studio shares: the process's model and store, and the guard that turns errors into one
message. Model work runs one event at a time (one queue, concurrency id "model"; `turns.TURNS` holds
off the background speculation): the model is shared, the sessions are not.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os

import gradio as gr

from ..access import Access
from ..model import ModelLoadError, load_model_cached
from ..records import RecordError
from ..trajectory import TrajectoryError
from ..workspace import DriftError, Store, Weights, Workspace
from .turns import TURNS
from . import session as actions

log = logging.getLogger("opd_studio.ui")
MODEL_SPEC = os.environ.get("OPD_STUDIO_MODEL", "default")
# A served model (`opd-studio app --base-url URL`): scoring and generation through that server; MODEL_SPEC then only
# supplies the tokenizer.
BASE_URL = os.environ.get("OPD_STUDIO_BASE_URL") or None
# Every action that uses the model waits in one Gradio queue, one at a time: the place Gradio shows while an action
# waits ("queue: 3/4": two actions ahead of yours, whoever sent them) then counts every action ahead of it.
MODEL_WORK = dict(concurrency_id="model", concurrency_limit=1)
USER_ERRORS = (ValueError, RecordError, TrajectoryError, ModelLoadError, KeyError)



try:  # On a ZeroGPU Space, model work runs under spaces.GPU; elsewhere this is a no-op.
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the environment
    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


@functools.lru_cache(maxsize=1)
def _loaded() -> Weights:
    if BASE_URL:
        from ..remote import tokenizer_for
        from ..served import ServedModel

        tokenizer = tokenizer_for(MODEL_SPEC)
        return Weights(ServedModel.connect(BASE_URL, tokenizer, api_key=os.environ.get("OPENAI_API_KEY")), tokenizer)
    return Weights(*load_model_cached(MODEL_SPEC))


@functools.lru_cache(maxsize=1)
def access() -> Access:
    return Access.from_env()


@functools.lru_cache(maxsize=64)
def _workspace(user: str | None) -> Workspace:
    return access().workspace(user)


def workspace(profile: gr.OAuthProfile | None = None, session: actions.Session | None = None) -> Workspace:
    """The workspace of whoever sent the request: locally the one workspace; on a Space the signed-in user's (or,
    for visitors who are not signed in, the shared one, read-only). Gradio passes `profile` to any handler with a
    `gr.OAuthProfile | None` parameter; a session remembers the user who opened it."""
    if not access().signs_in:
        return _workspace(None)
    return _workspace(profile.username if profile is not None else getattr(session, "user", None))


def signed_in(session: actions.Session, profile: gr.OAuthProfile | None) -> actions.Session:
    """Bind the session to the request's user (a handler that receives the profile calls this first)."""
    session.user = profile.username if profile is not None and access().signs_in else None
    return session


def store(session: actions.Session | None = None) -> Store:
    return workspace(session=session).store


def weights(session: actions.Session | None = None) -> Weights:
    """The process's weights, brought in line with the active run of the session's workspace (see
    `workspace.Weights.sync`): one process may serve several signed-in users, each with their own runs."""
    loaded = _loaded()
    loaded.sync(store(session))
    return loaded


def model(session: actions.Session | None = None):
    """The model as it is now (the active run's adapter, if any) and its tokenizer."""
    current = weights(session)
    return current.model, current.tokenizer


def opened(session: actions.Session) -> actions.Session:
    """A session just opened with `model()`: its passes belong to the current weights."""
    session.weights_version = weights(session).version
    return session


def synced(session: actions.Session) -> actions.Session:
    """Rebuild the session's scorer when the weights changed since it cached its passes."""
    current = weights(session)
    if session.weights_version != current.version:
        session = actions.use_weights(session, current.model, current.tokenizer, session.base_weights,
                                      current.version)
    return session


@contextlib.contextmanager
def model_turn(session: actions.Session | None = None):
    """A real action's turn on the model: its session's speculation stops, and everyone's background work waits
    until no action runs or waits (`turns`); the action waits at most for one piece already in flight."""
    if session is not None:
        actions.stop_speculating(session)
    with TURNS.action():
        yield


def counts_markdown(profile: gr.OAuthProfile | None = None, session: actions.Session | None = None) -> str:
    counts = workspace(profile, session).counts()
    return (f"**{counts['reviewed']} / {counts['total']} reviewed** · {counts['accepted']} curated · "
            f"{counts['rejected']} rejected · {counts['pending']} pending")


# ------------------------------------------------------------------------------------------------------------------
# Errors: one message where the user acted (a toast), never a traceback


def _message(exc: Exception, name: str) -> gr.Error:
    if isinstance(exc, (*USER_ERRORS, DriftError)):
        return gr.Error(str(exc).strip("'\""), print_exception=False)
    log.exception("unexpected error in %s", name)
    return gr.Error(f"Unexpected error ({type(exc).__name__}): {exc}. Your work is unchanged.", print_exception=False)


def guarded(fn):
    """Turn user errors into a visible message and anything unexpected into a short one (logged in full)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - the browser gets a message, the log gets the traceback
            raise _message(exc, fn.__name__) from None
    return wrapper


def guarded_stream(fn):
    """`guarded` for generator handlers: errors raised while streaming become messages too."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _message(exc, fn.__name__) from None
    return wrapper
