"""Nothing a user loads can run code: a checkpoint, a run's latest.pt or best.pt, an architecture file or a model
folder's weights crafted with a ``__reduce__`` payload is refused in one line (exit 2), and the payload's marker file
does not exist afterwards. (docs/reliability.md, "Loading files from others".)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import payload, stages
from helpers.stages import FAST, RUN, TASK, TINY

pytestmark = pytest.mark.slow  # a short search and retraining first, then each stage in this process


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("trained")
    base = stages.tiny_base(demo_root, work)
    stages.module("search").main(base)
    stages.module("retrain").main(base)
    from dints.run import lock

    lock.release_all()
    return work


def _refused(script: str, argv: list[str], marker: Path, capfd, what: str) -> str:
    r = stages.run(script, argv, capfd)
    line = r.error_lines[0] if r.error_lines else ""
    print(f"PAYLOAD| {what} -> exit {r.code}: {line}; marker {'EXISTS' if marker.exists() else 'absent'}")
    assert r.code == 2 and len(r.error_lines) == 1 and "Traceback" not in r.err, r.err[-3000:]
    assert not marker.exists(), f"the payload ran: {what}"
    return line


def _args(demo_root: Path, work: Path, *extra: str) -> list[str]:
    return ["--config", TINY, "--data_root", str(demo_root), "--task", TASK, "--work_root", str(work), *FAST, *extra]


def test_a_crafted_checkpoint_given_to_test_is_refused(trained, demo_root, tmp_path, capfd):
    marker = tmp_path / "ran"
    evil = payload.write(tmp_path / "evil.pt", marker)
    line = _refused("test", _args(demo_root, trained, "--split", "val", "--checkpoint", str(evil)), marker, capfd,
                    "--checkpoint evil.pt (test.py --split val)")
    assert "evil.pt holds objects a weights-only load refuses (posix.system)" in line


def test_a_crafted_latest_pt_is_not_resumed(trained, demo_root, tmp_path, capfd):
    marker = tmp_path / "ran"
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    fold = work / RUN / "retrain-fold0"
    (fold / "summary.json").unlink()
    payload.write(fold / "latest.pt", marker)
    line = _refused("retrain", _args(demo_root, work), marker, capfd, "a run's latest.pt (retrain.py resuming)")
    assert "latest.pt holds objects a weights-only load refuses (posix.system)" in line and "--resume no" in line


def test_a_crafted_best_pt_is_not_exported(trained, demo_root, tmp_path, capfd):
    marker = tmp_path / "ran"
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    payload.write(work / RUN / "retrain-fold0" / "best.pt", marker)
    line = _refused("scripts/export_model", _args(demo_root, work, "--folds", "0", "--out", str(tmp_path / "model")),
                    marker, capfd, "a fold's best.pt (export_model.py)")
    assert "best.pt holds objects a weights-only load refuses (posix.system)" in line
    assert not (tmp_path / "model").exists()


def test_a_crafted_arch_file_is_refused(trained, demo_root, tmp_path, capfd):
    marker = tmp_path / "ran"
    evil = payload.write(tmp_path / "evil.pth", marker, around={"node_a": [[1]]})
    line = _refused("retrain", _args(demo_root, trained, "--fold", "1", "--arch", str(evil)), marker, capfd,
                    "--arch evil.pth (retrain.py)")
    assert "evil.pth: holds objects a weights-only load refuses (posix.system): not an arch-code file" in line
