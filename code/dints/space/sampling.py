"""Path sampling for the sampling-based search (``--use_max 0``): which paths run, and how they are weighted.

The one-shot supernet computes, at every block ``b`` and target level ``t``,

    node_t = sum_{i : tgt(i) = t} s_i * cell_i(node_src(i)),      s_i = eta_i / (1 - prod_j (1 - eta_j))

over every path ``i`` of the block (:func:`dints.space.relax.path_scales`). A sampled forward runs only a subset
``S`` of the paths and is a Horvitz-Thompson estimator of that sum:

    node_t ~= sum_{i in S : tgt(i) = t} (s_i / pi_i) * cell_i(node_src(i))

where ``pi_i = P(i in S)`` is the path's *inclusion probability* under the sampling design below, known exactly. A
path's one-shot scale ``s_i`` is therefore divided by its inclusion probability rather than the path being drawn
in proportion to ``eta`` *and* scaled by ``s_i`` (which counts ``eta`` twice).

The design, per block, given the levels the previous block fed (block 0: all, the stems feed every level):

1. *Eligible* paths ``E``: those whose source level is fed (a path cannot read a node that was not computed).
2. ``n = min(path_num, |E|)`` paths are drawn. Inclusion probabilities are proportional to ``eta`` and sum to
   ``n``: ``pi_i = n * eta_i / sum_E eta``, where a path whose share reaches 1 is taken with certainty and the
   rest of ``n`` is shared among the others in the same way (:func:`inclusion_probs`).
3. The draw is *systematic* sampling (:func:`systematic_sample`): one uniform ``u`` picks the paths whose
   cumulative-``pi`` interval contains one of ``u, u + 1, ..., u + n - 1``. It takes exactly ``n`` distinct paths
   and path ``i`` with probability exactly ``pi_i``. Paths are in index order, which is sorted by target level,
   so the draw is implicitly stratified by level: a level whose paths' inclusion probabilities add up to at least
   1 always receives a path.

What a sampled block estimates: given its input nodes, its output is an unbiased estimate of the one-shot block
restricted to the eligible paths, which is the one-shot block itself whenever the previous block fed every level
(always at block 0). The architecture gradient reaches ``alpha`` through ``s_i`` (every path's scale depends on
all of its block's ``eta`` via the normaliser) and through the op weights of each sampled cell; ``pi`` is a
constant of the draw, so the gradient of the estimate is the same estimator applied to the one-shot block's
gradient. Across blocks the estimates are composed (cells are non-linear), as in every path-sampling NAS: the
network output is a plug-in estimate, not an unbiased one. The memory, entropy and topology losses do not sample:
they are exact functions of the logits (:mod:`dints.space.relax`).

Because ``pi`` is proportional to ``eta``, the weight ``s_i / pi_i = sum_E eta / (n * (1 - prod (1 - eta)))`` is
the same for every uncertain path of a block: no path is up-weighted by a small ``pi`` it was unlikely to have.
"""

from __future__ import annotations

import torch

from dints.space.topology import path_table


def inclusion_probs(eta: torch.Tensor, n: int) -> torch.Tensor:
    """Inclusion probabilities proportional to ``eta``, capped at 1, summing to ``n``.

    Args:
        eta: positive weights of the candidate paths, shape ``(M,)``.
        n: number of paths to draw, ``1 <= n <= M``.

    Returns:
        float64 tensor ``(M,)`` with entries in (0, 1] summing to ``n``. Paths whose proportional share would reach
        1 get exactly 1; the remaining draws are shared among the others in proportion to ``eta``.
    """
    eta = eta.detach().to("cpu", torch.float64).clamp_min(1e-300)
    m = eta.numel()
    if not 1 <= n <= m:
        raise ValueError(f"cannot draw {n} of {m} paths")
    certain = torch.zeros(m, dtype=torch.bool)
    while True:  # at most n rounds: each round makes at least one more path certain, or stops
        rest = n - int(certain.sum())
        free = ~certain
        pi = torch.where(certain, torch.ones_like(eta), rest * eta / eta[free].sum())
        newly = free & (pi >= 1.0)
        if not newly.any():
            return pi
        certain |= newly


def systematic_sample(pi: torch.Tensor, u: float) -> torch.Tensor:
    """Systematic sampling: the items whose cumulative-``pi`` interval holds one of ``u, u+1, ..., u+n-1``.

    Args:
        pi: inclusion probabilities in (0, 1] summing to an integer ``n`` (:func:`inclusion_probs`), shape ``(M,)``.
        u: a uniform draw in [0, 1).

    Returns:
        Bool tensor ``(M,)`` with exactly ``n`` entries set; over ``u ~ U[0, 1)`` item ``i`` is set with
        probability ``pi[i]``.
    """
    pi = pi.to(torch.float64)
    n = int(round(float(pi.sum())))
    upper = torch.cumsum(pi, 0)
    upper[-1] = n  # exactly n: rounding in the sum must not add or drop a point
    lower = upper - pi
    points = u + torch.arange(n, dtype=torch.float64)
    # item i is hit when some point lies in [lower_i, upper_i); pi_i <= 1 so at most one point does.
    hit = (points[None, :] >= lower[:, None]) & (points[None, :] < upper[:, None])
    return hit.any(1)


def sample_block_paths(
    eta: torch.Tensor, num_depths: int, path_num: int, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the paths of every block (steps 1-3 of the module docstring).

    Args:
        eta: path probabilities ``(B, P)``.
        num_depths: levels D (``P = 3D - 2``).
        path_num: paths drawn per block (fewer when fewer are eligible).
        generator: CPU generator for the uniform draws (seed it identically on every rank).

    Returns:
        ``(mask, pi)``: bool ``(B, P)``, the drawn paths, and float64 ``(B, P)``, each path's inclusion probability
        given the previous blocks' draws (0 for ineligible paths).
    """
    if path_num < 1:
        raise ValueError(f"path_num must be >= 1, got {path_num}")
    eta = eta.detach().to("cpu", torch.float64)
    num_blocks, num_p = eta.shape
    src, tgt, _ = path_table(num_depths)
    mask = torch.zeros(num_blocks, num_p, dtype=torch.bool)
    pi = torch.zeros(num_blocks, num_p, dtype=torch.float64)
    fed = torch.ones(num_depths, dtype=torch.bool)
    for b in range(num_blocks):
        eligible = fed[src].nonzero().squeeze(1)
        n = min(path_num, eligible.numel())
        pi_e = inclusion_probs(eta[b, eligible], n)
        u = float(torch.rand((), dtype=torch.float64, generator=generator))
        pick = eligible[systematic_sample(pi_e, u)]
        pi[b, eligible] = pi_e
        mask[b, pick] = True
        fed = torch.zeros(num_depths, dtype=torch.bool)
        fed[tgt[pick]] = True
    return mask, pi


def prune_unread(mask: torch.Tensor, num_depths: int) -> torch.Tensor:
    """Drop paths whose output no later block (or, after the last block, the decoder) reads.

    They cannot change the output or any gradient, so the estimator is unchanged; only work is saved.

    Args:
        mask: bool ``(B, P)`` of drawn paths.
        num_depths: levels D.

    Returns:
        A pruned copy of ``mask``.
    """
    src, tgt, _ = path_table(num_depths)
    mask = mask.clone()
    read = torch.ones(num_depths, dtype=torch.bool)  # the decoder reads every last-block node
    for b in range(mask.shape[0] - 1, -1, -1):
        mask[b] &= read[tgt]
        read = torch.zeros(num_depths, dtype=torch.bool)
        read[src[mask[b]]] = True
    return mask
