"""Every entry point under code/ and every Python script under scripts/ prints its own usage on --help and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = sorted([*(ROOT / "code").glob("*.py"), ROOT / "code" / "main.sh", *(ROOT / "scripts").glob("*.py")])


@pytest.mark.slow
@pytest.mark.parametrize("path", ENTRY_POINTS, ids=[p.relative_to(ROOT).as_posix() for p in ENTRY_POINTS])
def test_help_prints_its_own_usage_and_exits_0(path):
    cmd = ["bash", str(path)] if path.suffix == ".sh" else [sys.executable, str(path)]
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    first = r.stdout.splitlines()[0] if r.stdout else ""
    print(f"{path.relative_to(ROOT)} --help -> exit {r.returncode}: {first}")
    assert r.returncode == 0, r.stdout[-1000:] + r.stderr[-2000:]
    assert first.startswith("usage:") and path.name in first, first
