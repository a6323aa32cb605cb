"""One optimiser step shared by the search and retraining: AMP scaling, gradient averaging, clipping."""

from __future__ import annotations

from typing import Sequence

import torch

from dints.run import dist


def optimise(loss: torch.Tensor, opt: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
             scaler: torch.amp.GradScaler, params, grad_clip: float) -> bool:
    """Backward, average gradients over processes, unscale, clip, step, zero.

    A non-finite loss skips the step (returns False) and leaves the parameters untouched; with several processes, a
    non-finite loss on any rank skips the step on every rank.

    Args:
        loss: scalar loss.
        opt: the optimiser of ``params``, or several optimisers that together hold them (each steps on its own).
        scaler: AMP grad scaler (disabled on CPU: then it is a pass-through).
        params: the parameters being optimised (list).
        grad_clip: max gradient norm; 0 disables clipping.

    Returns:
        Whether a step was taken.
    """
    opts = [opt] if isinstance(opt, torch.optim.Optimizer) else list(opt)
    finite = bool(torch.isfinite(loss))
    if finite:
        scaler.scale(loss).backward()
    if not dist.average_gradients(params, finite):  # every rank decides together: their collectives stay in step
        for o in opts:
            o.zero_grad(set_to_none=True)
        return False
    for o in opts:
        scaler.unscale_(o)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    for o in opts:
        scaler.step(o)
    scaler.update()
    for o in opts:
        o.zero_grad(set_to_none=True)
    return True
