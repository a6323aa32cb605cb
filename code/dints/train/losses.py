"""The segmentation loss of the search and of retraining (docs/method.md, "Relaxation and losses" and
"The stages")."""

from __future__ import annotations

from monai.losses import DiceCELoss


def seg_loss_fn() -> DiceCELoss:
    """The authors' segmentation loss, used by the search's two steps and by retraining.

    Dice + cross-entropy on softmax outputs with one-hot labels, as the DiNTS authors configure MONAI's
    ``DiceCELoss`` in their search and training scripts: background left out of the Dice term, squared predictions
    in the Dice denominator, Dice over the whole batch (one ratio per class, not one per crop), smoothing 1e-5 in
    numerator and denominator.

    Returns:
        A callable ``loss(logits (N, K, X, Y, Z), labels (N, 1, X, Y, Z)) -> scalar``.
    """
    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, squared_pred=True, batch=True,
                      smooth_nr=1e-5, smooth_dr=1e-5)
