"""Sizes of the search space, as plain integers: paths per block, the channel ladder, and what every side of a
network's input must be divisible by. Each rule is defined here once; importing this module loads nothing heavy
(the option checks of ``code/config.py`` use it)."""

from __future__ import annotations


def num_paths(num_depths: int) -> int:
    """Number of paths in one block, ``3 * num_depths - 2``."""
    if num_depths < 2:
        raise ValueError(f"num_depths must be >= 2, got {num_depths}")
    return 3 * num_depths - 2


def filter_nums(num_depths: int, channel_mul: float) -> list[int]:
    """The network's channel ladder, MONAI's ``filter_nums``: ``int(32 * 2**i * channel_mul)``, ``i = 0..D``.

    Level ``r`` carries ``filter_nums[r + int(use_downsample)]`` channels (:func:`level_channels`); the stems' first
    convolution and the decoder use the others.

    Args:
        num_depths: number of resolution levels D.
        channel_mul: channel multiplier (0.5 in search, 1.0 in retraining).

    Returns:
        A list of ``D + 1`` ints.

    Raises:
        ValueError: ``channel_mul`` so small that a level would have fewer than 2 channels.
    """
    nums = [int(32 * 2**i * channel_mul) for i in range(num_depths + 1)]
    if nums[0] < 2:
        raise ValueError(f"channel_mul={channel_mul} leaves fewer than 2 channels at the finest level")
    return nums


def level_channels(num_depths: int, channel_mul: float, use_downsample: bool = True) -> list[int]:
    """Feature channels at each level: :func:`filter_nums` from ``int(use_downsample)`` on.

    With the stem halving the input (``use_downsample``), level 0 already carries ``64 * channel_mul`` channels.

    Args:
        num_depths: number of resolution levels D (>= 2).
        channel_mul: channel multiplier.
        use_downsample: whether the stem halves the input resolution.

    Returns:
        A list of D ints.
    """
    num_paths(num_depths)
    s = int(use_downsample)
    return filter_nums(num_depths, channel_mul)[s : s + num_depths]


def input_divisor(num_depths: int, use_downsample: bool = True) -> int:
    """What every side of a network's input must be divisible by: ``2**(num_depths + int(use_downsample))`` (the
    rule of MONAI's DiNTS, which the discrete network, the supernet, the patch check and the memory predictor
    share)."""
    return 2 ** (num_depths + int(use_downsample))
