"""Reading architectures and trained models for stages 2-4."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dints.errors import ArchError, UserError
from dints.space.archfile import Arch, import_monai_arch, load_arch
from dints.space.network import DiscreteNet
from dints.train import checkpoint


def read_arch(path: str | Path) -> Arch:
    """An architecture from ``arch.json`` or a MONAI arch-code ``.pth``/``.pt`` file.

    Raises:
        ArchError: missing or invalid file (naming it and the field).
    """
    path = Path(path)
    if not path.is_file():
        raise ArchError(f"architecture file {path} does not exist (run the search first, or pass --arch)")
    if path.suffix in (".pth", ".pt"):
        return import_monai_arch(path)
    return load_arch(path)


def retrain_channel_mul(channel_mul: float | None, arch: Arch) -> float:
    """Channel multiplier of the retrained network: ``channel_mul`` (``--channel_mul``) if set, else twice the
    search's."""
    return float(channel_mul) if channel_mul is not None else 2.0 * float(arch.channel_mul)


def build_network(arch: Arch, in_channels: int, num_classes: int, channel_mul: float) -> DiscreteNet:
    """The discrete network of ``arch``."""
    return DiscreteNet(arch, in_channels, num_classes, channel_mul)


def load_trained(path: str | Path, device: torch.device,
                 state: dict[str, Any] | None = None) -> tuple[DiscreteNet, dict[str, Any]]:
    """A retrained network from its checkpoint (which carries its architecture and channel multiplier).

    Args:
        path: the checkpoint (read unless ``state`` is given; named in errors).
        device: where the network goes.
        state: the checkpoint's contents, already read.

    Returns:
        ``(network in eval mode on device, checkpoint dict)``.

    Raises:
        UserError: missing, unreadable or foreign checkpoint.
    """
    state = checkpoint.load(path) if state is None else state
    if state.get("kind") != "retrain":
        raise UserError(f"{path} is not a retrained-model checkpoint (written by retrain.py)")
    arch = Arch.from_dict(state["arch"], source=str(path))
    net = build_network(arch, state["in_channels"], state["num_classes"], state["channel_mul"])
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"{path}: its weights do not fit the network its own facts describe (in_channels "
                        f"{state['in_channels']}, num_classes {state['num_classes']}, its arch): "
                        f"{str(exc).strip().splitlines()[0]}; was the file edited?") from None
    return net.to(device).eval(), state
