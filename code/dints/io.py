"""Files in and out: atomic writes (a crash or Ctrl-C never leaves a half-written result behind) and the one way the
project reads a torch file (weights only: loading a file never runs code from it)."""

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
    """``torch.save`` ``obj`` atomically (checkpoints); ``keep``: see :func:`atomic_write`.

    What the project saves holds only what :func:`load_torch` reads back without an allowlist: tensors, dicts, lists,
    tuples, numbers, strings, booleans and None.
    """
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp), keep=keep)


def numpy_array_globals() -> list[Any]:
    """The project's one allowlist for weights-only loads: what a dict of numpy arrays pickles to (the arch-code files
    of MONAI's DiNTS tutorial hold numpy arrays). Arrays and their dtypes only: nothing that runs code. Files written
    with numpy 1.x name the module ``numpy.core``."""
    import numpy as np

    reconstruct = np._core.multiarray._reconstruct
    scalar = np._core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                         np.float16, np.float32, np.float64)]
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), scalar,
            (scalar, "numpy.core.multiarray.scalar"), np.ndarray, np.dtype, *dtypes]


def refusal(exc: BaseException) -> str | None:
    """The object a weights-only load refused to build, from its error (``posix.system``, say); None when the error
    is another (a file that is no pickle at all)."""
    import re

    found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL ([\w.]+)", str(exc))
    return found.group(1) if found else None


def load_torch(path: str | Path, numpy_arrays: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` onto the CPU: the unpickler builds tensors and plain containers only,
    so a file crafted to run code on loading (a ``__reduce__`` payload) is refused before anything in it runs.

    Args:
        numpy_arrays: also admit numpy arrays (:func:`numpy_array_globals`; MONAI's arch-code files).

    Raises:
        pickle.UnpicklingError: the file holds other objects (torch names them in the message).
        Exception: what ``torch.load`` raises for a missing, truncated or foreign file.
    """
    import torch

    with torch.serialization.safe_globals(numpy_array_globals() if numpy_arrays else []):
        return torch.load(path, map_location="cpu", weights_only=True)


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
