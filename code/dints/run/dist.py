"""Process-group helpers: one code path for a single process, Horovod (``horovodrun``) and ``torchrun``.

The launcher is detected from the environment: Horovod sets ``HOROVOD_RANK``, torchrun sets ``RANK`` and
``WORLD_SIZE``. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    backend: str  # "none", "horovod" or "torch"
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files and shows progress bars."""
        return self.rank == 0


_INFO: DistInfo | None = None


def detect_launcher(env: dict[str, str] | None = None) -> str:
    """Return ``"horovod"``, ``"torch"`` or ``"none"`` from the launcher's environment variables."""
    env = os.environ if env is None else env
    if "HOROVOD_RANK" in env:
        return "horovod"
    if "RANK" in env and "WORLD_SIZE" in env:
        return "torch"
    return "none"


def init(device_type: str = "cpu") -> DistInfo:
    """Initialise the process group once (no-op for a single process) and return this rank's info."""
    global _INFO
    if _INFO is not None:
        return _INFO
    backend = detect_launcher()
    if backend == "horovod":
        import horovod.torch as hvd

        hvd.init()
        _INFO = DistInfo("horovod", hvd.rank(), hvd.size(), hvd.local_rank())
    elif backend == "torch":
        import torch.distributed as td

        if not td.is_initialized():
            td.init_process_group("nccl" if device_type == "cuda" else "gloo")
        _INFO = DistInfo("torch", td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    else:
        _INFO = DistInfo("none", 0, 1, 0)
    return _INFO


def info() -> DistInfo:
    """This process's :class:`DistInfo` (a single process until :func:`init` says otherwise)."""
    return _INFO if _INFO is not None else DistInfo("none", 0, 1, 0)


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    d = info()
    if d.backend == "horovod":
        import horovod.torch as hvd

        hvd.allreduce(__import__("torch").zeros(1), name="barrier")
    elif d.backend == "torch":
        import torch.distributed as td

        td.barrier()


def average_gradients(params) -> None:
    """Average the gradients of ``params`` over all ranks in one flat allreduce (no-op for one process).

    A parameter without a gradient on this rank (an unsampled path) contributes zeros, so every rank takes the
    same step.
    """
    d = info()
    if d.world_size == 1:
        return
    import torch

    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    if d.backend == "horovod":
        import horovod.torch as hvd

        flat = hvd.allreduce(flat, op=hvd.Average, name="grads")
    else:
        import torch.distributed as td

        td.all_reduce(flat)
        flat /= d.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def broadcast_parameters(module) -> None:
    """Copy rank 0's parameters and buffers to every rank (no-op for one process)."""
    d = info()
    if d.world_size == 1:
        return
    if d.backend == "horovod":
        import horovod.torch as hvd

        hvd.broadcast_parameters(module.state_dict(), root_rank=0)
    else:
        import torch.distributed as td

        for t in module.state_dict().values():
            td.broadcast(t, src=0)


def sum_tensor(t):
    """Sum a CPU tensor over all ranks (identity for one process); returns a CPU tensor."""
    d = info()
    if d.world_size == 1:
        return t
    if d.backend == "horovod":
        import horovod.torch as hvd

        return hvd.allreduce(t, op=hvd.Sum)
    import torch
    import torch.distributed as td

    dev = torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else t.device
    out = t.to(dev, copy=True)
    td.all_reduce(out)
    return out.to(t.device)


def gather_rows(rows: dict[int, list[float]], n: int, width: int):
    """Every rank's numeric rows on every rank: ``rows`` maps a global index in ``0..n-1`` to ``width`` floats.

    Each index is held by one rank (the others leave it out); NaN values survive the exchange. One fixed-size
    allreduce, no pickling.

    Returns:
        A float64 tensor ``(n, width)``; rows no rank held are zeros.
    """
    import torch

    buf = torch.zeros(n, width, dtype=torch.float64)
    for i, values in rows.items():
        buf[i] = torch.tensor(values, dtype=torch.float64)
    if info().world_size == 1:
        return buf
    nan_any = sum_tensor(torch.isnan(buf).double()) > 0
    buf = sum_tensor(torch.nan_to_num(buf, nan=0.0))
    buf[nan_any] = float("nan")
    return buf
