"""Stopping on request: SIGTERM (a scheduler's time limit or ``scancel``) and SIGINT (Ctrl-C).

Outside a training loop a signal stops the stage at once: finished outputs are on disk (every write is atomic), so
rerunning the command redoes only what is missing. Inside a training loop (:class:`StopRequest`) the signal is
noted, the current iteration finishes, ``latest.pt`` is written and the stage exits with
:data:`dints.errors.EXIT_INTERRUPTED`; rerunning resumes from that checkpoint. In a multi-process run every rank stops
at the same iteration, whichever of them got the signal.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

from dints.errors import Interrupted
from dints.run import dist

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    for s in SIGNALS:  # once: a second signal (the shell passing the same one on) must not cut the exit short
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name, "finished outputs are kept")


def stop_at_once() -> None:
    """Make SIGTERM and SIGINT stop the process with :class:`Interrupted` (stage entry points call this first).

    SIGINT is installed explicitly too: a shell runs background jobs with SIGINT ignored, and code/main.sh passes
    the signals it gets on to its stages.
    """
    for s in SIGNALS:
        signal.signal(s, _raise_interrupted)


class StopRequest:
    """While active (a ``with`` block), SIGTERM and SIGINT only note that a stop was asked for.

    Attributes:
        signame: the first signal received (``SIGTERM``/``SIGINT``), or None.
    """

    def __init__(self, log: logging.Logger):
        self.log, self.signame, self._old = log, None, {}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signame is None:
            self.signame = name
            self.log.warning("%s received: stopping after this iteration, once latest.pt is written", name)
        else:
            self.log.warning("%s received: already stopping (writing the checkpoint)", name)

    def __enter__(self) -> StopRequest:
        for s in SIGNALS:
            self._old[s] = signal.signal(s, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def agreed(self) -> str | None:
        """The signal's name if any rank was asked to stop (all ranks get the same answer), else None."""
        if dist.info().world_size == 1:
            return self.signame
        import torch  # here, not at the top: the command-line wrapper imports this module, torch is for training

        codes = {"SIGTERM": 1, "SIGINT": 2}
        got = int(dist.sum_tensor(torch.tensor([codes.get(self.signame, 0)], dtype=torch.int64)).item())
        if got == 0:
            return None
        return self.signame or ("SIGTERM" if got % 2 else "SIGINT")
