"""One optimiser step shared by the search and retraining: AMP scaling, gradient averaging, clipping."""

from __future__ import annotations

import torch

from dints.run import dist


def optimise(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params,
             grad_clip: float) -> bool:
    """Backward, average gradients over processes, unscale, clip, step, zero.

    A non-finite loss skips the step (returns False) and leaves the parameters untouched.

    Args:
        loss: scalar loss.
        opt: the optimiser of ``params``.
        scaler: AMP grad scaler (disabled on CPU: then it is a pass-through).
        params: the parameters being optimised (list).
        grad_clip: max gradient norm; 0 disables clipping.

    Returns:
        Whether a step was taken.
    """
    if not torch.isfinite(loss):
        opt.zero_grad(set_to_none=True)
        return False
    scaler.scale(loss).backward()
    dist.average_gradients(params)
    scaler.unscale_(opt)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return True
