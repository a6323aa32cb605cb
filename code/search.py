#!/usr/bin/env python
"""Stage 1: search a network topology for one task and fold (docs/method.md, "Relaxation and losses").

    python code/search.py --config configs/tiny.yaml --data_root data --task Task99_Demo --fold 0 --work_root work

Writes into ``<work_root>/search-bilevel-ent-mem<mem>-<task>/``: ``config_search.json``, ``search.log``,
TensorBoard events (``tb/``), ``metrics.csv``, ``progress.png`` (loss terms, memory ratios, temperature, validation
Dice and decoded paths changed, redrawn at each validation), ``latest.pt`` (full state; rerunning the command resumes from it),
every validation interval ``arch_<iter>.json`` with its picture, and at the end ``arch.json``, ``arch.pth``
(MONAI arch codes), ``arch.png``/``arch.svg`` and ``summary.json`` (time per iteration, peak memory, memory
ratios).

``--seed_folder 1`` writes the same files into ``<search run>/seeds/seed<seed>/`` instead: one of several seeded
searches (``SEARCH_SEEDS`` of ``code/main.sh``), among which ``code/choose_search.py`` then chooses.
"""

from __future__ import annotations

from pathlib import Path

import torch

from config import load_config, resolve_task, to_dict, where
from dints.data.loader import train_loader, val_loader
from dints.data.splits import search_halves
from dints.pipeline.cli import cli_main
from dints.evaluate.validation import validate
from dints.io import write_json
from dints.run import dist, layout
from dints.run.profiling import peak_memory_mb
from dints.run.settings import RECORD_KEYS, DataSettings, InferSettings, LoopSettings, SearchSettings
from dints.pipeline.stage import check_patch, init_processes, prepare
from dints.space import relax
from dints.space.archfile import export_monai_arch
from dints.space.supernet import SuperNet
from dints.space.visual import write_arch_files
from dints.train.architect import Architect
from dints.train.progress import plot_search
from dints.train.runloop import RunLoop, Step, Validation

#: Options that must not change when a search resumes from latest.pt: those that decide its training (all that
#: decide its result but ``--decode`` and ``--decode_band``, which only read the logits: resuming a finished search
#: with another ``--decode`` decodes it again).
RESUME_KEYS = [k for k in RECORD_KEYS["search"] if k not in ("decode", "decode_band")]


def run_search(cfg, seed_folder: bool = False) -> Path:
    """Run (or resume) the search; returns the run folder holding ``arch.json``.

    Args:
        seed_folder: write into the seed's own folder (:func:`dints.run.layout.search_seed_dir`), not the search run
            folder.
    """
    d = init_processes(cfg.device)
    cfg, task = resolve_task(cfg)
    run_dir = (layout.search_seed_dir(cfg.work_root, cfg.task, cfg.mem, cfg.seed) if seed_folder
               else layout.search_dir(cfg.work_root, cfg.task, cfg.mem))
    ctx = prepare(task, run_dir, layout.LOGS["search"], work_root=cfg.work_root, fold=cfg.fold, num_folds=cfg.num_folds,
                  seed=cfg.seed, device=cfg.device, record=to_dict(cfg), stage="search")
    check_patch(cfg.patch_size, cfg.levels, bool(cfg.use_downsample), where(cfg, "patch_size"), task, cfg.spacing)
    log, device = ctx.logger, ctx.device
    w_ids, a_ids = search_halves(ctx.train_ids, cfg.seed)
    log.info("fold %d: %d weight / %d architecture / %d validation cases; %d process(es); run folder %s",
             cfg.fold, len(w_ids), len(a_ids), len(ctx.val_ids), d.world_size, run_dir)

    torch.manual_seed(cfg.seed)
    net = SuperNet(cfg.in_channels, cfg.num_classes, cfg.blocks, cfg.levels, cfg.channel_mul, cfg.opset, cfg.cellop,
                   bool(cfg.use_downsample), recompute=bool(cfg.recompute)).to(device)
    dist.broadcast_parameters(net)
    amp = cfg.amp and device.type == "cuda"
    arch = Architect(net, SearchSettings.from_options(cfg), d.world_size, amp)
    data, infer = DataSettings.from_options(cfg), InferSettings.from_options(cfg, tta=False)
    w_loader, a_loader = train_loader(data, task, w_ids, seed_offset=0), train_loader(data, task, a_ids, seed_offset=1)
    v_loader = val_loader(data, task, ctx.val_ids)
    path_gen = torch.Generator().manual_seed(cfg.seed + 7)  # same on every rank: the same paths everywhere

    loop = RunLoop("search", run_dir, LoopSettings.from_options(cfg), log, to_dict(cfg),
                   hint="lower --base_lr or --arch_lr",
                   objects={"model": net, "architect": arch, "w_loader": w_loader, "a_loader": a_loader},
                   progress=lambda path, trace, history: plot_search(
                       path, trace, history, cfg.mem,
                       f"{cfg.task}: search on fold {cfg.fold}" + (f", seed {cfg.seed}" if seed_folder else "")))
    decoded = {"codes": None}  # the architecture decoded at the last validation: (on, op) per block and path
    state = loop.resume(cfg.resume, RESUME_KEYS)
    if state is not None:  # the draw of paths: its generator, the paths in use and their inclusion probabilities
        path_gen.set_state(state["path_gen"])
        net.set_paths(state["path_mask"], state.get("path_inclusion"))
        decoded["codes"] = state.get("decoded_codes")
    ctx.record_config()

    shown = {"mem": "-"}  # the decoded memory ratio, as of the last logged iteration (decoding is off the hot path)

    def step(it: int) -> Step:
        if not cfg.use_max and it % cfg.path_iters == 0:
            net.sample_paths(cfg.path_num, path_gen, tau=arch.tau(it))
        wres = arch.weight_step(next(w_loader), it, device)
        out = Step(wres.finite, {"loss/seg_weight": wres.loss, "lr/weights": arch.lr(it)}, {"seg": f"{wres.loss:.3f}"},
                   loss=wres.loss)
        if it >= cfg.warmup_iters:
            ares = arch.arch_step(next(a_loader), it, device)
            out.ok = out.ok and ares.finite
            t = ares.terms
            out.scalars.update({"loss/seg_arch": t["seg_a"], "loss/entropy": t["entropy"], "loss/memory": t["memory"],
                                "loss/topology": t["topology"], "loss/arch_total": ares.loss,
                                "memory/ratio_expected": t["mem_ratio"],
                                "schedule/ramp": t["ramp"], "schedule/tau": t["tau"], "lr/arch": arch.arch_lr})
            out.postfix.update({"seg_a": f"{t['seg_a']:.3f}", "ent": f"{t['entropy']:.3f}",
                                "topo": f"{t['topology']:.2f}", "mem": shown["mem"],
                                "mem_exp": f"{t['mem_ratio']:.3f}", "tau": f"{t['tau']:.2f}"})
        return out

    def log_scalars(it: int) -> dict[str, float]:
        p = relax.op_weights(net.alpha_c, arch.tau(it))
        out = {"arch/mean_path_prob": float(net.path_probs(arch.tau(it)).mean()),
               "arch/op_entropy": float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())}
        if it >= cfg.warmup_iters:
            out.update(arch.decoded_ratios())
            shown["mem"] = f"{out['memory/ratio_decoded']:.3f}"
        return out

    def validation(done: int) -> Validation:
        tau = arch.tau(done - 1)
        res = validate(net, v_loader, cfg.num_classes, infer, device, forward=lambda x: net(x, use_max=True, tau=tau))
        found = arch.found_arch(done, log, task=cfg.task, fold=cfg.fold)
        if d.is_main:
            write_arch_files(found, run_dir, layout.arch_snapshot(done), log)
        codes = [[[on, op if on else -1] for on, op in zip(a, c)] for a, c in zip(found.arch_code_a, found.arch_code_c)]
        changed = None if decoded["codes"] is None else sum(
            x != y for old, new in zip(decoded["codes"], codes) for x, y in zip(old, new))
        decoded["codes"] = codes
        other = found.other_decode
        return Validation.of(res, "supernet validation", {"mem_ratio": found.mem_ratio,
                                                          "mem_ratio_expected": found.mem_ratio_expected,
                                                          "paths_changed": changed},
                             f", memory ratio {found.mem_ratio:.3f} decoded ({found.decode}; {other['decode']}: "
                             f"{other['mem_ratio']:.3f}), {found.mem_ratio_expected:.3f} expected"
                             + (f", {changed} path(s) changed" if changed is not None else ""))

    def sampling_state() -> dict:
        return dict(path_gen=path_gen.get_state(), path_mask=net.path_mask.cpu().clone(),
                    path_inclusion=net.path_inclusion.cpu().clone(), arch_kind="supernet",
                    decoded_codes=decoded["codes"])

    net.train()
    loop.run(step, validation, sampling_state, log_scalars)
    final = arch.found_arch(cfg.iters, log, task=cfg.task, fold=cfg.fold)
    if d.is_main:
        write_arch_files(final, run_dir, Path(layout.ARCH).stem, log)
        if cfg.opset == 1:  # MONAI's DiNTS only knows opset 1
            export_monai_arch(final, run_dir / layout.ARCH_MONAI)
        (run_dir / layout.SEARCH_CHOICE).unlink(missing_ok=True)  # a choice among seeds this search replaces
        peak, ran, seconds = peak_memory_mb(device), loop.iterations_run, loop.seconds
        write_json(run_dir / layout.SUMMARY, {
            "iterations": cfg.iters, "iterations_this_run": ran, "seconds_this_run": round(seconds, 3),
            "seconds_per_iteration": round(seconds / ran, 5) if ran else None, **peak, "processes": d.world_size,
            "replica_digests": loop.replica_digests,
            "mem_budget": cfg.mem, "mem_ratio": final.mem_ratio, "mem_ratio_expected": final.mem_ratio_expected,
            "decode": final.decode, "log_prob": final.log_prob, "other_decode": final.other_decode,
            "active_paths": int(sum(map(sum, final.arch_code_a))), "unlikely_paths": arch.unlikely_paths(final),
            "val_dice": loop.history[-1]["val_dice"] if loop.history else None, "mode": "one-shot" if cfg.use_max else
            f"sampling {cfg.path_num} paths every {cfg.path_iters} iteration(s)"})
        other = final.other_decode
        log.info("searched architecture: %s (decode %s: memory ratio %.3f, log-probability %.3f; decode %s: %.3f, "
                 "%.3f; expected ratio %.3f; budget %g)", run_dir / layout.ARCH, final.decode, final.mem_ratio,
                 final.log_prob, other["decode"], other["mem_ratio"], other["log_prob"], final.mem_ratio_expected,
                 cfg.mem)
        if ran:
            log.info("%d iterations in %.1f s (%.3f s per iteration); peak memory %s", ran, seconds, seconds / ran,
                     ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
    dist.barrier()
    return run_dir


def options(p) -> None:
    p.add_argument("--seed_folder", type=int, default=0, choices=[0, 1],
                   help="1: search in <search run>/seeds/seed<seed>/, as one of several seeded searches (main.sh's "
                        "SEARCH_SEEDS; code/choose_search.py chooses among them)")


def main(argv: list[str] | None = None) -> Path:
    cfg = load_config(argv, "search", add_options=options)
    seed_folder = bool(vars(cfg).pop("seed_folder"))  # where, not what: kept out of the record
    cfg.sources.pop("seed_folder", None)
    return run_search(cfg, seed_folder)


if __name__ == "__main__":
    cli_main(main)
