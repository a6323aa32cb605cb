"""User-facing errors (one line each, no traceback) and the exit status of an interrupted stage.

:mod:`dints.pipeline.cli` turns them into what a command prints."""

from __future__ import annotations

import errno
import re


class UserError(Exception):
    """An error the user can fix (a path, dataset.json, an option). Reported as one line, no traceback."""


class DataError(UserError):
    """Something wrong with a task's data: dataset.json, an image or a label file."""


class WriteError(UserError):
    """A result could not be written (full disk, no permission); the file keeps its previous content."""


class ConfigError(UserError):
    """Something wrong with an option, on the command line or in a preset file."""


#: Words of the errors Gloo, NCCL and Horovod raise when another process of the job has gone.
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
              "Horovod has been shut down", "HorovodInternalError")


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` says that another process of a multi-process run stopped (not a bug of this one)."""
    name = type(exc).__name__
    return name in ("DistBackendError", "DistNetworkError", "HorovodInternalError") or (
        isinstance(exc, RuntimeError) and any(words in str(exc) for words in _LOST_PEER))


#: Exit status of a stage stopped by SIGTERM or SIGINT after saving what it had (rerunning resumes). EX_TEMPFAIL of
#: sysexits.h: "a temporary failure; the user is invited to retry". code/main.sh reports it as an interruption.
EXIT_INTERRUPTED = 75


class Interrupted(Exception):
    """A stage stopped on request (SIGTERM from a scheduler, SIGINT from Ctrl-C) after saving its state.

    Args:
        signame: ``SIGTERM`` or ``SIGINT``.
        saved: what was kept, for the message (e.g. ``checkpoint work/.../latest.pt at iteration 120``).
    """

    def __init__(self, signame: str, saved: str):
        super().__init__(f"{signame}: {saved}")
        self.signame, self.saved = signame, saved


def user_error(exc: BaseException) -> str | None:
    """The one-line message of a :class:`UserError` raised directly or wrapped on its way up, else None.

    MONAI wraps an exception raised inside a transform in ``RuntimeError("applying transform ...")``, and a
    DataLoader worker re-raises it with the worker's traceback in its text; the user's error is still the line to
    show.
    """
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if "Traceback (most recent call last)" in text:  # re-raised from a worker: keep the error's own last line
            for line in reversed(text.strip().splitlines()):
                m = re.match(r"\s*dints\.errors\.\w+: (.*)", line)
                if m:
                    return m.group(1)
        elif isinstance(e, UserError):
            return text
        e = e.__cause__ or e.__context__
    return None


def os_error(exc: BaseException) -> str | None:
    """One line for an operating-system error on a named file (a path that is a file, a full disk, no permission)."""
    if isinstance(exc, OSError) and (exc.filename or exc.errno == errno.ENOSPC):
        where = f": {exc.filename}" if exc.filename else ""
        what = exc.strerror or str(exc)
        hint = "; free some space and rerun the same command" if exc.errno == errno.ENOSPC else ""
        return f"{what}{where}{hint}"
    return None


class ArchError(UserError, ValueError):
    """An invalid architecture file or architecture code (names the file and the field)."""
