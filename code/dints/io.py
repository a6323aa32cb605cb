"""Atomic file writes: a crash or Ctrl-C never leaves a half-written result behind."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    Args:
        path: final destination; its folder is created if needed.
        write: a function that writes the whole content to the given temporary path.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        write(tmp)
        with open(tmp, "rb") as f:  # on disk before the rename, so a crash leaves the old or the new file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")

    return atomic_write(path, _write)


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` ``obj`` atomically (checkpoints)."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_csv(path: str | Path, rows: list[dict]) -> Path | None:
    """Write rows (dicts with the same keys) as CSV, atomically; the whole file each time, so reruns never
    duplicate rows. Nothing is written for no rows."""
    if not rows:
        return None
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
