"""Checkpoints holding a run's full state: model (unwrapped), optimisers, scalers, iteration, RNG states, data
stream positions, best metric, configuration. Written atomically; loaded with one clear error when unusable."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .io import save_torch


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DDP wrapper (checkpoints never carry the ``module.`` prefix)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) random states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, **state: Any) -> Path:
    """Write a checkpoint atomically. Modules and optimisers are stored by their ``state_dict()``."""
    out = {}
    for k, v in state.items():
        if isinstance(v, torch.nn.Module):
            v = unwrap(v).state_dict()
        elif hasattr(v, "state_dict") and callable(v.state_dict):
            v = v.state_dict()
        out[k] = v
    out["rng"] = rng_state()
    return save_torch(path, out)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`.

    Raises:
        UserError: the file is missing or unreadable (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise UserError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}: {exc})") from None


def check_compatible(saved_cfg: dict[str, Any], cfg, keys: list[str], path: Path) -> None:
    """Refuse to resume with options that change the model or the data stream.

    Raises:
        UserError: naming the first option that differs and how to proceed.
    """
    for k in keys:
        if k in saved_cfg and saved_cfg[k] != getattr(cfg, k):
            raise UserError(
                f"{path} was written with --{k} {saved_cfg[k]} but this run has {getattr(cfg, k)}; "
                "rerun with the same options, or pass --resume no to start afresh"
            )


def load_for_resume(path: Path, cfg, keys: list[str], log) -> dict[str, Any] | None:
    """The checkpoint a run continues from, following ``--resume`` (auto, yes, no); None to start afresh.

    Raises:
        UserError: ``--resume yes`` without a checkpoint, or a checkpoint written with other options.
    """
    path = Path(path)
    if cfg.resume == "yes" and not path.is_file():
        raise UserError(f"--resume yes: {path} does not exist")
    if cfg.resume == "no" or not path.is_file():
        if path.is_file():
            log.info("--resume no: starting afresh (%s will be overwritten)", path)
        return None
    state = load(path)
    check_compatible(state["config"], cfg, keys, path)
    return state
