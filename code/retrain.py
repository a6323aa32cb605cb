#!/usr/bin/env python
"""Stage 2: retrain the searched architecture from scratch on one fold (docs/method.md, "The stages").

    python code/retrain.py --config configs/tiny.yaml --data_root data --task Task99_Demo --fold 0 --work_root work

Reads ``<search run>/arch.json`` (or ``--arch`` FILE, arch.json or a MONAI .pth) and writes
``<search run>/retrain-fold<k>/``: ``config_retrain.json``, ``retrain.log``, TensorBoard events (``tb/``),
``metrics.csv`` (per validation: Dice and the mean training loss), ``progress.png`` (training loss, validation Dice
and learning rate, redrawn at each validation), ``best.pt`` (best mean foreground validation Dice), ``latest.pt``
(full state; rerunning the command resumes from it) and ``summary.json``.

``--arch random``, ``cvpr`` or ``unet`` retrains a baseline instead (docs/method.md, "Baselines"), with the same
folds, schedule, data stream and seed, into ``<search run>/retrain-<baseline>-fold<k>/``, where it also saves the
architecture it built as ``arch.json``. Stages 3-6 keep using the searched architecture's ``retrain-fold<k>/``.

``--folds 0 1 2`` instead of ``--fold`` retrains those folds in turn in one process (code/main.sh does so), each
exactly as with its own ``--fold``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from config import load_fold_configs, preset_value, resolve_task, to_dict, where
from dints.data.loader import train_loader, val_loader
from dints.errors import ConfigError
from dints.pipeline.cli import cli_main, run_folds
from dints.evaluate.validation import validate
from dints.io import write_json
from dints.run import dist, layout
from dints.run.settings import RECORD_KEYS, DataSettings, decisive_keys, InferSettings, LoopSettings
from dints.pipeline.stage import check_patch, init_processes, prepare
from dints.space import network_memory
from dints.space import baselines
from dints.space.archfile import Arch, read_arch, save_arch
from dints.space.opsets import opset_ops
from dints.space.network import DiscreteNet, retrain_channel_mul
from dints.train.losses import seg_loss_fn
from dints.train.modelfile import retrain_facts
from dints.train.optim import optimise
from dints.train.progress import plot_retraining
from dints.train.runloop import RunLoop, Step, Validation
from dints.train.schedule import retrain_lr

#: Options that must not change when retraining resumes from latest.pt: those that decide its result (``--arch_seed``
#: and ``--arch_mem`` only for ``--arch random``: :func:`dints.run.settings.decisive_keys`).
RESUME_KEYS = list(RECORD_KEYS["retrain"])


def arch_kind(cfg) -> str:
    """What ``--arch`` selects: ``searched`` (the search run's arch.json), ``file`` or a baseline's name."""
    if cfg.arch is None:
        return "searched"
    return layout.baseline_of(cfg.arch) or "file"


def arch_path(cfg) -> Path:
    """``--arch`` FILE, else the search run's ``arch.json`` (for a baseline: the space it is drawn in, if any)."""
    return layout.retrain_arch(cfg.work_root, cfg.task, cfg.mem, cfg.arch)


def arch_name(cfg) -> str:
    """How messages name the architecture: its file, or ``--arch <baseline>``."""
    kind = arch_kind(cfg)
    return f"--arch {kind}" if kind in layout.BASELINES else str(arch_path(cfg))


def check_arch_matches(cfg, arch) -> None:
    """``--blocks``/``--levels``, where a preset or the command line sets them, must be the architecture's. The
    ``cvpr`` baseline is exempt: it is a fixed network with its own blocks and levels.

    Raises:
        ConfigError: naming the option, its source and the architecture.
    """
    if arch_kind(cfg) == "cvpr":
        return
    for key, have in (("blocks", arch.num_blocks), ("levels", arch.num_depths)):
        if key in cfg.sources and getattr(cfg, key) != have:
            raise ConfigError(f"{where(cfg, key)} is {getattr(cfg, key)} but the architecture {arch_name(cfg)} has "
                              f"{have} {key}: retraining builds the architecture file's network; use the search's "
                              "options or another --arch")


def baseline_space(cfg) -> tuple[dict, float | None, str]:
    """The space a ``random`` or ``unet`` baseline is built in: the searched architecture's when the search run's
    ``arch.json`` exists, else the options' (``--blocks``, ``--levels``, ``--opset``, ``--cellop``,
    ``--use_downsample`` and the search stage's ``channel_mul``).

    Returns:
        ``(space, mem_ratio, source)``: the :class:`Arch` fields of the space, the searched architecture's
        ``mem_ratio`` (None without one) and where the space came from, for the log.
    """
    searched = arch_path(cfg)
    if searched.is_file():
        a = read_arch(searched)
        space = {"num_blocks": a.num_blocks, "num_depths": a.num_depths, "opset": a.opset, "ops": a.ops,
                 "use_downsample": a.use_downsample, "channel_mul": a.channel_mul}
        return space, a.mem_ratio, f"the space of {searched}"
    try:
        ops = opset_ops(cfg.opset, cfg.cellop)
    except ValueError as err:
        raise ConfigError(f"{where(cfg, 'cellop')}: {err}") from None
    space = {"num_blocks": cfg.blocks, "num_depths": cfg.levels, "opset": cfg.opset, "ops": ops,
             "use_downsample": bool(cfg.use_downsample), "channel_mul": preset_value(cfg, "search", "channel_mul")}
    return space, None, f"the space of the options ({searched} does not exist)"


def baseline_arch(cfg, kind: str) -> tuple[Arch, str, dict]:
    """Build the baseline ``kind`` (docs/method.md, "Baselines").

    Its memory ratio is computed as the search computes ``mem_ratio``: at the architecture's channel multiplier,
    for ``(batch_size * num_samples, in_channels, *patch_size)`` crops (``cfg`` must have its channels resolved).

    Returns:
        ``(arch, about, facts)``: the architecture, a line saying what it is for the log, and for ``random`` the
        ``arch_seed`` and the target ``arch_mem`` it was drawn with (for summary.json).

    Raises:
        ConfigError: a patch the network cannot take, no ``--arch_mem`` for ``random`` where there is no searched
            ratio to default to, or a baseline the space cannot hold (naming the option).
    """
    in_shape = (cfg.batch_size * cfg.num_samples, cfg.in_channels, *cfg.patch_size)
    patch = where(cfg, "patch_size")
    if kind == "cvpr":
        arch = baselines.cvpr_arch()
        check_patch(cfg.patch_size, arch.num_depths, arch.use_downsample, patch)
        arch = baselines.cvpr_arch(in_shape)
        ignored = [f"{where(cfg, k)} {getattr(cfg, k)}" for k in ("blocks", "levels") if k in cfg.sources]
        return arch, (f"baseline cvpr: the DiNTS CVPR 2021 architecture as MONAI's tutorial ships it, with its own "
                      f"{arch.num_blocks} blocks and {arch.num_depths} levels"
                      + (f" ({' and '.join(ignored)} do not apply)" if ignored else "")
                      + f"; memory ratio {arch.mem_ratio:.4f}"), {}
    space, searched_ratio, source = baseline_space(cfg)
    check_patch(cfg.patch_size, space["num_depths"], space["use_downsample"], patch)
    size = f"{space['num_blocks']} blocks, {space['num_depths']} levels"
    if kind == "unet":
        try:
            arch = baselines.unet_arch(**space, in_shape=in_shape)
        except ValueError as err:
            raise ConfigError(f"--arch unet in {source}: {err}") from None
        chain = baselines.unet_levels(arch.num_blocks, arch.num_depths)
        return arch, (f"baseline unet: a U-shaped architecture ({baselines.UNET_OP} chain through levels {chain}, "
                      f"identity skip connections) in {source}: {size}; memory ratio {arch.mem_ratio:.4f}"), {}
    target = cfg.arch_mem if cfg.arch_mem is not None else searched_ratio
    if target is None:
        raise ConfigError(f"--arch random needs --arch_mem, the memory ratio to draw at: {arch_path(cfg)} "
                          + ("records no mem_ratio" if arch_path(cfg).is_file() else "does not exist (no search yet)"))
    try:
        arch = baselines.random_arch(**space, target=target, seed=cfg.arch_seed, in_shape=in_shape)
    except ValueError as err:
        raise ConfigError(f"{where(cfg, 'arch_mem') if cfg.arch_mem is not None else '--arch random'}: {err}") from None
    whence = "--arch_mem" if cfg.arch_mem is not None else f"the mem_ratio of {arch_path(cfg)}"
    return arch, (f"baseline random (--arch_seed {cfg.arch_seed}) in {source}: {size}; memory ratio "
                  f"{arch.mem_ratio:.4f} (target {target:g} from {whence}, within {baselines.MEM_TOLERANCE:g})"), \
        {"arch_seed": cfg.arch_seed, "arch_mem": target}


def run_retrain(cfg) -> Path:
    """Train (or resume) fold ``cfg.fold``; returns the run folder holding ``best.pt``."""
    d = init_processes(cfg.device)
    cfg, task = resolve_task(cfg)
    kind = arch_kind(cfg)
    baseline = kind if kind in layout.BASELINES else None
    # Rank 0 reads (or builds) the architecture (other nodes may not see its disk), before anything is written.
    if baseline:
        arch, about, facts = dist.on_main(lambda: baseline_arch(cfg, baseline))
    else:
        arch, about, facts = dist.on_main(lambda: read_arch(arch_path(cfg))), None, {}
    check_arch_matches(cfg, arch)
    check_patch(cfg.patch_size, arch.num_depths, arch.use_downsample, where(cfg, "patch_size"))
    out = layout.retrain_dir(layout.search_dir(cfg.work_root, cfg.task, cfg.mem), cfg.fold, baseline)
    ctx = prepare(task, out, layout.LOGS["retrain"], work_root=cfg.work_root, fold=cfg.fold, num_folds=cfg.num_folds,
                  seed=cfg.seed, device=cfg.device, record=to_dict(cfg), stage="retrain")
    log, device = ctx.logger, ctx.device
    if about:
        log.info("architecture: %s", about)
    mul = retrain_channel_mul(cfg.channel_mul, arch)
    torch.manual_seed(cfg.seed)
    net = DiscreteNet(arch, cfg.in_channels, cfg.num_classes, mul).to(device)
    dist.broadcast_parameters(net)
    parameters = sum(p.numel() for p in net.parameters())
    log.info("fold %d: %d training / %d validation cases; architecture %s (channel_mul %g, %.2fM parameters)",
             cfg.fold, len(ctx.train_ids), len(ctx.val_ids), arch_name(cfg), mul, parameters / 1e6)
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
    loop.resume(cfg.resume, list(decisive_keys("retrain", to_dict(cfg))))
    ctx.record_config()
    if baseline and d.is_main:  # after the checks: a refused run leaves the folder's architecture as it was
        save_arch(arch, out / layout.ARCH)

    def step(it: int) -> Step:
        lr = retrain_lr(base_lr, it, cfg.iters, cfg.lr_schedule, cfg.lr_milestones)
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
                                          "arch_kind": kind, "arch": arch_name(cfg),
                                          "arch_seed": facts.get("arch_seed"), "arch_mem": facts.get("arch_mem"),
                                          "mem_ratio": arch.mem_ratio, "parameters": parameters,
                                          "processes": d.world_size, "replica_digests": loop.replica_digests})
    dist.barrier()
    log.info("fold %d: best validation Dice %.4f at iteration %d -> %s", cfg.fold, loop.best, loop.best_iteration,
             loop.best_path)
    return out


def main(argv: list[str] | None = None) -> list[Path]:
    return run_folds(run_retrain, load_fold_configs(argv, "retrain"))


if __name__ == "__main__":
    cli_main(main)
