"""User-facing errors and the command-line wrapper that reports them in one line."""

from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """An error the user can fix (a path, dataset.json, an option). Reported as one line, no traceback."""


class DataError(UserError):
    """Something wrong with a task's data: dataset.json, an image or a label file."""


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


def cli_main(fn: Callable[[], object]) -> None:
    """Run a stage's ``main`` and turn a :class:`UserError` into ``error: <message>`` on stderr and exit 2.

    Ctrl-C exits 130 with one line. In a multi-process run, losing another process exits 1 with one line naming this
    rank (the launcher's report names the one that failed). Anything else is a bug and keeps its traceback.
    """
    try:
        fn()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        from dints.run import dist

        d = dist.info()
        if d.world_size > 1 and lost_peer(exc):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: rank {d.rank} of {d.world_size}: another process of this run stopped, so this one stops "
                  f"too (the launcher's report names it; rerun the same command to resume): {first}", file=sys.stderr)
            sys.exit(1)
        raise


class ArchError(UserError, ValueError):
    """An invalid architecture file or architecture code (names the file and the field)."""
