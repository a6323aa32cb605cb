"""Small distributed programs the two-process tests run under horovodrun or torchrun (and as one process).

    python tests/dist_worker.py step OUT.pt [nan]
    python tests/dist_worker.py validate OUT.json DATA_ROOT WORK_ROOT

``step``: two SGD steps of a tiny supernet in sampling mode (some parameters get no gradient) on two fixed samples;
with two processes each takes one sample. With ``nan``, the second sample holds a NaN in the first step: one
process skips that step, and so must both of two processes although rank 0's loss is finite. ``validate``: the validation Dice of a fixed one-shot supernet on fold 0's
validation cases, sharded by rank. Rank 0 writes OUT.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "code"))

from config import load_config, resolve_task  # noqa: E402
from dints.data.loader import val_loader  # noqa: E402
from dints.data.splits import make_folds  # noqa: E402
from dints.evaluate.validation import validate  # noqa: E402
from dints.run import dist  # noqa: E402
from dints.run.settings import DataSettings, InferSettings  # noqa: E402
from dints.space.supernet import SuperNet  # noqa: E402
from dints.train.optim import optimise  # noqa: E402


def step(out: Path, nan: bool = False) -> None:
    d = dist.init()
    torch.manual_seed(0)
    net = SuperNet(1, 3, num_blocks=3, num_depths=2, channel_mul=0.25)
    with torch.no_grad():
        net.alpha_a.normal_(0.0, 2.0)
    net.sample_paths(1, torch.Generator().manual_seed(3))  # the same paths on every rank
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 1, 16, 16, 16, generator=g)
    y = torch.randint(0, 3, (2, 16, 16, 16), generator=g)
    poisoned = x.clone()
    poisoned[1, 0, 0, 0, 0] = float("nan")
    if d.world_size == 2:
        x, y, poisoned = x[d.rank : d.rank + 1], y[d.rank : d.rank + 1], poisoned[d.rank : d.rank + 1]
    params = net.weight_parameters()
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=4e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    for i in range(2):
        inputs = poisoned if nan and i == 0 else x
        loss = F.cross_entropy(net(inputs, use_max=False), y)  # a mean over voxels: the halves' mean is the whole's
        took = optimise(loss, opt, scaler, params, grad_clip=0.5)
        assert took == (not (nan and i == 0)), (d.rank, i, took)
    if d.is_main:
        torch.save({k: v.clone() for k, v in net.state_dict().items()}, out)
    dist.barrier()  # leave together, as the stages do: a rank exiting while another still writes can abort in Gloo


def validation(out: Path, data_root: str, work_root: str) -> None:
    d = dist.init()
    args = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data_root", data_root, "--task", "Task99_Demo",
            "--work_root", work_root]
    cfg, task = resolve_task(load_config(args, "search"))
    ids = make_folds(task.case_ids, cfg.num_folds, cfg.seed)[0]["val"]
    torch.manual_seed(0)
    net = SuperNet(1, 3, cfg.blocks, cfg.levels, 0.25)
    res = validate(net, val_loader(DataSettings.from_options(cfg), task, ids), cfg.num_classes,
                   InferSettings.from_options(cfg, tta=False), torch.device("cpu"))
    if d.is_main:
        out.write_text(json.dumps({**res, "processes": d.world_size}))
    dist.barrier()


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    step(out, sys.argv[3:] == ["nan"]) if mode == "step" else validation(out, *sys.argv[3:5])
