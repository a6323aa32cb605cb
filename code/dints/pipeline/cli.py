"""The command-line wrapper of every entry point: one line for what stopped it, and its exit status.

    if __name__ == "__main__":
        cli_main(main)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from dints.errors import EXIT_INTERRUPTED, Interrupted, lost_peer, os_error, user_error
from dints.run import dist, lock, signals

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

    - :class:`~dints.errors.UserError` (also wrapped by MONAI or a DataLoader worker) and an operating-system error on
      a named file (``NotADirectoryError``, ``PermissionError``, a full disk): ``error: <message>``, exit 2.
    - :class:`~dints.errors.Interrupted` (SIGTERM/SIGINT after a checkpoint) and Ctrl-C: one line, exit
      :data:`~dints.errors.EXIT_INTERRUPTED`.
    - In a multi-process run, losing another process: one line naming this rank, exit 1.
    - Anything else is a bug and keeps its traceback. ``--debug`` on the command line shows the traceback always.
    """
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
        d = dist.info()
        if d.world_size > 1 and lost_peer(exc) and not debug:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: rank {d.rank} of {d.world_size}: another process of this run stopped, so this one stops "
                  f"too (the launcher's report names it; rerun the same command to resume): {first}", file=sys.stderr)
            sys.exit(1)
        raise
    finally:
        lock.release_all()


def run_folds(run: Callable[[argparse.Namespace], Path], configs: Sequence[argparse.Namespace]) -> list[Path]:
    """Run a per-fold stage for each fold's configuration in turn (``code/config.py``'s ``load_fold_configs``),
    releasing each fold's run-folder lock as the fold finishes; returns their output folders.

    A fold that fails or is interrupted stops the command: the folds before it are finished and kept.
    """
    outs = []
    for cfg in configs:
        outs.append(run(cfg))
        lock.release_all()
    return outs


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block), like every other error of the command lines."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
