"""Small distributed programs the two-process tests run under horovodrun or torchrun (and as one process).

    python tests/helpers/dist_worker.py step OUT.pt [nan]
    python tests/helpers/dist_worker.py validate OUT.json DATA_ROOT WORK_ROOT

``step``: two search iterations (a weight step, then an architecture step) of a tiny supernet in sampling mode
(some parameters get no gradient), with the pipeline's loss (Dice + cross-entropy, Dice over the batch) and its
Architect (learning rates times the number of processes). Two processes take one sample each of two fixed samples
and step through the code under test (``Architect`` -> ``optimise`` -> ``dist.average_gradients``). One process
computes the expectation independently: each sample's gradient on its own (what each rank computes), their mean
(what the ranks agree on), then fresh torch optimisers at twice the learning rates, with the weights' clipping and
no clipping of the architecture. With Dice over the batch the two-process step is NOT the one-process step on both
samples (each rank's Dice is over its own batch): the mean of the local gradients is what holds. With ``nan`` the
second sample holds a NaN in the first weight step: one rank's loss is not finite, so both skip that step.
``validate``: the validation Dice of a fixed one-shot supernet on fold 0's validation cases, sharded by rank.
Rank 0 writes OUT (final and initial weights for ``step``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "code"))

from config import load_config, resolve_task  # noqa: E402
from dints.data.loader import val_loader  # noqa: E402
from dints.data.splits import make_folds  # noqa: E402
from dints.evaluate.validation import validate  # noqa: E402
from dints.run import dist  # noqa: E402
from dints.run.settings import DataSettings, InferSettings, SearchSettings  # noqa: E402
from dints.space.supernet import SuperNet  # noqa: E402
from dints.train.architect import Architect  # noqa: E402

SETTINGS = SearchSettings(base_lr=0.1, momentum=0.9, weight_decay=4e-5, arch_lr=0.05, grad_clip=0.5, iters=4,
                          warmup_iters=0, EF=0, ef_end=0.1, EP=1, topology=1, topology_weight=0.001, mem=0.8,
                          decode="paper", decode_band=0.1, use_max=0, batch_size=1, num_samples=1,
                          patch_size=(16, 16, 16))


def _mean_grads(params, losses) -> bool:
    """Set each parameter's gradient to the mean over ``losses`` (callables) of its gradient under each alone, as the
    ranks agree on it (None where no loss reaches it). Returns False when some loss is not finite (no step)."""
    grads = []
    for loss_fn in losses:
        for q in params:
            q.grad = None
        loss = loss_fn()
        if not torch.isfinite(loss):
            for q in params:
                q.grad = None
            return False
        loss.backward()
        grads.append([None if q.grad is None else q.grad.clone() for q in params])
    for i, q in enumerate(params):
        local = [g[i] for g in grads]
        if all(t is None for t in local):
            q.grad = None
        else:
            q.grad = sum(torch.zeros_like(q) if t is None else t for t in local) / len(local)
    return True


def step(out: Path, nan: bool = False) -> None:
    d = dist.init()
    torch.manual_seed(0)
    net = SuperNet(1, 3, num_blocks=3, num_depths=2, channel_mul=0.25)
    with torch.no_grad():
        net.alpha_a.normal_(0.0, 2.0)
    net.sample_paths(1, torch.Generator().manual_seed(3))  # the same paths on every rank
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 1, 16, 16, 16, generator=g)
    y = torch.randint(0, 3, (2, 1, 16, 16, 16), generator=g).float()
    poisoned = x.clone()
    poisoned[1, 0, 0, 0, 0] = float("nan")
    halves = [{"image": x[r : r + 1], "label": y[r : r + 1]} for r in range(2)]
    bad = [{"image": poisoned[r : r + 1], "label": y[r : r + 1]} for r in range(2)]
    cpu = torch.device("cpu")
    if d.world_size == 2:  # the code under test
        arch = Architect(net, SETTINGS, world_size=2)
        for it in range(2):
            w = arch.weight_step((bad if nan and it == 0 else halves)[d.rank], it, cpu)
            assert w.finite == (not (nan and it == 0)), (d.rank, it, w.finite)
            assert arch.arch_step(halves[d.rank], it, cpu).finite
    else:  # the expectation, computed apart from dist.average_gradients and the Architect's optimisers
        arch = Architect(net, SETTINGS, world_size=1)  # for its losses only
        weights, alphas = net.weight_parameters(), [net.alpha_a, net.alpha_c]
        sgd = torch.optim.SGD(weights, lr=2 * SETTINGS.base_lr, momentum=0.9, weight_decay=4e-5)
        adams = [torch.optim.Adam([a], lr=2 * SETTINGS.arch_lr, betas=(0.5, 0.999)) for a in alphas]
        for it in range(2):
            batches = bad if nan and it == 0 else halves
            if _mean_grads(weights, [lambda b=b: arch.weight_loss(b, it, cpu) for b in batches]):
                torch.nn.utils.clip_grad_norm_(weights, SETTINGS.grad_clip)
                sgd.step()
            assert _mean_grads(alphas, [lambda b=b: arch.arch_loss(b, it, cpu)[0] for b in halves])
            for opt in adams:
                opt.step()
            for q in net.parameters():
                q.grad = None
    if d.is_main:
        torch.save({"final": {k: v.clone() for k, v in net.state_dict().items()}, "initial": initial}, out)
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
