"""Fault injection for the reliability tests (docs/reliability.md): kill or break this process at a chosen point.

Set ``DINTS_FAULT`` to one or more ``;``-separated rules; an unset variable costs one dictionary look-up per point:

- ``kill:<path suffix>:<n>``: on the n-th atomic write of a file whose path ends with the suffix, cut the temporary
  file to half its size, then SIGKILL this process (a crash during a checkpoint or NIfTI write);
- ``enospc:<path suffix>:<n>``: that write fails with "No space left on device" after half the data (a full disk);
- ``term:<path suffix>:<n>`` / ``int:<path suffix>:<n>``: during that write, once the temporary file holds the whole
  content, send this process SIGTERM / SIGINT (a scheduler's signal arriving while a result or checkpoint is written);
- ``kill-iter:<n>`` / ``term-iter:<n>`` / ``int-iter:<n>``, optionally ``:<rank>``: at the start of training
  iteration n, SIGKILL, SIGTERM or SIGINT this process (only the process of that rank, when given).

Counts are per process: a rerun starts counting afresh.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from dints.run import dist

ENV = "DINTS_FAULT"
#: Faults of an atomic write (``<kind>:<path suffix>:<n>``).
WRITE_FAULTS = ("kill", "enospc", "term", "int")
_counts: dict[str, int] = {}


def _rules() -> list[list[str]]:
    spec = os.environ.get(ENV, "")
    return [r.split(":") for r in spec.split(";") if r.strip()]


def _nth(rule: str, n: str) -> bool:
    _counts[rule] = _counts.get(rule, 0) + 1
    return _counts[rule] == int(n)


def on_write(path: Path, tmp: str) -> None:
    """Called by :func:`dints.io.atomic_write` once the temporary file holds the whole content."""
    if ENV not in os.environ:
        return
    for rule in _rules():
        if len(rule) != 3 or rule[0] not in WRITE_FAULTS or not str(path).endswith(rule[1]):
            continue
        if not _nth(":".join(rule), rule[2]):
            continue
        if rule[0] in ("term", "int"):
            os.kill(os.getpid(), signal.SIGTERM if rule[0] == "term" else signal.SIGINT)
        else:
            size = os.path.getsize(tmp)
            with open(tmp, "r+b") as f:
                f.truncate(size // 2)
            if rule[0] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def on_iteration(it: int) -> None:
    """Called by the training loop at the start of iteration ``it``."""
    if ENV not in os.environ:
        return
    sig = {"kill-iter": signal.SIGKILL, "term-iter": signal.SIGTERM, "int-iter": signal.SIGINT}
    for rule in _rules():
        if len(rule) in (2, 3) and rule[0] in sig and int(rule[1]) == it and (
                len(rule) == 2 or int(rule[2]) == dist.info().rank):
            os.kill(os.getpid(), sig[rule[0]])
