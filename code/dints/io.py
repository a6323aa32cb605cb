"""Atomic file writes: a crash or Ctrl-C never leaves a half-written result behind."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from dints.errors import WriteError
from dints.run import faults


def atomic_write(path: str | Path, write: Callable[[str], None], keep: str | Path | None = None) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash at any moment leaves the old file or the new one, never a part of one (leftover temporary files are
    named ``.<name>.*.tmp``).

    Args:
        path: final destination; its folder is created if needed.
        write: a function that writes the whole content to the given temporary path.
        keep: where the file being replaced goes (the previous checkpoint), renamed just before the new one lands.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        WriteError: the write failed (a full disk, no permission); ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        write(tmp)
        faults.on_write(path, tmp)
        with open(tmp, "rb") as f:  # on disk before the rename, so a crash leaves the old or the new file
            os.fsync(f.fileno())
        if keep is not None and path.exists():
            os.replace(path, keep)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "write" in str(exc).lower()):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            kept = f"; the previous {path.name} is kept" if path.exists() else ""
            full = "; free some space and rerun the same command" if getattr(exc, "errno", None) == errno.ENOSPC else ""
            raise WriteError(f"cannot write {path}: {reason}{kept}{full}") from exc
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


def save_torch(path: str | Path, obj: Any, keep: str | Path | None = None) -> Path:
    """``torch.save`` ``obj`` atomically (checkpoints); ``keep``: see :func:`atomic_write`."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp), keep=keep)


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
