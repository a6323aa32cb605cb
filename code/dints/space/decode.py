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

The paper's decode returns the most probable consistent architecture whatever its memory. :func:`decode_within` adds
the budget: the most probable consistent architecture whose decoded memory ratio lies in the band
``[budget - band, budget]`` (the memory loss pulls the distribution to the budget from both sides, so the decode
does not settle far under it), or, when no architecture lies in the band, the most probable one at most the budget.
A block's
memory is the sum of its paths' (each with its op), so the same dynamic program carries the memory used so far as a
second state, in units of :data:`MEMORY_RESOLUTION` of the full architecture; each block's memory is rounded up to a
unit, so the result never exceeds the budget, and it is the exact optimum among the architectures whose rounded-up
memory fits (every architecture at least ``B`` units under the budget is among them); the band's lower edge is
applied to the rounded units too. When the paper's decode already lies in the band, it is the answer (the
unconstrained optimum is the constrained one).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from dints.space import relax, topology

#: Two costs closer than this (relative to the total) count as a tie.
TIE_RTOL = 1e-9
#: The memory unit of :func:`decode_within`: this fraction of the full architecture's memory.
MEMORY_RESOLUTION = 1e-3
#: How far under the budget :func:`decode_within` looks first (``--decode_band``), as a fraction of the full memory.
DECODE_BAND = 0.1


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
        fits: for :func:`decode_within`, whether any architecture fits the budget (if none does, the decoded one is
            the architecture of least memory, and this is False); always True for :func:`decode`.
    """

    node_a: torch.Tensor
    arch_code_a: torch.Tensor
    arch_code_c: torch.Tensor
    cost: float
    ties: int = 0
    fits: bool = True


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


def decode_paths_within(log_p: torch.Tensor | np.ndarray, child_memory: torch.Tensor | np.ndarray, budget: float,
                        resolution: float = MEMORY_RESOLUTION, floor: float = 0.0,
                        ) -> tuple[torch.Tensor, torch.Tensor, float, int, bool]:
    """Most probable consistent sequence of children whose memory lies in ``[floor, budget]``, else at most ``budget``.

    Args:
        log_p: child log-probabilities, shape ``(B, 2**P - 1)``.
        child_memory: each child's memory as a fraction of the full architecture's, same shape (the sum of its paths'
            :func:`dints.space.relax.decoded_path_memory`).
        budget: the largest total memory, as a fraction of the full architecture's.
        resolution: the memory unit; each child's memory is rounded up to whole units.
        floor: the band's lower edge (in rounded units); 0 for the most probable sequence within ``budget``.

    Returns:
        ``(node_a, arch_code_a, cost, ties, fits)`` as :func:`decode_paths`, plus whether anything fitted: when no
        sequence fits, the one of least (rounded) memory, and among those the most probable, with ``fits`` False.
    """
    if isinstance(log_p, torch.Tensor):
        log_p = log_p.detach().cpu().numpy()
    if isinstance(child_memory, torch.Tensor):
        child_memory = child_memory.detach().cpu().numpy()
    num_blocks, n_children = log_p.shape
    num_depths = topology.depths_from_children(n_children)
    units = np.ceil(np.asarray(child_memory, dtype=np.float64) / resolution - 1e-9).astype(np.int64)
    cap = int(np.floor(budget / resolution + 1e-9))
    total = int(units.max(axis=1).sum())
    fits = bool(units.min(axis=1).sum() <= cap)
    limit = cap if fits else total  # nothing fits: the least memory
    cost = -log_p.astype(np.float64)
    in_idx, out_idx, _, children, patterns = _tables(num_depths)
    m, width = len(patterns), limit + 1
    # best[n, u]: cheapest prefix whose last block feeds pattern n, using exactly u units; choice: its last child.
    best = np.full((m, width), np.inf)
    choice = np.full((num_blocks, m, width), -1, dtype=np.int64)
    for b in range(num_blocks):
        new = np.full((m, width), np.inf)
        start = np.full(width, np.inf)
        start[0] = 0.0  # block 0 reads any pattern, from nothing spent
        for c in np.flatnonzero(np.isfinite(cost[b]) & (units[b] <= limit)):
            k, o = int(units[b, c]), int(out_idx[c])
            cand = (start if b == 0 else best[in_idx[c]])[: width - k] + cost[b, c]
            better = cand < new[o, k:]  # strictly: the lowest child index wins a tie
            new[o, k:][better] = cand[better]
            choice[b, o, k:][better] = c
        best = new
    if fits:
        lo = min(max(int(np.ceil(floor / resolution - 1e-9)), 0), limit)
        if not np.isfinite(best[:, lo:]).any():  # nothing in the band: anything within the budget
            lo = 0
        region = best[:, lo:]
        pattern, used = divmod(int(np.argmin(region)), region.shape[1])  # the first minimum: lowest pattern, fewest units
        used += lo
    else:  # the least memory first, then the most probable
        region = None
        used = int(np.flatnonzero(np.isfinite(best).any(axis=0))[0])
        pattern = int(np.argmin(best[:, used]))
    final_cost = float(best[pattern, used])
    tol = TIE_RTOL * max(1.0, abs(final_cost))
    ties = int((np.abs(region - final_cost) <= tol).sum() > 1) if fits else 0
    picked = np.empty(num_blocks, dtype=np.int64)
    for b in range(num_blocks - 1, -1, -1):
        picked[b] = choice[b, pattern, used]
        used -= int(units[b, picked[b]])
        pattern = int(in_idx[picked[b]])
    node_a = np.concatenate([patterns[in_idx[picked[:1]]], patterns[out_idx[picked]]], axis=0)
    return torch.from_numpy(node_a.copy()), torch.from_numpy(children[picked].copy()), final_cost, ties, fits


def decode_within(alpha_a: torch.Tensor, alpha_c: torch.Tensor, path_memory: torch.Tensor, budget: float,
                  band: float = DECODE_BAND, resolution: float = MEMORY_RESOLUTION) -> Decoded:
    """The most probable consistent architecture whose decoded memory ratio lies in ``[budget - band, budget]``, or
    if none does, the most probable one at most ``budget``.

    Ops are decoded first (the argmax of each cell's op logits, as in :func:`decode`); ``path_memory`` gives each
    path's memory with its op (:func:`dints.space.relax.decoded_path_memory` of those op codes).

    Args:
        alpha_a: path logits, shape ``(B, P)``.
        alpha_c: op logits, shape ``(B, P, K)``.
        path_memory: ``(B, P)`` fractions of the full architecture's memory.
        budget: the memory budget (``--mem``).
        band: how far under the budget to look first (``--decode_band``; 1 or more: anything within the budget).
        resolution: the memory unit (see the module docstring).

    Returns:
        :class:`Decoded` on the CPU; ``fits`` is False when no architecture fits (then the one of least memory).
    """
    if alpha_c.shape[:2] != alpha_a.shape:
        raise ValueError(f"alpha_c shape {tuple(alpha_c.shape)} does not match alpha_a shape {tuple(alpha_a.shape)}")
    path_memory = torch.as_tensor(path_memory, dtype=torch.float64)
    paper = decode(alpha_a, alpha_c)
    if budget - band <= float((path_memory * paper.arch_code_a).sum()) <= budget:  # the unconstrained optimum fits
        return paper
    with torch.no_grad():
        kids = topology.children(topology.depths_from_paths(alpha_a.shape[-1])).double()  # (C, P)
        node_a, arch_code_a, cost, ties, fits = decode_paths_within(
            relax.log_child_probs(alpha_a.detach().cpu().double()), path_memory @ kids.T, budget, resolution,
            floor=budget - band)
        logits_c = alpha_c.detach().cpu()
        arch_code_c = logits_c.argmax(dim=-1)
        op_ties = ((logits_c == logits_c.max(-1, keepdim=True).values).sum(-1) > 1) & arch_code_a.bool()
    return Decoded(node_a, arch_code_a, arch_code_c, cost, ties + int(op_ties.sum()), fits)
