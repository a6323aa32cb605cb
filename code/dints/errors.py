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


def cli_main(fn: Callable[[], object]) -> None:
    """Run a stage's ``main`` and turn a :class:`UserError` into ``error: <message>`` on stderr and exit 2.

    Ctrl-C exits 130 with one line; anything else is a bug and keeps its traceback.
    """
    try:
        fn()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


class ArchError(UserError, ValueError):
    """An invalid architecture file or architecture code (names the file and the field)."""
