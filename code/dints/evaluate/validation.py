"""Validation during the search and retraining: mean foreground Dice over whole validation volumes."""

from __future__ import annotations

from typing import Callable

import torch

from dints.evaluate.inference import predict_volume
from dints.evaluate.metrics import defined_mean, dice_per_class
from dints.run import dist
from dints.run.settings import InferSettings


def validate(model: torch.nn.Module, loader, num_classes: int, infer: InferSettings, device: torch.device,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Mean foreground Dice of ``model`` over a validation loader (all ranks' cases combined).

    Args:
        model: the network; switched to eval mode while validating.
        loader: batches of one whole preprocessed volume, ``image`` (1, C, X, Y, Z) and ``label`` (1, 1, X, Y, Z).
        num_classes: classes, background included.
        infer: sliding-window settings.
        device: where the model runs.
        forward: replaces ``model`` as the predictor (e.g. the supernet in one-shot mode).

    Returns:
        ``{"mean_dice": float, "class_dice": [float per foreground class], "cases": int}``. Averages follow
        :func:`dints.evaluate.metrics.defined_mean`: a class's mean skips cases where the class is absent from both
        masks (NaN when no case has it), and ``mean_dice`` is the mean of the defined class means (NaN when none is).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(num_classes - 1, dtype=torch.float64)
    counts = torch.zeros(num_classes - 1, dtype=torch.float64)
    cases = 0
    for batch in loader:
        image = batch["image"].to(device)
        label = batch["label"].as_tensor() if hasattr(batch["label"], "as_tensor") else batch["label"]
        probs = predict_volume(forward or model, image.as_tensor() if hasattr(image, "as_tensor") else image, infer)
        d = dice_per_class(probs.argmax(1).cpu(), label[:, 0].cpu(), num_classes)
        ok = ~torch.isnan(d)
        sums += torch.where(ok, d, torch.zeros_like(d))
        counts += ok.double()
        cases += 1
    sums, counts = dist.sum_tensor(sums), dist.sum_tensor(counts)
    cases = int(dist.sum_tensor(torch.tensor([float(cases)])).item())
    class_dice = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan"))).tolist()
    if was_training:
        model.train()
    return {"mean_dice": defined_mean(class_dice), "class_dice": class_dice, "cases": cases}
