"""One run per folder: a lock file that a second run on the same folder finds held, naming the process that holds it.

``<run folder>/.lock`` is locked with ``flock`` for as long as the stage runs and records who holds it (process id,
host, start time, command). The operating system drops the lock when its process dies, however it dies, so a lock
left by a killed run is stale by construction: the next run takes it over and says so. Where the file system offers
no ``flock`` (some network file systems), the recorded process is looked up instead: on this host, a process that
no longer runs is stale; on another host, the lock counts as held (remove the file once sure that run has stopped).
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from dints.errors import UserError

LOCK_NAME = ".lock"
_held: dict[Path, RunLock] = {}


def _describe(info: dict) -> str:
    return (f"process {info.get('pid', '?')} on {info.get('host', '?')} (started {info.get('started', '?')}: "
            f"{info.get('command', '?')})")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """Hold ``<folder>/.lock`` until :meth:`release` or the end of the process.

    Args:
        folder: the run folder (created if missing).
        name: the lock file's name (stages that share a folder, or write into a folder meant for delivery, use
            their own name in the folder above).
        clean: the folder whose leftover temporary files are removed (default ``folder``).

    Attributes:
        notes: what was found and done (a stale lock taken over, leftovers removed), for the stage's log.

    Raises:
        UserError: a live run holds the folder.
    """

    def __init__(self, folder: str | Path, name: str = LOCK_NAME, clean: str | Path | None = None):
        self.path, self.folder = Path(folder) / name, Path(clean or folder)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.notes: list[str] = []
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        before = _read(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise UserError(f"{self.folder} is in use by {_describe(before)}; wait for that run to finish or "
                            "stop it, then rerun") from None
        except OSError as exc:  # no flock on this file system: judge by the recorded process
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            if before.get("pid") and (before.get("host") != socket.gethostname() or _alive(int(before["pid"]))):
                os.close(self._fd)
                raise UserError(f"{self.folder} is in use by {_describe(before)}; wait for that run to finish, "
                                f"or delete {self.path} once sure it has stopped") from None
        if before.get("pid") and int(before["pid"]) != os.getpid():
            self.notes.append(f"took over the lock of {_describe(before)}, which no longer runs (a killed run)")
        self._write({"pid": os.getpid(), "host": socket.gethostname(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]})
        for tmp in self.folder.glob(".*.tmp"):  # temporary files of writes a killed run never finished
            tmp.unlink(missing_ok=True)
            self.notes.append(f"removed {tmp}, left by an interrupted write")

    def _write(self, info: dict) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(info) + "\n").encode() if info else b"", 0)

    def release(self) -> None:
        """Clear the record and drop the lock (a normal end: the next run has nothing to take over)."""
        if self._fd is None:
            return
        try:
            self._write({})
        finally:
            os.close(self._fd)
            self._fd = None
            _held.pop(self.path.resolve(), None)


def acquire(folder: str | Path, name: str = LOCK_NAME, clean: str | Path | None = None) -> RunLock:
    """Lock ``folder`` (see :class:`RunLock`) for this process (again: the lock it already holds), released at exit.

    Raises:
        UserError: a live run of another process holds the folder.
    """
    key = (Path(folder) / name).resolve()
    if key in _held:
        _held[key].notes = []  # reported when it was taken
    else:
        _held[key] = RunLock(folder, name, clean)
    return _held[key]


def release_all() -> None:
    """Release every lock this process holds (the end of a stage)."""
    for lock in list(_held.values()):
        lock.release()


atexit.register(release_all)
