#!/usr/bin/env python
"""Write ``docs/benchmarks.md`` from the benchmark scripts' results: their tables, and the project's goals with
met / not met computed from the figures.

    python scripts/make_benchmarks_doc.py                          # run every CPU benchmark, then write the page
    python scripts/make_benchmarks_doc.py --run demo --demo_work W  # rerun one; the others from the saved results
    python scripts/make_benchmarks_doc.py --from docs/bench-results/*.json gpu.json   # from saved results only

Benchmarks: ``space`` (``scripts/bench_space.py``: decoding, search iteration, path sampling, compute efficiency),
``discrete`` (``bench_discrete.py``: training and inference), ``data`` (``bench_data.py``), ``demo``
(``bench_demo.py``: ``scripts/demo.sh`` per stage, about 6 minutes; ``--demo_work`` reads a finished demo's work
folder instead of running it) and ``gpu`` (``scripts/bench_gpu.sh`` on a GPU machine, never run from here). Each
run's output is kept in ``--results`` (``<bench>.log``, and its final JSON line as ``<bench>.json``).

Which results the page holds: those of ``--from`` (JSON files or whole logs: the last JSON line counts), else every
``*.json`` in ``--results``; then those of ``--run`` (default: every CPU benchmark when ``--from`` is not given,
none when it is). A later result of the same benchmark replaces an earlier one. The prose on what limits the goals
not met lives in ``--notes`` (default ``docs/benchmarks-notes.md``) and is copied in.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_data  # noqa: E402
import bench_demo  # noqa: E402
import bench_discrete  # noqa: E402
import bench_gpu  # noqa: E402
import bench_memory  # noqa: E402
import bench_space  # noqa: E402
from benchkit import ROOT, env_line, flat_table, last_json_line, table  # noqa: E402

CPU_BENCHES = ("space", "discrete", "data", "memory", "demo")
#: bench -> (script, table builder, one-line command for the page).
BENCHES: dict[str, tuple[str, Callable[[dict], dict[str, str]], str]] = {
    "space": ("bench_space.py", bench_space.tables, "python scripts/bench_space.py"),
    "discrete": ("bench_discrete.py", bench_discrete.tables, "python scripts/bench_discrete.py"),
    "data": ("bench_data.py", bench_data.tables, "python scripts/bench_data.py"),
    "memory": ("bench_memory.py", bench_memory.tables, "python scripts/bench_memory.py"),
    "demo": ("bench_demo.py", bench_demo.tables, "python scripts/bench_demo.py"),
    "gpu": ("bench_gpu.py", bench_gpu.tables, "bash scripts/bench_gpu.sh"),
}
#: The page's sections in order: (heading, bench, table title).
SECTIONS = [
    ("Decoding", "space", "Decoding"),
    ("One search iteration", "space", "Search iteration"),
    ("Path sampling", "space", "Path sampling"),
    ("Compute efficiency", "space", "Compute efficiency"),
    ("Discrete network: training", "discrete", "Discrete network training"),
    ("Discrete network: sliding-window inference", "discrete", "Sliding-window inference"),
    ("Data pipeline", "data", "Data pipeline"),
    ("Memory predictor (CPU: saved-tensor bytes)", "memory", "Memory predictor"),
    ("Demo: wall time per stage", "demo", "Demo wall time"),
    ("Demo: validation Dice", "demo", "Demo validation Dice"),
    ("GPU", "gpu", "GPU"),
    ("GPU: the plan's sizes, predicted and measured", "gpu", "GPU plan"),
    ("GPU: memory predictor", "gpu", "GPU memory predictor"),
]
NOTES_PLACEHOLDER = "_Not written yet: say here what limits each goal marked not met (edit {path})._"


def read_result(path: Path) -> dict[str, Any]:
    """A benchmark result: a JSON file, or a log whose last JSON line is one."""
    return last_json_line(path.read_text())


def run_bench(name: str, extra: list[str], results: Path) -> dict[str, Any]:
    """Run one CPU benchmark script, echoing and keeping its output; its result (also saved as ``<name>.json``)."""
    script = ROOT / "scripts" / BENCHES[name][0]
    cmd = [sys.executable, str(script), *extra]
    print(f"== {' '.join(cmd[1:])}", flush=True)
    results.mkdir(parents=True, exist_ok=True)
    lines = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    (results / f"{name}.log").write_text("".join(lines))
    if proc.returncode:
        raise SystemExit(f"{script.name} failed (exit status {proc.returncode}); its output: {results / name}.log")
    res = last_json_line("".join(lines))
    (results / f"{name}.json").write_text(json.dumps(res) + "\n")
    return res


# ---------------------------------------------------------------------------------------------- goals
def _get(res: dict[str, dict], *keys: str) -> Any:
    value: Any = res
    for k in keys:
        if not isinstance(value, dict) or value.get(k) is None:
            return None
        value = value[k]
    return value


def goals(res: dict[str, dict]) -> list[list[Any]]:
    """The speed and memory goals for this machine: ``[goal, target, measured, met]`` rows computed from the results.

    A goal whose figure is missing, or comes from a ``--tiny`` or shortened run, is "no figure" rather than met or
    not met.
    """
    def verdict(ok: bool | None, *benches: str) -> str:
        if ok is None or any(_get(res, b, "tiny") or _get(res, b, "shortened") for b in benches):
            return "no figure"
        return "**met**" if ok else "not met"

    rows: list[list[Any]] = []
    s = _get(res, "space", "search", "b12")
    if s:
        rows.append([f"search iteration time vs MONAI ({s['label']})", "≤ 0.33×",
                     f"{s['time_ratio']}× ({s['ours_s']:.2f} s vs {s['monai_s']:.2f} s)",
                     verdict(s["time_ratio"] is not None and s["time_ratio"] <= 0.33, "space")])
        rows.append(["search iteration peak memory vs MONAI (same)", "≤ 0.4×",
                     f"{s['peak_ratio']}× ({s['ours_peak_mb']:.0f} MB vs {s['monai_peak_mb']:.0f} MB)",
                     verdict(s["peak_ratio"] is not None and s["peak_ratio"] <= 0.4, "space")])
        rows.append(["compute efficiency of the search iteration vs dense conv3d", "≥ 50%",
                     f"{100 * s['ours_efficiency']:.0f}% (MONAI {100 * s['monai_efficiency']:.0f}%)",
                     verdict(s["ours_efficiency"] >= 0.5, "space")])
        f = _get(res, "space", "search", "b12_fwd_bwd")
        if f:  # the measure the goals' baselines were stated for
            ratios = (f["time_ratio"], f["peak_ratio"])
            ok = None if None in ratios else ratios[0] <= 0.33 and ratios[1] <= 0.4
            rows.append(["the same, supernet forward+backward only: time, memory", "≤ 0.33×, ≤ 0.4×",
                         f"{f['time_ratio']}×, {f['peak_ratio']}×", verdict(ok, "space")])
    else:
        rows += [["search iteration time vs MONAI", "≤ 0.33×", None, "no figure"],
                 ["search iteration peak memory vs MONAI", "≤ 0.4×", None, "no figure"],
                 ["compute efficiency vs dense conv3d", "≥ 50%", None, "no figure"]]
    cases = _get(res, "discrete", "cases") or {}
    for key, what in (("train_speedup", "discrete-network training faster than MONAI"),
                      ("infer_speedup", "sliding-window inference faster than MONAI")):
        speedups = [c[key] for c in cases.values() if c.get(key) is not None]
        measured = ", ".join(f"{c[key]}× ({name})" for name, c in cases.items() if c.get(key) is not None) or None
        rows.append([f"{what} (same architecture)", "> 1× on every architecture", measured,
                     verdict(all(v > 1 for v in speedups) if speedups else None, "discrete")])
    for bench, where in (("memory", "CPU, saved tensors"), ("gpu", "GPU, max_memory_allocated")):
        m = _get(res, "gpu", "memory_predictor") if bench == "gpu" else res.get("memory")
        if bench == "gpu" and m is None:
            continue
        for part in ("activations", "total"):
            st = _get(m or {}, part)
            archs = (m or {}).get("archs") or "≥ 20"
            rows.append([f"memory predictor, {part} ({where}, {archs} architectures)",
                         "Spearman ≥ 0.95, median rel. error ≤ 15%",
                         None if st is None else f"{st['spearman']:.3f}, {st['median_rel_error']:.1%}",
                         verdict(None if st is None else st["spearman"] >= 0.95 and st["median_rel_error"] <= 0.15,
                                 bench)])
    d = res.get("demo")
    after, dice = _get(res, "demo", "after_setup_s"), _get(res, "demo", "mean_val_dice")
    rows.append(["scripts/demo.sh wall time after set-up", "≤ 5 min",
                 None if after is None else f"{after:.0f} s ({after / 60:.1f} min)",
                 verdict(None if after is None else after <= 300, "demo")])
    rows.append(["demo mean validation Dice", "≥ 0.82", None if dice is None else f"{dice:.4f}",
                 verdict(None if dice is None else dice >= 0.82, "demo")])
    if d and d.get("setup_s") is None and after is not None:
        rows[-2][2] += " (from the stage logs: process start-ups partly unseen)"
    return rows


# ---------------------------------------------------------------------------------------------- page
#: What the page says of a benchmark it has no result of, when that is not for want of running it.
NOT_MEASURED = {"gpu": "not measured: no GPU was available when this page was made"}


def render(res: dict[str, dict], sources: dict[str, str], notes: str, notes_name: str) -> str:
    """The page's Markdown (``notes``: the text of the file ``notes_name``)."""
    out = ["# Benchmarks", "",
           "Generated by `python scripts/make_benchmarks_doc.py` from the benchmark scripts' results; do "
           f"not edit by hand — the prose on limits lives in `{notes_name}`. Ours and MONAI's DiNTS "
           "(`monai.networks.nets.DiNTS` over `TopologySearch` / `TopologyInstance`) are measured side by side in "
           "the same run, each measurement in a fresh process where peak memory matters, alternating between the "
           "two. Every table names the machine, threads, versions, date and commit it was measured with.", "",
           "One command each:", ""]
    out += [f"- `{cmd}` — {name}" + (f" (this page: {sources[name]})" if name in sources else
                                     f" ({NOT_MEASURED[name]})" if name in NOT_MEASURED else " (not in this page)")
            for name, (_, _, cmd) in BENCHES.items()]
    out += ["- `python scripts/make_benchmarks_doc.py` — all CPU benchmarks, then this page "
            "(`--from docs/bench-results/*.json FILE...` rewrites it from saved results, e.g. to merge a GPU run)",
            "", "## Goals", "",
            "The project's speed and memory goals for this machine, computed from the figures below.", "",
            table(["goal", "target", "measured", "verdict"], goals(res)), "",
            "## What limits the goals not met", "", notes.strip(), ""]
    tables = {name: BENCHES[name][1](r) for name, r in res.items() if name in BENCHES}
    for heading, bench, title in SECTIONS:
        text = tables.get(bench, {}).get(title)
        if text is None and bench == "gpu" and title != "GPU":
            continue  # optional GPU parts
        out += [f"## {heading}", ""]
        if text is None:
            out += [f"_{NOT_MEASURED[bench][0].upper()}{NOT_MEASURED[bench][1:]}._" if bench in NOT_MEASURED else
                    f"_No result yet: run `{BENCHES[bench][2]}`._", ""]
            continue
        out += [env_line(res[bench]["env"]), "", text, ""]
    others = {name: r for name, r in res.items() if name not in BENCHES}
    for name, r in others.items():
        out += [f"## Other result: {name}", "", f"From {sources[name]}.", "",
                flat_table({k: v for k, v in r.items() if k != "env"}), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", nargs="*", choices=CPU_BENCHES, default=None,
                   help="benchmarks to run now (default: all CPU ones, or none with --from)")
    p.add_argument("--from", dest="sources", nargs="+", default=None, metavar="FILE",
                   help="saved results (JSON files or logs) instead of those in --results")
    p.add_argument("--results", default=str(ROOT / "docs" / "bench-results"),
                   help="folder of saved results; runs are saved here")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="the page to write")
    p.add_argument("--notes", default=str(ROOT / "docs" / "benchmarks-notes.md"),
                   help="Markdown on what limits the goals not met, copied into the page")
    p.add_argument("--demo_work", default=None, help="a finished demo's WORK_ROOT: bench_demo.py reads it instead "
                                                     "of running the demo")
    p.add_argument("--tiny", action="store_true", help="run the benchmarks at tiny sizes (a check, not figures)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the runs (default: the scripts' 2)")
    a = p.parse_args(argv)
    results = Path(a.results)
    files = [Path(f) for f in a.sources] if a.sources is not None else sorted(results.glob("*.json"))
    res: dict[str, dict] = {}
    sources: dict[str, str] = {}
    for f in files:
        r = read_result(f)
        name = r.get("bench", f.stem)
        res[name], sources[name] = r, f.name
    for name in a.run if a.run is not None else ([] if a.sources is not None else list(CPU_BENCHES)):
        extra = (["--tiny"] if a.tiny else []) + ([] if a.threads is None else ["--threads", str(a.threads)])
        if name == "demo":
            if a.demo_work:
                extra = ["--from_work", a.demo_work]
            elif a.tiny:
                print("(demo skipped with --tiny: it has no tiny size; --demo_work reads a finished one)")
                continue
        res[name], sources[name] = run_bench(name, extra, results), f"run now, saved as {name}.json"
    notes_path = Path(a.notes).resolve()
    notes_name = str(notes_path.relative_to(ROOT)) if notes_path.is_relative_to(ROOT) else str(notes_path)
    notes = notes_path.read_text() if notes_path.is_file() else NOTES_PLACEHOLDER.format(path=notes_name)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(res, sources, notes, notes_name))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
