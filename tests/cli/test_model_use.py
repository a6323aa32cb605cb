"""Using a trained model: a self-contained model folder that predicts anywhere, TorchScript, post-processing chosen
on the validation folds, and the Decathlon submission."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from dints.errors import UserError
from dints.evaluate.model_folder import ModelFolder, export_program, trace_network
from dints.evaluate.postprocess import choose_largest_component, keep_largest_component
from dints.space.archfile import Arch
from dints.space.network import DiscreteNet

ROOT = Path(__file__).resolve().parents[2]
FAST = ("--blocks 2 --levels 2 --patch_size 16 16 16 --spacing 4 4 4 --path_num 3 --iters 8 --warmup_iters 4 "
        "--val_interval 4 --ckpt_interval 4 --sw_batch_size 8 --save_val 1")
RUN = "search-bilevel-ent-mem0.8-Task99_Demo"
HAND = dict(num_blocks=2, num_depths=2, opset=1, ops=["skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_3x1x3",
                                                      "conv_1x3x3"],
            node_a=[[1, 0], [1, 1], [0, 1]], arch_code_a=[[1, 0, 1, 0], [0, 0, 1, 1]],
            arch_code_c=[[1, 0, 4, 0], [0, 0, 2, 3]], channel_mul=0.25)


# ----------------------------------------------------------------------------- fast: no processes
def test_torchscript_equals_the_network():
    torch.manual_seed(0)
    net = DiscreteNet(Arch(**HAND), 1, 3, 0.25).eval()
    traced, program = trace_network(net, (16, 16, 16)), export_program(net, (16, 16, 16)).module()
    for shape in [(1, 1, 16, 16, 16), (2, 1, 32, 16, 24)]:  # another batch and size than the trace's
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(traced(x), net(x), atol=1e-5, rtol=0)
            torch.testing.assert_close(program(x), net(x), atol=1e-5, rtol=0)


def test_keep_largest_component_by_hand():
    labels = np.zeros((8, 8, 8), np.int64)
    labels[1:4, 1:4, 1:4] = 1  # 27 voxels
    labels[6, 6, 6] = 1  # a stray voxel
    labels[5:7, 0:2, 0:2] = 2  # class 2, one component
    out = keep_largest_component(labels, [1])
    assert out[6, 6, 6] == 0 and (out == 1).sum() == 27 and (out == 2).sum() == 8
    assert np.array_equal(keep_largest_component(labels, []), labels)


def test_postprocessing_is_chosen_where_it_raises_the_dice():
    ref = np.zeros((10, 10, 10), np.int64)
    ref[1:4, 1:4, 1:4] = 1
    ref[6:8, 6:8, 1:3] = 2
    ref[6:8, 1:3, 6:8] = 2  # class 2 really has two parts
    pred = ref.copy()
    pred[8, 8, 8] = 1  # a stray class-1 voxel: removing it helps
    choice = choose_largest_component([(pred, ref)], 3)
    assert choice["largest_component"] == [1]  # filtering class 2 would delete one of its true parts
    assert choice["dice"][1]["filtered"] == 1.0 and choice["dice"][1]["plain"] == pytest.approx(2 * 27 / 55)
    assert choice["dice"][2]["filtered"] == pytest.approx(2 * 8 / 24)


# ----------------------------------------------------------------------------- end to end
def _env(**extra) -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, "OMP_NUM_THREADS": "1", **extra}


def _run(*cmd: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=_env(), timeout=900)
    if ok:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    """Two retrained folds of the demo task, stage 3 with its validation labels saved, and stage 6's results."""
    work = tmp_path_factory.mktemp("work")
    env = _env(TASKS="Task99_Demo", FOLDS="0 1", DATA_ROOT=str(demo_root), WORK_ROOT=str(work),
               PRESET=str(ROOT / "configs" / "tiny.yaml"), EXTRA_ARGS=FAST, PYTHON=sys.executable)
    r = subprocess.run(["bash", str(ROOT / "code" / "main.sh"), "all"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work


def _opts(demo_root: Path, work: Path) -> list[str]:
    return ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data_root", str(demo_root), "--task", "Task99_Demo",
            "--work_root", str(work), "--folds", "0", "1"]


@pytest.mark.slow
def test_a_moved_model_folder_predicts_what_stage_6_wrote(trained, demo_root, tmp_path):
    _run(str(ROOT / "scripts" / "export_model.py"), "--out", str(tmp_path / "model"), "--torchscript",
         *_opts(demo_root, trained))
    assert (tmp_path / "model.zip").is_file()
    # Another place, with no data/ or work/ beside it.
    elsewhere = tmp_path / "elsewhere"
    shutil.move(tmp_path / "model", elsewhere / "model")
    images = demo_root / "Task99_Demo" / "imagesTs"
    out = tmp_path / "labels"
    r = _run(str(ROOT / "code" / "predict.py"), "--model", str(elsewhere / "model"), "--input", str(images),
             "--output", str(out), "--save_probs")
    final = trained / RUN / "final"
    for img in sorted(images.glob("*.nii.gz")):
        got, want = nib.load(str(out / img.name)), nib.load(str(final / img.name))
        assert np.array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj)), img.name
        assert np.allclose(got.affine, nib.load(str(img)).affine) and got.shape == nib.load(str(img)).shape
        prob = np.load(out / img.name.replace(".nii.gz", ".npz"))["prob"]
        assert prob.shape == (3, *got.shape) and np.allclose(prob.astype(np.float32).sum(0), 1, atol=5e-3)
    # Resumable: a rerun finds everything done and touches nothing.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = _run(str(ROOT / "code" / "predict.py"), "--model", str(elsewhere / "model"), "--input", str(images),
             "--output", str(out))
    assert "0 to do" in r.stderr and stamps == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # The zip alone, unpacked in a third place, predicts the same; one fold is a one-fold ensemble.
    third = tmp_path / "third"
    third.mkdir()
    shutil.copy(tmp_path / "model.zip", third / "model.zip")
    _run(str(ROOT / "code" / "predict.py"), "--model", str(third / "model.zip"), "--input",
         str(next(images.glob("*.nii.gz"))), "--output", str(tmp_path / "zipped"))
    name = next(images.glob("*.nii.gz")).name
    assert np.array_equal(np.asarray(nib.load(str(tmp_path / "zipped" / name)).dataobj),
                          np.asarray(nib.load(str(out / name)).dataobj))
    # TorchScript folds equal the folder's networks.
    model = ModelFolder.open(elsewhere / "model")
    x = torch.randn(1, 1, 16, 16, 16)
    for k, net in model.networks(None, torch.device("cpu")).items():
        with torch.no_grad():
            torch.testing.assert_close(torch.jit.load(str(elsewhere / "model" / f"fold{k}.ts"))(x), net(x), atol=1e-5,
                                       rtol=0)
            program = torch.export.load(str(elsewhere / "model" / f"fold{k}.pt2")).module()
            torch.testing.assert_close(program(x), net(x), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_model_folder_faults_are_one_line(trained, demo_root, tmp_path):
    _run(str(ROOT / "scripts" / "export_model.py"), "--out", str(tmp_path / "model"), *_opts(demo_root, trained))
    image = next((demo_root / "Task99_Demo" / "imagesTs").glob("*.nii.gz"))
    two = nib.load(str(image))
    data = np.stack([np.asarray(two.dataobj)] * 2, axis=-1)
    nib.save(nib.Nifti1Image(data, two.affine), tmp_path / "two_channels.nii.gz")
    r = _run(str(ROOT / "code" / "predict.py"), "--model", str(tmp_path / "model"), "--input",
             str(tmp_path / "two_channels.nii.gz"), "--output", str(tmp_path / "out"), ok=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: ") and "2 channel(s)" in r.stderr
    assert not (tmp_path / "out").exists()
    r = _run(str(ROOT / "code" / "predict.py"), "--model", str(tmp_path / "model"), "--input", str(tmp_path),
             "--output", str(tmp_path), ok=False)  # label maps would replace the images they are made from
    assert r.returncode == 2 and "would replace" in r.stderr.strip().splitlines()[-1]
    (tmp_path / "model" / "extra.json").write_text("{}")  # a file the manifest does not list
    with pytest.raises(UserError, match=r"files differ from MANIFEST.sha256 \(unlisted: \['extra.json'\]"):
        ModelFolder.open(tmp_path / "model")
    (tmp_path / "model" / "extra.json").unlink()
    with open(tmp_path / "model" / "fold0.pt", "r+b") as f:  # a damaged file
        f.seek(100)
        f.write(b"\x00\x01")
    with pytest.raises(UserError, match="fold0.pt: its checksum differs"):
        ModelFolder.open(tmp_path / "model")
    # An --out that is some other folder is never replaced.
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "keep.txt").write_text("x")
    r = _run(str(ROOT / "scripts" / "export_model.py"), "--out", str(tmp_path / "precious"), *_opts(demo_root, trained),
             ok=False)
    assert r.returncode == 2 and "is not a model folder" in r.stderr and (tmp_path / "precious" / "keep.txt").is_file()


@pytest.mark.slow
def test_postprocessing_is_chosen_exported_and_applied(trained, demo_root, tmp_path):
    r = _run(str(ROOT / "scripts" / "choose_postprocessing.py"), *_opts(demo_root, trained))
    chosen = json.loads((trained / RUN / "postprocessing.json").read_text())
    assert chosen["cases"] == 4 and ("keep largest component" in r.stdout or "leave as is" in r.stdout)
    _run(str(ROOT / "scripts" / "export_model.py"), "--out", str(tmp_path / "model"), *_opts(demo_root, trained))
    assert ModelFolder.open(tmp_path / "model").largest_component == chosen["largest_component"]
    images = demo_root / "Task99_Demo" / "imagesTs"
    _run(str(ROOT / "code" / "predict.py"), "--model", str(tmp_path / "model"), "--input", str(images), "--output",
         str(tmp_path / "labels"))
    for img in images.glob("*.nii.gz"):
        stage6 = np.asarray(nib.load(str(trained / RUN / "final" / img.name)).dataobj)
        want = keep_largest_component(stage6, chosen["largest_component"])
        assert np.array_equal(np.asarray(nib.load(str(tmp_path / "labels" / img.name)).dataobj), want)
    # Whatever was chosen, applying a choice must be seen to work: a hand-written one that filters every class.
    (trained / RUN / "postprocessing.json").write_text(json.dumps({"largest_component": [1, 2]}))
    _run(str(ROOT / "scripts" / "export_model.py"), "--out", str(tmp_path / "model2"), *_opts(demo_root, trained))
    assert ModelFolder.open(tmp_path / "model2").largest_component == [1, 2]
    _run(str(ROOT / "code" / "predict.py"), "--model", str(tmp_path / "model2"), "--input", str(images), "--output",
         str(tmp_path / "labels2"))
    changed = 0
    for img in images.glob("*.nii.gz"):
        stage6 = np.asarray(nib.load(str(trained / RUN / "final" / img.name)).dataobj)
        got = np.asarray(nib.load(str(tmp_path / "labels2" / img.name)).dataobj)
        assert np.array_equal(got, keep_largest_component(stage6, [1, 2]))
        changed += int(not np.array_equal(got, stage6))
    assert changed > 0, "the filter changed no label map: the test would not see it skipped"
    (trained / RUN / "postprocessing.json").unlink()  # other tests export without it


@pytest.mark.slow
def test_submission_zip_leaves_out_the_excluded_cases(demo_copy, tmp_path):
    # A Task03_Liver whose test images are liver_141 (excluded by the Decathlon) and liver_200.
    task = demo_copy / "Task03_Liver"
    (demo_copy / "Task99_Demo").rename(task)
    meta = json.loads((task / "dataset.json").read_text())
    tests = sorted((task / "imagesTs").glob("*.nii.gz"))
    new = []
    for src, name in zip(tests, ["liver_141.nii.gz", "liver_200.nii.gz"]):
        src.rename(task / "imagesTs" / name)
        new.append(f"./imagesTs/{name}")
    meta["test"] = new
    (task / "dataset.json").write_text(json.dumps(meta))
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("liver_141.nii.gz", "liver_200.nii.gz"):
        img = nib.load(str(task / "imagesTs" / name))
        nib.save(nib.Nifti1Image(np.zeros(img.shape[:3], np.uint8), img.affine), labels / name)
    opts = ["--data_root", str(demo_copy), "--task", "Task03_Liver", "--work_root", str(tmp_path / "w"), "--labels",
            str(labels), "--out", str(tmp_path / "sub.zip")]
    r = _run(str(ROOT / "scripts" / "make_submission.py"), *opts)
    with zipfile.ZipFile(tmp_path / "sub.zip") as z:
        assert z.namelist() == ["Task03_Liver/liver_200.nii.gz"]
    assert "liver_141" in r.stdout
    # A label map off its image's grid is refused, and the zip is left as it was.
    img = nib.load(str(task / "imagesTs" / "liver_200.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), img.affine), labels / "liver_200.nii.gz")
    r = _run(str(ROOT / "scripts" / "make_submission.py"), *opts, ok=False)
    assert r.returncode == 2 and "liver_200.nii.gz: shape (4, 4, 4) differs" in r.stderr
    with zipfile.ZipFile(tmp_path / "sub.zip") as z:
        assert z.namelist() == ["Task03_Liver/liver_200.nii.gz"]


def _fake_model(demo_root: Path, out: Path) -> Path:
    """A model folder of two randomly initialised folds (no training needed)."""
    from dints.data.msd import load_task
    from dints.evaluate.model_folder import export_model
    from dints.train import checkpoint

    config = {"spacing": [4.0, 4.0, 4.0], "intensity": "zscore", "ct_window": [-1000.0, 1000.0],
              "patch_size": [16, 16, 16], "sw_overlap": 0.25, "sw_batch_size": 4}
    ckpts = {}
    for k in (0, 1):
        torch.manual_seed(k)
        net = DiscreteNet(Arch(**HAND), 1, 3, 0.25)
        ckpts[k] = checkpoint.save(out.parent / f"fold{k}.pt", model=net, kind="retrain", arch=Arch(**HAND).to_dict(),
                                   in_channels=1, num_classes=3, channel_mul=0.25, config=config, best_dice=0.5)
    export_model(ckpts, load_task(demo_root, "Task99_Demo"), out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["horovod", "torch"])
def test_prediction_shared_by_two_processes_equals_one(launcher, demo_root, tmp_path):
    if launcher == "horovod" and not (Path(sys.executable).parent / "horovodrun").is_file():
        pytest.skip("horovod not installed (bash scripts/setup.sh --with-horovod)")
    model = _fake_model(demo_root, tmp_path / "model")
    images = str(demo_root / "Task99_Demo" / "imagesTs")
    predict = [str(ROOT / "code" / "predict.py"), "--model", str(model), "--input", images]
    _run(*predict, "--output", str(tmp_path / "one"))
    launch = ([str(Path(sys.executable).parent / "horovodrun"), "-np", "2", sys.executable] if launcher == "horovod"
              else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])
    r = subprocess.run([*launch, *predict, "--output", str(tmp_path / "two")], capture_output=True, text=True,
                       env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(names) == 2
    for n in names:
        assert np.array_equal(np.asarray(nib.load(str(tmp_path / "one" / n)).dataobj),
                              np.asarray(nib.load(str(tmp_path / "two" / n)).dataobj)), n


def test_input_images_skip_dot_files_and_refuse_clashing_names(tmp_path):
    from predict import input_images

    (tmp_path / "a.nii.gz").write_bytes(b"")
    (tmp_path / "._a.nii.gz").write_bytes(b"")  # macOS resource fork from the Decathlon's archives
    assert input_images([str(tmp_path)]) == [tmp_path / "a.nii.gz"]
    (tmp_path / "a.nii").write_bytes(b"")
    with pytest.raises(UserError, match="would both write a"):
        input_images([str(tmp_path)])


@pytest.mark.slow
def test_two_zips_of_the_same_folder_name_never_share_an_unpacked_copy(demo_root, tmp_path):
    one = _fake_model(demo_root, tmp_path / "a" / "model")
    two_dir = tmp_path / "b"
    two_dir.mkdir()
    (two_dir / "fold0.pt").write_bytes((tmp_path / "a" / "fold1.pt").read_bytes())
    from dints.data.msd import load_task
    from dints.evaluate.model_folder import export_model

    export_model({0: two_dir / "fold0.pt"}, load_task(demo_root, "Task99_Demo"), two_dir / "model")
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(one.with_name("model.zip"), shared / "spleen.zip")
    shutil.copy(two_dir / "model.zip", shared / "liver.zip")
    a, b = ModelFolder.open(shared / "spleen.zip"), ModelFolder.open(shared / "liver.zip")
    assert a.root != b.root and a.meta["folds"] == [0, 1] and b.meta["folds"] == [0]
    assert ModelFolder.open(shared / "spleen.zip").root == a.root  # unpacked once, then reused
