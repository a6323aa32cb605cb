"""A self-contained model folder: everything prediction needs, with no ``data/`` or ``work/`` beside it.

    <model>/model.json         task, labels, channels, preprocessing, sliding window, folds, versions, provenance
    <model>/arch.json          the architecture
    <model>/fold<k>.pt         each fold's weights (a state dict)
    <model>/fold<k>.ts         with --torchscript: each fold's network traced by TorchScript (``torch.jit.load``)
    <model>/fold<k>.pt2        with --torchscript: the same as a ``torch.export`` program (``torch.export.load``;
                               dynamic batch and sides), the route into TensorRT and ONNX tooling now that
                               torch.jit is deprecated
    <model>/postprocessing.json  the classes whose largest connected component is kept (when chosen)
    <model>/MANIFEST.sha256    a checksum of every other file (``sha256sum -c`` format)

:func:`export_model` writes it (and a ``.zip`` of it) from a run's retrained folds; :class:`ModelFolder` reads it
back, refusing a folder whose files do not match their checksums.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
import shutil
import stat
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import monai
import torch
from torch.export import Dim, export

from dints.data.msd import Task
from dints.errors import UserError
from dints.io import atomic_write, load_torch, refusal, save_torch, write_json
from dints.run import dist
from dints.run.settings import PREPROCESSING_KEYS, DataSettings, InferSettings
from dints.space.archfile import Arch, load_arch, save_arch
from dints.space.network import DiscreteNet
from dints.train.modelfile import load_trained, network

FORMAT = 1
MANIFEST = "MANIFEST.sha256"
#: The options of a retraining run that prediction repeats besides the preprocessing
#: (:data:`dints.run.settings.PREPROCESSING_KEYS`): the sliding window.
INFERENCE_KEYS = ("sw_overlap", "sw_batch_size")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def trace_network(net: DiscreteNet, patch_size: tuple[int, ...]) -> torch.jit.ScriptModule:
    """TorchScript of a discrete network, traced on a batch of two patches (the plain convolution path, so the
    trace also runs on a GPU). The architecture has no data-dependent control flow, so the trace holds for any input
    whose sides are divisible by ``2**(levels + 1)``."""
    net = net.eval()
    x = torch.zeros(2, net.in_channels, *patch_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input checks become constants, as intended
        return torch.jit.trace(net, x, check_trace=False)


def export_program(net: DiscreteNet, patch_size: tuple[int, ...]) -> torch.export.ExportedProgram:
    """The network as a ``torch.export`` program with dynamic batch and sides, exported on a batch of two patches
    (the plain convolution path)."""
    net = net.eval()
    x = torch.zeros(2, net.in_channels, *patch_size)
    with torch.no_grad():
        return export(net, (x,), dynamic_shapes={"x": {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO, 4: Dim.AUTO}})


def export_model(checkpoints: dict[int, Path], task: Task, out: Path, postprocessing: dict | None = None,
                 torchscript: bool = False, source: str = "") -> Path:
    """Write a model folder from each fold's retraining checkpoint (``best.pt``), and ``<out>.zip``.

    Args:
        checkpoints: fold -> checkpoint written by ``retrain.py``.
        task: the task the model was trained on (labels and modalities are recorded).
        out: the folder to write (replaced when it exists).
        postprocessing: ``{"largest_component": [classes]}`` chosen on the validation folds, if any.
        torchscript: also write each fold's traced network.
        source: where the model came from (recorded).

    Returns:
        The zip file.

    Raises:
        UserError: no checkpoint, or folds trained with different architectures or preprocessing.
    """
    if not checkpoints:
        raise UserError("no retrained fold to export (run stage 2 first)")
    trained = {k: load_trained(p) for k, p in sorted(checkpoints.items())}
    states = {k: state for k, (_, state) in trained.items()}
    first_fold, first = next(iter(states.items()))
    for k, s in states.items():
        for key in ("arch", "in_channels", "num_classes", "channel_mul"):
            if s[key] != first[key]:
                raise UserError(f"{checkpoints[k]}: {key} differs from fold {first_fold}'s; export folds of one run")
        for key in PREPROCESSING_KEYS:
            if s["config"].get(key) != first["config"].get(key):
                raise UserError(f"{checkpoints[k]}: --{key} differs from fold {first_fold}'s; export folds of one run")
    cfg = first["config"]
    if out.exists() and not (out / "model.json").is_file():
        raise UserError(f"--out {out}: exists and is not a model folder; choose a new folder")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arch = Arch.from_dict(first["arch"], source=str(checkpoints[first_fold]))
    save_arch(arch, tmp / "arch.json")
    for k, (net, s) in trained.items():
        save_torch(tmp / f"fold{k}.pt", s["model"])
        if torchscript:
            trace_network(net, tuple(cfg["patch_size"])).save(str(tmp / f"fold{k}.ts"))
            torch.export.save(export_program(net, tuple(cfg["patch_size"])), str(tmp / f"fold{k}.pt2"))
    if postprocessing:
        write_json(tmp / "postprocessing.json", postprocessing)
    meta = {
        "format": FORMAT,
        "task": task.name,
        "labels": {str(k): v for k, v in task.labels.items()},
        "modality": {str(k): v for k, v in task.modality.items()},
        "layout": task.layout,  # nnunet: predict.py reads one file per channel and names outputs <case><ending>
        "in_channels": first["in_channels"],
        "num_classes": first["num_classes"],
        "channel_mul": first["channel_mul"],
        "folds": sorted(states),
        "preprocessing": {k: cfg.get(k) for k in PREPROCESSING_KEYS},
        "inference": {k: cfg.get(k) for k in INFERENCE_KEYS},
        "best_dice": {str(k): s.get("best_dice") for k, s in states.items()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__},
        "source": source,
        "torchscript": torchscript,
    }
    write_json(tmp / "model.json", meta)
    lines = [f"{_sha256(p)}  {p.name}\n" for p in sorted(tmp.iterdir()) if p.name != MANIFEST]
    atomic_write(tmp / MANIFEST, lambda t: Path(t).write_text("".join(lines)))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    zip_path = out.with_name(out.name + ".zip")

    def write_zip(t: str) -> None:
        with zipfile.ZipFile(t, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(out.iterdir()):
                z.write(p, f"{out.name}/{p.name}")

    return atomic_write(zip_path, write_zip)


@dataclass
class ModelFolder:
    """A model folder read back and verified.

    Attributes:
        root: the folder.
        meta: ``model.json``.
        arch: the architecture.
        largest_component: classes whose largest connected component prediction keeps (empty: none).
    """

    root: Path
    meta: dict[str, Any]
    arch: Arch
    largest_component: list[int]

    @classmethod
    def open(cls, path: str | Path) -> ModelFolder:
        """Read a model folder, or a ``.zip`` of one (extracted beside it), and check every file's checksum.

        Raises:
            UserError: not a model folder, a missing or changed file, or an unknown format.
        """
        root = Path(path)
        if root.suffix == ".zip" and root.is_file():
            root = _extract(root)
        manifest = root / MANIFEST
        if not (root / "model.json").is_file() or not manifest.is_file():
            raise UserError(f"--model {path}: not a model folder (no model.json and {MANIFEST}; "
                            "scripts/export_model.py writes one)")
        listed = {}
        for line in filter(str.strip, manifest.read_text().splitlines()):
            parts = line.split(None, 1)
            if len(parts) != 2:
                raise UserError(f"{manifest}: not a checksum line: {line!r}")
            listed[parts[1].strip()] = parts[0]
        present = {p.name for p in root.iterdir() if p.is_file() and p.name != MANIFEST}
        if set(listed) != present:
            raise UserError(f"{root}: its files differ from {MANIFEST} (unlisted: {sorted(present - set(listed))}, "
                            f"missing: {sorted(set(listed) - present)})")
        for name, digest in listed.items():
            if _sha256(root / name) != digest:
                raise UserError(f"{root / name}: its checksum differs from {MANIFEST} (a damaged or edited file)")
        meta = json.loads((root / "model.json").read_text())
        if meta.get("format") != FORMAT:
            raise UserError(f"{root / 'model.json'}: format {meta.get('format')} is not {FORMAT}")
        needed = {"arch.json", *(f"fold{k}.pt" for k in meta.get("folds", []))} - set(listed)
        if needed:
            raise UserError(f"{root}: {sorted(needed)} missing from the model folder")
        post = root / "postprocessing.json"
        lcc = json.loads(post.read_text()).get("largest_component", []) if post.is_file() else []
        return cls(root, meta, load_arch(root / "arch.json"), [int(c) for c in lcc])

    def data_settings(self) -> DataSettings:
        """The preprocessing the folds were trained with (the loader fields are unused by prediction)."""
        return DataSettings.from_options(SimpleNamespace(**self.meta["preprocessing"]), task=self.meta["task"],
                                         work_root="", batch_size=1, num_samples=1, cache="none", cache_rate=1.0,
                                         num_workers=0, seed=0, in_channels=self.meta["in_channels"],
                                         num_classes=self.meta["num_classes"])

    def infer_settings(self, tta: bool, amp: bool = True) -> InferSettings:
        """The sliding window the folds were validated with."""
        i = self.meta["inference"]
        return InferSettings(patch_size=tuple(self.meta["preprocessing"]["patch_size"]), sw_batch_size=i["sw_batch_size"],
                             sw_overlap=i["sw_overlap"], tta=tta, amp=amp)

    def networks(self, folds: list[int] | None, device: torch.device) -> dict[int, DiscreteNet]:
        """The folds' networks in eval mode on ``device`` (all folds by default).

        Raises:
            UserError: a fold the folder does not hold.
        """
        folds = self.meta["folds"] if folds is None else folds
        missing = sorted(set(folds) - set(self.meta["folds"]))
        if missing:
            raise UserError(f"--folds: the model holds folds {self.meta['folds']}, not {missing}")
        out = {}
        for k in folds:
            path = self.root / f"fold{k}.pt"
            try:
                weights = load_torch(path)  # weights only: nothing in the file runs
            except pickle.UnpicklingError as exc:
                if refusal(exc) is None:
                    raise UserError(f"{path}: not a torch file") from None
                raise UserError(f"{path}: holds objects a weights-only load refuses ({refusal(exc)}): not a fold's "
                                "weights, and nothing in it was run") from None
            out[k] = network(self.arch, self.meta["in_channels"], self.meta["num_classes"], self.meta["channel_mul"],
                             weights, path).to(device)
        return out


#: Bounds on what a model zip may unpack to: a multiple of the zip's own size (weights barely compress, so a real
#: model folder unpacks to little more than its zip) and an absolute cap. A zip bomb is refused before it is unpacked.
MAX_UNPACKED_RATIO = 10
MAX_UNPACKED_BYTES = 32 * 1024**3


def check_archive(zip_path: Path, z: zipfile.ZipFile) -> str:
    """The one top folder of a model zip, after checking every member before anything is unpacked.

    Refused: a member with an absolute path, a ``..`` component, or a name outside the one top folder; a symbolic
    link or any member that is neither a file nor that folder; a file not listed in the zip's ``MANIFEST.sha256``
    (which must be there); a total unpacked size over :data:`MAX_UNPACKED_RATIO` times the zip's size or over
    :data:`MAX_UNPACKED_BYTES`.

    Raises:
        UserError: one line naming the zip and the member at fault.
    """
    infos = z.infolist()
    for info in infos:  # first what could reach outside the target folder, whatever else is wrong
        parts = info.filename.replace("\\", "/").rstrip("/").split("/")
        if info.filename.startswith(("/", "\\")) or (len(parts[0]) > 1 and parts[0][1] == ":"):
            raise UserError(f"{zip_path}: member {info.filename!r} has an absolute path; refused before unpacking")
        if ".." in parts or "." in parts or "" in parts:
            raise UserError(f"{zip_path}: member {info.filename!r} has a '..' or empty path component; refused "
                            "before unpacking")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"{zip_path}: member {info.filename!r} is a symbolic link; refused before unpacking")
    tops = {i.filename.replace("\\", "/").split("/", 1)[0] for i in infos}
    if len(tops) != 1:
        raise UserError(f"{zip_path}: expected one model folder inside, found {sorted(tops)}")
    top = tops.pop()
    files = {}
    for info in infos:
        parts = info.filename.replace("\\", "/").rstrip("/").split("/")
        if info.is_dir():
            if parts != [top]:
                raise UserError(f"{zip_path}: member {info.filename!r} is a folder inside the model folder; a model "
                                "folder holds files only")
            continue
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no file type
        if len(parts) != 2 or kind not in (0, stat.S_IFREG):
            raise UserError(f"{zip_path}: member {info.filename!r} is not a file of the model folder {top}/")
        files[parts[1]] = info
    if MANIFEST not in files:
        raise UserError(f"{zip_path}: {top}/{MANIFEST} is missing; a model zip lists every file with its checksum")
    listed = {line.split(None, 1)[1].strip() for line in
              z.read(files[MANIFEST]).decode("utf-8", "replace").splitlines() if len(line.split(None, 1)) == 2}
    unlisted = sorted(set(files) - listed - {MANIFEST})
    if unlisted:
        raise UserError(f"{zip_path}: {top}/{unlisted[0]} is not listed in {MANIFEST}; refused before unpacking")
    total = sum(i.file_size for i in files.values())
    bound = min(MAX_UNPACKED_RATIO * zip_path.stat().st_size, MAX_UNPACKED_BYTES)
    if total > bound:
        raise UserError(f"{zip_path}: unpacks to {total} bytes, more than {MAX_UNPACKED_RATIO}x its size (or "
                        f"{MAX_UNPACKED_BYTES // 1024**3} GiB); refused as a possible zip bomb before unpacking")
    return top


def _extract(zip_path: Path) -> Path:
    """Unpack a model zip once into ``<zip dir>/.<zip name>.<digest>/`` (named by the zip's contents, so another zip
    never reuses it), atomically, on rank 0, after :func:`check_archive`; the other ranks wait and use it."""
    def unpack() -> Path:
        target = zip_path.parent / f".{zip_path.stem}.{_sha256(zip_path)[:12]}"
        try:
            z = zipfile.ZipFile(zip_path)
        except zipfile.BadZipFile as exc:
            raise UserError(f"{zip_path}: not a zip file ({exc})") from None
        with z:
            top = check_archive(zip_path, z)
            folder = target / top
            if not folder.is_dir():
                tmp = target.with_name(target.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                for info in z.infolist():  # only checked members, each to its checked place
                    if not info.is_dir():
                        dest = tmp / top / info.filename.replace("\\", "/").split("/", 1)[1]
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with z.open(info) as src, open(dest, "wb") as out:
                            shutil.copyfileobj(src, out)
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
        return folder

    folder = dist.on_main(unpack)
    dist.barrier()
    return folder
