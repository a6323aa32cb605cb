#!/usr/bin/env python
"""Stage 2: retrain the searched architecture from scratch on one fold (DESIGN.md §7).

    python code/retrain.py --config configs/tiny.yaml --data_root data --task Task99_Demo --fold 0 --work_root work

Reads ``<search run>/arch.json`` (or ``--arch`` FILE, arch.json or a MONAI .pth) and writes
``<search run>/retrain-fold<k>/``: ``config_retrain.json``, ``retrain.log``, TensorBoard events (``tb/``),
``metrics.csv``, ``best.pt`` (best mean foreground validation Dice) and ``latest.pt`` (full state; rerunning the
command resumes from it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config import load_config, to_dict, where  # noqa: E402
from dints import checkpoint, dist  # noqa: E402
from dints.architect import seg_loss_fn  # noqa: E402
from dints.errors import ConfigError, UserError, cli_main  # noqa: E402
from dints.evaluate import validate  # noqa: E402
from dints.io import write_csv, write_json  # noqa: E402
from dints.loader import train_loader, val_loader  # noqa: E402
from dints.modelfile import build_network, read_arch, retrain_channel_mul  # noqa: E402
from dints.optim import optimise  # noqa: E402
from dints.schedule import step_lr  # noqa: E402
from dints.stage import prepare, search_dir  # noqa: E402

#: The learning rate halves at these fractions of the iterations.
RETRAIN_LR_MILESTONES = (0.2, 0.4, 0.6, 0.8)
RESUME_KEYS = ["task", "fold", "num_folds", "seed", "patch_size", "spacing", "intensity", "batch_size", "num_samples",
               "iters", "base_lr"]
MAX_BAD_STEPS = 10


def retrain_dir(cfg) -> Path:
    """``<search run>/retrain-fold<k>``."""
    return search_dir(cfg) / f"retrain-fold{cfg.fold}"


def arch_path(cfg) -> Path:
    """``--arch`` or the search run's ``arch.json``."""
    return Path(cfg.arch) if cfg.arch else search_dir(cfg) / "arch.json"


def run_retrain(cfg) -> Path:
    """Train (or resume) fold ``cfg.fold``; returns the run folder holding ``best.pt``."""
    arch = read_arch(arch_path(cfg))  # before any output is written: a missing architecture changes nothing
    ctx = prepare(cfg, retrain_dir(cfg), "retrain.log")
    log, d, device, out = ctx.logger, dist.info(), ctx.device, ctx.run_dir
    factor = 2 ** (arch.num_depths + int(arch.use_downsample))
    if any(s % factor for s in cfg.patch_size):
        raise ConfigError(f"{where(cfg, 'patch_size')} {cfg.patch_size}: every side must be divisible by {factor} "
                          f"for the architecture's {arch.num_depths} levels")
    mul = retrain_channel_mul(cfg, arch)
    torch.manual_seed(cfg.seed)
    net = build_network(arch, cfg.in_channels, cfg.num_classes, mul).to(device)
    dist.broadcast_parameters(net)
    n_params = sum(p.numel() for p in net.parameters())
    log.info("fold %d: %d training / %d validation cases; architecture %s (channel_mul %g, %.2fM parameters)",
             cfg.fold, len(ctx.train_ids), len(ctx.val_ids), arch_path(cfg), mul, n_params / 1e6)
    base_lr = cfg.base_lr * d.world_size
    opt = torch.optim.SGD(net.parameters(), lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = seg_loss_fn()
    loader = train_loader(cfg, ctx.task, ctx.train_ids)
    v_loader = val_loader(cfg, ctx.task, ctx.val_ids)

    start, best, best_it, history, bad = 0, -1.0, -1, [], 0
    latest, best_path = out / "latest.pt", out / "best.pt"
    state = checkpoint.load_for_resume(latest, cfg, RESUME_KEYS, log)
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        loader.load_state_dict(state["loader"])
        checkpoint.set_rng_state(state["rng"])
        start, best, best_it, history = state["iteration"], state["best_dice"], state["best_iteration"], state["history"]
        log.info("resumed from %s at iteration %d (best Dice %.4f at %d)", latest, start, best, best_it)

    meta = dict(kind="retrain", arch=arch.to_dict(), in_channels=cfg.in_channels, num_classes=cfg.num_classes,
                channel_mul=mul, config=to_dict(cfg))

    def save(path: Path, it: int) -> None:
        if d.is_main:
            checkpoint.save(path, model=net, optimizer=opt, scaler=scaler, loader=loader.state_dict(), iteration=it,
                            best_dice=best, best_iteration=best_it, history=history, **meta)

    writer = None
    if d.is_main:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start)
    from tqdm import tqdm

    bar = tqdm(range(start, cfg.iters), initial=start, total=cfg.iters, desc=f"retrain fold {cfg.fold}",
               disable=not d.is_main, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    net.train()
    for it in bar:
        lr = step_lr(base_lr, it, cfg.iters, RETRAIN_LR_MILESTONES)
        for g in opt.param_groups:
            g["lr"] = lr
        batch = next(loader)
        x, y = batch["image"].to(device), batch["label"].to(device)
        with torch.autocast(device.type, enabled=amp):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        ok = optimise(loss, opt, scaler, list(net.parameters()), cfg.grad_clip)
        bad = 0 if ok else bad + 1
        if not ok:
            log.warning("iteration %d: non-finite loss, step skipped (%d in a row)", it, bad)
            if bad >= MAX_BAD_STEPS:
                raise UserError(f"the loss was not finite for {bad} consecutive iterations (last {it}); "
                                "lower --base_lr or check the data")
        if writer is not None and (it % cfg.log_interval == 0 or it == cfg.iters - 1):
            writer.add_scalar("loss/seg", float(loss.detach()), it)
            writer.add_scalar("lr", lr, it)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", best=f"{max(best, 0):.3f}", refresh=False)
        done = it + 1
        if (cfg.val_interval and done % cfg.val_interval == 0) or done == cfg.iters:
            res = validate(net, v_loader, cfg, device, amp)
            improved = res["mean_dice"] > best
            if improved:
                best, best_it = res["mean_dice"], done
            history.append({"iteration": done, "val_dice": round(res["mean_dice"], 5),
                            **{f"dice_{k + 1}": round(v, 5) for k, v in enumerate(res["class_dice"])}})
            log.info("iteration %d: validation Dice %.4f %s%s", done, res["mean_dice"],
                     [round(v, 4) for v in res["class_dice"]], " (best)" if improved else "")
            if writer is not None:
                writer.add_scalar("val/dice", res["mean_dice"], done)
            if d.is_main:
                write_csv(out / "metrics.csv", history)
            if improved:
                save(best_path, done)
        if done % cfg.ckpt_interval == 0 or done == cfg.iters:
            save(latest, done)
    bar.close()
    if writer is not None:
        writer.close()
    if d.is_main:  # the stage's final output: main.sh skips a fold that has it
        write_json(out / "summary.json", {"fold": cfg.fold, "best_dice": best, "best_iteration": best_it,
                                          "iters": cfg.iters, "best": str(best_path), "latest": str(latest)})
    log.info("fold %d: best validation Dice %.4f at iteration %d -> %s", cfg.fold, best, best_it, best_path)
    dist.barrier()
    return out


def main(argv: list[str] | None = None) -> Path:
    return run_retrain(load_config(argv, "retrain"))


if __name__ == "__main__":
    cli_main(main)
