"""One run at a time per run folder: a lock file holding the owner's pid and host.

:func:`run_lock` creates ``run_dir/cxrlib.lock`` with ``O_CREAT | O_EXCL`` (atomic: of two
processes, exactly one creates it) and writes the owner into it as one JSON line: pid, host,
process start time, command line and a random token. A second process gets a
:class:`RunLockedError` naming the folder and the owner. A lock left by a process that died
(same host, no such pid, or the pid now belongs to a process started later) is taken over
with a warning. The lock is removed when the ``with`` block ends, also on errors, and only
when it is still the caller's own.

Locks of other hosts are never taken over (their pid cannot be checked from here); delete
the file by hand when that host is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cxrlib.errors import CxrlibError

__all__ = ["LOCK_NAME", "RunLockedError", "lock_owner", "run_lock"]

#: Name of the lock file inside a run folder.
LOCK_NAME = "cxrlib.lock"
#: A lock file that stays empty or unreadable this long is a crash between create and write.
_UNREADABLE_GRACE_S = 30.0


class RunLockedError(CxrlibError, RuntimeError):
    """Another live process holds the run folder's lock."""


def _start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` (started at ``start``, when known) still runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    now = _start_time(pid)
    return not (start and now and now != start)  # another process reused the pid


def lock_owner(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The owner recorded in ``run_dir``'s lock file, ``{}`` if unreadable, None if unlocked."""
    path = Path(run_dir) / LOCK_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    command = owner.get("command")
    what = f" ({command})" if command else ""
    return (
        f"process {owner.get('pid')} on {owner.get('host')}{what}, "
        f"since {owner.get('created', 'an unknown time')}"
    )


def _stale_reason(path: Path, owner: dict[str, Any]) -> str | None:
    """Why the lock at ``path`` is stale, or None when its owner may still run."""
    if not owner:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return "it disappeared"
        if age > _UNREADABLE_GRACE_S:
            return f"it is unreadable and {age:.0f} s old"
        return None
    if owner.get("host") != socket.gethostname():
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return "it names no pid"
    if pid == os.getpid() and owner.get("start") == _start_time(pid):
        return None  # this very process holds it (a nested call): not stale
    if not _alive(pid, owner.get("start")):
        return f"process {pid} is no longer running"
    return None


def _create(path: Path, owner: dict[str, Any]) -> bool:
    """Create the lock file exclusively; False when it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, (json.dumps(owner) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _acquire(path: Path, owner: dict[str, Any]) -> None:
    for _ in range(5):
        if _create(path, owner):
            return
        current = lock_owner(path.parent)
        if current is None:
            continue  # released meanwhile: try again
        reason = _stale_reason(path, current)
        if reason is None:
            owned = _describe(current) if current else "a process that is still writing it"
            raise RunLockedError(
                f"{path.parent} is in use by another run: its lock {path} is held by {owned}; "
                "wait for it to finish or choose another run folder (delete the lock file "
                "only if that process is gone)"
            )
        # re-read just before removing: another process may have taken it over already
        if lock_owner(path.parent) != current:
            continue
        message = f"taking over the stale lock {path} of {_describe(current)}: {reason}"
        warnings.warn(message, stacklevel=4)
        path.unlink(missing_ok=True)
    raise RunLockedError(f"could not lock {path.parent}: {path} keeps changing owner")


@contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``run_dir``'s lock while the ``with`` block runs.

    Parameters
    ----------
    run_dir : path
        An existing run folder.

    Yields
    ------
    pathlib.Path
        The lock file.

    Raises
    ------
    RunLockedError
        Another live process on this host (or any process on another host) holds the lock;
        the message names the folder and the owner.
    """
    path = Path(run_dir) / LOCK_NAME
    owner = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _start_time(os.getpid()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv)[:200],
        "token": uuid.uuid4().hex,
    }
    _acquire(path, owner)
    try:
        yield path
    finally:
        if lock_owner(path.parent) == owner:
            path.unlink(missing_ok=True)
