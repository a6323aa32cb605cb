#!/usr/bin/env python
"""Segment any NIfTI images with a model folder (``scripts/export_model.py`` writes one): the fold ensemble, on each
image's own grid.

    python code/predict.py --model work/model --input new_scans/ --output labels/
    python code/predict.py --model model.zip --input a.nii.gz b.nii.gz --output labels/ --folds 0 1 --tta 1 --save_probs

For every input image (3-D, or 4-D with channels last; any orientation and spacing) it writes
``<output>/<image file name>``; for a model trained on an nnU-Net dataset, the inputs are its channel files
(``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, ...), and each case's output is ``<case>.nii.gz``, as nnU-Net names
its own. The output is a uint8 label map on the image's grid with the image's header, after the model's
chosen post-processing. ``--save_probs`` adds ``<case>.npz`` with the class probabilities on that grid. Images
whose output exists are skipped, so an interrupted run continues where it stopped. Under ``horovodrun`` or
``torchrun`` the images are shared among the processes and rank 0 writes. The numbers follow stages 4-6 exactly
(each fold's probabilities rounded to float16 as stage 4 stores them, averaged, resampled, argmax), so a model
folder predicts the same labels as the run it came from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from dints.data.msd import NIFTI_SUFFIXES, case_id, read_header
from dints.data.nnunet import CHANNEL_FILE
from dints.data.transforms import infer_transforms
from dints.errors import DataError, UserError
from dints.pipeline.cli import OneLineParser, cli_main
from dints.evaluate.fusion import fuse_probabilities
from dints.evaluate.inference import predict_case, save_labels, save_probs
from dints.evaluate.model_folder import ModelFolder
from dints.evaluate.postprocess import keep_largest_component
from dints.evaluate.resample import resample_probabilities
from dints.run import dist
from dints.run.runlog import setup_logging
from dints.run.settings import InferSettings
from dints.pipeline.stage import init_processes, resolve_device


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="predict.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder or its .zip (scripts/export_model.py)")
    p.add_argument("--input", required=True, nargs="+", help="NIfTI images, or folders of them")
    p.add_argument("--output", required=True, help="folder for the label maps")
    p.add_argument("--folds", type=int, nargs="+", default=None, help="folds of the ensemble (default: all)")
    p.add_argument("--tta", type=int, default=0, choices=[0, 1], help="flip test-time augmentation")
    p.add_argument("--save_probs", action="store_true", help="also write <case>.npz with the class probabilities")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    return p.parse_args(argv)


def input_images(inputs: list[str]) -> list[Path]:
    """The NIfTI files named or found (sorted) in the inputs.

    Raises:
        UserError: an input that does not exist, or no image at all.
    """
    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():  # dot files: the ._* resource forks macOS leaves in the Decathlon's archives
            out += sorted(p for p in item.iterdir() if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith("."))
        elif item.is_file():
            out.append(item)
        else:
            raise UserError(f"--input {item}: no such file or folder")
    if not out:
        raise UserError(f"--input {' '.join(inputs)}: no .nii or .nii.gz image found")
    seen: dict[str, Path] = {}
    for p in out:  # the outputs are named after the images: two images of one name would overwrite each other
        if case_id(p) in seen:
            raise UserError(f"--input: {p} and {seen[case_id(p)]} would both write {case_id(p)}")
        seen[case_id(p)] = p
    return out


def input_cases(images: list[Path], channels: int, per_channel: bool) -> list[tuple[str, list[Path]]]:
    """The cases to segment: ``(output file name, image files)``; one file each, or with ``per_channel`` (a model
    of an nnU-Net dataset) the files ``<case>_<XXXX><ending>`` of each case, channels 0..channels-1 in order.

    Raises:
        UserError: with ``per_channel``, a file not so named, or a case lacking a channel's file.
    """
    if not per_channel:
        return [(p.name, [p]) for p in images]
    groups: dict[tuple[Path, str, str], dict[int, Path]] = {}
    for p in images:
        m = CHANNEL_FILE.match(p.name)
        if m is None:
            raise UserError(f"--input {p}: not named <case>_<XXXX>.nii.gz; the model was trained on an nnU-Net "
                            "dataset, whose images are one file per channel")
        groups.setdefault((p.parent, m.group(1), m.group(3)), {})[int(m.group(2))] = p
    out = []
    for (parent, case, ending), files in sorted(groups.items()):
        wrong = sorted(set(range(channels)) ^ set(files))
        if wrong:
            raise UserError(f"--input {parent / f'{case}_{wrong[0]:04d}{ending}'}: "
                            f"{'missing' if wrong[0] not in files else 'a channel the model does not take'}; the "
                            f"model takes {channels} channel file(s) per case (_0000.._{channels - 1:04d})")
        out.append((f"{case}{ending}", [files[k] for k in range(channels)]))
    return out


def check_channels(cases: list[tuple[str, list[Path]]], channels: int) -> None:
    """Each image must be 3-D (one channel) or 4-D with the model's channel count last; each channel file of a case
    (nnU-Net) 3-D (headers only).

    Raises:
        DataError: naming the first image that does not fit.
    """
    for _, files in cases:
        for path in files:
            shape, _ = read_header(path)
            have = shape[3] if len(shape) == 4 else 1
            if len(files) > 1 and have != 1:
                raise DataError(f"{path}: shape {tuple(shape)}: expected a 3-D image (one file per channel)")
            if len(files) == 1 and (len(shape) not in (3, 4) or have != channels):
                raise DataError(f"{path}: shape {tuple(shape)} has {have} channel(s) but the model takes {channels}")


def predict_image(nets: dict, model: ModelFolder, files: list[Path], transform, infer: InferSettings,
                  device: torch.device):
    """Labels (and probabilities) of one image (its file, or its channel files) on its own grid, as stages 4-6
    would compute them."""
    probs, affine = [], None
    source = str(files[0]) if len(files) == 1 else [str(f) for f in files]
    for net in nets.values():
        p, affine = predict_case(net, source, transform, infer, device)
        probs.append(p.astype(np.float16).astype(np.float32))  # as stage 4 stores each fold
    img = nib.load(str(files[0]))
    prob = resample_probabilities(fuse_probabilities(probs), affine, np.asarray(img.affine, dtype=np.float64),
                                  tuple(img.shape[:3]))
    labels = keep_largest_component(prob.argmax(0), model.largest_component)
    return labels, prob


def run_predict(a: argparse.Namespace) -> Path:
    """Predict every input image that has no output yet; returns the output folder."""
    d = init_processes(a.device)
    model = ModelFolder.open(a.model)
    images = input_images(a.input)
    out = Path(a.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out}: exists and is not a folder")
    if any(p.parent.resolve() == out.resolve() for p in images):
        raise UserError(f"--output {out}: holds input images, which the label maps (same file names) would replace")
    cases = input_cases(images, model.meta["in_channels"], model.meta.get("layout") == "nnunet")
    check_channels(cases, model.meta["in_channels"])
    log = setup_logging(None)
    todo = dist.on_main(lambda: [c for c in cases if not (out / c[0]).is_file()])  # rank 0's view of what is done
    log.info("model %s (task %s, folds %s); %d image(s), %d to do -> %s", model.root, model.meta["task"],
             a.folds or model.meta["folds"], len(images), len(todo), out)
    device = resolve_device(a.device)
    nets = model.networks(a.folds, device)
    transform, infer = infer_transforms(model.data_settings()), model.infer_settings(bool(a.tta))
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="predict", disable=not d.is_main)
    for start in range(0, len(todo), d.world_size):  # one image per rank per round; rank 0 writes them all
        i = start + d.rank
        mine, error = None, None
        if i < len(todo):
            try:
                labels, prob = predict_image(nets, model, todo[i][1], transform, infer, device)
                mine = (todo[i], labels.astype(np.uint8), prob.astype(np.float16) if a.save_probs else None)
            except Exception as exc:  # e.g. a truncated file: stop every rank with one line, not one rank with a hang
                named = todo[i][1][0] if len(todo[i][1]) == 1 else todo[i][1][0].parent / todo[i][0]
                error = f"{named}: cannot be segmented ({exc.__class__.__name__}: {exc})"
        errors = [e for e in dist.gather_objects(error) if e]
        if errors:
            raise DataError(errors[0])
        for item in dist.gather_to_main(mine) or []:
            if item is None:
                continue
            (name, files), labels, prob = item
            img = nib.load(str(files[0]))
            affine = np.asarray(img.affine, dtype=np.float64)
            if a.save_probs:  # the probability-file format of stages 4-6, here on the image's own grid
                save_probs(out / f"{case_id(name)}.npz", prob, affine, files[0], orig=(affine, tuple(img.shape[:3])))
            save_labels(out / name, labels, affine, img.header)
            log.info("%s: labels %s -> %s", name, labels.shape, out / name)
            bar.update(1)
    bar.close()
    dist.barrier()
    return out


def main(argv: list[str] | None = None) -> Path:
    return run_predict(parse(argv))


if __name__ == "__main__":
    cli_main(main)
