"""Decoding the searched architecture: an exact dynamic program over node patterns (DESIGN §6).

The blocks form a layered graph: block ``b``'s choice (a child, i.e. a set of paths) constrains block ``b + 1`` only
through its output node pattern, which must equal block ``b + 1``'s input pattern. The most probable consistent
sequence of children is therefore a Viterbi pass over the ``2**D - 1`` node patterns, with cost
``-log(p + 1e-5)`` per chosen child. MONAI solves the same problem with Dijkstra on a dense
``(B * (2**P - 1) + 2)``-node adjacency matrix; the optimum is the same.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from dints import relax, topology

#: Added to child probabilities before the logarithm, as in MONAI, so that impossible children have finite cost.
DECODE_EPS = 1e-5


class Decoded(NamedTuple):
    """A discrete architecture.

    Attributes:
        node_a: LongTensor ``(B + 1, D)`` of 0/1; row ``b`` marks the levels active at the input of block ``b``
            (row ``B``: at the output of the last block).
        arch_code_a: LongTensor ``(B, P)`` of 0/1, the active paths of each block.
        arch_code_c: LongTensor ``(B, P)``, the op index of each path: the argmax of its op weights. Like MONAI's
            ``decode``, it is filled for inactive paths too; those entries are ignored downstream.
        cost: total ``sum_b -log(p_b(child_b) + 1e-5)`` of the chosen children (a Python float).
    """

    node_a: torch.Tensor
    arch_code_a: torch.Tensor
    arch_code_c: torch.Tensor
    cost: float


@lru_cache(maxsize=None)
def _tables(num_depths: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Read-only numpy copies of the topology tables, plus the children grouped by output pattern as a
    # (patterns, max group size) index matrix padded with -1, so that the DP takes every per-pattern minimum with one
    # gather + min instead of a loop over patterns.
    in_idx, out_idx = (t.numpy() for t in topology.child_patterns(num_depths))
    m = topology.num_patterns(num_depths)
    members = [np.flatnonzero(out_idx == n) for n in range(m)]
    groups = np.full((m, max(len(g) for g in members)), -1, dtype=np.int64)
    for n, g in enumerate(members):
        groups[n, : len(g)] = g
    children, patterns = topology.children(num_depths).numpy(), topology.node_patterns(num_depths).numpy()
    tables = (in_idx, out_idx, groups, children, patterns)
    for t in tables:
        t.setflags(write=False)
    return tables


def decode_paths(child_p: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Most probable consistent sequence of children.

    Args:
        child_p: child probabilities, shape ``(B, 2**P - 1)`` (children in :func:`dints.topology.children` order).

    Returns:
        ``(node_a, arch_code_a, cost)``: LongTensors of shapes ``(B + 1, D)`` and ``(B, P)``, and the total cost.
        Among children of equal cost the lowest index wins.
    """
    if isinstance(child_p, torch.Tensor):
        child_p = child_p.detach().cpu().numpy()
    num_blocks, n_children = child_p.shape
    num_depths = topology.depths_from_children(n_children)
    in_idx, out_idx, groups, children, patterns = _tables(num_depths)
    pad = groups < 0
    safe = np.where(pad, 0, groups)

    # numpy float64, like MONAI's graph weights: near-ties resolve alike, and a few dozen tiny operations cost
    # microseconds each instead of torch's per-op dispatch (and thread wake-ups on a busy CPU).
    cost = -np.log(child_p.astype(np.float64) + DECODE_EPS)
    best = np.zeros(len(patterns))  # best[n]: cheapest prefix whose last block feeds pattern n; block 0 reads anything
    choice = np.empty((num_blocks, len(patterns)), dtype=np.int64)  # its last child
    for b in range(num_blocks):
        total = cost[b] + (best[in_idx] if b > 0 else 0.0)  # (children,)
        cand = np.where(pad, np.inf, total[safe])  # (patterns, group size)
        arg = cand.argmin(axis=1)
        best = cand[np.arange(len(patterns)), arg]
        choice[b] = groups[np.arange(len(patterns)), arg]

    # The last block may feed any pattern; walk back through the patterns its predecessors had to produce.
    pattern = int(best.argmin())
    final_cost = float(best[pattern])
    picked = np.empty(num_blocks, dtype=np.int64)
    for b in range(num_blocks - 1, -1, -1):
        picked[b] = choice[b, pattern]
        pattern = in_idx[picked[b]]

    node_a = np.concatenate([patterns[in_idx[picked[:1]]], patterns[out_idx[picked]]], axis=0)
    return torch.from_numpy(node_a.copy()), torch.from_numpy(children[picked].copy()), final_cost


def decode(alpha_a: torch.Tensor, alpha_c: torch.Tensor, tau: float = 1.0) -> Decoded:
    """Decode architecture logits into a discrete architecture (MONAI's ``TopologySearch.decode``).

    Args:
        alpha_a: path logits, shape ``(B, P)``.
        alpha_c: op logits, shape ``(B, P, K)``.
        tau: temperature (> 0) used for the child probabilities.

    Returns:
        :class:`Decoded` on the CPU.
    """
    if alpha_c.shape[:2] != alpha_a.shape:
        raise ValueError(f"alpha_c shape {tuple(alpha_c.shape)} does not match alpha_a shape {tuple(alpha_a.shape)}")
    with torch.no_grad():
        node_a, arch_code_a, cost = decode_paths(relax.child_probs(alpha_a, tau))
        arch_code_c = alpha_c.detach().cpu().argmax(dim=-1)
    return Decoded(node_a, arch_code_a, arch_code_c, cost)
