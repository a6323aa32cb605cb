"""Stage 1 (code/search.py): outputs, resume after kill -9, refused options and errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dints.space.archfile import load_arch
from helpers import independent
from helpers.stages import FAST

ROOT = Path(__file__).resolve().parents[2]
SEARCH = str(ROOT / "code" / "search.py")


def run_dir(work: Path) -> Path:
    return work / "search-bilevel-ent-mem0.8-Task99_Demo"


# ----------------------------------------------------------------------------- whole runs
def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, SEARCH, *args], capture_output=True, text=True, env=env, **kw)


@pytest.mark.slow
def test_short_search_writes_outputs(tiny_args, tmp_path):
    # Annealed to a low temperature: the decoded architecture must still be the tau = 1 decode of the final logits.
    # The paper's decode (the tiny preset decodes within the budget).
    r = _run(tiny_args(*FAST, "--EF", "2", "--ef_end", "0.1", "--decode", "paper"))
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
    state = torch.load(out / "latest.pt", weights_only=True)
    assert state["iteration"] == 8 and not any(k.startswith("module.") for k in state["model"])
    assert {"architect", "w_loader", "a_loader", "rng", "path_gen", "path_inclusion", "config"} <= set(state)

    # What the result says it is: the codes are the tau = 1 optimum of the final logits (checked against an
    # exhaustive enumeration of consistent child sequences), mem_ratio is their own usage/full (by hand, from the
    # costs in docs/method.md)
    # and mem_ratio_expected the distribution's (first principles).
    alpha_a, alpha_c = state["model"]["alpha_a"].double(), state["model"]["alpha_c"]
    kids, p = independent.child_probs(alpha_a)
    paths = independent.PATHS[2]
    best_p, best = max(
        (float(p[0, i] * p[1, j]), (kids[i], kids[j]))
        for i in range(len(kids)) for j in range(len(kids))
        if {paths[q][1] for q in kids[i]} == {paths[q][0] for q in kids[j]}
    )
    assert [tuple(q for q in range(4) if row[q]) for row in arch.arch_code_a] == list(best)
    assert arch.decode == "paper" and arch.log_prob == pytest.approx(math.log(best_p), abs=1e-5)
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
    assert (summary["decode"], summary["log_prob"], summary["other_decode"]) == (arch.decode, arch.log_prob,
                                                                                 arch.other_decode)
    assert summary["active_paths"] == sum(map(sum, arch.arch_code_a))
    eta = torch.sigmoid(alpha_a)  # each path's probability, by hand
    assert summary["unlikely_paths"] == sum(
        1 for b in range(2) for q in range(4) if arch.arch_code_a[b][q] and eta[b, q] < 0.5)
    log = (out / "search.log").read_text()
    other = arch.other_decode
    assert (f"decode paper: memory ratio {arch.mem_ratio:.3f}, log-probability {arch.log_prob:.3f}; decode budget: "
            f"{other['mem_ratio']:.3f}, {other['log_prob']:.3f}; expected ratio {arch.mem_ratio_expected:.3f}") in log


def _path_costs(arch) -> list[list[float]]:
    """Each path's memory cost with its op, by hand (docs/method.md): 16 channels at 8^3, 32 at 4^3, batch 2."""
    sizes, paths = [2 * 16 * 8**3, 2 * 32 * 4**3], independent.PATHS[2]
    out = []
    for b in range(arch.num_blocks):
        row = []
        for q, (src, tgt) in enumerate(paths):
            r = (16, 32)[src] / (16, 32)[tgt]
            pre = 0.0 if src == tgt else (8 * r + 3 if src < tgt else 2 * r + 2)
            row.append((1 + pre + independent.OP_COST[arch.ops[arch.arch_code_c[b][q]]]) * sizes[tgt])
        out.append(row)
    return out


@pytest.mark.slow
def test_decode_budget_decodes_a_finished_search_again_within_the_budget(tiny_args, tmp_path):
    """--decode budget on a finished search: resumed at its end, decoded again; the result is the most probable
    consistent architecture in [--mem - 0.1, --mem] (an exhaustive enumeration here), the paper's decode recorded
    beside it."""
    args = [*FAST, "--mem", "0.32"]
    assert _run(tiny_args(*args, "--decode", "paper")).returncode == 0
    out = tmp_path / "work" / "search-bilevel-ent-mem0.32-Task99_Demo"
    # Eight iterations leave the paths near their start; logits that favour many paths make the paper's decode miss
    # the budget (a checkpoint of plain tensors: edited like any other). One op everywhere (conv_3x3x3): then no
    # architecture's ratio lies within 0.01 of 0.32, beyond the reach of decode_within's rounding (B units of 1e-3).
    state = torch.load(out / "latest.pt", weights_only=True)
    state["model"]["alpha_a"] = torch.tensor([[2.0, 1.5, 1.0, 2.5], [1.0, 2.0, 2.5, 0.5]])
    state["model"]["alpha_c"] = torch.nn.functional.one_hot(torch.ones(2, 4, dtype=torch.long), 5).float()
    torch.save(state, out / "latest.pt")
    r = _run(tiny_args(*args, "--decode", "paper"))
    assert r.returncode == 0 and "resumed from" in r.stderr, r.stderr[-2000:]
    paper = load_arch(out / "arch.json")
    assert paper.decode == "paper" and paper.mem_ratio > 0.32  # the paper's decode misses the budget
    r = _run(tiny_args(*args, "--decode", "budget"))
    assert r.returncode == 0 and "resumed from" in r.stderr, r.stderr[-2000:]
    got = load_arch(out / "arch.json")
    assert got.decode == "budget" and got.mem_ratio <= 0.32
    assert got.other_decode == {"decode": "paper", "mem_ratio": paper.mem_ratio, "log_prob": paper.log_prob}
    assert paper.other_decode == {"decode": "budget", "mem_ratio": got.mem_ratio, "log_prob": got.log_prob}
    assert got.arch_code_c == paper.arch_code_c == [[1] * 4] * 2  # ops are decoded the same way
    state = torch.load(out / "latest.pt", weights_only=True)
    kids, p = independent.child_probs(state["model"]["alpha_a"].double())
    paths, costs = independent.PATHS[2], _path_costs(paper)
    full = sum(map(sum, costs))
    fitting = [(float(p[0, i] * p[1, j]), (kids[i], kids[j]), ratio)
               for i in range(len(kids)) for j in range(len(kids))
               if {paths[q][1] for q in kids[i]} == {paths[q][0] for q in kids[j]}
               and (ratio := (sum(costs[0][q] for q in kids[i]) + sum(costs[1][q] for q in kids[j])) / full) <= 0.32]
    in_band = [f for f in fitting if f[2] >= 0.32 - 0.1]  # --decode_band 0.1: first [0.22, 0.32]
    best_p, best, _ = max(in_band or fitting)
    assert [tuple(q for q in range(4) if row[q]) for row in got.arch_code_a] == list(best)
    assert got.log_prob == pytest.approx(math.log(best_p), abs=1e-5) and got.log_prob < paper.log_prob
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decode"] == "budget" and summary["iterations_this_run"] == 0


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
            it = torch.load(latest, weights_only=True)["iteration"]
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
    r = _run(tiny_args(*FAST, "--ct_window", "-100", "100"))  # a preprocessing option, as every one of them
    assert r.returncode == 2 and "was written with --ct_window [-1000.0, 1000.0]" in r.stderr, r.stderr[-2000:]
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


