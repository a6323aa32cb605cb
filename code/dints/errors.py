"""User-facing errors and the command-line wrapper that reports them in one line."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from typing import Callable


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


#: code/common.sh names a file here; an interrupted stage writes its status into it, because horovodrun and torchrun
#: report any failing process as status 1.
STATUS_FILE_ENV = "DINTS_STATUS_FILE"


def _exit_interrupted() -> None:
    path = os.environ.get(STATUS_FILE_ENV)
    if path:
        try:
            with open(path, "w") as f:
                f.write(f"{EXIT_INTERRUPTED}\n")
        except OSError:
            pass
    sys.exit(EXIT_INTERRUPTED)


def cli_main(fn: Callable[[], object]) -> None:
    """Run a stage's ``main`` and report what stopped it in one line on stderr, without a traceback.

    - :class:`UserError` (also wrapped by MONAI or a DataLoader worker) and an operating-system error on a named
      file (``NotADirectoryError``, ``PermissionError``, a full disk): ``error: <message>``, exit 2.
    - :class:`Interrupted` (SIGTERM/SIGINT after a checkpoint) and Ctrl-C: one line, exit :data:`EXIT_INTERRUPTED`.
    - In a multi-process run, losing another process: one line naming this rank, exit 1.
    - Anything else is a bug and keeps its traceback. ``--debug`` on the command line shows the traceback always.
    """
    from dints.run import signals

    debug = "--debug" in sys.argv[1:]
    signals.stop_at_once()
    try:
        fn()
    except Interrupted as exc:
        print(f"interrupted by {exc.signame}: {exc.saved}; rerun the same command to resume", file=sys.stderr)
        _exit_interrupted()
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted: finished outputs are kept; rerun the same command to resume", file=sys.stderr)
        _exit_interrupted()
    except Exception as exc:
        message = user_error(exc) or os_error(exc)
        if message is not None:
            if debug:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        from dints.run import dist

        d = dist.info()
        if d.world_size > 1 and lost_peer(exc) and not debug:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: rank {d.rank} of {d.world_size}: another process of this run stopped, so this one stops "
                  f"too (the launcher's report names it; rerun the same command to resume): {first}", file=sys.stderr)
            sys.exit(1)
        raise
    finally:
        from dints.run import lock

        lock.release_all()


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block), like every other error of the command lines."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class ArchError(UserError, ValueError):
    """An invalid architecture file or architecture code (names the file and the field)."""
