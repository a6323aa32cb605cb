"""Files crafted to run code when they are loaded with a full unpickler: the attack the project's loaders refuse."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class Payload:
    """Pickles to ``os.system("touch <marker>")``: unpickling it runs the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write(path: Path, marker: Path, around: dict | None = None) -> Path:
    """``torch.save`` of ``around`` (default: a plausible retraining checkpoint) with the payload inside."""
    state = dict(around or {"kind": "retrain", "iteration": 1, "config": {}, "history": [], "rng": {}})
    state["payload"] = Payload(marker)
    torch.save(state, path)
    assert not marker.exists()
    return path
