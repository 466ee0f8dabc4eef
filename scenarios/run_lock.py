"""One run at a time per run folder: while a run writes its folder, `run.lock` there holds the pid of its
process. A second run into the folder (`--resume` of a run that is still going) is refused before it touches
anything, since resuming cuts the records back to the last checkpoint. A lock whose process is gone (the run
was killed) is stale: the next `--resume` takes it over.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from scenarios.errors import ScenarioError

LOCK = "run.lock"


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold `run_dir`'s lock for the duration; a ScenarioError if a live process holds it."""
    path = Path(run_dir) / LOCK
    for _ in range(2):  # a stale lock is removed once, then taken
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            owner = lock_owner(path)
            if owner is not None and alive(owner):
                raise ScenarioError(f"{run_dir}: a run (pid {owner}) is writing this folder; wait for it to end, "
                                    f"or stop it first (if no such run is going, delete {path})") from None
            path.unlink(missing_ok=True)
    else:
        raise ScenarioError(f"{run_dir}: another process took the run folder's lock ({path}) at the same moment")
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def lock_owner(path: Path) -> int | None:
    """The pid written in a lock file; None for an unreadable or half-written one (taken as stale)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Does process `pid` exist (on this machine)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
