"""The DiNTS supernet: every path of every block, each cell mixing all candidate ops (docs/method.md, "Search
space" and "Relaxation and losses").

Architecture parameters are ``alpha_a`` (B x P path logits) and ``alpha_c`` (B x P x K op logits). In the forward
pass each path's output is scaled by ``eta / (1 - prod(1 - eta))`` with ``eta = sigmoid(alpha_a / tau)``
(:func:`dints.space.relax.path_scales`) and each cell mixes its ops by ``softmax(alpha_c / tau)``.

Two modes:

- one-shot (``use_max=True``): every path and op runs;
- sampling (``use_max=False``): only the paths drawn by :meth:`SuperNet.sample_paths` run, which cuts memory and
  time. Each runs with its one-shot scale divided by its inclusion probability, so the sampled forward is a
  Horvitz-Thompson estimate of the one-shot forward (:mod:`dints.space.sampling` states the design and what it
  estimates).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from dints.space import relax, sampling
from dints.space.ops import Decoder, Head, MixedCell, Stem, check_input
from dints.space.opsets import opset_ops
from dints.space.topology import CodeError, check_codes, filter_nums, level_channels, num_paths, path_table


class SuperNet(nn.Module):
    """DiNTS supernet over ``num_blocks`` blocks and ``num_depths`` resolution levels.

    Module layout (names chosen so weights map one to one onto MONAI's ``DiNTS`` + ``TopologySearch``):
    ``stems[str(d)]`` (:class:`dints.space.ops.Stem`), ``cells[f"{b}_{p}"]`` (:class:`dints.space.ops.MixedCell`),
    ``decoder`` (:class:`dints.space.ops.Decoder`) and ``head`` (:class:`dints.space.ops.Head`).

    Args:
        in_channels: image channels.
        num_classes: output classes (background included).
        num_blocks: blocks B.
        num_depths: resolution levels D.
        channel_mul: channel multiplier; level r has ``int(32 * 2**(r+1) * channel_mul)`` channels.
        opset: op set id (:data:`dints.space.opsets.OPSETS`).
        cellop: number of candidate ops taken from the front of the op set (``None``: all).
        use_downsample: the stems halve the input resolution (MONAI's default).
        recompute: the cells' pseudo-3D ops keep only their input for the backward pass and recompute their two
            convolutions there (:class:`dints.space.ops.MixedCell`): same values and gradients, about 0.6x the
            activation memory of a one-shot step for ~10% more time.

    Attributes:
        alpha_a: ``nn.Parameter`` of shape ``(B, P)``, initialised N(0, 0.01) as MONAI's ``log_alpha_a``.
        alpha_c: ``nn.Parameter`` of shape ``(B, P, K)``, initialised N(1, 0.01) as MONAI's ``log_alpha_c``.
        path_mask: bool buffer ``(B, P)``, the paths that run in sampling mode (all until sampled).
        path_inclusion: float buffer ``(B, P)``, each path's inclusion probability in the draw that made
            :attr:`path_mask` (1 until sampled); sampled paths run with their one-shot scale divided by it.
        ops: candidate op names in index order.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_blocks: int = 12,
        num_depths: int = 4,
        channel_mul: float = 0.5,
        opset: int = 1,
        cellop: int | None = None,
        use_downsample: bool = True,
        recompute: bool = True,
    ):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.num_blocks = int(num_blocks)
        self.num_depths = int(num_depths)
        self.num_paths = num_paths(num_depths)
        self.channel_mul = float(channel_mul)
        self.use_downsample = bool(use_downsample)
        self.ops = opset_ops(opset, cellop)
        self.opset = int(opset)

        nums = filter_nums(num_depths, channel_mul)
        ch = level_channels(num_depths, channel_mul, use_downsample)
        src, tgt, kind = (t.tolist() for t in path_table(num_depths))
        self._src, self._tgt = src, tgt
        s = int(use_downsample)

        self.stems = nn.ModuleDict(
            {str(d): Stem(in_channels, nums[d], nums[d + s], d, use_downsample) for d in range(num_depths)}
        )
        self.cells = nn.ModuleDict(
            {
                f"{b}_{p}": MixedCell(kind[p], ch[src[p]], ch[tgt[p]], self.ops, recompute)
                for b in range(num_blocks)
                for p in range(self.num_paths)
            }
        )
        self.decoder = Decoder(nums, num_depths - 1, use_downsample)
        self.head = Head(nums[0], num_classes)

        self.alpha_a = nn.Parameter(torch.empty(num_blocks, self.num_paths).normal_(0.0, 0.01))
        self.alpha_c = nn.Parameter(torch.empty(num_blocks, self.num_paths, len(self.ops)).normal_(1.0, 0.01))
        self.register_buffer("path_mask", torch.ones(num_blocks, self.num_paths, dtype=torch.bool), persistent=False)
        self.register_buffer("path_inclusion", torch.ones(num_blocks, self.num_paths), persistent=False)
        all_paths = list(range(self.num_paths))
        self._all_paths = [all_paths for _ in range(num_blocks)]
        self._sampled = [list(all_paths) for _ in range(num_blocks)]

    # ------------------------------------------------------------------ parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture parameters ``[alpha_a, alpha_c]``."""
        return [self.alpha_a, self.alpha_c]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture parameters (stems, cells, decoder, head)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def path_probs(self, tau: float = 1.0) -> torch.Tensor:
        """``eta = sigmoid(alpha_a / tau)``, shape ``(B, P)``."""
        return relax.path_probs(self.alpha_a, tau)

    def cell_weights(self, sampled: bool = False, tau: float = 1.0) -> torch.Tensor:
        """Weights each cell mixes its ops with: ``softmax(alpha_c / tau) * eta / (1 - prod(1 - eta))``.

        Args:
            sampled: divide each path's scale by its inclusion probability (:attr:`path_inclusion`), the weight of
                the sampled forward's estimator.
            tau: temperature.

        Returns:
            Tensor of shape ``(B, P, K)``. Folding the path scale into the op weights scales the path output without
            an extra full-size multiplication.
        """
        scale = relax.path_scales(self.alpha_a, tau)
        if sampled:  # paths outside the mask do not run (their inclusion probability may be 0): weight 0
            pi = self.path_inclusion.to(scale.dtype)
            scale = scale * torch.where(self.path_mask, 1.0 / pi.clamp_min(1e-12), torch.zeros_like(pi))
        return relax.op_weights(self.alpha_c, tau) * scale.unsqueeze(-1)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_paths(
        self, path_num: int, generator: torch.Generator | None = None, prune: bool = True, tau: float = 1.0
    ) -> torch.Tensor:
        """Draw the paths that run in sampling mode (:func:`dints.space.sampling.sample_block_paths`).

        Block by block, ``min(path_num, eligible)`` distinct paths are drawn among those whose source node is fed,
        by systematic sampling with inclusion probabilities proportional to ``eta``; so every node a path reads is
        produced. With ``prune``, paths whose target node nobody reads are then dropped
        (:func:`dints.space.sampling.prune_unread`): they cannot change the output or any gradient.

        Args:
            path_num: paths drawn per block (>= 1).
            generator: CPU random generator (pass one seeded identically on every rank in distributed runs).
            prune: drop paths whose output is never read.
            tau: temperature of the path probabilities the draw follows.

        Returns:
            Bool tensor ``(B, P)`` on CPU, the new mask (also copied into :attr:`path_mask`; the inclusion
            probabilities go to :attr:`path_inclusion`).
        """
        mask, pi = sampling.sample_block_paths(self.path_probs(tau), self.num_depths, path_num, generator)
        if prune:
            mask = sampling.prune_unread(mask, self.num_depths)
        self.set_paths(mask, pi)
        return mask

    def set_paths(self, mask: torch.Tensor | None, inclusion: torch.Tensor | None = None) -> None:
        """Set the paths that run in sampling mode.

        Args:
            mask: 0/1 or bool tensor ``(B, P)``; every block needs a path, and every path's source node must be fed
                by the previous block. ``None`` restores all paths.
            inclusion: ``(B, P)`` inclusion probabilities of the draw (in (0, 1] on the paths of ``mask``);
                ``None``: 1 (the paths run with their one-shot scales, as MONAI runs an ``arch_code_a``).
        """
        if mask is None:
            mask = torch.ones(self.num_blocks, self.num_paths, dtype=torch.bool)
        mask = torch.as_tensor(mask).to("cpu").bool()
        if mask.shape != (self.num_blocks, self.num_paths):
            raise ValueError(f"path mask must have shape {(self.num_blocks, self.num_paths)}, got {tuple(mask.shape)}")
        try:
            check_codes(mask)
        except CodeError as exc:
            raise ValueError(f"path mask: {exc}") from None
        active = [row.nonzero().squeeze(1).tolist() for row in mask]
        if inclusion is None:
            inclusion = torch.ones(mask.shape, dtype=torch.float64)
        inclusion = torch.as_tensor(inclusion).to("cpu", torch.float64)
        if inclusion.shape != mask.shape or not ((inclusion[mask] > 0) & (inclusion[mask] <= 1)).all():
            raise ValueError("inclusion probabilities must have the mask's shape and lie in (0, 1] on its paths")
        self.path_mask.copy_(mask)
        self.path_inclusion.copy_(inclusion.to(self.path_inclusion.dtype))
        self._sampled = active

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, use_max: bool = True, tau: float = 1.0) -> torch.Tensor:
        """Segmentation logits.

        Args:
            x: input ``(N, in_channels, X, Y, Z)``, every side divisible by ``2**(num_depths + 1)`` (with
                ``use_downsample``).
            use_max: run every path (one-shot); ``False`` runs only the paths in :attr:`path_mask`.
            tau: temperature of the path scales and op weights.

        Returns:
            Logits ``(N, num_classes, X, Y, Z)``.
        """
        check_input(x, self.in_channels, self.num_depths, self.use_downsample)
        active = self._all_paths if use_max else self._sampled
        weights = self.cell_weights(sampled=not use_max, tau=tau)

        nodes: list[torch.Tensor | None] = [None] * self.num_depths
        for d in sorted({self._src[p] for p in active[0]}):
            nodes[d] = self.stems[str(d)](x)
        for b, paths in enumerate(active):
            new: list[torch.Tensor | None] = [None] * self.num_depths
            wb = weights[b]
            for p in paths:
                y = self.cells[f"{b}_{p}"](nodes[self._src[p]], wb[p])
                t = self._tgt[p]
                # Mixed-cell outputs are fresh tensors no backward function keeps: summing in place is safe.
                new[t] = y if new[t] is None else new[t].add_(y)
            nodes = new
        return self.head(self.decoder(nodes))
