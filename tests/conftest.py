"""Shared fixtures: a small generated demo task and a helper that resolves stage options for it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
sys.path.insert(0, str(ROOT))

from scripts.make_demo_task import make_task  # noqa: E402


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A data root holding ``Task99_Demo`` with 10 training cases and 2 test images (read-only for tests)."""
    root = tmp_path_factory.mktemp("data")
    make_task(root / "Task99_Demo", cases=10, test=2, seed=0)
    return root


@pytest.fixture()
def demo_copy(demo_root, tmp_path) -> Path:
    """A private copy of the demo task that a test may break; returns its data root."""
    root = tmp_path / "data"
    shutil.copytree(demo_root / "Task99_Demo", root / "Task99_Demo")
    return root


@pytest.fixture()
def tiny_args(demo_root, tmp_path):
    """Command-line arguments for the tiny preset on the demo task, with a private work folder."""

    def make(*extra: str, data_root: Path | None = None, work: Path | None = None) -> list[str]:
        return ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data_root", str(data_root or demo_root),
                "--task", "Task99_Demo", "--work_root", str(work or tmp_path / "work"), *extra]

    return make
