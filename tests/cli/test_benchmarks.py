"""The benchmark scripts: each runs at a tiny size and prints its tables and a final JSON line with the
expected figures; the demo's stage times are read right from its logs; the page generator writes every required
row and judges the goals from the figures. No timing is asserted, only that figures exist and agree where they
must (ours and MONAI's decoders, FLOP counts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_demo  # noqa: E402
import make_benchmarks_doc  # noqa: E402
from benchkit import last_json_line  # noqa: E402

from dints.run import layout  # noqa: E402

ENV_KEYS = {"date", "machine", "threads", "python", "torch", "monai", "commit", "device"}
#: The tests share small machines: one thread each, so that threads waiting on each other do not stall the runs.
ONE_THREAD = ("--threads", "1")
#: 3 x (2 * 64 * 64 * 27 * 32**3): forward, input gradient and weight gradient of the dense conv3d.
DENSE_GFLOP = 3 * 2 * 64 * 64 * 27 * 32**3 / 1e9


def run_script(*args: str, env: dict | None = None, timeout: float = 600) -> tuple[str, dict]:
    """Run a script with this Python; its output and final JSON line."""
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout, last_json_line(out.stdout)


def check_common(stdout: str, res: dict, bench: str) -> None:
    assert res["bench"] == bench
    assert ENV_KEYS <= set(res["env"])
    assert "Measured " in stdout and "|---|" in stdout  # the environment line and a Markdown table
    assert stdout.strip().splitlines()[-1].startswith("{")


# ------------------------------------------------------------------------------------ the scripts, tiny
@pytest.mark.slow
def test_bench_space_tiny():
    stdout, res = run_script("scripts/bench_space.py", "--tiny", "--repeats", "1", "--rounds", "1", *ONE_THREAD)
    check_common(stdout, res, "space")
    assert set(res["decode"]) == {"3", "4", "5"}
    assert res["decode"]["3"]["same"] is True  # ours and MONAI's decode agree
    assert all(r["ours_s"] > 0 for r in res["decode"].values())
    for name in ("tiny", "b12", "b12_fwd_bwd"):
        r = res["search"][name]
        for key in ("ours_s", "monai_s", "ours_peak_mb", "monai_peak_mb", "time_ratio", "peak_ratio",
                    "ours_efficiency", "monai_efficiency"):
            assert r[key] is not None, (name, key)
        assert r["monai_gflop"] > 0
    # Counted the same way, ours does the same useful work as MONAI's at batch 2 (batch-1 CPU convolutions bypass
    # the counter, see bench_space.py)
    tiny = res["search"]["tiny"]
    assert tiny["ours_counted_gflop"] == pytest.approx(tiny["monai_gflop"], rel=0.01)
    assert set(res["sampling"]) == {"2", "4", "6"}
    assert res["dense_gflop"] == pytest.approx(DENSE_GFLOP, rel=1e-4)
    assert res["dense_gflops_per_s"] > 0


@pytest.mark.slow
def test_bench_discrete_tiny():
    stdout, res = run_script("scripts/bench_discrete.py", "--tiny", "--repeats", "1", "--rounds", "1", *ONE_THREAD)
    check_common(stdout, res, "discrete")
    assert set(res["cases"]) == {"tiny", "paper"}
    for r in res["cases"].values():
        for key in ("ours_train_it_s", "monai_train_it_s", "ours_infer_s", "monai_infer_s", "train_speedup",
                    "infer_speedup", "ours_train_peak_mb", "monai_train_peak_mb"):
            assert r[key] is not None and r[key] > 0, key
    assert "B=12, D=4" in res["cases"]["paper"]["label"]


@pytest.mark.slow
def test_bench_data_tiny(demo_root):
    stdout, res = run_script("scripts/bench_data.py", "--tiny", "--repeats", "1", "--data_root", str(demo_root),
                               *ONE_THREAD)
    check_common(stdout, res, "data")
    assert res["loader"]["crops_per_s"] > 0 and res["loader"]["cases"] == 10
    for kind in ("search", "train"):
        d = res["demand"][kind]
        assert d["step_s"] > 0 and d["supply_over_demand"] > 0 and 0 < d["load_share"] < 1


@pytest.mark.slow
def test_bench_gpu_sh_tiny_on_cpu(tmp_path):
    doc = ROOT / "docs" / "benchmarks.md"
    before = doc.read_text() if doc.is_file() else None
    env = dict(os.environ, BENCH_GPU_TINY="1", OUT=str(tmp_path), PYTHON=sys.executable,
               CUDA_VISIBLE_DEVICES="")  # a CPU check even on a machine with a GPU
    out = subprocess.run(["bash", "scripts/bench_gpu.sh", *ONE_THREAD], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert res["bench"] == "gpu" and res["tiny"] and res["device"] == "cpu"
    for kind in ("search", "train", "infer"):
        r = res["rows"][kind]
        assert r["ours_s"] > 0 and r["monai_s"] > 0 and r["ours_peak_mb"] is not None, (kind, r)
    # The plan's sizes for the Task09-like dataset (the tiny network, 300 MB): predicted against measured.
    rows = res["plan"]["rows"]
    assert [r["label"].split(" ")[0] for r in rows] == ["search", "retraining"] and res["plan"]["gpu_mb"] == 300
    assert all(r["predicted_mb"] <= 300 * 0.85 and r["measured_mb"] > 0 and "error" not in r for r in rows), rows
    page = (tmp_path / "benchmarks.md").read_text()
    assert "## GPU" in page and "search iteration (--tiny)" in page
    assert "## GPU: the plan's sizes, predicted and measured" in page and "Task09-like: 41 CT cases" in page
    assert (doc.read_text() if doc.is_file() else None) == before  # a tiny run leaves the real page alone


# ------------------------------------------------------------------------------------ the demo's logs
def write_demo_work(work: Path, dice: dict[int, float]) -> Path:
    """A finished demo's work folder holding the validation summaries; returns its search run folder."""
    run = layout.search_dir(work, bench_demo.TASK, bench_demo.MEM)
    for fold, value in dice.items():
        f = layout.eval_dir(run, "val", fold) / layout.SUMMARY
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps({"mean_dice": value, "cases": 2, "classes": {}}))
    return run


def test_bench_demo_from_its_own_log(tmp_path, capsys):
    work = tmp_path / "work"
    write_demo_work(work, {0: 0.9, 1: 0.8})
    header = {"script": "scripts/demo.sh", "FOLDS": None, "EXTRA_ARGS": None,
              "env": {k: "x" for k in ENV_KEYS}}
    lines = [f"# {json.dumps(header)}", "[     0.500] [setup] requirements already installed",
             "[     1.000] [setup] done (.venv)", "[     2.500] wrote data/Task99_Demo/dataset.json",
             "[     3.000] [main] stage 0 (plan)", "[     5.000] [main] stage 1 (search)", "[    50.000] some progress",
             "[    60.000] [main] stage 2 (retrain)", "[   200.000] [main] stage 3 (test-val)",
             "[   210.000] [main] stage 4 (test-infer)", "[   220.000] [main] stage 5 (fuse)",
             "[   225.000] [main] stage 6 (resample)", "[   240.000] Task Task99_Demo: validation Dice per fold",
             "[   241.000] # exit status 0"]
    (work / bench_demo.LOG_NAME).write_text("\n".join(lines) + "\n")
    res = bench_demo.main(["--from_work", str(work)])
    assert res["setup_s"] == 1.0 and res["data_s"] == 2.0 and res["total_s"] == 241.0
    assert res["after_setup_s"] == 240.0 and not res["shortened"]
    assert list(res["stages"].values()) == [2.0, 55.0, 140.0, 10.0, 10.0, 5.0, 16.0]
    assert list(res["stages"])[0] == "0 fingerprint and plan"
    assert res["mean_val_dice"] == pytest.approx(0.85) and res["val_dice_folds"] == {"0": 0.9, "1": 0.8}
    assert last_json_line(capsys.readouterr().out) == json.loads(json.dumps(res))


@pytest.mark.parametrize("folds,extra,shortened", [(None, "--seed 2", False), (None, "--iters 4", True),
                                                   (None, "--seed 2 --iters 4", True), ("0 1", "--seed 2", True)])
def test_another_seed_is_the_whole_demo_other_options_shorten_it(tmp_path, folds, extra, shortened):
    work = tmp_path / "work"
    write_demo_work(work, {0: 0.9})
    header = {"script": "scripts/demo.sh", "FOLDS": folds, "EXTRA_ARGS": extra, "env": {k: "x" for k in ENV_KEYS}}
    lines = [f"# {json.dumps(header)}", "[     1.000] [setup] done (.venv)", "[     3.000] [main] stage 1 (search)",
             "[   241.000] # exit status 0"]
    (work / bench_demo.LOG_NAME).write_text("\n".join(lines) + "\n")
    assert bench_demo.main(["--from_work", str(work)])["shortened"] is shortened


@pytest.mark.slow
def test_doc_generator_runs_a_benchmark_and_keeps_its_output(tmp_path):
    work = tmp_path / "work"
    write_demo_work(work, {0: 0.9})
    (layout.search_dir(work, bench_demo.TASK, bench_demo.MEM) / "search.log").write_text(
        "2026-01-01 10:00:00 INFO started\n2026-01-01 10:01:00 INFO finished\n")
    results, page = tmp_path / "results", tmp_path / "benchmarks.md"
    run_script("scripts/make_benchmarks_doc.py", "--run", "demo", "--demo_work", str(work), "--results", str(results),
               "--out", str(page), "--notes", str(tmp_path / "notes.md"))
    assert json.loads((results / "demo.json").read_text())["val_dice_folds"] == {"0": 0.9}
    assert "| stage 1 search | 60.0 |" in (results / "demo.log").read_text()
    assert "| stage 1 search | 60.0 |" in page.read_text()


def test_bench_demo_from_stage_logs(tmp_path):
    work = tmp_path / "work"
    run = write_demo_work(work, {0: 0.9})
    logs = {"search.log": ("10:00:00", "10:01:20"), "retrain-fold0/retrain.log": ("10:01:25", "10:02:00"),
            "retrain-fold1/retrain.log": ("10:02:05", "10:02:50"), "val-fold0/test_val.log": ("10:02:55", "10:03:00"),
            "test-fold0/test_test.log": ("10:03:04", "10:03:06"), "fuse.log": ("10:03:10", "10:03:11"),
            "resample.log": ("10:03:14", "10:03:15")}
    for name, (start, end) in logs.items():
        f = run / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"2026-01-01 {start} INFO started\n2026-01-01 {end} INFO finished\n")
    res = bench_demo.main(["--from_work", str(work)])
    assert res["stages"]["1 search"] == 85.0 and res["stages"]["2 retrain (5 folds)"] == 90.0
    assert res["after_setup_s"] == 195.0 and res["setup_s"] is None
    assert res["shortened"]  # two retrained folds, not the demo's five


# ------------------------------------------------------------------------------------ the page
def canned_results(tiny: bool = False) -> dict[str, dict]:
    """Results shaped as the scripts write them, with figures chosen to exercise each verdict."""
    env = {"date": "2026-01-02 03:04 UTC", "machine": "Test CPU, 2 cores, Linux x86_64", "threads": 2,
           "python": "3.11.7", "torch": "2.13.0", "monai": "1.6.1", "commit": "abc123", "device": "cpu"}

    def search(label, ours_s, monai_s, ours_mb, monai_mb):
        gflop = 179.0
        return {"label": label, "ours_s": ours_s, "monai_s": monai_s, "ours_peak_mb": ours_mb,
                "monai_peak_mb": monai_mb, "monai_gflop": gflop, "ours_counted_gflop": 150.0,
                "time_ratio": round(ours_s / monai_s, 3), "peak_ratio": round(ours_mb / monai_mb, 3),
                "ours_gflops_per_s": gflop / ours_s, "monai_gflops_per_s": gflop / monai_s,
                "ours_efficiency": gflop / ours_s / 190, "monai_efficiency": gflop / monai_s / 190}

    space = {"bench": "space", "env": env, "tiny": tiny, "repeats": 3, "rounds": 2, "dense_gflop": DENSE_GFLOP,
             "dense_gflops_per_s": 190.0,
             "decode": {"3": {"ours_s": 0.0005, "monai_s": 0.3, "same": True},
                        "4": {"ours_s": 0.0006, "monai_s": 13.0, "same": True},
                        "5": {"ours_s": 0.002, "monai_s": None, "same": None}},
             "search": {"tiny": search("tiny preset: B=4, D=3", 0.3, 0.6, 170.0, 210.0),
                        "b12": search("B=12, D=4, channel_mul 0.25, 1 × 64³", 1.8, 6.0, 1300.0, 2800.0),
                        "b12_fwd_bwd": search("B=12, D=4, channel_mul 0.25, 1 × 64³, forward+backward only", 1.5, 6.0,
                                              1200.0, 2800.0)},
             "sampling": {n: {"ours_s": 0.5 * int(n) / 2, "ours_peak_mb": 300.0 * int(n), "time_vs_one_shot": 0.1,
                              "peak_vs_one_shot": 0.2} for n in ("2", "4", "6")}}
    discrete = {"bench": "discrete", "env": env, "tiny": tiny, "repeats": 2, "rounds": 2, "cases": {
        name: {"label": label, "volume": [96, 96, 64], "arch": "random, seed 0", "ours_train_it_s": 1.0,
               "monai_train_it_s": m_it, "ours_infer_s": 1.0, "monai_infer_s": m_inf, "ours_train_peak_mb": 100.0,
               "monai_train_peak_mb": 120.0, "train_speedup": round(1.0 / m_it, 3), "infer_speedup": m_inf}
        for name, label, m_it, m_inf in (("tiny", "tiny preset: B=4, D=3", 0.5, 1.5),
                                        ("paper", "paper scale: B=12, D=4, channel_mul 1", 0.9, 0.9))}}
    data = {"bench": "data", "env": env, "tiny": tiny,
            "loader": {"cases": 12, "cache_fill_s": 2.0, "batches": 40, "crops": 80, "crops_per_s": 30.0,
                       "batch_crops": 2, "num_workers": 0, "patch": [32, 32, 32]},
            "demand": {k: {"step_s": s, "crops_per_iteration": c, "crops_per_s": c / s,
                           "supply_over_demand": 30.0 * s / c, "load_share": 0.1}
                       for k, s, c in (("search", 0.3, 4), ("train", 0.1, 2))}}
    demo = {"bench": "demo", "env": env, "work_root": "/w", "source": "bench_demo.log", "setup_s": 2.0,
            "data_s": 1.0, "total_s": 283.0, "after_setup_s": 281.0, "shortened": False,
            "stages": {f"{n} {s}": 40.0 for n, s in bench_demo.STAGES.items()},
            "val_dice_folds": {str(k): 0.85 for k in range(5)}, "mean_val_dice": 0.85}
    gpu = {"bench": "gpu", "env": dict(env, device="cuda", gpu="NVIDIA H200"), "device": "cuda", "amp": True,
           "tiny": False, "volume": [512, 512, 100], "repeats": 10, "warmup": 3, "volume_repeats": 2,
           "rows": {k: {"label": f"{k} row", "ours_s": 0.2, "monai_s": 0.4, "ours_per_s": 5.0, "monai_per_s": 2.5,
                        "ours_peak_mb": 5000.0, "monai_peak_mb": 9000.0, "time_ratio": 0.5, "peak_ratio": 0.556}
                    for k in ("search", "train", "infer")},
           "memory_predictor": memory(0.97, 0.2, "total")}
    return {"space": space, "discrete": discrete, "data": data, "demo": demo, "gpu": gpu,
            "memory": dict(memory(1.0, 0.01, "held"), bench="memory", env=env, tiny=tiny)}


def memory(spearman: float, median: float, total: str) -> dict:
    """What scripts/bench_memory.py writes (on a GPU, bench_gpu.py keeps it as its ``memory_predictor``)."""
    row = {"arch": "random B4 D2 4p", "pred_activations_mb": 10.0, "meas_activations_mb": 10.1, "act_rel_error": -0.01,
           "pred_total_mb": 20.0, "meas_total_mb": 20.2, "total_rel_error": -0.01}
    stats = {"spearman": spearman, "median_rel_error": median, "max_rel_error": median}
    return {"device": "cpu", "side": 64, "channel_mul": 0.25, "batch": 1, "amp": False, "archs": 24,
            "total_measure": total, "activations": stats, "total": stats, "rows": [row] * 24}


def write_page(tmp_path: Path, results: dict[str, dict], notes: str | None = None) -> str:
    files = []
    for name, r in results.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(r))
        files.append(str(f))
    argv = ["--from", *files, "--out", str(tmp_path / "benchmarks.md"), "--notes", str(tmp_path / "notes.md")]
    if notes is not None:
        (tmp_path / "notes.md").write_text(notes)
    make_benchmarks_doc.main(argv)
    return (tmp_path / "benchmarks.md").read_text()


def goal_rows(page: str) -> dict[str, list[str]]:
    section = page.split("## Goals")[1].split("## What limits")[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")][1:]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


def test_page_holds_every_required_row(tmp_path):
    page = write_page(tmp_path, canned_results(), notes="Memory is limited by the saved inputs of every path.")
    for heading in ("Goals", "What limits the goals not met", "Decoding", "One search iteration", "Path sampling",
                    "Compute efficiency", "Discrete network: training", "Discrete network: sliding-window inference",
                    "Data pipeline", "Memory predictor (CPU: saved-tensor bytes)", "Demo: wall time per stage",
                    "Demo: validation Dice", "GPU", "GPU: memory predictor"):
        assert f"\n## {heading}\n" in page, heading
    assert "Memory is limited by the saved inputs of every path." in page
    assert page.count("\nMeasured ") == 12  # every table says where, with what and when it was measured
    assert "Test CPU, 2 cores" in page and "2 CPU thread(s)" in page and "torch 2.13.0" in page
    assert "MONAI 1.6.1" in page and "2026-01-02 03:04 UTC" in page and "NVIDIA H200" in page
    for row in ("| 3 |", "| 4 |", "| 5 |", "| B=12, D=4, channel_mul 0.25, 1 × 64³ |", "| tiny preset: B=4, D=3 |",
                "| 2 |", "| 6 |", "paper scale: B=12, D=4", "search iteration (2 batches)",
                "retraining iteration (1 batch)", "| stage 1 search |", "| stage 6 resample + report |",
                "| **after set-up** |", "| mean | 0.8500 |", "| search row |", "| infer row |", "spearman",
                "| random B4 D2 4p | 10.00 | 10.10 | -1.00% |"):
        assert row in page, row
    goals = goal_rows(page)
    verdicts = {k.split(" (")[0]: v[-1] for k, v in goals.items() if not k.startswith("memory predictor")}
    assert verdicts == {
        "search iteration time vs MONAI": "**met**",  # 1.8 / 6.0 = 0.3
        "search iteration peak memory vs MONAI": "not met",  # 1300 / 2800 = 0.46
        "compute efficiency of the search iteration vs dense conv3d": "**met**",  # 179 / 1.8 / 190 = 52%
        "the same, supernet forward+backward only: time, memory": "not met",  # 0.25x the time, 0.43x the memory
        "discrete-network training faster than MONAI": "**met**",  # 2.0x and 1.1x
        "sliding-window inference faster than MONAI": "not met",  # 0.9x on the paper-scale architecture
        "scripts/demo.sh wall time after set-up": "**met**",
        "demo mean validation Dice": "**met**",
    }
    by_place = {k: v[-1] for k, v in goals.items() if k.startswith("memory predictor")}  # CPU 1.0, 1%; GPU 0.97, 20%
    assert by_place == {"memory predictor, activations (CPU, saved tensors, 24 architectures)": "**met**",
                        "memory predictor, total (CPU, saved tensors, 24 architectures)": "**met**",
                        "memory predictor, activations (GPU, max_memory_allocated, 24 architectures)": "not met",
                        "memory predictor, total (GPU, max_memory_allocated, 24 architectures)": "not met"}


def test_page_without_results_or_notes_says_what_is_missing(tmp_path):
    results = canned_results(tiny=True)
    page = write_page(tmp_path, {"space": results["space"]})
    assert "_Not written yet" in page
    assert "_No result yet: run `python scripts/bench_discrete.py`._" in page
    assert "_Not measured: no GPU was available when this page was made._" in page
    verdicts = [v[-1] for v in goal_rows(page).values()]
    assert verdicts and set(verdicts) == {"no figure"}  # a tiny run judges nothing


def test_later_result_replaces_earlier_and_unknown_results_are_shown(tmp_path):
    results = canned_results()
    newer = json.loads(json.dumps(results["demo"]))
    newer["mean_val_dice"] = 0.75
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "demo.json").write_text(json.dumps(results["demo"]))
    log = tmp_path / "demo-run.log"
    log.write_text("some output\n| a | table |\n" + json.dumps(newer) + "\n")
    other = tmp_path / "custom.json"
    other.write_text(json.dumps({"bench": "custom", "spearman": 0.99, "median_rel_error": 0.1}))
    make_benchmarks_doc.main(["--from", str(tmp_path / "old" / "demo.json"), str(log), str(other),
                              "--out", str(tmp_path / "page.md"), "--notes", str(tmp_path / "none.md")])
    page = (tmp_path / "page.md").read_text()
    assert goal_rows(page)["demo mean validation Dice"][-1] == "not met"
    assert "## Other result: custom" in page and "median_rel_error" in page
