"""Trained models: the one place that rebuilds a retrained network from what was saved (stages 3-4, export,
prediction).

A retraining checkpoint (``best.pt``, written by ``retrain.py``) carries ``kind`` ``"retrain"`` and the facts that
rebuild its network: the architecture, image channels, classes and channel multiplier, beside the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dints.errors import UserError
from dints.space.archfile import Arch
from dints.space.network import DiscreteNet
from dints.train import checkpoint

#: ``kind`` of a retraining checkpoint.
RETRAIN_KIND = "retrain"


def retrain_facts(arch: Arch, in_channels: int, num_classes: int, channel_mul: float) -> dict[str, Any]:
    """What a retraining checkpoint records besides the weights, to rebuild its network."""
    return dict(kind=RETRAIN_KIND, arch=arch.to_dict(), in_channels=in_channels, num_classes=num_classes,
                channel_mul=channel_mul)


def check_retrained(state: Any, path: str | Path) -> None:
    """Refuse a checkpoint that retraining did not write.

    Raises:
        UserError: naming ``path``.
    """
    if not isinstance(state, dict) or state.get("kind") != RETRAIN_KIND:
        raise UserError(f"{path} is not a retrained-model checkpoint (written by retrain.py)")


def network(arch: Arch, in_channels: int, num_classes: int, channel_mul: float, weights: dict[str, torch.Tensor],
            source: str | Path) -> DiscreteNet:
    """The discrete network of ``arch`` holding ``weights``, in eval mode on the CPU.

    Raises:
        UserError: the weights do not fit that network (naming ``source``).
    """
    net = DiscreteNet(arch, in_channels, num_classes, channel_mul)
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"{source}: its weights do not fit the network its own facts describe (in_channels "
                        f"{in_channels}, num_classes {num_classes}, its arch): "
                        f"{str(exc).strip().splitlines()[0]}; was the file edited?") from None
    return net.eval()


def load_trained(path: str | Path, device: torch.device | str = "cpu",
                 state: dict[str, Any] | None = None) -> tuple[DiscreteNet, dict[str, Any]]:
    """A retrained network from its checkpoint.

    Args:
        path: the checkpoint (read unless ``state`` is given; named in errors).
        device: where the network goes.
        state: the checkpoint's contents, already read.

    Returns:
        ``(network in eval mode on device, checkpoint dict)``.

    Raises:
        UserError: missing, unreadable or foreign checkpoint, or weights that do not fit.
    """
    state = checkpoint.load(path) if state is None else state
    check_retrained(state, path)
    arch = Arch.from_dict(state["arch"], source=str(path))
    net = network(arch, state["in_channels"], state["num_classes"], state["channel_mul"], state["model"], path)
    return net.to(device), state
