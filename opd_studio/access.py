"""Who may change what, and in which workspace.

Run on your own machine (no `SPACE_ID` in the environment) the studio is single-user: one workspace, no sign-in,
everything allowed. On a Hugging Face Space every visitor reaches the same process, so:

- visitors who are not signed in explore and score, and change nothing (no review, import, delete, training, or
  weights switch; a rollout they generate is shown, not stored);
- signed-in users (Hugging Face OAuth: `hf_oauth: true` in the README's front matter) write, in one of two ways
  chosen by `OPD_STUDIO_WRITERS`:
    - `per-user` (default): each signed-in user has a workspace of their own (`users/<name>/` under the data
      directory, with its own runs and active weights); visitors read the shared one;
    - `owner`: one shared workspace, and only the Space's owner (`SPACE_AUTHOR_NAME`, or `OPD_STUDIO_OWNER`) writes.
The reviewer recorded with a review is the signed-in name, not a free-text field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .store import data_dir, open_store
from .workspace import Workspace

MODES = ("local", "per-user", "owner")


@dataclass(frozen=True)
class Access:
    mode: str = "local"
    owner: str | None = None
    root: Path | None = None  # the data directory (default: `store.data_dir()`)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"OPD_STUDIO_WRITERS={self.mode!r} is not one of {', '.join(MODES)}")

    @classmethod
    def from_env(cls) -> "Access":
        """`OPD_STUDIO_WRITERS` when set (local, per-user, owner); else per-user on a Space, local elsewhere."""
        mode = os.environ.get("OPD_STUDIO_WRITERS") or ("per-user" if os.environ.get("SPACE_ID") else "local")
        return cls(mode, os.environ.get("OPD_STUDIO_OWNER") or os.environ.get("SPACE_AUTHOR_NAME"))

    @property
    def signs_in(self) -> bool:
        return self.mode != "local"

    def workspace(self, user: str | None) -> Workspace:
        """The workspace `user` (a signed-in name, or None) works in, read-only where they may not write. Its store is
        the process's one `Store` of that file (`store.open_store`): asking for a workspace on every request costs
        no migration and no journal switch."""
        root = self.root or data_dir()
        if self.mode == "local":
            return Workspace(open_store(root / "opd_studio.sqlite"))
        if user is None:
            return Workspace(open_store(root / "opd_studio.sqlite"), None,
                             read_only="visitors who are not signed in can explore and score; sign in with "
                                       "Hugging Face to review, import, delete or train")
        if self.mode == "owner" and user != self.owner:
            return Workspace(open_store(root / "opd_studio.sqlite"), user,
                             read_only=f"only the Space's owner ({self.owner or 'unknown'}) changes the curated set")
        if self.mode == "owner":
            return Workspace(open_store(root / "opd_studio.sqlite"), user)
        return Workspace(open_store(root / "users" / _safe(user) / "opd_studio.sqlite"), user)


def _safe(name: str) -> str:
    """A directory name from a Hugging Face user name (letters, digits, - and _ already; anything else is dropped)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "", name).strip(".")
    if not cleaned:
        raise ValueError(f"cannot make a workspace for the user name {name!r}")
    return cleaned
