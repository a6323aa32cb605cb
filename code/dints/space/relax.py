"""Continuous relaxation of the DiNTS search space and the search losses (docs/method.md,
"Relaxation and losses").

Everything here is a pure function of the architecture logits:

- ``alpha_a``: path logits, shape ``(B, P)`` with ``P = 3D - 2``; path probability ``eta = sigmoid(alpha_a / tau)``.
- ``alpha_c``: op logits, shape ``(B, P, K)``; op weights ``softmax(alpha_c / tau)``.

A block's *child* is a non-empty subset of its paths (:func:`dints.space.topology.children`). Its probability is the
product of ``eta`` (path on) and ``1 - eta`` (path off) renormalised over non-empty subsets. The losses are those of
MONAI's DiNTS search (tutorial and Auto3DSeg): entropy, topology (``TopologySearch.get_topology_entropy``) and the
memory ratio (``TopologySearch.get_ram_cost_usage``), with the memory in true megabytes (docs/method.md, "Where we
differ").

The memory ratio equals MONAI's only where the channel ladder doubles exactly from level to level, the stem's
first convolution included (MONAI's ``filter_nums``, ``int(32 * 2**r * channel_mul)`` for r = 0..D: exact for
``channel_mul`` 0.5, 0.25, 1, ...). Levels are sized here by the channels they really have, while MONAI pairs each
level's voxels with the channels of the level above it, which is proportional only when the ladder doubles. At
``channel_mul`` 0.2 or 0.3 the truncation (6, 12, 25, 51, 102 channels at 0.2) makes the two ratios differ by up
to 4e-3 (``tests/space/test_relax.py`` bounds it over random logits).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from dints.space import topology
from dints.space.opsets import op_cost

#: Added inside the logarithms of the entropy and topology losses, as in MONAI, so that a probability of exactly
#: zero gives a finite loss and gradient.
LOG_EPS = 1e-5

#: Bytes per activation value (float32) and bytes per megabyte (MiB, as MONAI reports it).
BYTES_PER_VALUE = 4
BYTES_PER_MB = 1024**2


def path_probs(alpha_a: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Independent path probabilities ``eta = sigmoid(alpha_a / tau)``.

    Args:
        alpha_a: path logits, shape ``(B, P)``.
        tau: temperature (> 0).

    Returns:
        Tensor of shape ``(B, P)`` in (0, 1).
    """
    return torch.sigmoid(alpha_a / tau)


def op_weights(alpha_c: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Op mixing weights ``softmax(alpha_c / tau)`` over the last axis.

    Args:
        alpha_c: op logits, shape ``(B, P, K)``.
        tau: temperature (> 0).

    Returns:
        Tensor of shape ``(B, P, K)``; each ``[b, i, :]`` sums to 1.
    """
    return F.softmax(alpha_c / tau, dim=-1)


def _log_terms(alpha_a: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # log(eta), log(1 - eta) and log(1 - prod(1 - eta)), the last being the log-probability that a block has at least
    # one path. That one is written as "the first active path is i", sum_i eta_i * prod_{j<i} (1 - eta_j), and
    # evaluated by logsumexp: exact, free of cancellation when every eta is tiny or close to 1, and without the NaN
    # gradients of a branch-wise log1mexp.
    log_on = F.logsigmoid(alpha_a / tau)
    log_off = log_on - alpha_a / tau  # log(1 - sigmoid(x)) = log(sigmoid(x)) - x
    log_off_before = torch.cumsum(log_off, dim=-1) - log_off
    return log_on, log_off, torch.logsumexp(log_on + log_off_before, dim=-1)


def log_child_probs(alpha_a: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Log probability of every child of every block.

    ``log p(child) = sum_i [c_i log eta_i + (1 - c_i) log(1 - eta_i)] - log(1 - prod_i (1 - eta_i))``, evaluated as
    one matrix product with the 0/1 child table, so nothing larger than ``(B, 2**P - 1)`` is built.

    Args:
        alpha_a: path logits, shape ``(B, P)``.
        tau: temperature (> 0).

    Returns:
        Tensor of shape ``(B, 2**P - 1)``, children in :func:`dints.space.topology.children` order.
    """
    num_depths = topology.depths_from_paths(alpha_a.shape[-1])
    table = topology.children(num_depths).to(dtype=alpha_a.dtype, device=alpha_a.device)
    log_on, log_off, log_norm = _log_terms(alpha_a, tau)
    # sum_i c_i*log_on_i + (1 - c_i)*log_off_i = sum_i log_off_i + sum_i c_i*(log_on_i - log_off_i), and
    # log_on - log_off is alpha_a / tau itself.
    return (log_off.sum(-1) - log_norm).unsqueeze(-1) + (alpha_a / tau) @ table.T


def child_probs(alpha_a: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Probability of every child of every block (MONAI's ``get_prob_a(child=True)[0]``).

    Args:
        alpha_a: path logits, shape ``(B, P)``.
        tau: temperature (> 0).

    Returns:
        Tensor of shape ``(B, 2**P - 1)``; each row sums to 1.
    """
    return log_child_probs(alpha_a, tau).exp()


def path_scales(alpha_a: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Factor each path's output is multiplied by in the supernet, ``eta / (1 - prod(1 - eta))``.

    This is the marginal probability that the path is on given that the block is not empty (MONAI's
    ``get_prob_a()[1]``).

    Args:
        alpha_a: path logits, shape ``(B, P)``.
        tau: temperature (> 0).

    Returns:
        Tensor of shape ``(B, P)``.
    """
    log_on, _, log_norm = _log_terms(alpha_a, tau)
    return torch.exp(log_on - log_norm.unsqueeze(-1))


def entropy_loss(alpha_a: torch.Tensor, alpha_c: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Entropy loss: mean child-probability entropy term plus mean op-softmax entropy term.

    Matches the MONAI DiNTS search: ``-(p * log(p + 1e-5)).mean() - (softmax * log_softmax).mean()``, the means
    taken over all ``B * (2**P - 1)`` child entries and all ``B * P * K`` op entries.

    Args:
        alpha_a: path logits, shape ``(B, P)``.
        alpha_c: op logits, shape ``(B, P, K)``.
        tau: temperature (> 0).

    Returns:
        Scalar tensor.
    """
    p = child_probs(alpha_a, tau)
    ent_a = -(p * torch.log(p + LOG_EPS)).mean()
    logits = alpha_c / tau
    ent_c = -(F.softmax(logits, dim=-1) * F.log_softmax(logits, dim=-1)).mean()
    return ent_a + ent_c


def pattern_probs(child_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability of each block's input and output node pattern.

    Args:
        child_p: child probabilities, shape ``(B, 2**P - 1)``.

    Returns:
        ``(p_in, p_out)``, each of shape ``(B, 2**D - 1)``: ``p_in[b, n]`` is the probability that block ``b``
        reads exactly the levels of pattern ``n``, ``p_out[b, n]`` that it feeds exactly those levels.
    """
    num_depths = topology.depths_from_children(child_p.shape[-1])
    in_idx, out_idx = topology.child_patterns(num_depths)
    m = topology.num_patterns(num_depths)
    # Summing children by pattern is a product with a (children x patterns) one-hot matrix.
    in_map = F.one_hot(in_idx, m).to(dtype=child_p.dtype, device=child_p.device)
    out_map = F.one_hot(out_idx, m).to(dtype=child_p.dtype, device=child_p.device)
    return child_p @ in_map, child_p @ out_map


def topology_loss(child_p: torch.Tensor) -> torch.Tensor:
    """Topology loss: how often consecutive blocks disagree on which nodes are active (docs/method.md,
    "Relaxation and losses").

    For every pair of consecutive blocks ``(b, b+1)`` and every node pattern ``n``, the binary cross-entropy between
    "block b's output pattern is n" and "block b+1's input pattern is n", summed over pairs and patterns. Same
    value as MONAI's ``TopologySearch.get_topology_entropy`` (including its ``1e-5`` inside the logarithms).

    Args:
        child_p: child probabilities, shape ``(B, 2**P - 1)``.

    Returns:
        Scalar tensor; 0 for a single block.
    """
    p_in, p_out = pattern_probs(child_p)
    target, pred = p_out[:-1], p_in[1:]
    bce = -(target * torch.log(pred + LOG_EPS) + (1 - target) * torch.log(1 - pred + LOG_EPS))
    return bce.sum()


def resample_cost(kind: int, c_in: int, c_out: int) -> float:
    """Memory cost of a path's resampling step in units of its output size (docs/method.md,
    "Relaxation and losses").

    Args:
        kind: path kind, -1 (down), 0 (same level) or +1 (up); see :data:`dints.space.topology.DOWN` etc.
        c_in: channels of the source level.
        c_out: channels of the target level.

    Returns:
        ``8*c_in/c_out + 3`` for down (activation at the finer level, two convolutions, concatenation, norm),
        ``2*c_in/c_out + 2`` for up, 0 for the same level (identity: a level keeps its channels).
    """
    r = c_in / c_out
    if kind == topology.DOWN:
        return 8.0 * r + 3.0
    if kind == topology.UP:
        return 2.0 * r + 2.0
    if kind == topology.SAME:
        return 0.0
    raise ValueError(f"unknown path kind {kind}")


class MemoryEstimate(NamedTuple):
    """Expected activation memory of the supernet, in MB of float32.

    Attributes:
        usage: scalar tensor, expected memory under the current path probabilities and op weights.
        full: scalar tensor, the same with every path on (op weights unchanged).
        ratio: ``usage / full``, the quantity the memory loss drives towards the budget.
    """

    usage: torch.Tensor
    full: torch.Tensor
    ratio: torch.Tensor


def path_costs(
    num_depths: int, ops: Sequence[str], channel_mul: float, use_downsample: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-path resampling cost and per-op cost, in units of the path's output size.

    Args:
        num_depths: number of resolution levels D.
        ops: op names of a cell, in index order (see :func:`dints.space.opsets.opset_ops`).
        channel_mul: channel multiplier of the network whose memory is estimated.
        use_downsample: whether the stem halves the input.

    Returns:
        ``(pre, op)``: float64 tensors of shape ``(P,)`` and ``(K,)``. Ops map the target level's channels to
        themselves, so their ``Cin/Cout`` is 1.
    """
    src, tgt, kind = topology.path_table(num_depths)
    ch = topology.level_channels(num_depths, channel_mul, use_downsample)
    pre = torch.tensor(
        [resample_cost(int(k), ch[int(s)], ch[int(t)]) for s, t, k in zip(src, tgt, kind)], dtype=torch.float64
    )
    op = torch.tensor([op_cost(name, 1.0) for name in ops], dtype=torch.float64)
    return pre, op


def level_sizes_mb(
    in_shape: Sequence[int], num_depths: int, channel_mul: float, use_downsample: bool = True
) -> torch.Tensor:
    """Size of one feature map at each level in MB of float32.

    Args:
        in_shape: network input shape ``(N, C, X, Y, Z)``; only the batch and spatial sizes are used.
        num_depths: number of resolution levels D.
        channel_mul: channel multiplier.
        use_downsample: whether the stem halves the input.

    Returns:
        Float64 tensor of shape ``(D,)``: ``N * channels(r) * prod(spatial(r)) * 4 / 1024**2``.
    """
    if len(in_shape) < 3:
        raise ValueError(f"in_shape must be (N, C, *spatial), got {tuple(in_shape)}")
    batch, spatial = int(in_shape[0]), tuple(in_shape[2:])
    ch = topology.level_channels(num_depths, channel_mul, use_downsample)
    sizes = [
        batch * ch[r] * math.prod(topology.level_shape(spatial, r, use_downsample)) for r in range(num_depths)
    ]
    return torch.tensor(sizes, dtype=torch.float64) * BYTES_PER_VALUE / BYTES_PER_MB


def _path_terms(
    num_depths: int, ops: Sequence[str], in_shape: Sequence[int], channel_mul: float, use_downsample: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Per-path resampling cost (P,), per-op cost (K,) and the size in MB of each path's output (P,).
    _, tgt, _ = topology.path_table(num_depths)
    pre, op = path_costs(num_depths, ops, channel_mul, use_downsample)
    return pre, op, level_sizes_mb(in_shape, num_depths, channel_mul, use_downsample)[tgt]


def memory_estimate(
    alpha_a: torch.Tensor,
    alpha_c: torch.Tensor,
    ops: Sequence[str],
    in_shape: Sequence[int],
    channel_mul: float,
    use_downsample: bool = True,
    tau: float = 1.0,
) -> MemoryEstimate:
    """Expected activation memory of the supernet and its ratio to the full supernet (docs/method.md,
    "Relaxation and losses").

    Each path costs ``(1 + resample + sum_k w_k * c_k) * size(target level)``, weighted by its supernet scale
    (:func:`path_scales`) for ``usage`` and by 1 for ``full``. The ratio equals MONAI's
    ``get_ram_cost_usage() / get_ram_cost_usage(full=True)`` where the channel ladder doubles exactly (see the
    module docstring); the megabytes are those of the real tensors (MONAI's are twice as large with
    ``use_downsample``, docs/method.md, "Where we differ").

    Args:
        alpha_a: path logits, shape ``(B, P)``.
        alpha_c: op logits, shape ``(B, P, K)`` with ``K == len(ops)``.
        ops: op names in index order.
        in_shape: network input shape ``(N, C, X, Y, Z)``.
        channel_mul: channel multiplier of the searched network.
        use_downsample: whether the stem halves the input.
        tau: temperature (> 0).

    Returns:
        :class:`MemoryEstimate` of scalar tensors in ``alpha_a``'s dtype, differentiable in both logits.
    """
    if alpha_c.shape[-1] != len(ops):
        raise ValueError(f"alpha_c has {alpha_c.shape[-1]} ops per cell but {len(ops)} op names were given")
    pre, op, size = _path_terms(topology.depths_from_paths(alpha_a.shape[-1]), ops, in_shape, channel_mul,
                                use_downsample)
    pre, op, size = (t.to(dtype=alpha_a.dtype, device=alpha_a.device) for t in (pre, op, size))
    per_path = (1.0 + pre + op_weights(alpha_c, tau) @ op) * size  # (B, P)
    usage = (path_scales(alpha_a, tau) * per_path).sum()
    full = per_path.sum()
    return MemoryEstimate(usage, full, usage / full)


def memory_loss(ratio: torch.Tensor, budget: float) -> torch.Tensor:
    """Memory loss ``|budget - usage/full|``.

    Args:
        ratio: ``MemoryEstimate.ratio``.
        budget: target fraction of the full supernet's memory (paper default 0.8).

    Returns:
        Scalar tensor.
    """
    return torch.abs(budget - ratio)


def decoded_path_memory(
    arch_code_c: torch.Tensor,
    ops: Sequence[str],
    in_shape: Sequence[int],
    channel_mul: float,
    use_downsample: bool = True,
) -> torch.Tensor:
    """Each path's memory cost with the op a decoded architecture chose for it, as a fraction of the full
    architecture's (every path on, with those ops): the terms :func:`decoded_memory_ratio` adds up.

    Args:
        arch_code_c: ``(B, P)`` op indices into ``ops``.
        ops, in_shape, channel_mul, use_downsample: see :func:`decoded_memory_ratio`.

    Returns:
        float64 ``(B, P)``, summing to 1.
    """
    code_c = torch.as_tensor(arch_code_c, dtype=torch.long)
    pre, op, size = _path_terms(topology.depths_from_paths(code_c.shape[-1]), ops, in_shape, channel_mul,
                                use_downsample)
    per_path = (1.0 + pre + op[code_c]) * size  # (B, P)
    return per_path / per_path.sum()


def decoded_memory_ratio(
    arch_code_a: torch.Tensor,
    arch_code_c: torch.Tensor,
    ops: Sequence[str],
    in_shape: Sequence[int],
    channel_mul: float,
    use_downsample: bool = True,
) -> float:
    """usage/full of a discrete architecture: the cost of its active paths over the cost of every path.

    Each path costs ``(1 + resample + op cost) * size(target level)`` with the op the architecture chose for it
    (docs/method.md, "Relaxation and losses"); ``full`` switches every path on with the same ops. This is what
    ``arch.json``'s ``mem_ratio`` records; :func:`memory_estimate`'s ratio is the search distribution's expectation
    of it.

    Args:
        arch_code_a: ``(B, P)`` 0/1, the active paths.
        arch_code_c: ``(B, P)`` op indices into ``ops``.
        ops: op names in index order.
        in_shape: network input shape ``(N, C, X, Y, Z)``.
        channel_mul: channel multiplier of the network.
        use_downsample: whether the stem halves the input.

    Returns:
        The ratio, a Python float in (0, 1].
    """
    share = decoded_path_memory(arch_code_c, ops, in_shape, channel_mul, use_downsample)
    return float((share * torch.as_tensor(arch_code_a, dtype=torch.float64)).sum())
