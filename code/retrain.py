#!/usr/bin/env python
"""Stage 2: retrain the searched architecture from scratch on one fold (docs/method.md, "The stages").

    python code/retrain.py --config configs/tiny.yaml --data_root data --task Task99_Demo --fold 0 --work_root work

Reads ``<search run>/arch.json`` (or ``--arch`` FILE, arch.json or a MONAI .pth) and writes
``<search run>/retrain-fold<k>/``: ``config_retrain.json``, ``retrain.log``, TensorBoard events (``tb/``),
``metrics.csv`` (per validation: Dice and the mean training loss), ``progress.png`` (training loss, validation Dice
and learning rate, redrawn at each validation), ``best.pt`` (best mean foreground validation Dice) and ``latest.pt``
(full state; rerunning the command resumes from it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from config import load_config, resolve_task, to_dict, where
from dints.data.loader import train_loader, val_loader
from dints.errors import ConfigError
from dints.pipeline.cli import cli_main
from dints.evaluate.validation import validate
from dints.io import write_json
from dints.run import dist, layout
from dints.run.settings import RECORD_KEYS, DataSettings, InferSettings, LoopSettings
from dints.pipeline.stage import check_patch, init_processes, prepare
from dints.space import network_memory
from dints.space.archfile import read_arch
from dints.space.network import DiscreteNet, retrain_channel_mul
from dints.train.losses import seg_loss_fn
from dints.train.modelfile import retrain_facts
from dints.train.optim import optimise
from dints.train.progress import plot_retraining
from dints.train.runloop import RunLoop, Step, Validation
from dints.train.schedule import step_lr

#: The learning rate halves at these fractions of the iterations.
RETRAIN_LR_MILESTONES = (0.2, 0.4, 0.6, 0.8)
#: Options that must not change when retraining resumes from latest.pt: those that decide its result.
RESUME_KEYS = list(RECORD_KEYS["retrain"])


def arch_path(cfg) -> Path:
    """``--arch`` or the search run's ``arch.json``."""
    return Path(cfg.arch) if cfg.arch else layout.search_dir(cfg.work_root, cfg.task, cfg.mem) / layout.ARCH


def check_arch_matches(cfg, arch) -> None:
    """``--blocks``/``--levels``, where a preset or the command line sets them, must be the architecture's.

    Raises:
        ConfigError: naming the option, its source and the architecture file.
    """
    for key, have in (("blocks", arch.num_blocks), ("levels", arch.num_depths)):
        if key in cfg.sources and getattr(cfg, key) != have:
            raise ConfigError(f"{where(cfg, key)} is {getattr(cfg, key)} but the architecture {arch_path(cfg)} has "
                              f"{have} {key}: retraining builds the architecture file's network; use the search's "
                              "options or another --arch")


def run_retrain(cfg) -> Path:
    """Train (or resume) fold ``cfg.fold``; returns the run folder holding ``best.pt``."""
    d = init_processes(cfg.device)
    # Rank 0 reads the architecture (other nodes may not see its disk), before anything is written.
    arch = dist.on_main(lambda: read_arch(arch_path(cfg)))
    cfg, task = resolve_task(cfg)
    check_arch_matches(cfg, arch)
    check_patch(cfg.patch_size, arch.num_depths, arch.use_downsample, where(cfg, "patch_size"))
    out = layout.retrain_dir(layout.search_dir(cfg.work_root, cfg.task, cfg.mem), cfg.fold)
    ctx = prepare(task, out, layout.LOGS["retrain"], work_root=cfg.work_root, fold=cfg.fold, num_folds=cfg.num_folds,
                  seed=cfg.seed, device=cfg.device, record=to_dict(cfg), stage="retrain")
    log, device = ctx.logger, ctx.device
    mul = retrain_channel_mul(cfg.channel_mul, arch)
    torch.manual_seed(cfg.seed)
    net = DiscreteNet(arch, cfg.in_channels, cfg.num_classes, mul).to(device)
    dist.broadcast_parameters(net)
    log.info("fold %d: %d training / %d validation cases; architecture %s (channel_mul %g, %.2fM parameters)",
             cfg.fold, len(ctx.train_ids), len(ctx.val_ids), arch_path(cfg), mul,
             sum(p.numel() for p in net.parameters()) / 1e6)
    log.info("%s", network_memory.predict(net, cfg.patch_size, cfg.batch_size * cfg.num_samples,
                                  amp=cfg.amp and device.type == "cuda", device_type=device.type,
                                  momentum=cfg.momentum > 0).summary())
    base_lr = cfg.base_lr * d.world_size
    opt = torch.optim.SGD(net.parameters(), lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = seg_loss_fn()
    data, infer = DataSettings.from_options(cfg), InferSettings.from_options(cfg, tta=False)
    loader, v_loader = train_loader(data, task, ctx.train_ids), val_loader(data, task, ctx.val_ids)

    loop = RunLoop(f"retrain fold {cfg.fold}", out, LoopSettings.from_options(cfg), log, to_dict(cfg),
                   hint="lower --base_lr", objects={"model": net, "optimizer": opt, "scaler": scaler, "loader": loader},
                   keep_best=True, progress=lambda path, trace, history: plot_retraining(
                       path, trace, history, f"{cfg.task}: retraining fold {cfg.fold}",
                       [task.labels[c] for c in range(1, cfg.num_classes)]))
    loop.resume(cfg.resume, RESUME_KEYS)
    ctx.record_config()

    def step(it: int) -> Step:
        lr = step_lr(base_lr, it, cfg.iters, RETRAIN_LR_MILESTONES)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = next(loader)
        x, y = batch["image"].to(device), batch["label"].to(device)
        with torch.autocast(device.type, enabled=amp):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        ok = optimise(loss, opt, scaler, list(net.parameters()), cfg.grad_clip)
        value = float(loss.detach())
        return Step(ok, {"loss/seg": value, "lr": lr}, {"loss": f"{value:.3f}", "best": f"{max(loop.best, 0):.3f}"},
                    loss=value)

    def validation(done: int) -> Validation:
        return Validation.of(validate(net, v_loader, cfg.num_classes, infer, device), "validation")

    def model_facts() -> dict:  # what test.py needs to rebuild the network from best.pt alone
        return retrain_facts(arch, cfg.in_channels, cfg.num_classes, mul)

    net.train()
    loop.run(step, validation, model_facts)
    if d.is_main:  # the stage's final output: main.sh skips a fold that has it
        write_json(out / layout.SUMMARY, {"fold": cfg.fold, "best_dice": loop.best,
                                          "best_iteration": loop.best_iteration, "iters": cfg.iters,
                                          "best": str(loop.best_path), "latest": str(loop.latest),
                                          "processes": d.world_size, "replica_digests": loop.replica_digests})
    dist.barrier()
    log.info("fold %d: best validation Dice %.4f at iteration %d -> %s", cfg.fold, loop.best, loop.best_iteration,
             loop.best_path)
    return out


def main(argv: list[str] | None = None) -> Path:
    return run_retrain(load_config(argv, "retrain"))


if __name__ == "__main__":
    cli_main(main)
