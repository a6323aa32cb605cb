#!/usr/bin/env python
"""Export a run's retrained folds as a self-contained model folder and a .zip of it (code/predict.py reads either).

    python scripts/export_model.py --config configs/tiny.yaml --task Task99_Demo --work_root work --out model
    python scripts/export_model.py ... --folds 0 1 --torchscript

The run's options (``--config``, ``--task``, ``--data_root``, ``--work_root``, ``--mem``, ``--folds``) name the search
run whose ``retrain-fold<k>/best.pt`` are exported (default: every fold that has one). ``<run>/postprocessing.json``
(scripts/choose_postprocessing.py) goes along when it exists. ``--torchscript`` adds each fold's network traced by
TorchScript (``fold<k>.ts``: ``torch.jit.load`` runs it without this code; the way into TensorRT and ONNX tooling).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from config import load_config  # noqa: E402
from dints.data.msd import load_task  # noqa: E402
from dints.pipeline.cli import cli_main  # noqa: E402
from dints.evaluate.model_folder import export_model  # noqa: E402
from dints.run import layout  # noqa: E402


def options(p) -> None:
    p.add_argument("--out", required=True, help="model folder to write (its .zip goes beside it)")
    p.add_argument("--torchscript", action="store_true",
                   help="also write each fold's TorchScript network and torch.export program")


def main(argv: list[str] | None = None) -> Path:
    cfg = load_config(argv, "fuse", prog="export_model.py", description=__doc__.split("\n\n")[0],
                          add_options=options)
    run = layout.search_dir(cfg.work_root, cfg.task, cfg.mem)
    folds = cfg.folds if cfg.folds is not None else list(range(cfg.num_folds))
    ckpts = {k: layout.best_checkpoint(run, k) for k in folds}
    ckpts = {k: f for k, f in ckpts.items() if f.is_file() or cfg.folds is not None}
    post = run / layout.POSTPROCESSING
    zip_path = export_model(ckpts, load_task(cfg.data_root, cfg.task), Path(cfg.out),
                            json.loads(post.read_text()) if post.is_file() else None, cfg.torchscript, source=str(run))
    print(f"model folder {cfg.out} (folds {sorted(ckpts)}) and {zip_path}")
    return zip_path


if __name__ == "__main__":
    cli_main(main)
