"""Checkpoints holding a run's full state: model, optimisers, scalers, iteration, RNG states, data
stream positions, best metric, configuration. Written atomically; loaded with one clear error when unusable.

A checkpoint holds tensors and plain values only (the numpy random state is stored as a tensor), so it is read back
with a weights-only load (:func:`dints.io.load_torch`): a checkpoint from someone else can be resumed, tested or
exported without any code in it running. A file holding anything else is refused before it runs.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dints.errors import UserError
from dints.io import load_torch, refusal, save_torch


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) random states, in types a weights-only load reads back."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def previous(path: str | Path) -> Path:
    """Where :func:`save` keeps the checkpoint it replaces: ``latest.pt`` -> ``latest.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save(path: str | Path, keep_previous: bool = False, **state: Any) -> Path:
    """Write a checkpoint atomically. Modules and optimisers are stored by their ``state_dict()``.

    Args:
        keep_previous: move the checkpoint being replaced to :func:`previous` (the fallback when the new one turns
            out unreadable).
    """
    out = {}
    for k, v in state.items():
        if isinstance(v, torch.nn.Module):
            v = v.state_dict()
        elif hasattr(v, "state_dict") and callable(v.state_dict):
            v = v.state_dict()
        out[k] = v
    out["rng"] = rng_state()
    return save_torch(path, out, keep=previous(path) if keep_previous else None)


class UnsafeCheckpoint(UserError):
    """A file holding objects a weights-only load refuses: crafted to run code, or written by an older version of
    this program (whose checkpoints held a numpy random state). Nothing in it has run."""


def load(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`, weights only, onto the CPU.

    Args:
        required: keys the checkpoint must hold.

    Raises:
        UnsafeCheckpoint: the file holds objects a weights-only load refuses (naming it; nothing in it ran).
        UserError: the file is missing, unreadable or not such a checkpoint (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = load_torch(path)
    except pickle.UnpicklingError as exc:
        if refusal(exc) is None:
            raise UserError(f"checkpoint {path} cannot be read (not a torch file)") from None
        if "numpy" in str(exc):
            raise UnsafeCheckpoint(f"checkpoint {path} was written by an older version of this program (it holds "
                                   "numpy objects, which a weights-only load refuses)") from None
        raise UnsafeCheckpoint(f"checkpoint {path} holds objects a weights-only load refuses ({refusal(exc)}): it "
                               "was not written by this program, and nothing in it was run") from None
    except Exception as exc:  # truncated or foreign file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}: {first})") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"checkpoint {path} is not a checkpoint of this program (it lacks {', '.join(missing)})")
    return state


def check_compatible(saved: dict[str, Any], current: dict[str, Any], keys: list[str], path: Path) -> None:
    """Refuse to resume with options that change the model or the data stream.

    Args:
        saved: the configuration recorded in the checkpoint.
        current: this run's configuration (option name -> value).
        keys: the options that must agree.
        path: the checkpoint (for the message).

    Raises:
        UserError: naming the first option that differs and how to proceed.
    """
    for k in keys:
        if k in saved and saved[k] != current.get(k):
            raise UserError(
                f"{path} was written with --{k} {saved[k]} but this run has {current.get(k)}; "
                "rerun with the same options, or pass --resume no to start afresh"
            )


#: What every checkpoint of a training loop holds.
REQUIRED_KEYS = ("iteration", "config", "history", "rng")


def load_for_resume(path: Path, resume: str, current: dict[str, Any], keys: list[str], log) -> dict[str, Any] | None:
    """The checkpoint a run continues from; None to start afresh.

    ``latest.pt`` is read; when it is missing or unreadable but the checkpoint it replaced (``latest.prev.pt``) is
    good, that one is used, with a warning. An unreadable checkpoint never leads to a silent fresh start.

    Args:
        path: ``latest.pt``.
        resume: ``--resume``: ``auto`` (resume when the file exists), ``yes`` (require it) or ``no``.
        current: this run's configuration, checked against the recorded one on ``keys``.
        keys: options that must not change between the runs.
        log: logger.

    Raises:
        UserError: ``--resume yes`` without a checkpoint, no readable checkpoint where one exists, or a checkpoint
            written with other options.
    """
    path, prev = Path(path), previous(path)
    exists = path.is_file() or prev.is_file()
    if resume == "yes" and not exists:
        raise UserError(f"--resume yes: {path} does not exist")
    if resume == "no" or not exists:
        if exists:
            log.info("--resume no: starting afresh (%s will be overwritten)", path)
        return None
    try:
        state = load(path, required=REQUIRED_KEYS)
    except UnsafeCheckpoint as exc:  # never fall back past a file that may be an attack, nor start afresh silently
        raise UserError(f"{exc}; move it away, or pass --resume no to start afresh") from None
    except UserError as exc:
        try:
            state = load(prev, required=REQUIRED_KEYS)
        except UserError:
            raise UserError(f"{exc}, and there is no readable previous checkpoint {prev.name}; move the files away "
                            "or pass --resume no to start afresh") from None
        log.warning("%s; resuming from the previous checkpoint %s (iteration %d) instead", exc, prev,
                    state["iteration"])
    check_compatible(state["config"], current, keys, path)
    return state
