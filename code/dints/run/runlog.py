"""Logging to the console and to a run folder's log file; rank 0 only writes the file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from dints.run import dist

LOGGER_NAME = "dints"


def get_logger() -> logging.Logger:
    """The project's logger (configure it once with :func:`setup_logging`)."""
    return logging.getLogger(LOGGER_NAME)


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log to stderr (rank 0 at ``level``, other ranks warnings only) and, on rank 0, to ``log_file``."""
    logger = get_logger()
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(level if dist.info().is_main else logging.WARNING)
    logger.addHandler(console)
    if log_file is not None and dist.info().is_main:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger
