"""Independent reference computations of the search losses, from first principles.

Nothing here uses ``dints.space.relax`` or ``dints.space.topology``: the path tables are written out by hand, children are
enumerated with ``itertools`` as sets of paths, their probabilities are products of ``eta`` and ``1 - eta``, patterns
are Python frozensets, and the op and resampling costs are the numbers of docs/method.md, "Relaxation and losses".
Tests compare the library's
vectorised code against these loops.
"""

from __future__ import annotations

import itertools
import math

import torch

#: Path tables (source level, target level) written out by hand for D = 2 and 3 (docs/method.md, "Search space").
PATHS = {
    2: [(0, 0), (1, 0), (0, 1), (1, 1)],
    3: [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1), (1, 2), (2, 2)],
}
#: Op costs in units of the output size, Cin == Cout (docs/method.md, "Relaxation and losses"): skip 0, 3x3x3
#: conv 1 + 2, pseudo-3D 2 + 2.
OP_COST = {"skip_connect": 0.0, "conv_3x3x3": 3.0, "conv_3x3x1": 4.0, "conv_3x1x3": 4.0, "conv_1x3x3": 4.0}
EPS = 1e-5  # inside the logarithms of the entropy and topology losses, as MONAI has it


def subsets(num_paths: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of the paths, as sorted tuples."""
    return [c for k in range(1, num_paths + 1) for c in itertools.combinations(range(num_paths), k)]


def child_probs(alpha_a: torch.Tensor, tau: float = 1.0) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Children (as path subsets) and their probabilities ``(B, 2**P - 1)``, by explicit products."""
    eta = torch.sigmoid(alpha_a.double() / tau)
    num_blocks, num_paths = eta.shape
    kids = subsets(num_paths)
    rows = []
    for b in range(num_blocks):
        raw = []
        for kid in kids:
            p = torch.ones((), dtype=torch.float64)
            for i in range(num_paths):
                p = p * (eta[b, i] if i in kid else 1 - eta[b, i])
            raw.append(p)
        raw = torch.stack(raw)
        rows.append(raw / raw.sum())  # renormalised over non-empty children
    return kids, torch.stack(rows)


def entropy(alpha_a: torch.Tensor, alpha_c: torch.Tensor, tau: float = 1.0) -> float:
    """Mean child entropy term plus mean op-softmax entropy term (docs/method.md, "Relaxation and losses").
    """
    _, p = child_probs(alpha_a, tau)
    ent_a = -(p * torch.log(p + EPS)).mean()
    w = torch.softmax(alpha_c.double() / tau, -1)
    ent_c = -(w * torch.log(w)).mean()
    return float(ent_a + ent_c)


def topology(alpha_a: torch.Tensor, num_depths: int, tau: float = 1.0) -> float:
    """Sum over consecutive blocks and node patterns of BCE(P(out pattern of b), P(in pattern of b+1))."""
    kids, p = child_probs(alpha_a, tau)
    paths = PATHS[num_depths]
    patterns = [frozenset(c) for k in range(1, num_depths + 1) for c in itertools.combinations(range(num_depths), k)]
    total = 0.0
    for b in range(p.shape[0] - 1):
        for n in patterns:
            target = sum(float(p[b, j]) for j, kid in enumerate(kids) if frozenset(paths[i][1] for i in kid) == n)
            pred = sum(float(p[b + 1, j]) for j, kid in enumerate(kids) if frozenset(paths[i][0] for i in kid) == n)
            total += -(target * math.log(pred + EPS) + (1 - target) * math.log(1 - pred + EPS))
    return total


def memory_ratio(alpha_a: torch.Tensor, alpha_c: torch.Tensor, ops: list[str], num_depths: int,
                 in_shape: tuple[int, ...], channel_mul: float, tau: float = 1.0) -> float:
    """Expected usage / full of the supernet (docs/method.md, "Relaxation and losses"), with the stem halving the
    input (use_downsample)."""
    eta = torch.sigmoid(alpha_a.double() / tau)
    w = torch.softmax(alpha_c.double() / tau, -1)
    channels = [int(32 * 2 ** (r + 1) * channel_mul) for r in range(num_depths)]
    batch, spatial = in_shape[0], in_shape[2:]
    size = [batch * channels[r] * math.prod(s // 2 ** (r + 1) for s in spatial) for r in range(num_depths)]
    usage = full = 0.0
    for b in range(eta.shape[0]):
        none_on = math.prod(1 - float(e) for e in eta[b])
        for i, (s, t) in enumerate(PATHS[num_depths]):
            r = channels[s] / channels[t]
            pre = 0.0 if s == t else (8 * r + 3 if s < t else 2 * r + 2)  # down: finer source; up: coarser
            op = sum(float(w[b, i, k]) * OP_COST[name] for k, name in enumerate(ops))
            cost = (1 + pre + op) * size[t]
            usage += float(eta[b, i]) / (1 - none_on) * cost
            full += cost
    return usage / full
