"""Sliding-window inference and Dice on whole volumes (validation during search and retraining)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from . import dist
from .metrics import defined_mean


def predict_volume(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, cfg,
                   amp: bool = False) -> torch.Tensor:
    """Class probabilities of one preprocessed volume by sliding-window inference (Gaussian blending).

    Args:
        model: maps ``(N, C, *patch)`` to logits ``(N, K, *patch)``.
        image: ``(1, C, X, Y, Z)`` with sides >= the patch size.
        cfg: options (``patch_size``, ``sw_batch_size``, ``sw_overlap``).
        amp: run the model in float16 autocast (CUDA).

    Returns:
        Softmax probabilities ``(1, K, X, Y, Z)`` in float32.
    """
    with torch.no_grad(), torch.autocast(image.device.type, enabled=amp and image.device.type == "cuda"):
        logits = sliding_window_inference(
            image, roi_size=tuple(cfg.patch_size), sw_batch_size=cfg.sw_batch_size, predictor=model,
            overlap=cfg.sw_overlap, mode="gaussian",
        )
    return torch.softmax(logits.float(), dim=1)


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of each foreground class between two label maps.

    Args:
        pred: predicted labels, integer tensor of any shape.
        label: reference labels, same shape.
        num_classes: classes incl. background.

    Returns:
        ``(num_classes - 1,)`` float64: Dice of classes 1..K-1; NaN where both maps lack the class (no
        evidence either way; such entries are left out of means, never counted as 0 or 1).
    """
    p = F.one_hot(pred.long().flatten(), num_classes)[:, 1:].double()
    g = F.one_hot(label.long().flatten(), num_classes)[:, 1:].double()
    inter = (p * g).sum(0)
    denom = p.sum(0) + g.sum(0)
    out = 2 * inter / denom
    return torch.where(denom > 0, out, torch.full_like(out, float("nan")))


def validate(model: torch.nn.Module, loader, cfg, device: torch.device, amp: bool = False,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Mean foreground Dice of ``model`` over a validation loader (all ranks' cases combined).

    ``forward`` replaces ``model`` as the predictor (e.g. the supernet in one-shot mode); ``model`` is still the
    module switched to eval mode.

    Returns:
        ``{"mean_dice": float, "class_dice": [float per foreground class], "cases": int}``. Averages follow
        :func:`dints.metrics.defined_mean`: a class's mean skips cases where the class is absent from both masks
        (NaN when no case has it), and ``mean_dice`` is the mean of the defined class means (NaN when none is).
    """
    was_training = model.training
    model.eval()
    k = cfg.num_classes
    sums = torch.zeros(k - 1, dtype=torch.float64)
    counts = torch.zeros(k - 1, dtype=torch.float64)
    cases = 0
    for batch in loader:
        image = batch["image"].to(device)
        label = batch["label"].as_tensor() if hasattr(batch["label"], "as_tensor") else batch["label"]
        probs = predict_volume(forward or model, image.as_tensor() if hasattr(image, "as_tensor") else image, cfg, amp)
        d = dice_per_class(probs.argmax(1).cpu(), label[:, 0].cpu(), k)
        ok = ~torch.isnan(d)
        sums += torch.where(ok, d, torch.zeros_like(d))
        counts += ok.double()
        cases += 1
    sums, counts, cases = dist_sum(sums), dist_sum(counts), int(dist_sum(torch.tensor([float(cases)])).item())
    class_dice = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan"))).tolist()
    if was_training:
        model.train()
    return {"mean_dice": defined_mean(class_dice), "class_dice": class_dice, "cases": cases}


def dist_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a CPU tensor over all ranks (identity for one process)."""
    d = dist.info()
    if d.world_size == 1:
        return t
    if d.backend == "horovod":
        import horovod.torch as hvd

        return hvd.allreduce(t, op=hvd.Sum)
    import torch.distributed as td

    dev = torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else t.device
    out = t.to(dev, copy=True)
    td.all_reduce(out)
    return out.to(t.device)
