#!/usr/bin/env python
"""Wall time of ``scripts/demo.sh`` per stage, and the demo's validation Dice.

    python scripts/bench_demo.py [--root DIR]                # run the demo once (about 6 minutes on 2 cores)
    python scripts/bench_demo.py --from_work WORK_ROOT       # figures of a finished demo's work folder

Running: ``bash scripts/demo.sh`` with ``DATA_ROOT``/``WORK_ROOT`` in a fresh folder (``--root``, default a new
temporary folder, kept), so the demo task is generated and every stage runs. Each line of its output is
timestamped as it arrives and kept in ``<work>/bench_demo.log``; the stages are cut at ``code/main.sh``'s
``[main] stage N`` lines: set-up (``scripts/setup.sh``, up to its last ``[setup]`` line), the demo data, stages
1-6 (stage 6 includes the closing report). "After set-up" is everything but the set-up. ``--folds`` and
``--extra_args`` (passed as ``FOLDS`` and ``EXTRA_ARGS``) make a shortened run for a check; the figures of such a
run are marked as not the demo's. ``--extra_args "--seed S"`` alone is the whole demo with another seed.

From a work folder: its ``bench_demo.log`` when this script ran it (exact); otherwise the stage logs'
timestamps (1 s resolution; each stage runs from its first log line to the next stage's first, so a process's
start-up before its first line counts in the stage before it, and the set-up and data generation are not seen).

The Dice is the mean over folds of each fold's mean foreground validation Dice (``val-fold<k>/summary.json``, what
``code/report.py`` prints). Ends with one JSON line (``make_benchmarks_doc.py`` reads it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import ROOT, environment, finish, fmt, table  # noqa: E402

from dints.run import layout  # noqa: E402

TASK, MEM = "Task99_Demo", 0.8
STAGES = {0: "fingerprint and plan", 1: "search", 2: "retrain (5 folds)", 3: "test on validation", 4: "inference on test data", 5: "fuse",
          6: "resample + report"}
LOG_NAME = "bench_demo.log"
STAGE_LINE = re.compile(r"^\[main\] stage (\d)")
STAMPED = re.compile(r"^\[\s*([0-9.]+)\] (.*)$")
#: Per stage, the log files it writes (globs inside the search run folder), for --from_work without a bench log.
STAGE_LOGS = {1: [layout.LOGS["search"]], 2: [f"retrain-fold*/{layout.LOGS['retrain']}"],
              3: [f"val-fold*/{layout.LOGS['val']}"], 4: [f"test-fold*/{layout.LOGS['test']}"],
              5: [layout.LOGS["fuse"]], 6: [layout.LOGS["resample"]]}
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")


def run_demo(data_root: Path, work_root: Path, folds: str | None, extra_args: str | None) -> Path:
    """Run ``scripts/demo.sh``, writing its output with elapsed seconds per line to ``work_root/bench_demo.log``."""
    work_root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DATA_ROOT=str(data_root), WORK_ROOT=str(work_root))
    env.pop("PRESET", None)
    for key, value in (("FOLDS", folds), ("EXTRA_ARGS", extra_args)):
        if value is not None:
            env[key] = value
    log = work_root / LOG_NAME
    header = {"script": "scripts/demo.sh", "FOLDS": folds, "EXTRA_ARGS": extra_args, "env": environment()}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write(f"# {json.dumps(header)}\n")
        proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(f"[{time.perf_counter() - t0:10.3f}] {line.rstrip()}\n")
            f.flush()
            if line.startswith(("[main]", "[setup]")):
                print(f"  {time.perf_counter() - t0:7.1f} s  {line.rstrip()}", flush=True)
        rc = proc.wait()
        f.write(f"[{time.perf_counter() - t0:10.3f}] # exit status {rc}\n")
    if rc:
        raise SystemExit(f"scripts/demo.sh failed (exit status {rc}); its output: {log}")
    return log


def times_from_bench_log(log: Path) -> dict:
    """Stage wall times from a ``bench_demo.log`` (see the module docstring)."""
    setup_end, stage_start, end, header = 0.0, {}, None, {}
    lines = log.read_text().splitlines()
    for line in lines:
        if line.startswith("# {"):
            header = json.loads(line[2:])
            continue
        m = STAMPED.match(line)
        if not m:
            continue
        t, text = float(m.group(1)), m.group(2)
        if text.startswith("[setup]"):
            setup_end = t
        s = STAGE_LINE.match(text)
        if s:
            stage_start.setdefault(int(s.group(1)), t)
        end = t
    if 1 not in stage_start or end is None or not lines[-1].endswith("# exit status 0"):
        raise SystemExit(f"{log}: not the log of a finished demo")
    starts = sorted(stage_start.items())
    stages = {n: (starts[i + 1][1] if i + 1 < len(starts) else end) - t for i, (n, t) in enumerate(starts)}
    return {"source": f"{log.name} (timestamped as the demo ran)", "setup_s": setup_end,
            "data_s": starts[0][1] - setup_end, "stages": stages, "total_s": end,
            "after_setup_s": end - setup_end, "env": header.get("env"),
            "shortened": bool(header.get("FOLDS")) or not seed_only(header.get("EXTRA_ARGS"))}


def seed_only(extra_args: str | None) -> bool:
    """Whether EXTRA_ARGS leaves the demo whole: nothing, or only ``--seed S``."""
    words = (extra_args or "").split()
    return not words or (len(words) == 2 and words[0] == "--seed" and words[1].isdigit())


def times_from_stage_logs(run: Path) -> dict:
    """Approximate stage wall times from the stage logs' own timestamps (see the module docstring)."""
    first, last = {}, {}
    for n, patterns in STAGE_LOGS.items():
        stamps = []
        for pattern in patterns:
            for f in run.glob(pattern):
                stamps += [datetime.datetime.fromisoformat(m.group(1)) for m in map(LOG_TIME.match,
                           f.read_text().splitlines()) if m]
        if stamps:
            first[n], last[n] = min(stamps), max(stamps)
    if 1 not in first:
        raise SystemExit(f"{run}: no search.log with timestamps")
    order = sorted(first)
    stages = {n: ((first[order[i + 1]] if i + 1 < len(order) else last[n]) - first[n]).total_seconds()
              for i, n in enumerate(order)}
    total = (max(last.values()) - first[1]).total_seconds()
    env = dict(environment(), date=first[1].strftime("%Y-%m-%d %H:%M (local time of the logs)"),
               commit="unknown (the stage logs do not record it)")
    return {"source": "stage logs (1 s resolution; set-up, data and the search's start-up not seen)",
            "setup_s": None, "data_s": None, "stages": stages, "total_s": None, "after_setup_s": total, "env": env,
            "shortened": len(list(run.glob(STAGE_LOGS[2][0]))) != 5}


def dice(run: Path) -> dict:
    """Each fold's mean foreground validation Dice and their mean."""
    folds = {}
    for k in range(5):
        f = layout.eval_dir(run, "val", k) / layout.SUMMARY
        if f.is_file():
            folds[k] = json.loads(f.read_text())["mean_dice"]
    mean = sum(folds.values()) / len(folds) if folds else None
    return {"folds": folds, "mean": mean}


def tables(res: dict) -> dict[str, str]:
    """The result's tables by section title (also what ``make_benchmarks_doc.py`` writes)."""
    rows = [["set-up (scripts/setup.sh)", fmt(res["setup_s"], ".1f")], ["demo data", fmt(res["data_s"], ".1f")]]
    rows += [[f"stage {name}", fmt(s, ".1f")] for name, s in res["stages"].items()]
    rows += [["**after set-up**", fmt(res["after_setup_s"], ".1f")], ["total", fmt(res["total_s"], ".1f")]]
    note = " **A shortened check run, not the demo's figures.**" if res["shortened"] else ""
    dice_rows = [[k, fmt(v, ".4f")] for k, v in res["val_dice_folds"].items()]
    dice_rows.append(["mean", fmt(res["mean_val_dice"], ".4f")])
    return {
        "Demo wall time": f"bash scripts/demo.sh on a fresh data and work folder, per stage (source: "
        f"{res['source']}).{note}\n\n" + table(["part", "seconds"], rows),
        "Demo validation Dice": "Mean foreground Dice per fold on the original label grids (stage 3)\n\n"
        + table(["fold", "mean val Dice"], dice_rows),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--from_work", default=None, help="a finished demo's WORK_ROOT: report its figures, run nothing")
    p.add_argument("--root", default=None, help="folder for data/ and work/ of the run (default: a new temporary "
                                                "folder, kept)")
    p.add_argument("--folds", default=None, help="FOLDS for a shortened check run (default: the demo's 5)")
    p.add_argument("--extra_args", default=None, help="EXTRA_ARGS for a shortened check run (e.g. '--iters 4'); "
                                                      "'--seed S' alone runs the whole demo with that seed")
    a = p.parse_args(argv)
    if a.from_work:
        work = Path(a.from_work)
        log = work / LOG_NAME
        times = times_from_bench_log(log) if log.is_file() else None
    else:
        root = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix="bench-demo-"))
        work = root / "work"
        print(f"running scripts/demo.sh into {root} ...", flush=True)
        times = times_from_bench_log(run_demo(root / "data", work, a.folds, a.extra_args))
    run = layout.search_dir(work, TASK, MEM)
    if times is None:
        times = times_from_stage_logs(run)
    env = times.pop("env") or environment()
    d = dice(run)
    res = {"work_root": str(work.resolve()), **{k: (round(v, 2) if isinstance(v, float) else v)
                                                 for k, v in times.items() if k != "stages"},
           "stages": {f"{n} {STAGES[n]}": round(s, 2) for n, s in sorted(times["stages"].items())},
           "val_dice_folds": {str(k): round(v, 4) for k, v in d["folds"].items()},
           "mean_val_dice": None if d["mean"] is None else round(d["mean"], 4)}
    return finish("demo", env, res, tables(res))


if __name__ == "__main__":
    main()
