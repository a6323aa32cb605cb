"""Stage 1 (code/search.py): the bilevel step, the loss flags, outputs, resume after kill -9, and errors."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from monai.losses import DiceCELoss

import independent
from config import load_config
from dints.run.settings import SearchSettings
from dints.space.archfile import load_arch
from dints.space.supernet import SuperNet
from dints.train.architect import Architect
from dints.train.schedule import ramp, step_lr, temperature

ROOT = Path(__file__).resolve().parents[1]
SEARCH = str(ROOT / "code" / "search.py")
# Smallest search that exercises everything: 2 blocks, 2 levels, 16^3 crops at 4 mm.
FAST = ["--blocks", "2", "--levels", "2", "--patch_size", "16", "16", "16", "--spacing", "4", "4", "4",
        "--channel_mul", "0.25", "--path_num", "3", "--iters", "8", "--warmup_iters", "4", "--val_interval", "4",
        "--ckpt_interval", "2", "--sw_batch_size", "8"]


def run_dir(work: Path) -> Path:
    return work / "search-bilevel-ent-mem0.8-Task99_Demo"


# ----------------------------------------------------------------------------- schedules (hand-worked)
def test_schedules():
    # lr halves at 40% and 80% of the 100 post-warmup iterations of a 200-iteration search with 100 warmup
    assert step_lr(0.1, 0, 200, (0.4, 0.8), start=100) == 0.1
    assert step_lr(0.1, 139, 200, (0.4, 0.8), start=100) == 0.1
    assert step_lr(0.1, 140, 200, (0.4, 0.8), start=100) == 0.05
    assert step_lr(0.1, 180, 200, (0.4, 0.8), start=100) == 0.025
    assert ramp(99, 100, 200) == 0.0 and ramp(100, 100, 200) == 0.01 and ramp(199, 100, 200) == 1.0
    assert temperature(150, 100, 200, 0, 0.1) == 1.0
    assert temperature(100, 100, 201, 2, 0.1) == 1.0
    assert temperature(200, 100, 201, 2, 0.1) == pytest.approx(0.1)
    assert temperature(150, 100, 201, 2, 0.1) == pytest.approx(0.55)


# ----------------------------------------------------------------------------- the bilevel step
def _setup(tiny_args, *extra):
    cfg = load_config(tiny_args(*FAST, "--use_max", "1", *extra), "search")
    cfg.in_channels, cfg.num_classes = 1, 3
    torch.manual_seed(0)
    net = SuperNet(1, 3, cfg.blocks, cfg.levels, cfg.channel_mul, cfg.opset, cfg.cellop)
    batch = {"image": torch.randn(2, 1, 16, 16, 16), "label": torch.randint(0, 3, (2, 1, 16, 16, 16)).float()}
    return cfg, net, Architect(net, SearchSettings.from_options(cfg)), batch


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


def test_weight_step_updates_only_weights(tiny_args):
    cfg, net, arch, batch = _setup(tiny_args)
    w0, a0 = _snapshot(net.weight_parameters()), _snapshot(net.arch_parameters())
    res = arch.weight_step(batch, 0, torch.device("cpu"))
    assert res.finite
    assert not any(_changed(a0, net.arch_parameters()))
    assert sum(_changed(w0, net.weight_parameters())) > 0.9 * len(w0)


def test_arch_step_updates_only_architecture(tiny_args):
    cfg, net, arch, batch = _setup(tiny_args)
    w0, a0 = _snapshot(net.weight_parameters()), _snapshot(net.arch_parameters())
    res = arch.arch_step(batch, cfg.warmup_iters, torch.device("cpu"))
    assert res.finite
    assert all(_changed(a0, net.arch_parameters()))
    assert not any(_changed(w0, net.weight_parameters()))
    assert all(p.requires_grad for p in net.weight_parameters())  # weights unfrozen again afterwards


def _arch_grads(tiny_args, *extra, it=None):
    cfg, net, arch, batch = _setup(tiny_args, *extra)
    it = cfg.iters - 1 if it is None else it  # w(t) = 1: regularisers at full weight
    arch.opt_a.step = arch.opt_c.step = lambda *a, **k: None  # keep the parameters, look at the gradients
    captured = {}
    orig = arch.opt_a.zero_grad

    def capture(*a, **k):
        captured["a"] = net.alpha_a.grad.clone()
        captured["c"] = net.alpha_c.grad.clone()
        orig(*a, **k)

    arch.opt_a.zero_grad = capture
    res = arch.arch_step(batch, it, torch.device("cpu"))
    return res, captured


def test_architecture_optimisers_are_the_authors(tiny_args):
    """As in the DiNTS authors' search script: one Adam per architecture parameter set, betas (0.5, 0.999), no weight
    decay, the learning rate times the number of processes, no gradient clipping. Checked by replaying the recorded
    gradients of three architecture steps through two fresh, unclipped torch Adams."""
    cfg, net, arch, batch = _setup(tiny_args, "--arch_lr", "0.05", "--grad_clip", "0.001")
    start = [net.alpha_a.detach().clone(), net.alpha_c.detach().clone()]
    grads = {"a": [], "c": []}
    net.alpha_a.register_hook(lambda g: grads["a"].append(g.clone()))
    net.alpha_c.register_hook(lambda g: grads["c"].append(g.clone()))
    for it in range(cfg.warmup_iters, cfg.warmup_iters + 3):
        assert arch.arch_step(batch, it, torch.device("cpu")).finite
    replay = [torch.nn.Parameter(t.clone()) for t in start]
    opts = [torch.optim.Adam([p], lr=0.05, betas=(0.5, 0.999), weight_decay=0.0) for p in replay]
    for step in range(3):
        for p, key, opt in zip(replay, "ac", opts):
            p.grad = grads[key][step]
            opt.step()
    # A clip at 0.001 (or one joint clip) would have changed the second and third updates.
    torch.testing.assert_close(net.alpha_a.detach(), replay[0].detach())
    torch.testing.assert_close(net.alpha_c.detach(), replay[1].detach())
    two = Architect(net, SearchSettings.from_options(cfg), world_size=2)
    assert [g["lr"] for o in (two.opt_a, two.opt_c) for g in o.param_groups] == [0.1, 0.1]
    assert two.opt_w.param_groups[0]["lr"] == 2 * cfg.base_lr
    assert [o.param_groups[0]["params"] for o in (two.opt_a, two.opt_c)] == [[net.alpha_a], [net.alpha_c]]


def test_loss_flags_change_what_is_optimised(tiny_args):
    full, g_full = _arch_grads(tiny_args)
    assert full.terms["entropy"] > 0 and full.terms["topology"] > 0 and full.terms["memory"] > 0
    no_ent, g_no_ent = _arch_grads(tiny_args, "--EP", "0")
    assert no_ent.terms["entropy"] == 0 and not torch.allclose(g_full["a"], g_no_ent["a"])
    assert not torch.allclose(g_full["c"], g_no_ent["c"])  # the op entropy acts on alpha_c
    no_top, g_no_top = _arch_grads(tiny_args, "--topology", "0")
    assert no_top.terms["topology"] == 0 and not torch.allclose(g_full["a"], g_no_top["a"])
    assert torch.allclose(g_full["c"], g_no_top["c"])  # the topology loss does not involve ops
    other_mem, g_mem = _arch_grads(tiny_args, "--mem", "0.2")
    assert other_mem.terms["memory"] != full.terms["memory"] and not torch.allclose(g_full["a"], g_mem["a"])
    # At the first architecture iteration w(t) is tiny, so the regularisers barely count.
    early, _ = _arch_grads(tiny_args, it=4)
    assert early.terms["ramp"] == pytest.approx(1 / 4)


def test_arch_loss_is_seg_plus_weighted_regularisers(tiny_args):
    # Each term computed independently of dints.space.relax and of the Architect: the segmentation loss with MONAI's
    # DiceCELoss configured as the DiNTS authors do, on a copy of the network taken before the step; entropy,
    # topology and memory ratio from first principles (tests/independent.py); w(t) by hand.
    cfg, net, arch, batch = _setup(tiny_args, "--topology_weight", "0.5", "--EF", "2", "--ef_end", "0.5")
    before = copy.deepcopy(net)
    it = cfg.warmup_iters + 1  # second architecture iteration of 4: w = 2/4
    res = arch.arch_step(batch, it, torch.device("cpu"))
    t = res.terms
    authors = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, squared_pred=True, batch=True,
                         smooth_nr=1e-5, smooth_dr=1e-5)
    with torch.no_grad():
        seg = float(authors(before(batch["image"], use_max=True), batch["label"]))
    # tau anneals from 1 to 0.5 over the 4 architecture iterations (EF 2): 1 - 0.5 * 1/3 here.
    tau = 1 - 0.5 * (it - cfg.warmup_iters) / (cfg.iters - cfg.warmup_iters - 1)
    assert t["tau"] == pytest.approx(tau)
    a, c = before.alpha_a.detach(), before.alpha_c.detach()
    ent = independent.entropy(a, c, tau)
    topo = independent.topology(a, cfg.levels, tau)
    ratio = independent.memory_ratio(a, c, before.ops, cfg.levels, (cfg.batch_size, 1, 16, 16, 16), cfg.channel_mul,
                                     tau)
    w = (it - cfg.warmup_iters + 1) / (cfg.iters - cfg.warmup_iters)
    assert w == pytest.approx(0.5) and t["ramp"] == pytest.approx(w)
    assert t["seg_a"] == pytest.approx(seg, rel=1e-4)  # float32 sums in another order
    assert t["entropy"] == pytest.approx(ent, rel=1e-5)
    assert t["topology"] == pytest.approx(topo, rel=1e-5)
    assert t["mem_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert t["memory"] == pytest.approx(abs(0.8 - ratio), rel=1e-5)
    assert res.loss == pytest.approx(seg + w * (ent + abs(0.8 - ratio) + 0.5 * topo), rel=1e-4)


def test_memory_ratio_matches_independent_sum(tiny_args):
    """Architect.memory is the expected usage/full of DESIGN.md §5 on the crop shape the search trains with."""
    cfg, net, arch, _ = _setup(tiny_args)
    with torch.no_grad():
        net.alpha_a.normal_(0.0, 1.5)
        net.alpha_c.normal_(0.0, 1.5)
    for tau in (1.0, 0.4):
        m = arch.memory(tau)
        ref = independent.memory_ratio(net.alpha_a.detach(), net.alpha_c.detach(), net.ops, cfg.levels,
                                       (cfg.batch_size, 1, 16, 16, 16), cfg.channel_mul, tau)
        assert float(m.ratio.detach()) == pytest.approx(ref, rel=1e-6)
    # MONAI's initialisation: log_alpha_a ~ N(0, 0.01), log_alpha_c ~ N(1, 0.01).
    fresh = SuperNet(1, 3, cfg.blocks, cfg.levels, cfg.channel_mul, cfg.opset, cfg.cellop)
    assert fresh.alpha_a.abs().max() < 0.1 and (fresh.alpha_c - 1).abs().max() < 0.1


# ----------------------------------------------------------------------------- whole runs
def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, SEARCH, *args], capture_output=True, text=True, env=env, **kw)


@pytest.mark.slow
def test_short_search_writes_outputs(tiny_args, tmp_path):
    # Annealed to a low temperature: the decoded architecture must still be the tau = 1 decode of the final logits.
    r = _run(tiny_args(*FAST, "--EF", "2", "--ef_end", "0.1"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = run_dir(tmp_path / "work")
    arch = load_arch(out / "arch.json")
    assert (arch.num_blocks, arch.num_depths, arch.iteration, arch.task) == (2, 2, 8, "Task99_Demo")
    assert arch.mem_budget == 0.8
    for name in ["arch.pth", "arch.png", "arch.svg", "arch_4.json", "arch_4.png", "arch_8.json", "latest.pt",
                 "config_search.json", "search.log", "metrics.csv", "summary.json"]:
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,val_dice,mem_ratio,mem_ratio_expected") and len(rows) == 3
    cfg = json.loads((out / "config_search.json").read_text())["config"]
    assert cfg["iters"] == 8 and cfg["num_classes"] == 3
    state = torch.load(out / "latest.pt", weights_only=False)
    assert state["iteration"] == 8 and not any(k.startswith("module.") for k in state["model"])
    assert {"architect", "w_loader", "a_loader", "rng", "path_gen", "path_inclusion", "config"} <= set(state)

    # What the result says it is: the codes are the tau = 1 optimum of the final logits (checked against an
    # exhaustive enumeration of consistent child sequences), mem_ratio is their own usage/full (DESIGN.md §5 by hand)
    # and mem_ratio_expected the distribution's (first principles).
    alpha_a, alpha_c = state["model"]["alpha_a"].double(), state["model"]["alpha_c"]
    kids, p = independent.child_probs(alpha_a)
    paths = independent.PATHS[2]
    best = max(
        (float(p[0, i] * p[1, j]), (kids[i], kids[j]))
        for i in range(len(kids)) for j in range(len(kids))
        if {paths[q][1] for q in kids[i]} == {paths[q][0] for q in kids[j]}
    )[1]
    assert [tuple(q for q in range(4) if row[q]) for row in arch.arch_code_a] == list(best)
    assert arch.arch_code_c == alpha_c.argmax(-1).tolist()
    ratio = independent.memory_ratio(alpha_a, alpha_c, arch.ops, 2, (2, 1, 16, 16, 16), 0.25, tau=0.1)
    assert arch.mem_ratio_expected == pytest.approx(ratio, abs=1e-6)
    sizes = [2 * 16 * 8**3, 2 * 32 * 4**3]  # level 0: 16 channels at 8^3; level 1: 32 channels at 4^3 (batch 2)
    costs = []
    for b in range(2):
        for q, (src, tgt) in enumerate(paths):
            r = (16, 32)[src] / (16, 32)[tgt]
            pre = 0.0 if src == tgt else (8 * r + 3 if src < tgt else 2 * r + 2)
            op = independent.OP_COST[arch.ops[arch.arch_code_c[b][q]]]
            costs.append(((1 + pre + op) * sizes[tgt], arch.arch_code_a[b][q]))
    assert arch.mem_ratio == pytest.approx(sum(c * on for c, on in costs) / sum(c for c, _ in costs), abs=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mem_ratio"] == arch.mem_ratio and summary["iterations_this_run"] == 8
    assert summary["seconds_per_iteration"] > 0 and summary["peak_rss_mb"] > 0
    log = (out / "search.log").read_text()
    assert f"memory ratio {arch.mem_ratio:.3f} decoded, {arch.mem_ratio_expected:.3f} expected" in log


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--use_max", "1"], ["--use_max", "0", "--path_num", "2"]], ids=["one-shot", "sampling"])
def test_kill_9_and_rerun_gives_the_same_architecture(tiny_args, tmp_path, mode):
    # Sampling mode also restores the drawn paths and their inclusion probabilities (the estimator's weights).
    args = [*FAST, *mode, "--iters", "12", "--warmup_iters", "4", "--val_interval", "6"]
    ref_work = tmp_path / "ref"
    r = _run(tiny_args(*args, work=ref_work))
    assert r.returncode == 0, r.stderr[-2000:]
    reference = json.loads((run_dir(ref_work) / "arch.json").read_text())

    work = tmp_path / "work"
    latest = run_dir(work) / "latest.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, SEARCH, *tiny_args(*args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file():
            it = torch.load(latest, weights_only=False)["iteration"]
            if it >= 6:  # past warmup: architecture parameters and Adam state are in flight
                proc.send_signal(signal.SIGKILL)
                killed_at = it
                break
        time.sleep(0.2)
    proc.wait()
    assert killed_at is not None and killed_at < 12, "the run finished before it could be killed"
    assert not (run_dir(work) / "arch.json").exists()
    r = _run(tiny_args(*args))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stderr
    assert json.loads((run_dir(work) / "arch.json").read_text()) == reference


@pytest.mark.slow
def test_rerun_after_the_end_gives_the_same_result(tiny_args, tmp_path):
    """A finished search rerun resumes at its last iteration: same architecture, same temperature-dependent ratio."""
    args = tiny_args(*FAST, "--EF", "2", "--ef_end", "0.3")
    assert _run(args).returncode == 0
    first = (run_dir(tmp_path / "work") / "arch.json").read_text()
    r = _run(args)
    assert r.returncode == 0 and "resumed from" in r.stderr
    assert (run_dir(tmp_path / "work") / "arch.json").read_text() == first


@pytest.mark.slow
def test_resume_refuses_changed_options(tiny_args, tmp_path):
    assert _run(tiny_args(*FAST)).returncode == 0
    r = _run(tiny_args(*FAST, "--blocks", "3"))
    assert r.returncode == 2 and "was written with --blocks 2" in r.stderr and "Traceback" not in r.stderr
    r = _run(tiny_args(*FAST, "--blocks", "3", "--resume", "no"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_arch(run_dir(tmp_path / "work") / "arch.json").num_blocks == 3


@pytest.mark.slow
def test_resume_yes_without_checkpoint(tiny_args):
    r = _run(tiny_args(*FAST, "--resume", "yes"))
    assert r.returncode == 2 and "--resume yes" in r.stderr and "does not exist" in r.stderr


# ----------------------------------------------------------------------------- errors
def _error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return r.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_patch_not_divisible(tiny_args):
    line = _error_line(_run(tiny_args(*FAST, "--patch_size", "16", "16", "12")))
    assert line.startswith("error: --patch_size") and "divisible by" in line and "= 8" in line


@pytest.mark.slow
def test_patch_larger_than_volumes(tiny_args):
    line = _error_line(_run(tiny_args(*FAST, "--patch_size", "64", "64", "64")))
    assert "larger than every training volume" in line


@pytest.mark.slow
def test_fold_with_too_few_training_cases(demo_root, tmp_path):
    from scripts.make_demo_task import make_task

    make_task(tmp_path / "data" / "Task99_Demo", cases=2, test=0, seed=1)
    args = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data_root", str(tmp_path / "data"), "--task",
            "Task99_Demo", "--work_root", str(tmp_path / "work"), "--num_folds", "2", *FAST]
    line = _error_line(_run(args))
    assert "at least 2 training cases" in line


@pytest.mark.slow
def test_non_finite_loss_stops_with_clear_error(tiny_args):
    line = _error_line(_run(tiny_args(*FAST, "--base_lr", "1e30", "--grad_clip", "0", "--iters", "30",
                                      "--warmup_iters", "30", "--val_interval", "0")))
    assert "not finite for 10 consecutive iterations" in line


