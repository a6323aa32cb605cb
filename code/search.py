#!/usr/bin/env python
"""Stage 1: search a network topology for one task and fold (DESIGN.md §5).

    python code/search.py --config configs/tiny.yaml --data_root data --task Task99_Demo --fold 0 --work_root work

Writes into ``<work_root>/search-bilevel-ent-mem<mem>-<task>/``: ``config_search.json``, ``search.log``,
TensorBoard events (``tb/``), ``metrics.csv``, ``latest.pt`` (full state; rerunning the command resumes from it),
every validation interval ``arch_<iter>.json`` with its picture, and at the end ``arch.json``, ``arch.pth``
(MONAI arch codes), ``arch.png``/``arch.svg`` and ``summary.json`` (time per iteration, peak memory, memory
ratios).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config import load_config, to_dict, where  # noqa: E402
from dints import checkpoint, dist, relax  # noqa: E402
from dints.architect import Architect  # noqa: E402
from dints.archfile import Arch, export_monai_arch, save_arch  # noqa: E402
from dints.decode import Decoded, decode  # noqa: E402
from dints.errors import ConfigError, UserError, cli_main  # noqa: E402
from dints.io import write_csv, write_json  # noqa: E402
from dints.profiling import peak_memory_mb  # noqa: E402
from dints.loader import train_loader, val_loader  # noqa: E402
from dints.evaluate import validate  # noqa: E402
from dints.msd import volume_shapes  # noqa: E402
from dints.splits import search_halves  # noqa: E402
from dints.stage import prepare, search_dir  # noqa: E402
from dints.supernet import SuperNet  # noqa: E402

#: Options that must not change when a search resumes from latest.pt.
RESUME_KEYS = ["task", "fold", "num_folds", "seed", "blocks", "levels", "channel_mul", "opset", "cellop", "use_downsample",
               "patch_size", "spacing", "intensity", "batch_size", "num_samples", "iters", "warmup_iters", "use_max",
               "path_num", "path_iters", "mem", "EF", "EP", "topology", "ef_end", "base_lr", "arch_lr"]
#: Consecutive non-finite steps tolerated before the search stops.
MAX_BAD_STEPS = 10


def check_patch(cfg, ctx) -> None:
    """Patch sides must be divisible by 2^(levels+1) and not exceed every training volume after resampling."""
    factor = 2 ** (cfg.levels + int(cfg.use_downsample))
    if any(s % factor for s in cfg.patch_size):
        raise ConfigError(f"{where(cfg, 'patch_size')} {cfg.patch_size}: every side must be divisible by "
                          f"2^(levels+{int(cfg.use_downsample)}) = {factor} for {cfg.levels} levels")
    shapes = np.array(volume_shapes(ctx.task, cfg.spacing))
    largest = shapes.max(axis=0)
    too_big = [i for i in range(3) if cfg.patch_size[i] > largest[i]]
    if too_big:
        raise ConfigError(
            f"{where(cfg, 'patch_size')} {cfg.patch_size} is larger than every training volume along axis "
            f"{too_big} after resampling (largest {largest.tolist()} voxels): crops would be mostly padding; "
            "use a smaller --patch_size or a finer --spacing")


def decode_with_ratio(net: SuperNet, cfg, mem_shape) -> tuple[Decoded, float]:
    """Decode the current logits (at tau = 1) and compute the decoded architecture's usage/full (~1 ms at D=4, B=12)."""
    d = decode(net.alpha_a.detach().cpu(), net.alpha_c.detach().cpu())
    return d, relax.decoded_memory_ratio(d.arch_code_a, d.arch_code_c, net.ops, mem_shape, cfg.channel_mul,
                                         bool(cfg.use_downsample))


def decode_arch(net: SuperNet, cfg, it: int, mem_shape, expected: float, log=None) -> Arch:
    """The discrete architecture the current logits decode to (at tau = 1), with its memory ratios and provenance.

    ``mem_ratio`` is the decoded architecture's own usage/full, ``mem_ratio_expected`` the search distribution's.
    Ties settled by index order are logged as a warning when ``log`` is given.
    """
    d, ratio = decode_with_ratio(net, cfg, mem_shape)
    if d.ties and log is not None:
        log.warning("iteration %d: %d decoding decision(s) tied and were settled by the lowest index", it, d.ties)
    return Arch.from_decoded(d, cfg.opset, cfg.cellop, use_downsample=bool(cfg.use_downsample),
                             channel_mul=cfg.channel_mul, mem_budget=cfg.mem, mem_ratio=round(ratio, 6),
                             mem_ratio_expected=round(expected, 6), task=cfg.task, fold=cfg.fold, iteration=it)


def write_arch(arch: Arch, run_dir: Path, name: str, logger) -> None:
    """``<name>.json`` and its picture (the picture is skipped with a warning when graphviz is missing)."""
    save_arch(arch, run_dir / f"{name}.json")
    try:
        from dints.visual import render_arch

        render_arch(arch, run_dir, name=name)
    except Exception as exc:  # graphviz's `dot` missing or failing must not stop a long search
        logger.warning("could not draw %s (%s)", name, exc)


def run_search(cfg) -> Path:
    """Run (or resume) the search; returns the run folder holding ``arch.json``."""
    ctx = prepare(cfg, search_dir(cfg), "search.log")
    log, d, device, run_dir = ctx.logger, dist.info(), ctx.device, ctx.run_dir
    check_patch(cfg, ctx)
    w_ids, a_ids = search_halves(ctx.train_ids, cfg.seed)
    log.info("fold %d: %d weight / %d architecture / %d validation cases; %d process(es); run folder %s",
             cfg.fold, len(w_ids), len(a_ids), len(ctx.val_ids), d.world_size, run_dir)

    torch.manual_seed(cfg.seed)
    net = SuperNet(cfg.in_channels, cfg.num_classes, cfg.blocks, cfg.levels, cfg.channel_mul, cfg.opset, cfg.cellop,
                   bool(cfg.use_downsample)).to(device)
    dist.broadcast_parameters(net)
    amp = cfg.amp and device.type == "cuda"
    arch = Architect(net, cfg, d.world_size, amp)
    w_loader = train_loader(cfg, ctx.task, w_ids, seed_offset=0)
    a_loader = train_loader(cfg, ctx.task, a_ids, seed_offset=1)
    v_loader = val_loader(cfg, ctx.task, ctx.val_ids)
    path_gen = torch.Generator().manual_seed(cfg.seed + 7)  # same on every rank: the same paths everywhere

    start, history, bad = 0, [], 0
    latest = run_dir / "latest.pt"
    state = checkpoint.load_for_resume(latest, cfg, RESUME_KEYS, log)
    if state is not None:
        net.load_state_dict(state["model"])
        arch.load_state_dict(state["architect"])
        w_loader.load_state_dict(state["w_loader"])
        a_loader.load_state_dict(state["a_loader"])
        path_gen.set_state(state["path_gen"])
        net.set_paths(state["path_mask"], state.get("path_inclusion"))
        checkpoint.set_rng_state(state["rng"])
        start, history = state["iteration"], state["history"]
        net.tau = arch.tau(max(start, 1) - 1)  # the temperature of the last completed iteration
        log.info("resumed from %s at iteration %d", latest, start)

    writer = None
    if d.is_main:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start)

    def save_latest(it: int) -> None:
        if d.is_main:
            checkpoint.save(latest, model=net, architect=arch.state_dict(), w_loader=w_loader.state_dict(),
                            a_loader=a_loader.state_dict(), path_gen=path_gen.get_state(),
                            path_mask=net.path_mask.cpu().clone(), path_inclusion=net.path_inclusion.cpu().clone(),
                            iteration=it,
                            history=history, config=to_dict(cfg), arch_kind="supernet")

    from tqdm import tqdm

    bar = tqdm(range(start, cfg.iters), initial=start, total=cfg.iters, desc="search", disable=not d.is_main,
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)
    net.train()
    loop_start = time.perf_counter()
    for it in bar:
        if not cfg.use_max and it % cfg.path_iters == 0:
            net.sample_paths(cfg.path_num, path_gen)
        wres = arch.weight_step(next(w_loader), it, device)
        scalars = {"loss/seg_weight": wres.loss, "lr/weights": arch.lr(it)}
        ok = wres.finite
        post = {"seg": f"{wres.loss:.3f}"}
        if it >= cfg.warmup_iters:
            ares = arch.arch_step(next(a_loader), it, device)
            ok = ok and ares.finite
            t = ares.terms
            t["mem_ratio_decoded"] = decode_with_ratio(net, cfg, arch.mem_shape)[1]
            scalars.update({"loss/seg_arch": t["seg_a"], "loss/entropy": t["entropy"], "loss/memory": t["memory"],
                            "loss/topology": t["topology"], "loss/arch_total": ares.loss,
                            "memory/ratio_expected": t["mem_ratio"], "memory/ratio_decoded": t["mem_ratio_decoded"],
                            "schedule/ramp": t["ramp"], "schedule/tau": t["tau"], "lr/arch": cfg.arch_lr})
            post.update({"seg_a": f"{t['seg_a']:.3f}", "ent": f"{t['entropy']:.3f}", "topo": f"{t['topology']:.2f}",
                         "mem": f"{t['mem_ratio_decoded']:.3f}", "mem_exp": f"{t['mem_ratio']:.3f}",
                         "tau": f"{t['tau']:.2f}"})
        bad = 0 if ok else bad + 1
        if not ok:
            log.warning("iteration %d: non-finite loss, step skipped (%d in a row)", it, bad)
            if bad >= MAX_BAD_STEPS:
                raise UserError(f"the loss was not finite for {bad} consecutive iterations (last {it}); "
                                "lower --base_lr or --arch_lr, or check the data")
        if writer is not None and (it % cfg.log_interval == 0 or it == cfg.iters - 1):
            with torch.no_grad():  # only on logged iterations: off the hot path
                scalars["arch/mean_path_prob"] = float(net.path_probs().mean())
                p = relax.op_weights(net.alpha_c, net.tau)
                scalars["arch/op_entropy"] = float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
            for k, v in scalars.items():
                writer.add_scalar(k, v, it)
        bar.set_postfix(post, refresh=False)
        done = it + 1
        if (cfg.val_interval and done % cfg.val_interval == 0) or done == cfg.iters:
            with torch.no_grad():
                expected = float(arch.memory(net.tau).ratio)
            res = validate(net, v_loader, cfg, device, amp, forward=lambda x: net(x, use_max=True))
            found = decode_arch(net, cfg, done, arch.mem_shape, expected, log)
            if d.is_main:
                write_arch(found, run_dir, f"arch_{done}", log)
            row = {"iteration": done, "val_dice": round(res["mean_dice"], 5), "mem_ratio": found.mem_ratio,
                   "mem_ratio_expected": found.mem_ratio_expected,
                   **{f"dice_{k + 1}": round(v, 5) for k, v in enumerate(res["class_dice"])}}
            history.append(row)
            log.info("iteration %d: supernet validation Dice %.4f %s, memory ratio %.3f decoded, %.3f expected",
                     done, res["mean_dice"], [round(v, 4) for v in res["class_dice"]], found.mem_ratio,
                     found.mem_ratio_expected)
            if writer is not None:
                writer.add_scalar("val/dice", res["mean_dice"], done)
                for k, v in enumerate(res["class_dice"]):
                    writer.add_scalar(f"val/dice_class{k + 1}", v, done)
            if d.is_main:
                write_csv(run_dir / "metrics.csv", history)
        if done % cfg.ckpt_interval == 0 or done == cfg.iters:
            save_latest(done)
    bar.close()
    seconds, ran = time.perf_counter() - loop_start, cfg.iters - start

    with torch.no_grad():
        expected = float(arch.memory(net.tau).ratio)
    final = decode_arch(net, cfg, cfg.iters, arch.mem_shape, expected, log)
    if d.is_main:
        write_arch(final, run_dir, "arch", log)
        if cfg.opset == 1:  # MONAI's DiNTS only knows opset 1
            export_monai_arch(final, run_dir / "arch.pth")
        if writer is not None:
            writer.close()
        peak = peak_memory_mb(device)
        write_json(run_dir / "summary.json", {
            "iterations": cfg.iters, "iterations_this_run": ran, "seconds_this_run": round(seconds, 3),
            "seconds_per_iteration": round(seconds / ran, 5) if ran else None, **peak,
            "mem_budget": cfg.mem, "mem_ratio": final.mem_ratio, "mem_ratio_expected": final.mem_ratio_expected,
            "val_dice": history[-1]["val_dice"] if history else None, "mode": "one-shot" if cfg.use_max else
            f"sampling {cfg.path_num} paths every {cfg.path_iters} iteration(s)"})
        log.info("searched architecture: %s (memory ratio %.3f decoded, %.3f expected; budget %g)",
                 run_dir / "arch.json", final.mem_ratio, final.mem_ratio_expected, cfg.mem)
        if ran:
            log.info("%d iterations in %.1f s (%.3f s per iteration); peak memory %s", ran, seconds, seconds / ran,
                     ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
    dist.barrier()
    return run_dir


def main(argv: list[str] | None = None) -> Path:
    return run_search(load_config(argv, "search"))


if __name__ == "__main__":
    cli_main(main)
