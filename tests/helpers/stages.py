"""Run a stage's command line in this process, as a user would see it: through ``cli_main``, with its exit status
and what it printed on stderr. Faster than a subprocess (no second import of torch and MONAI) and the same code
path: ``cli_main`` is what turns errors into one line."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--blocks", "2", "--levels", "2", "--patch_size", "16", "16", "16", "--spacing", "4", "4", "4",
        "--channel_mul", "0.25", "--path_num", "3", "--iters", "8", "--warmup_iters", "4", "--val_interval", "4",
        "--ckpt_interval", "2", "--sw_batch_size", "8"]
TASK = "Task99_Demo"
#: The run folder of the default budget (0.8), spelled by hand.
RUN = f"search-bilevel-ent-mem0.8-{TASK}"
TINY = str(ROOT / "configs" / "tiny.yaml")
_modules: dict[str, object] = {}


def tiny_base(demo_root: Path, work: Path) -> list[str]:
    """The options of a test's in-process stage calls: the tiny preset made faster (FAST), the demo task, ``work``."""
    return ["--config", TINY, "--data_root", str(demo_root), "--task", TASK, "--work_root", str(work), *FAST]


def module(script: str):
    """``code/<script>.py`` (or ``<script>.py`` when it names a folder, e.g. ``scripts/export_model``) as a module,
    loaded once, under a name that cannot clash with ``test``."""
    if script not in _modules:
        path = ROOT / f"{script}.py" if "/" in script else ROOT / "code" / f"{script}.py"
        spec = importlib.util.spec_from_file_location(f"stage_{script.replace('/', '_')}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _modules[script] = mod
    return _modules[script]


@dataclass
class Result:
    code: int
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def run(script: str, argv: list[str], capfd, env: dict[str, str] | None = None) -> Result:
    """Run ``code/<script>.py argv`` through ``cli_main``; returns the exit status and stderr."""
    from dints.pipeline.cli import cli_main
    from dints.run import faults

    mod = module(script)
    old_argv, old_env = sys.argv, dict(os.environ)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    sys.argv = [f"{Path(script).name}.py", *argv]
    os.environ.update(env or {})
    capfd.readouterr()
    faults._counts.clear()
    code = 0
    try:
        cli_main(lambda: mod.main(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)
        for s, h in handlers.items():
            signal.signal(s, h)
    return Result(code, capfd.readouterr().err)
