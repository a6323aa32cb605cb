#!/usr/bin/env python
"""What the benchmark scripts (``scripts/bench_*.py``) share: the workloads, built the same way for ours and for
MONAI's DiNTS, each measured in a fresh process; and the environment line, tables and final JSON line they print.

    python scripts/benchkit.py worker '<spec as JSON>'   # one measurement in this process, one JSON line out

A workload is a JSON spec, so a script can run it in a fresh interpreter where peak memory belongs to one
implementation only. Its ``kind``:

- ``search``: one search iteration as ``code/search.py`` takes it. Ours: (path sampling when ``use_max`` is 0,) the
  :class:`dints.train.architect.Architect`'s weight step and architecture step. MONAI's, as
  its DiNTS tutorial (``search_dints.py``) does it: ``DiNTS`` + ``TopologySearch``, an SGD step on the weights, then
  an Adam step on ``log_alpha_a``/``log_alpha_c`` on the segmentation loss plus entropy, memory
  (``get_ram_cost_usage``) and topology (``get_topology_entropy``) losses. Same loss (``DiceCELoss`` as the
  authors set it), optimisers and inputs; ``flops`` also counts the step's floating-point operations
  (``torch.utils.flop_counter``).
- ``supernet``: one forward + backward of the one-shot supernet (segmentation loss, every parameter's gradient,
  no optimiser step): the "search step" the speed goals state their baselines (and 179 GFLOP) for.
- ``train``: one retraining iteration of a discrete network (forward, loss, backward, SGD step) of the same
  architecture: ours :class:`dints.space.network.DiscreteNet`, MONAI's ``TopologyInstance`` + ``DiNTS``.
- ``infer``: sliding-window inference of one volume (:func:`dints.evaluate.inference.predict_volume`: MONAI's
  ``sliding_window_inference``, Gaussian blending, softmax), same settings for both networks.
- ``dense``: a dense ``conv3d`` (64 -> 64 channels, 3^3 kernel, 1 x 64 x 32^3, forward + backward): the machine's
  reference throughput for the compute efficiency.

Sizes come from a preset (``configs/<preset>.yaml``) and extra command-line ``options``, resolved by
``code/config.py`` for the stage, so a workload is exactly what that stage would run.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT / "code"
for _p in (str(CODE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

IMPLS = ("ours", "monai")


# ---------------------------------------------------------------------------------------------- environment
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=10"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment(threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Machine, threads, versions, date and commit: recorded with every table."""
    import torch

    try:
        import monai

        monai_version = monai.__version__
    except ImportError:
        monai_version = None
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_model()}, {len(os.sched_getaffinity(0))} cores, {platform.system()} {platform.machine()}",
        "threads": threads if threads is not None else torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai_version,
        "commit": _git_commit(),
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def env_line(env: dict[str, Any]) -> str:
    """One line naming where and with what a table was measured."""
    where = env.get("gpu") or env["machine"]
    if env.get("gpu"):
        where += f" (host: {env['machine']})"
    return (f"Measured {env['date']} on {where}; {env['threads']} CPU thread(s); Python {env['python']}, "
            f"torch {env['torch']}, MONAI {env['monai']}; commit {env['commit']}.")


# ---------------------------------------------------------------------------------------------- output
def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (``None`` cells print as an em dash)."""
    def cell(v: Any) -> str:
        return "—" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def flat_table(data: dict[str, Any]) -> str:
    """A two-column Markdown table of every number, string and boolean in ``data`` (nested keys joined by dots;
    lists of at most 8 scalars shown inline): for results whose layout this code does not know."""
    rows: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list):
            if len(value) <= 8 and all(not isinstance(v, (dict, list)) for v in value):
                rows.append((prefix, ", ".join(map(str, value))))
        else:
            rows.append((prefix, value))

    walk("", data)
    return table(["figure", "value"], rows)


def fmt(value: float | None, spec: str = ".3f", unit: str = "") -> str | None:
    """``value`` formatted, or None (a missing figure)."""
    return None if value is None else f"{value:{spec}}{unit}"


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded to 3 decimals, None when either is missing or ``b`` is 0."""
    return None if a is None or not b else round(a / b, 3)


def finish(bench: str, env: dict[str, Any], results: dict[str, Any], tables: dict[str, str]) -> dict[str, Any]:
    """Print the environment line and the tables (by section title), then the final JSON line
    ``{"bench", "env", **results}``."""
    print("\n" + env_line(env) + "\n")
    for title, text in tables.items():
        print(f"{title}: {text}\n")
    out = {"bench": bench, "env": env, **results}
    print(json.dumps(out))
    return out


def last_json_line(text: str) -> dict[str, Any]:
    """The last line of ``text`` that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON line in the output")


# ---------------------------------------------------------------------------------------------- fresh processes
def measure(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one workload in a fresh interpreter with ``spec["threads"]`` threads; its result dict.

    Raises:
        SystemExit: the worker failed (its stderr's tail in the message).
    """
    threads = str(spec.get("threads", 1))
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    try:
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "worker", json.dumps(spec)],
                             capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{spec['kind']} {spec.get('impl', '')}: no result within {timeout} s") from None
    if out.returncode:
        raise SystemExit(f"{spec['kind']} {spec.get('impl', '')} failed:\n{out.stderr[-3000:]}")
    return last_json_line(out.stdout)


def alternate(specs: dict[str, dict[str, Any]], rounds: int, label: str = "") -> dict[str, dict[str, Any]]:
    """Measure each named spec once per round in fresh processes, alternating their order round by round so that
    they share the machine's noise. A spec's FLOPs (``"flops": true``) are counted in the first round only.

    Returns:
        ``{name: {"s": the least median time of the rounds, "peak_mb": the least peak, "rounds": [each round's
        result]}}``.
    """
    names = list(specs)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            m = measure(dict(specs[n], flops=bool(specs[n].get("flops")) and r == 0))
            runs[n].append(m)
            print(f"  {label}{n}: {m['median_s']:.3f} s (median of {len(m['times'])}), peak {m['peak_mb']:.0f} MB",
                  flush=True)
    return {n: {"s": min(m["median_s"] for m in ms), "peak_mb": min(m["peak_mb"] for m in ms), "rounds": ms}
            for n, ms in runs.items()}


# ---------------------------------------------------------------------------------------------- workloads
def stage_options(preset: str, stage: str, options: Sequence[str] = ()):
    """The options ``code/<stage>.py`` would resolve from ``configs/<preset>.yaml`` plus ``options`` (no data is read:
    the task is only a name here)."""
    from config import load_config

    return load_config(["--config", str(ROOT / "configs" / f"{preset}.yaml"), "--task", "Benchmark", *options], stage)


def random_batch(cfg, device, generator) -> dict[str, Any]:
    """A batch as the training loader gives it: ``image`` (N, C, *patch) float, ``label`` (N, 1, *patch) class ids."""
    import torch

    shape = (cfg.batch_size * cfg.num_samples, cfg.in_channels, *cfg.patch_size)
    x = torch.randn(shape, generator=generator)
    y = torch.randint(0, cfg.num_classes, (shape[0], 1, *shape[2:]), generator=generator).float()
    return {"image": x.to(device), "label": y.to(device)}


def benchmark_arch(spec: dict[str, Any]):
    """The architecture a ``train``/``infer`` spec names: ``arch_file`` (arch.json or MONAI .pth), else the decode
    of seeded random logits (``arch_seed``) at the preset's blocks and levels, as that preset's search records it."""
    import torch

    from dints.space.archfile import Arch
    from dints.space.decode import decode
    from dints.space.archfile import read_arch
    from dints.space.topology import num_paths

    if spec.get("arch_file"):
        return read_arch(spec["arch_file"])
    search = stage_options(spec["preset"], "search", spec.get("search_options", ()))
    p = num_paths(search.levels)
    g = torch.Generator().manual_seed(int(spec.get("arch_seed", 0)))
    d = decode(torch.randn(search.blocks, p, generator=g), torch.randn(search.blocks, p, 5, generator=g))
    return Arch.from_decoded(d, opset=1, use_downsample=bool(search.use_downsample), channel_mul=search.channel_mul)


def _quiet():  # MONAI's DiNTS constructors print
    return contextlib.redirect_stdout(io.StringIO())


def monai_supernet(cfg, device):
    """MONAI's one-shot supernet, ``DiNTS`` over ``TopologySearch``, at the search options ``cfg``."""
    from monai.networks.nets import DiNTS, TopologySearch

    with _quiet():
        space = TopologySearch(channel_mul=cfg.channel_mul, num_blocks=cfg.blocks, num_depths=cfg.levels,
                               use_downsample=bool(cfg.use_downsample), device=str(device))
    return DiNTS(space, cfg.in_channels, cfg.num_classes, use_downsample=bool(cfg.use_downsample)).to(device), space


def monai_discrete(arch, in_channels: int, num_classes: int, channel_mul: float, device):
    """MONAI's discrete network of ``arch``: ``DiNTS`` over ``TopologyInstance``."""
    import torch
    from monai.networks.nets import DiNTS, TopologyInstance

    from dints.space.archfile import monai_arch_codes

    codes = monai_arch_codes(arch)
    with _quiet():
        space = TopologyInstance(channel_mul=channel_mul, num_blocks=arch.num_blocks, num_depths=arch.num_depths,
                                 use_downsample=arch.use_downsample, device=str(device),
                                 arch_code=[codes["arch_code_a"], codes["arch_code_c"]])
    return DiNTS(space, in_channels, num_classes, use_downsample=arch.use_downsample,
                 node_a=torch.as_tensor(codes["node_a"])).to(device)


def search_step(spec: dict[str, Any], device) -> Callable[[], None]:
    """One search iteration (see the module docstring) at ``spec``'s preset and options."""
    import torch

    cfg = stage_options(spec["preset"], "search", spec.get("options", ()))
    use_max = bool(spec.get("use_max", cfg.use_max))
    amp = bool(spec.get("amp", False)) and device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    w_batch, a_batch = random_batch(cfg, device, g), random_batch(cfg, device, g)
    it = cfg.warmup_iters  # the first iteration with an architecture step: every term is computed

    if spec["impl"] == "ours":
        from dints.run.settings import SearchSettings
        from dints.space.supernet import SuperNet
        from dints.train.architect import Architect

        net = SuperNet(cfg.in_channels, cfg.num_classes, cfg.blocks, cfg.levels, cfg.channel_mul, cfg.opset,
                       cfg.cellop, bool(cfg.use_downsample), recompute=bool(cfg.recompute)).to(device)
        arch = Architect(net, SearchSettings.from_options(cfg, use_max=int(use_max)), 1, amp)
        path_gen = torch.Generator().manual_seed(cfg.seed + 7)
        net.train()

        def step() -> None:
            if not use_max:
                net.sample_paths(int(spec.get("path_num", cfg.path_num)), path_gen, tau=arch.tau(it))
            arch.weight_step(w_batch, it, device)
            arch.arch_step(a_batch, it, device)

        return step

    if not use_max:
        raise ValueError("MONAI's DiNTS searches one-shot only (use_max 1)")
    import torch.nn.functional as F

    from dints.train.losses import seg_loss_fn

    model, space = monai_supernet(cfg, device)
    alphas = [space.log_alpha_a, space.log_alpha_c]
    weights = [p for p in model.parameters() if all(p is not a for a in alphas)]
    opt_w = torch.optim.SGD(weights, lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt_a = torch.optim.Adam([space.log_alpha_a], lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=0.0)
    opt_c = torch.optim.Adam([space.log_alpha_c], lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=0.0)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = seg_loss_fn()
    model.train()

    def forward_loss(batch) -> torch.Tensor:
        with torch.autocast(device.type, enabled=amp):
            out = model(batch["image"])
        return loss_fn(out.float(), batch["label"])

    def step() -> None:
        for p in weights:
            p.requires_grad_(True)
        for a in alphas:
            a.requires_grad_(False)
        scaler.scale(forward_loss(w_batch)).backward()
        scaler.step(opt_w)
        scaler.update()
        opt_w.zero_grad(set_to_none=True)

        for p in weights:
            p.requires_grad_(False)
        for a in alphas:
            a.requires_grad_(True)
        probs_a, _ = space.get_prob_a(child=True)
        entropy_a = -(probs_a * torch.log(probs_a + 1e-5)).mean()
        entropy_c = -(F.softmax(space.log_alpha_c, dim=-1) * F.log_softmax(space.log_alpha_c, dim=-1)).mean()
        topology = space.get_topology_entropy(probs_a)
        shape = a_batch["image"].shape
        ram = torch.abs(cfg.mem - space.get_ram_cost_usage(shape) / space.get_ram_cost_usage(shape, full=True))
        loss = forward_loss(a_batch) + (entropy_a + entropy_c) + ram + cfg.topology_weight * topology
        scaler.scale(loss).backward()
        scaler.step(opt_a)
        scaler.step(opt_c)
        scaler.update()
        opt_a.zero_grad(set_to_none=True)
        opt_c.zero_grad(set_to_none=True)

    return step


def supernet_step(spec: dict[str, Any], device) -> Callable[[], None]:
    """One forward + backward of the one-shot supernet at ``spec``'s preset and options (see the module docstring)."""
    import torch

    from dints.space.supernet import SuperNet
    from dints.train.losses import seg_loss_fn

    cfg = stage_options(spec["preset"], "search", spec.get("options", ()))
    if spec["impl"] == "ours":  # its forward runs one-shot (use_max) by default
        net = SuperNet(cfg.in_channels, cfg.num_classes, cfg.blocks, cfg.levels, cfg.channel_mul, cfg.opset,
                       cfg.cellop, bool(cfg.use_downsample), recompute=bool(cfg.recompute)).to(device)
    else:
        net, _ = monai_supernet(cfg, device)
    batch = random_batch(cfg, device, torch.Generator().manual_seed(0))
    loss_fn = seg_loss_fn()
    net.train()

    def step() -> None:
        loss_fn(net(batch["image"]), batch["label"]).backward()
        net.zero_grad(set_to_none=True)

    return step


def _discrete(spec: dict[str, Any], stage: str, device):
    from dints.space.network import DiscreteNet, retrain_channel_mul

    cfg = stage_options(spec["preset"], stage, spec.get("options", ()))
    arch = benchmark_arch(spec)
    mul = retrain_channel_mul(cfg.channel_mul, arch)
    if spec["impl"] == "ours":
        net = DiscreteNet(arch, cfg.in_channels, cfg.num_classes, mul).to(device)
    else:
        net = monai_discrete(arch, cfg.in_channels, cfg.num_classes, mul, device)
    return cfg, net


def train_step(spec: dict[str, Any], device) -> Callable[[], None]:
    """One retraining iteration of the discrete network: ours as ``code/retrain.py`` takes it (autocast, loss,
    :func:`dints.train.optim.optimise`: backward, clipping, SGD step), MONAI's as its tutorial's
    ``train_dints.py`` does (autocast, loss, backward, SGD step)."""
    import torch

    from dints.train.losses import seg_loss_fn
    from dints.train.optim import optimise

    cfg, net = _discrete(spec, "retrain", device)
    amp = bool(spec.get("amp", False)) and device.type == "cuda"
    params = list(net.parameters())
    opt = torch.optim.SGD(params, lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = seg_loss_fn()
    batch = random_batch(cfg, device, torch.Generator().manual_seed(0))
    net.train()

    def step() -> None:
        with torch.autocast(device.type, enabled=amp):
            logits = net(batch["image"])
        loss = loss_fn(logits.float(), batch["label"])
        if spec["impl"] == "ours":
            optimise(loss, opt, scaler, params, cfg.grad_clip)
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)

    return step


def infer_step(spec: dict[str, Any], device) -> Callable[[], None]:
    """Sliding-window inference of one random volume of size ``spec["volume"]`` (the test stage's settings)."""
    import torch

    from dints.evaluate.inference import predict_volume
    from dints.run.settings import InferSettings

    cfg, net = _discrete(spec, "test", device)
    amp = bool(spec.get("amp", False)) and device.type == "cuda"
    infer = InferSettings.from_options(cfg, tta=False, amp=amp)
    g = torch.Generator().manual_seed(0)
    image = torch.randn((1, cfg.in_channels, *spec["volume"]), generator=g).to(device)
    net.eval()

    def step() -> None:
        predict_volume(net, image, infer)

    return step


def dense_step(spec: dict[str, Any], device) -> Callable[[], None]:
    """A dense ``conv3d``: 64 -> 64 channels, 3^3 kernel, padding 1, input 1 x 64 x 32^3, forward + backward."""
    import torch

    side = int(spec.get("side", 32))
    conv = torch.nn.Conv3d(64, 64, 3, padding=1, bias=False).to(device)
    x = torch.randn(1, 64, side, side, side, device=device, requires_grad=True)
    grad = torch.randn(1, 64, side, side, side, device=device)

    def step() -> None:
        conv(x).backward(grad)
        conv.weight.grad = x.grad = None

    return step


BUILDERS = {"search": search_step, "supernet": supernet_step, "train": train_step, "infer": infer_step,
            "dense": dense_step}


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``; ``ru_maxrss`` would start at the launching process's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build ``spec``'s workload here, run ``warmup`` untimed and ``repeats`` timed iterations.

    Returns:
        ``times`` (seconds per iteration), ``median_s``, ``best_s``, ``peak_rss_mb`` (the process's peak resident
        set); ``peak_mb``: on the CPU the peak resident set minus the resident set before the first iteration (what
        the iterations add: activations, gradients, optimiser state), on CUDA ``torch.cuda.max_memory_allocated``
        (everything allocated, weights included); ``flops`` when ``spec["flops"]`` (one more iteration under
        ``FlopCounterMode``, after the timing and the peak).
    """
    import torch

    torch.set_num_threads(int(spec.get("threads", 1)))
    torch.manual_seed(0)
    device = torch.device(spec.get("device", "cpu"))
    cuda = device.type == "cuda"
    step = BUILDERS[spec["kind"]](spec, device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    before = _rss_mb()
    for _ in range(int(spec.get("warmup", 1))):
        step()
    sync()
    times = []
    for _ in range(int(spec.get("repeats", 3))):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    peak_rss = _peak_rss_mb()
    out: dict[str, Any] = {"times": [round(t, 5) for t in times], "median_s": statistics.median(times),
                           "best_s": min(times), "peak_rss_mb": round(peak_rss, 1),
                           "peak_mb": round(peak_rss - before, 1)}
    if cuda:
        out["peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if spec.get("flops"):
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step()
        out["flops"] = int(counter.get_total_flops())
    return out


def main(argv: list[str] | None = None) -> None:
    """``benchkit.py worker SPEC``: one measurement in this process, printed as one JSON line (the bench scripts
    start it in a fresh interpreter)."""
    import argparse

    p = argparse.ArgumentParser(prog="benchkit.py", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["worker"], help="worker: run one workload in this process")
    p.add_argument("spec", help="the workload as JSON (see the module docstring for its kinds)")
    a = p.parse_args(argv)
    print(json.dumps(run_worker(json.loads(a.spec))))


if __name__ == "__main__":
    main()
