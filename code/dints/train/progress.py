"""``progress.png``: how a training run moved, drawn at each validation (matplotlib, Agg: no display needed).

- Retraining: the training loss, the validation Dice (mean and per class) and the learning rate, against iteration.
- Search: the loss terms (segmentation on the weight and architecture halves, entropy, topology, memory), the
  decoded and expected memory ratios against the budget, the temperature, the supernet's validation Dice, and how
  many paths of the decoded architecture changed since the previous validation.

The figures read the run's ``trace`` (the scalars of every logged iteration) and ``history`` (one row per
validation), as :class:`dints.train.runloop.RunLoop` keeps them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # draw to files only, whatever display the machine has (none, in a batch job)
import matplotlib.pyplot as plt  # noqa: E402

from dints.io import atomic_write  # noqa: E402

Rows = Sequence[dict[str, Any]]


def _series(rows: Rows, key: str) -> tuple[list[int], list[float]]:
    """Iterations and values of ``key`` where the rows have it (finite values only)."""
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(int(r["iteration"]))
            ys.append(float(v))
    return xs, ys


def _plot(ax, rows: Rows, key: str, label: str, **style) -> bool:
    xs, ys = _series(rows, key)
    if xs:
        ax.plot(xs, ys, label=label, **style)
    return bool(xs)


def _finish(ax, title: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _dice_classes(history: Rows) -> list[str]:
    keys = {k for r in history for k in r if k.startswith("dice_")}
    return sorted(keys, key=lambda k: int(k.split("_")[1]) if k.split("_")[1].isdigit() else k)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return out


def plot_retraining(path: str | Path, trace: Rows, history: Rows, title: str = "",
                    class_names: Sequence[str] = ()) -> Path:
    """Write the retraining's ``progress.png``.

    Args:
        path: the picture.
        trace: rows ``{"iteration", "loss/seg", "lr", ...}`` of the logged iterations.
        history: rows ``{"iteration", "val_dice", "dice_<k>", "train_loss", ...}`` of the validations.
        title: the figure's title (the run and fold).
        class_names: the foreground classes' names, in order (default: their numbers).
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    _plot(axes[0], trace, "loss/seg", "logged iterations", color="tab:blue", alpha=0.5, lw=1)
    _plot(axes[0], history, "train_loss", "mean since the last validation", color="tab:blue", marker="o", lw=2)
    _finish(axes[0], "training loss (Dice + cross-entropy)", "loss")
    _plot(axes[1], history, "val_dice", "mean", color="black", marker="o", lw=2)
    for i, k in enumerate(_dice_classes(history)):
        _plot(axes[1], history, k, class_names[i] if i < len(class_names) else f"class {k.split('_', 1)[1]}",
              marker=".", lw=1)
    axes[1].set_ylim(0, 1)
    _finish(axes[1], "validation Dice", "Dice")
    _plot(axes[2], trace, "lr", "SGD", color="tab:green")
    _finish(axes[2], "learning rate", "lr", legend=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, Path(path))


def plot_search(path: str | Path, trace: Rows, history: Rows, budget: float, title: str = "") -> Path:
    """Write the search's ``progress.png``.

    Args:
        path: the picture.
        trace: rows of the logged iterations: ``loss/seg_weight``, ``loss/seg_arch``, ``loss/entropy``,
            ``loss/topology``, ``loss/memory``, ``memory/ratio_decoded``, ``memory/ratio_expected``,
            ``schedule/tau``, ``lr/weights``, ``lr/arch``.
        history: rows of the validations: ``val_dice``, ``mem_ratio``, ``mem_ratio_expected``, ``paths_changed``.
        budget: the memory budget (``--mem``).
        title: the figure's title.
    """
    fig, grid = plt.subplots(2, 3, figsize=(14, 7))
    axes = grid.ravel()
    for key, label in (("loss/seg_weight", "segmentation, weight half"), ("loss/seg_arch", "segmentation, arch half"),
                       ("loss/entropy", "entropy"), ("loss/topology", "topology"), ("loss/memory", "memory")):
        _plot(axes[0], trace, key, label, lw=1)
    _finish(axes[0], "loss terms", "loss")
    _plot(axes[1], trace, "memory/ratio_decoded", "decoded architecture", color="tab:red", lw=1)
    _plot(axes[1], trace, "memory/ratio_expected", "expected (distribution)", color="tab:purple", lw=1)
    axes[1].axhline(budget, color="black", ls="--", lw=1, label=f"budget {budget:g}")
    axes[1].set_ylim(0, 1.05)
    _finish(axes[1], "memory ratio (usage / full)", "ratio")
    _plot(axes[2], trace, "schedule/tau", "tau", color="tab:orange")
    _finish(axes[2], "temperature", "tau", legend=False)
    _plot(axes[3], history, "val_dice", "supernet", color="black", marker="o")
    axes[3].set_ylim(0, 1)
    _finish(axes[3], "validation Dice (one-shot supernet)", "Dice", legend=False)
    xs, ys = _series(history, "paths_changed")
    if xs:
        width = max(1.0, 0.6 * (min(b - a for a, b in zip(xs, xs[1:])) if len(xs) > 1 else xs[0]))
        axes[4].bar(xs, ys, width=width, color="tab:gray")
    _finish(axes[4], "decoded paths changed since the last validation", "paths", legend=False)
    _plot(axes[5], trace, "lr/weights", "weights (SGD)", color="tab:green")
    _plot(axes[5], trace, "lr/arch", "architecture (Adam)", color="tab:brown")
    axes[5].set_yscale("log")
    _finish(axes[5], "learning rates", "lr")
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, Path(path))
