"""Decoding the searched architecture: an exact dynamic program over node patterns (docs/method.md, "Decoding").

The blocks form a layered graph: block ``b``'s choice (a child, i.e. a set of paths) constrains block ``b + 1`` only
through its output node pattern, which must equal block ``b + 1``'s input pattern. The most probable consistent
sequence of children is therefore a Viterbi pass over the ``2**D - 1`` node patterns, with cost ``-log p`` per
chosen child. MONAI solves the same problem with Dijkstra on a dense ``(B * (2**P - 1) + 2)``-node adjacency matrix
and the cost ``-log(p + 1e-5)``; where that floor does not decide, the optimum is the same.

The log-probabilities come straight from the logits (:func:`dints.space.relax.log_child_probs`, log-sigmoid based), with
no floor: at a low temperature most child probabilities fall below ``1e-5``, a floored cost saturates and the
optimum becomes a tie settled by index order. Decoding uses the learned logits at ``tau = 1``; the temperature only
shapes training. (In log space the choice does not depend on ``tau`` at all: ``log p_b(child) = (alpha_b . child) /
tau - log Z_b(tau)``, so every consistent sequence's total is ``(1/tau) * sum_b alpha_b . child_b`` minus a
constant.) Ties - several optimal sequences, or several maximal op logits of an active path - are settled
deterministically (lowest index) and counted in :attr:`Decoded.ties` so the caller can report them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from dints.space import relax, topology

#: Two costs closer than this (relative to the total) count as a tie.
TIE_RTOL = 1e-9


class Decoded(NamedTuple):
    """A discrete architecture.

    Attributes:
        node_a: LongTensor ``(B + 1, D)`` of 0/1; row ``b`` marks the levels active at the input of block ``b``
            (row ``B``: at the output of the last block).
        arch_code_a: LongTensor ``(B, P)`` of 0/1, the active paths of each block.
        arch_code_c: LongTensor ``(B, P)``, the op index of each path: the argmax of its op weights. Like MONAI's
            ``decode``, it is filled for inactive paths too; those entries are ignored downstream.
        cost: total ``sum_b -log p_b(child_b)`` of the chosen children at ``tau = 1`` (a Python float).
        ties: decisions settled by index order: steps of the optimal sequence where another child was exactly as
            good, plus active paths whose largest op logit is shared. 0 when the decoded architecture is the unique
            optimum.
    """

    node_a: torch.Tensor
    arch_code_a: torch.Tensor
    arch_code_c: torch.Tensor
    cost: float
    ties: int = 0


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


def decode_paths(log_p: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Most probable consistent sequence of children.

    Args:
        log_p: child log-probabilities, shape ``(B, 2**P - 1)`` (children in :func:`dints.space.topology.children`
            order); ``-inf`` forbids a child.

    Returns:
        ``(node_a, arch_code_a, cost, ties)``: LongTensors of shapes ``(B + 1, D)`` and ``(B, P)``, the total cost
        ``-sum_b log_p[b, child_b]``, and the number of steps of the optimal sequence where an equally cheap
        alternative existed (0: the optimum is unique). Among children of equal cost the lowest index wins.
    """
    if isinstance(log_p, torch.Tensor):
        log_p = log_p.detach().cpu().numpy()
    num_blocks, n_children = log_p.shape
    num_depths = topology.depths_from_children(n_children)
    in_idx, out_idx, groups, children, patterns = _tables(num_depths)
    pad = groups < 0
    safe = np.where(pad, 0, groups)
    rows = np.arange(len(patterns))

    # numpy float64: near-ties resolve alike on every machine, and a few dozen tiny operations cost microseconds
    # each instead of torch's per-op dispatch (and thread wake-ups on a busy CPU).
    cost = -log_p.astype(np.float64)
    best = np.zeros(len(patterns))  # best[n]: cheapest prefix whose last block feeds pattern n; block 0 reads anything
    choice = np.empty((num_blocks, len(patterns)), dtype=np.int64)  # its last child
    gap = np.empty((num_blocks, len(patterns)))  # how much cheaper that child was than the runner-up of its group
    for b in range(num_blocks):
        total = cost[b] + (best[in_idx] if b > 0 else 0.0)  # (children,)
        cand = np.where(pad, np.inf, total[safe])  # (patterns, group size)
        arg = cand.argmin(axis=1)  # the first minimum: the lowest child index wins a tie
        best = cand[rows, arg]
        choice[b] = groups[rows, arg]
        with np.errstate(invalid="ignore"):  # inf - inf for patterns no child can feed
            gap[b] = np.partition(cand, 1, axis=1)[:, 1] - best

    # The last block may feed any pattern; walk back through the patterns its predecessors had to produce.
    order = np.argsort(best, kind="stable")
    pattern = int(order[0])
    final_cost = float(best[pattern])
    tol = TIE_RTOL * max(1.0, abs(final_cost))
    ties = int(len(order) > 1 and best[order[1]] - best[order[0]] <= tol)
    picked = np.empty(num_blocks, dtype=np.int64)
    for b in range(num_blocks - 1, -1, -1):
        picked[b] = choice[b, pattern]
        ties += int(gap[b, pattern] <= tol)
        pattern = in_idx[picked[b]]

    node_a = np.concatenate([patterns[in_idx[picked[:1]]], patterns[out_idx[picked]]], axis=0)
    return torch.from_numpy(node_a.copy()), torch.from_numpy(children[picked].copy()), final_cost, ties


def decode(alpha_a: torch.Tensor, alpha_c: torch.Tensor) -> Decoded:
    """Decode architecture logits into a discrete architecture (MONAI's ``TopologySearch.decode``, at ``tau = 1``).

    Args:
        alpha_a: path logits, shape ``(B, P)``.
        alpha_c: op logits, shape ``(B, P, K)``.

    Returns:
        :class:`Decoded` on the CPU.
    """
    if alpha_c.shape[:2] != alpha_a.shape:
        raise ValueError(f"alpha_c shape {tuple(alpha_c.shape)} does not match alpha_a shape {tuple(alpha_a.shape)}")
    with torch.no_grad():
        node_a, arch_code_a, cost, ties = decode_paths(relax.log_child_probs(alpha_a.detach().cpu().double()))
        logits_c = alpha_c.detach().cpu()
        arch_code_c = logits_c.argmax(dim=-1)
        op_ties = ((logits_c == logits_c.max(-1, keepdim=True).values).sum(-1) > 1) & arch_code_a.bool()
    return Decoded(node_a, arch_code_a, arch_code_c, cost, ties + int(op_ties.sum()))
