"""The discrete DiNTS network of a decoded architecture, for retraining and inference (docs/method.md, "The
networks").

Each active path of the architecture is one :class:`dints.space.ops.Cell` holding its one op; a node is the sum of its
incoming paths. Only what the architecture uses is built: stems for the levels block 0 reads, decoder stages from
the deepest level active after the last block up. (MONAI's ``DiNTS`` builds a stem and a decoder stage for every
level and feeds zero tensors through the unused ones.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from dints.space.ops import Cell, Decoder, Head, Stem, check_input
from dints.space.opsets import OP_TABLE, opset_ops
from dints.space.topology import check_codes, filter_nums, level_channels, num_paths, path_table


def _codes(arch_or_codes: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    # An Arch (dints.space.archfile) or anything with the same attributes; else a (node_a, arch_code_a, arch_code_c)
    # triple.
    if hasattr(arch_or_codes, "arch_code_a"):
        a = arch_or_codes
        names = ("num_blocks", "num_depths", "opset", "ops", "use_downsample")
        extra = {k: getattr(a, k) for k in names if hasattr(a, k)}
        codes = (a.node_a, a.arch_code_a, a.arch_code_c)
    else:
        if len(arch_or_codes) != 3:
            raise ValueError("expected an Arch or a (node_a, arch_code_a, arch_code_c) triple")
        codes, extra = tuple(arch_or_codes), {}
    node_a, code_a, code_c = (torch.as_tensor(c).detach().to("cpu").round().long() for c in codes)
    return node_a, code_a, code_c, extra


class DiscreteNet(nn.Module):
    """Discrete network of a searched architecture.

    Module layout: ``stems[str(d)]`` for the levels block 0 reads, ``cells[f"{b}_{p}"]`` for the active paths,
    ``decoder`` (stages ``0..top``, top = deepest level active after the last block) and ``head``; the names match
    :class:`dints.space.supernet.SuperNet`, so a supernet's weights can be copied into it.

    Args:
        arch_or_codes: an ``Arch`` (:mod:`dints.space.archfile`) or a triple ``(node_a, arch_code_a, arch_code_c)`` of
            tensors/arrays: ``node_a`` ``(B+1, D)`` 0/1 active levels at each block boundary, ``arch_code_a``
            ``(B, P)`` 0/1 active paths, ``arch_code_c`` ``(B, P)`` op index per path.
        in_channels: image channels.
        num_classes: output classes (background included).
        channel_mul: channel multiplier (retraining default 1.0: level r has ``int(32 * 2**(r+1))`` channels).
        opset: op set of the op indices; defaults to the Arch's, else 1.
        use_downsample: stems halve the input; defaults to the Arch's, else True.

    Attributes:
        node_a, arch_code_a, arch_code_c: the architecture codes, as long buffers.
        ops: op names in index order.
    """

    def __init__(
        self,
        arch_or_codes: Any,
        in_channels: int,
        num_classes: int,
        channel_mul: float = 1.0,
        opset: int | None = None,
        use_downsample: bool | None = None,
    ):
        super().__init__()
        node_a, code_a, code_c, extra = _codes(arch_or_codes)
        opset = _pick("opset", opset, extra, 1)
        use_downsample = bool(_pick("use_downsample", use_downsample, extra, True))
        ops = list(extra.get("ops") or opset_ops(opset))
        unknown = [name for name in ops if name not in OP_TABLE]
        if unknown:
            raise ValueError(f"unknown op name(s) {unknown}")

        if code_a.dim() != 2:
            raise ValueError(f"arch_code_a must be (num_blocks, num_paths), got shape {tuple(code_a.shape)}")
        num_blocks, p = code_a.shape
        num_depths = node_a.shape[-1]
        if p != num_paths(num_depths) or node_a.shape != (num_blocks + 1, num_depths) or code_c.shape != code_a.shape:
            raise ValueError(
                f"inconsistent code shapes: node_a {tuple(node_a.shape)}, arch_code_a {tuple(code_a.shape)}, "
                f"arch_code_c {tuple(code_c.shape)}; expected (B+1, D), (B, 3D-2), (B, 3D-2)"
            )
        for name in ("num_blocks", "num_depths"):
            if name in extra and int(extra[name]) != {"num_blocks": num_blocks, "num_depths": num_depths}[name]:
                raise ValueError(f"{name}={extra[name]} disagrees with the code shapes")
        src, tgt, kind = (t.tolist() for t in path_table(num_depths))
        active = [[q for q in range(p) if code_a[b, q]] for b in range(num_blocks)]
        check_codes(code_a, node_a)
        for b, paths in enumerate(active):
            bad = [int(code_c[b, q]) for q in paths if not 0 <= int(code_c[b, q]) < len(ops)]
            if bad:
                raise ValueError(f"op index {bad[0]} at block {b} is outside 0..{len(ops) - 1}")

        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.num_blocks = num_blocks
        self.num_depths = num_depths
        self.channel_mul = float(channel_mul)
        self.use_downsample = use_downsample
        self.opset = int(opset)
        self.ops = ops
        self.register_buffer("node_a", node_a)
        self.register_buffer("arch_code_a", code_a)
        self.register_buffer("arch_code_c", code_c)
        # Plain Python copies of the topology so forward never reads a (possibly GPU) tensor.
        self._active = active
        self._src, self._tgt = src, tgt
        self._stem_levels = sorted({src[q] for q in active[0]})

        nums = filter_nums(num_depths, channel_mul)
        ch = level_channels(num_depths, channel_mul, use_downsample)
        s = int(use_downsample)
        self.stems = nn.ModuleDict(
            {str(d): Stem(in_channels, nums[d], nums[d + s], d, use_downsample) for d in self._stem_levels}
        )
        self.cells = nn.ModuleDict(
            {
                f"{b}_{q}": Cell(kind[q], ch[src[q]], ch[tgt[q]], ops[int(code_c[b, q])])
                for b, paths in enumerate(active)
                for q in paths
            }
        )
        top = max(tgt[q] for q in active[-1])
        self.decoder = Decoder(nums, top, use_downsample)
        self.head = Head(nums[0], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation logits.

        Args:
            x: input ``(N, in_channels, X, Y, Z)``, every side divisible by ``2**(num_depths + 1)`` (with
                ``use_downsample``).

        Returns:
            Logits ``(N, num_classes, X, Y, Z)``.
        """
        check_input(x, self.in_channels, self.num_depths, self.use_downsample)
        nodes: list[torch.Tensor | None] = [None] * self.num_depths
        for d in self._stem_levels:
            nodes[d] = self.stems[str(d)](x)
        for b, paths in enumerate(self._active):
            new: list[torch.Tensor | None] = [None] * self.num_depths
            for q in paths:
                y = self.cells[f"{b}_{q}"](nodes[self._src[q]])
                t = self._tgt[q]
                # Out of place: a skip cell returns its input, which other cells still read.
                new[t] = y if new[t] is None else new[t] + y
            nodes = new
        return self.head(self.decoder(nodes))


def retrain_channel_mul(channel_mul: float | None, arch: Any) -> float:
    """Channel multiplier of a retrained network: ``channel_mul`` (``--channel_mul``) if set, else twice the
    search's (``arch.channel_mul``): the search's supernet is half as wide as the network retrained from it."""
    return float(channel_mul) if channel_mul is not None else 2.0 * float(arch.channel_mul)


def _pick(name: str, given: Any, extra: dict[str, Any], default: Any) -> Any:
    if name in extra and extra[name] is not None:
        if given is not None and given != extra[name]:
            raise ValueError(f"{name}={given!r} disagrees with the architecture's {name}={extra[name]!r}")
        return extra[name]
    return default if given is None else given
