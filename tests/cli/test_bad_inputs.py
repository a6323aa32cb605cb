"""The catalogue of bad inputs (docs/reliability.md): each malformed input, the one line it must produce, and proof
that the finished run beside it is untouched.

A finished tiny run (search, retrain fold 0, stages 3-6) is made once. Each case breaks one input — in a private
copy of the data, a scratch file, or an option — runs one stage as a user would (through ``cli_main``) and checks:
a non-zero exit status, exactly one ``error:`` line matching the expected words, no traceback, and every file of
the run (outside its logs, which record the attempt, and its lock) byte-for-byte as before.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
import torch

from helpers import stages
from helpers.stages import FAST, ROOT, RUN, TASK, TINY

pytestmark = pytest.mark.slow  # runs every stage in-process: about a minute


@pytest.fixture(scope="module")
def finished(demo_root, tmp_path_factory) -> Path:
    """A work root holding a finished run: search, fold 0 retrained, validated and inferred, fused, resampled."""
    work = tmp_path_factory.mktemp("finished")
    base = stages.tiny_base(demo_root, work)
    stages.module("search").main(base)
    stages.module("retrain").main(base)
    stages.module("test").main([*base, "--split", "val"])
    stages.module("test").main([*base, "--split", "test"])
    stages.module("fuse").main([*base, "--folds", "0"])
    stages.module("fuse").main([*base, "--folds", "0", "--resample", "1"])
    from dints.run import lock

    lock.release_all()
    assert (work / RUN / "final_summary.json").is_file()
    return work


def snapshot(work: Path) -> dict[str, bytes]:
    """Every file of the run and the task's splits, by content (logs and the lock excepted)."""
    out = {}
    for p in sorted([*(work / RUN).rglob("*"), work / TASK / "splits.json"]):
        if p.is_file() and p.suffix != ".log" and p.name != ".lock":
            out[str(p.relative_to(work))] = p.read_bytes()
    return out


@dataclass
class Env:
    """What a case may break: a private copy of the data, scratch space, the finished run."""

    data: Path  # data root (a private copy when the case breaks data)
    work: Path  # the finished run's work root
    tmp: Path  # scratch
    demo_root: Path

    @property
    def task(self) -> Path:
        return self.data / TASK

    def dataset(self) -> dict:
        return json.loads((self.task / "dataset.json").read_text())

    def write_dataset(self, d: dict) -> None:
        (self.task / "dataset.json").write_text(json.dumps(d))

    def image(self, i: int = 0, split: str = "Tr") -> Path:
        return self.task / f"images{split}" / sorted(p.name for p in (self.task / f"images{split}").iterdir())[i]

    def label(self, i: int = 0) -> Path:
        return self.task / "labelsTr" / self.image(i).name

    def rewrite(self, path: Path, fn: Callable[[np.ndarray], np.ndarray], affine=None) -> None:
        img = nib.load(str(path))
        arr = fn(np.asarray(img.dataobj))
        out = nib.Nifti1Image(arr, img.affine if affine is None else affine)
        out.set_data_dtype(arr.dtype)
        nib.save(out, str(path))

    def unwritable(self) -> Path:
        """A folder this process cannot write: read-only by its mode, or (as root, who ignores modes) /sys."""
        folder = self.tmp / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        for candidate in (folder, Path("/sys/dints-unwritable")):
            try:
                (candidate / "probe").mkdir(parents=True)
            except OSError:
                return candidate
            shutil.rmtree(candidate / "probe")
        pytest.skip("no folder here refuses writes")

    def file(self, name: str, content: str | bytes) -> Path:
        p = self.tmp / name
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        return p

    def arch(self, **change) -> Path:
        d = json.loads((self.work / RUN / "arch.json").read_text())
        d.update(change)
        return self.file("arch.json", json.dumps(d))

    def run_with_another_arch(self) -> Path:
        """A scratch work root whose search run has another arch.json but the finished fold 0's latest.pt (a search
        redone with other options after a retraining started)."""
        work = self.tmp / "other"
        (work / TASK).mkdir(parents=True)
        shutil.copy(self.work / TASK / "splits.json", work / TASK / "splits.json")
        (work / RUN / "retrain-fold0").mkdir(parents=True)
        shutil.copy(self.work / RUN / "retrain-fold0" / "latest.pt", work / RUN / "retrain-fold0" / "latest.pt")
        d = json.loads((self.work / RUN / "arch.json").read_text())
        d["arch_code_c"] = [[1, 1, 1, 1], [1, 1, 1, 1]]
        (work / RUN / "arch.json").write_text(json.dumps(d))
        return work

    def best(self) -> dict:
        return torch.load(self.work / RUN / "retrain-fold0" / "best.pt", weights_only=True)

    def model_of(self, **counts) -> dict:
        """best.pt as if trained on a task with other channel/class counts (a consistent checkpoint)."""
        from dints.space.archfile import Arch
        from dints.space.network import DiscreteNet

        state = {**self.best(), **counts}
        net = DiscreteNet(Arch.from_dict(state["arch"]), state["in_channels"], state["num_classes"],
                            state["channel_mul"])
        return {**state, "model": net.state_dict()}


@dataclass
class Case:
    id: str
    script: str  # search, retrain, test, fuse
    words: str  # a regular expression the error line must match
    setup: Callable[[Env], list[str]] = lambda e: []  # breaks something; returns extra arguments
    data: bool = False  # the case breaks the data: give it a private copy
    env: dict | None = None


def _args(*a):
    return lambda e: list(a)


CASES = [
    # ---------------------------------------------------------------- dataset.json and NIfTI files
    Case("dataset.json missing", "search", r"dataset\.json does not exist",
         lambda e: (e.task / "dataset.json").unlink() or [], data=True),
    Case("dataset.json not JSON", "search", r"dataset\.json: not valid JSON",
         lambda e: (e.task / "dataset.json").write_text("{'training': [") or [], data=True),
    Case("dataset.json without training", "search", r"dataset\.json: missing key 'training'",
         lambda e: e.write_dataset({k: v for k, v in e.dataset().items() if k != "training"}) or [], data=True),
    Case("labels keys not integers", "search", r"keys of 'labels' must be integers",
         lambda e: e.write_dataset({**e.dataset(), "labels": {"a": "background", "b": "organ"}}) or [], data=True),
    Case("training case listed twice", "search", r"training case 'demo_000' is listed twice",
         lambda e: e.write_dataset({**e.dataset(), "training": e.dataset()["training"] * 2}) or [], data=True),
    Case("image file missing", "search", r"imagesTr/demo_000\.nii\.gz does not exist",
         lambda e: e.image(0).unlink() or [], data=True),
    Case("label file missing", "search", r"labelsTr/demo_000\.nii\.gz does not exist",
         lambda e: e.label(0).unlink() or [], data=True),
    Case("image unreadable", "search", r"demo_000\.nii\.gz: cannot be read as NIfTI",
         lambda e: e.image(0).write_bytes(b"not an image at all" * 10) or [], data=True),
    Case("image empty", "search", r"demo_000\.nii\.gz: cannot be read as NIfTI",
         lambda e: e.image(0).write_bytes(b"") or [], data=True),
    Case("image truncated", "search", r"demo_00\d\.nii\.gz: cannot be read as an image",
         lambda e: [e.image(i).write_bytes(e.image(i).read_bytes()[:2000]) for i in range(10)] and [], data=True),
    Case("image 2-D", "search", r"demo_000\.nii\.gz: expected a 3-D or 4-D image",
         lambda e: e.rewrite(e.image(0), lambda a: a[:, :, 0]) or [], data=True),
    Case("image with 2 channels, 1 declared", "search", r"demo_000\.nii\.gz: has 2 channel\(s\) but dataset\.json "
         r"'modality' declares 1",
         lambda e: e.rewrite(e.image(0), lambda a: np.stack([a, a], -1)) or [], data=True),
    Case("label shape differs", "search", r"labelsTr/demo_000\.nii\.gz: shape .* differs from its image",
         lambda e: e.rewrite(e.label(0), lambda a: a[:-2]) or [], data=True),
    Case("label affine differs", "search", r"labelsTr/demo_000\.nii\.gz: affine differs from its image",
         lambda e: e.rewrite(e.label(0), lambda a: a, affine=np.diag([3.0, 3.0, 3.0, 1.0])) or [], data=True),
    Case("label 4-D", "search", r"labelsTr/demo_000\.nii\.gz: expected a 3-D label map",
         lambda e: e.rewrite(e.label(0), lambda a: np.stack([a, a], -1)) or [], data=True),
    Case("label value out of range", "search", r"labelsTr/demo_000\.nii\.gz: label values \[7\] outside the 3 classes",
         lambda e: e.rewrite(e.label(0), lambda a: np.where(a == 2, 7, a).astype(np.uint8)) or [], data=True),
    Case("label not integer", "search", r"labelsTr/demo_000\.nii\.gz: label values must be integers",
         lambda e: e.rewrite(e.label(0), lambda a: np.where(a == 2, 1.5, a).astype(np.float32)) or [], data=True),
    Case("test image missing", "test", r"dataset\.json: test image file .*imagesTs/demo_010\.nii\.gz does not exist",
         lambda e: e.image(0, "Ts").unlink() or ["--split", "test"], data=True),
    Case("NaN voxels in a training image", "search", r"demo_00\d\.nii\.gz: \d+ voxel\(s\) are NaN or infinite",
         lambda e: [e.rewrite(e.image(i), lambda a: np.where(a > 100, np.nan, a).astype(np.float32))
                    for i in range(10)] and [], data=True),
    Case("infinite voxels in a test image", "test", r"demo_010\.nii\.gz: \d+ voxel\(s\) are NaN or infinite",
         lambda e: e.rewrite(e.image(0, "Ts"), lambda a: np.where(a > 100, np.inf, a).astype(np.float32))
         or ["--split", "test"], data=True),
    # ---------------------------------------------------------------- options and presets
    Case("preset missing", "search", r"--config: preset file '.*nowhere\.yaml' does not exist",
         lambda e: ["--config", str(e.tmp / "nowhere.yaml")]),
    Case("preset is a folder", "search", r"--config: preset '.*' is a folder", lambda e: ["--config", str(e.tmp)]),
    Case("preset not YAML", "search", r"bad\.yaml: not valid YAML",
         lambda e: ["--config", str(e.file("bad.yaml", "iters: [1, 2\nblocks: 3"))]),
    Case("preset not a mapping", "search", r"list\.yaml: expected a mapping",
         lambda e: ["--config", str(e.file("list.yaml", "- iters\n- 3\n"))]),
    Case("preset unknown key", "search", r"unknown\.yaml: unknown option 'iterations'",
         lambda e: ["--config", str(e.file("unknown.yaml", "iterations: 3\n"))]),
    Case("preset wrong type", "search", r"type\.yaml: option 'iters' expects int, got 'ten'",
         lambda e: ["--config", str(e.file("type.yaml", "iters: ten\n"))]),
    Case("preset section not a mapping", "search", r"section\.yaml: section 'search' must be a mapping",
         lambda e: ["--config", str(e.file("section.yaml", "search: 3\n"))]),
    Case("option not a number", "search", r"argument --iters: invalid int value: 'ten'", _args("--iters", "ten")),
    Case("unknown option", "search", r"unrecognized arguments: --iterations", _args("--iterations", "3")),
    Case("option out of range", "search", r"--mem must be in \(0, 1\], got 1\.5", _args("--mem", "1.5")),
    Case("learning-rate milestone out of range", "retrain", r"--lr_milestones must be fractions in \(0, 1\], got "
         r"\[0\.5, 1\.5\]", _args("--lr_milestones", "0.5", "1.5")),
    Case("decode band out of range", "search", r"--decode_band must be in \[0, 1\], got -0\.1",
         _args("--decode_band", "-0.1")),
    Case("fold out of range", "retrain", r"--fold must be in 0\.\.4, got 7", _args("--fold", "7")),
    Case("warmup longer than the search", "search", r"--warmup_iters \(9\) exceeds --iters \(8\)",
         _args("--warmup_iters", "9")),
    Case("patch not divisible", "search", r"--patch_size \[16, 16, 12\]: every side must be divisible by .* = 8",
         _args("--patch_size", "16", "16", "12")),
    Case("class count disagrees with dataset.json", "search", r"--num_classes is 4 but .*dataset\.json 'labels' "
         r"declares 3", _args("--num_classes", "4")),
    Case("task folder missing", "search", r"task folder .*Task98_None does not exist", _args("--task", "Task98_None")),
    Case("work_root is a file", "search", r"--work_root .*afile: is a file, not a folder",
         lambda e: ["--work_root", str(e.file("afile", "x"))]),
    Case("work_root inside a file", "search", r"--work_root .*afile/work: lies inside .*afile, which is a file",
         lambda e: ["--work_root", str(e.file("afile", "x") / "work")]),
    Case("work_root not writable", "search", r"(dints-unwritable.*is not writable|(Permission denied|Operation not "
         r"permitted): .*dints-unwritable)",
         lambda e: ["--work_root", str(e.unwritable() / "work")]),
    Case("data_root is a file", "search", r"--data_root .*afile: is a file, not a folder",
         lambda e: ["--data_root", str(e.file("afile", "x"))]),
    Case("resume yes without a checkpoint", "search", r"--resume yes: .*latest\.pt does not exist",
         lambda e: ["--work_root", str(e.tmp / "fresh"), "--resume", "yes"]),
    Case("resume with a changed option", "search", r"latest\.pt was written with --base_lr 0\.025 but this run has "
         r"0\.5", _args("--base_lr", "0.5")),
    # ---------------------------------------------------------------- architecture files
    Case("arch missing", "retrain", r"architecture file .*none\.json does not exist",
         lambda e: ["--arch", str(e.tmp / "none.json")]),
    Case("arch is a folder", "retrain", r"--arch .*: is a folder, expected a file", lambda e: ["--arch", str(e.tmp)]),
    Case("arch not JSON", "retrain", r"arch\.json: not valid JSON: Expecting property name",
         lambda e: ["--arch", str(e.file("arch.json", "{"))]),
    Case("arch codes of the wrong shape", "retrain", r"arch\.json: field 'arch_code_a': expected 2 rows of 4, got 1",
         lambda e: ["--arch", str(e.arch(arch_code_a=[[1, 1, 1, 1]]))]),
    Case("arch node_a inconsistent", "retrain", r"arch\.json: field 'node_a': block 0 path 1 reads level 1, which is inactive at boundary 0",
         lambda e: ["--arch", str(e.arch(node_a=[[1, 0], [0, 1], [1, 0]]))]),
    Case("arch op index out of range", "retrain", r"arch\.json: field 'arch_code_c': row 0, column 0: 9 is outside 0\.\.4",
         lambda e: ["--arch", str(e.arch(arch_code_c=[[9, 0, 0, 0], [0, 0, 0, 0]]))]),
    Case("arch levels differ from the configuration", "retrain", r"--levels is 3 but the architecture .* has 2 levels",
         lambda e: ["--arch", str(e.arch()), "--levels", "3", "--path_num", "2"]),
    Case("MONAI .pth holding something else", "retrain", r"other\.pth: field 'node_a': missing",
         lambda e: torch.save({"state_dict": {"w": torch.zeros(3)}}, e.tmp / "other.pth") or
         ["--arch", str(e.tmp / "other.pth")]),
    # ---------------------------------------------------------------- checkpoints
    Case("checkpoint missing", "test", r"checkpoint .*none\.pt does not exist",
         lambda e: ["--split", "val", "--checkpoint", str(e.tmp / "none.pt")]),
    Case("checkpoint truncated", "test", r"checkpoint .*cut\.pt cannot be read",
         lambda e: ["--split", "val", "--checkpoint", str(e.file(
             "cut.pt", (e.work / RUN / "retrain-fold0" / "best.pt").read_bytes()[:5000]))]),
    Case("checkpoint of something else", "test", r"foreign\.pt is not a retrained-model checkpoint",
         lambda e: torch.save({"a": 1}, e.tmp / "foreign.pt") or
         ["--split", "val", "--checkpoint", str(e.tmp / "foreign.pt")]),
    Case("checkpoint of another task's classes", "test", r"two\.pt was trained with num_classes 2 but the task has 3",
         lambda e: torch.save(e.model_of(num_classes=2), e.tmp / "two.pt") or
         ["--split", "val", "--checkpoint", str(e.tmp / "two.pt")]),
    Case("checkpoint of another task's channels", "test", r"four\.pt was trained with in_channels 4 but the task has 1",
         lambda e: torch.save(e.model_of(in_channels=4), e.tmp / "four.pt") or
         ["--split", "val", "--checkpoint", str(e.tmp / "four.pt")]),
    Case("checkpoint edited", "test", r"edited\.pt: its weights do not fit the network",
         lambda e: torch.save({**e.best(), "num_classes": 5}, e.tmp / "edited.pt") or
         ["--split", "val", "--checkpoint", str(e.tmp / "edited.pt")]),
    Case("latest.pt of another architecture", "retrain", r"latest\.pt: its 'model' does not fit this run",
         lambda e: ["--work_root", str(e.run_with_another_arch())]),
    Case("resume with another --arch", "retrain", r"latest\.pt was written with --arch None but this run has "
         r".*arch\.json; rerun with the same options, or pass --resume no",
         lambda e: ["--arch", str(e.arch(arch_code_c=[[1, 1, 1, 1], [1, 1, 1, 1]]))]),
    # ---------------------------------------------------------------- msd_size.json and fusing
    Case("msd_size.json missing", "fuse", r"--msd_size: .*none\.json does not exist",
         lambda e: ["--resample", "1", "--folds", "0", "--msd_size", str(e.tmp / "none.json")]),
    Case("msd_size.json not JSON", "fuse", r"sizes\.json: not valid JSON \(Expecting property name",
         lambda e: ["--resample", "1", "--folds", "0", "--msd_size", str(e.file("sizes.json", "{"))]),
    Case("msd_size.json missing a test case", "fuse", r"sizes\.json: case 'demo_011\.nii\.gz' of task Task99_Demo "
         r"is missing", lambda e: ["--resample", "1", "--folds", "0", "--msd_size", str(e.file("sizes.json", json.dumps(
             {TASK: {"demo_010.nii.gz": list(nib.load(str(e.image(0, "Ts"))).shape)}})))]),
    Case("msd_size.json size not a 3-vector", "fuse", r"sizes\.json: size of 'demo_010\.nii\.gz' must be 3 positive "
         r"integers \[x, y, z\], got \[10, 10\]",
         lambda e: ["--resample", "1", "--folds", "0", "--msd_size", str(e.file("sizes.json", json.dumps(
             {TASK: {"demo_010.nii.gz": [10, 10], "demo_011.nii.gz": [10, 10, 10]}})))]),
    Case("msd_size.json size disagrees with the image", "fuse", r"sizes\.json: size \[10, 10, 10\] of "
         r"'demo_010\.nii\.gz' disagrees with the original image", lambda e: [
             "--resample", "1", "--folds", "0", "--msd_size", str(e.file("sizes.json", json.dumps(
                 {TASK: {f"demo_01{i}.nii.gz": [10, 10, 10] for i in (0, 1)}})))]),
    Case("a test image no fold predicted", "fuse", r"demo_010: no fold has test probabilities", _args("--folds", "3")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_and_leaves_the_run_alone(case, finished, demo_root, tmp_path, capfd):
    data = demo_root
    if case.data:
        data = tmp_path / "data"
        shutil.copytree(demo_root / TASK, data / TASK)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = Env(data, finished, scratch, demo_root)
    extra = case.setup(env)
    extra = extra if isinstance(extra, list) else []  # a setup that only breaks something returns what it did
    before = snapshot(finished)
    argv = ["--config", TINY, "--data_root", str(data), "--task", TASK, "--work_root", str(finished), *FAST, *extra]
    r = stages.run(case.script, argv, capfd, env=case.env)
    print(f"\nCATALOGUE| {case.id} -> {r.error_lines}")  # the catalogue as docs quote it (pytest -s shows it)
    assert r.code == 2, r.err[-3000:]
    assert "Traceback" not in r.err, r.err[-3000:]
    assert len(r.error_lines) == 1, r.err[-3000:]
    assert re.search(case.words, r.error_lines[0]), r.error_lines[0]
    after = snapshot(finished)
    assert after.keys() == before.keys() and all(after[k] == before[k] for k in before), \
        [k for k in before if after.get(k) != before[k]] + sorted(set(after) - set(before))


@pytest.mark.slow
def test_debug_shows_the_traceback(finished, demo_root):
    argv = ["--config", TINY, "--data_root", str(demo_root), "--task", "Task98_None", "--work_root", str(finished),
            *FAST]
    plain = subprocess.run([sys.executable, str(ROOT / "code" / "search.py"), *argv], capture_output=True, text=True)
    debug = subprocess.run([sys.executable, str(ROOT / "code" / "search.py"), *argv, "--debug"], capture_output=True,
                           text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("error: task folder")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("dints.errors.DataError: task folder")
    assert "Task98_None does not exist" in debug.stderr


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(finished, demo_root, tmp_path, capfd):
    """A full disk while writing latest.pt (simulated: the write fails half-way) stops the run in one line; the
    previous latest.pt is intact and the rerun resumes from it."""
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    argv = ["--config", TINY, "--data_root", str(demo_root), "--task", TASK, "--work_root", str(work), *FAST,
            "--fold", "1"]
    r = stages.run("retrain", argv, capfd, env={"DINTS_FAULT": "enospc:retrain-fold1/latest.pt:2"})
    print(f"disk full during a checkpoint write -> {r.error_lines}")
    assert r.code == 2 and len(r.error_lines) == 1 and "Traceback" not in r.err, r.err[-3000:]
    assert "cannot write" in r.error_lines[0] and "latest.pt: No space left on device; the previous latest.pt is " \
           "kept; free some space and rerun the same command" in r.error_lines[0]
    fold = work / RUN / "retrain-fold1"
    assert torch.load(fold / "latest.pt", weights_only=True)["iteration"] == 2
    assert not list(fold.glob(".*.tmp"))
    r = stages.run("retrain", argv, capfd)
    assert r.code == 0, r.err[-3000:]
    assert "resumed from" in r.err and (fold / "summary.json").is_file()


def _nan_after(calls: set[int] | range):
    """seg_loss_fn whose loss is NaN on the given calls (0-based), as a numerical fault in training would be."""
    from dints.train.losses import seg_loss_fn

    def factory():
        fn, n = seg_loss_fn(), [0]

        def loss(logits, y):
            out = fn(logits, y)
            n[0] += 1
            return out * float("nan") if n[0] - 1 in calls else out

        return loss

    return factory


def test_a_non_finite_loss_is_skipped_with_a_warning(finished, demo_root, tmp_path, capfd, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    monkeypatch.setattr(stages.module("retrain"), "seg_loss_fn", _nan_after({3}))
    argv = ["--config", TINY, "--data_root", str(demo_root), "--task", TASK, "--work_root", str(work), *FAST,
            "--fold", "1"]
    retrain = stages.module("retrain")
    real, steps = retrain.optimise, []

    def recording(loss, opt, scaler, params, grad_clip):  # each step: whether it stepped, parameters before/after
        before = [p.detach().clone() for p in params]
        took = real(loss, opt, scaler, params, grad_clip)
        steps.append((took, before, [p.detach().clone() for p in params]))
        return took

    monkeypatch.setattr(retrain, "optimise", recording)
    r = stages.run("retrain", argv, capfd)
    assert r.code == 0, r.err[-3000:]
    warned = [ln for ln in r.err.splitlines() if "non-finite loss, step skipped" in ln]
    print(warned)
    assert len(warned) == 1 and "iteration 3:" in warned[0]
    assert [took for took, _, _ in steps] == [True] * 3 + [False] + [True] * 4  # iterations 0-7: the fourth skipped
    for took, before, after in steps:  # the skipped step leaves every weight as it was; the others move them
        assert all(torch.equal(a, b) for a, b in zip(before, after)) == (not took)
    state = torch.load(work / RUN / "retrain-fold1" / "best.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_repeated_non_finite_losses_stop_with_a_checkpoint_from_before(finished, demo_root, tmp_path, capfd,
                                                                       monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    monkeypatch.setattr(stages.module("retrain"), "seg_loss_fn", _nan_after(range(3, 1000)))
    argv = ["--config", TINY, "--data_root", str(demo_root), "--task", TASK, "--work_root", str(work), *FAST,
            "--fold", "1", "--iters", "20", "--val_interval", "0"]
    r = stages.run("retrain", argv, capfd)
    print(r.error_lines)
    assert r.code == 2 and len(r.error_lines) == 1 and "Traceback" not in r.err
    assert "the loss was not finite for 10 consecutive iterations (last 12)" in r.error_lines[0]
    assert "latest.pt holds iteration 2, from before the fault" in r.error_lines[0]
    state = torch.load(work / RUN / "retrain-fold1" / "latest.pt", weights_only=True)
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_constant_and_all_zero_images_are_handled(finished, demo_root, tmp_path, capfd):
    """Normalisation maps a constant or all-zero image to zeros (no division by a zero deviation): inference runs
    and gives finite probabilities."""
    data, work = tmp_path / "data", tmp_path / "work"
    shutil.copytree(demo_root / TASK, data / TASK)
    shutil.copytree(finished, work)
    env = Env(data, work, tmp_path, demo_root)
    env.rewrite(env.image(0, "Ts"), lambda a: np.full_like(a, 100))
    env.rewrite(env.image(1, "Ts"), lambda a: np.zeros_like(a))
    shutil.rmtree(work / RUN / "test-fold0")
    argv = ["--config", TINY, "--data_root", str(data), "--task", TASK, "--work_root", str(work), *FAST,
            "--split", "test"]
    r = stages.run("test", argv, capfd)
    assert r.code == 0, r.err[-3000:]
    for case in ("demo_010", "demo_011"):
        with np.load(work / RUN / "test-fold0" / f"{case}.npz") as z:
            assert np.isfinite(z["prob"].astype(np.float32)).all()
