"""Process-group helpers: one code path for a single process, Horovod (``horovodrun``) and ``torchrun``.

The launcher is detected from the environment: Horovod sets ``HOROVOD_RANK``, torchrun sets ``RANK`` and
``WORLD_SIZE``. Only rank 0 writes files; the other ranks receive what they need from it (the checkpoint a run
resumes from) and send it what it writes (validation rows, test probabilities).

CPU threads: processes sharing a machine split its cores (``cores // processes per node`` threads each) unless
``OMP_NUM_THREADS`` says otherwise. Without this, each Horovod process starts one thread per core next to
Horovod's own background thread, and the oversubscribed OpenMP threads spin: a 2-process search on 2 cores ran 40x
slower than one process. torchrun sets ``OMP_NUM_THREADS=1`` itself.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable


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


def threads_per_process(local_size: int, env: dict[str, str] | None = None) -> int | None:
    """CPU threads each of ``local_size`` processes on this machine should use; None when ``OMP_NUM_THREADS`` is set
    (the user's or the launcher's choice stands)."""
    env = os.environ if env is None else env
    if env.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_size))


def init(device_type: str = "cpu") -> DistInfo:
    """Initialise the process group once (no-op for a single process) and return this rank's info.

    With several processes, each one's CPU threads are set by :func:`threads_per_process`.
    """
    global _INFO
    if _INFO is not None:
        return _INFO
    backend = detect_launcher()
    local_size = 1
    if backend == "horovod":
        import horovod.torch as hvd

        hvd.init()
        _INFO = DistInfo("horovod", hvd.rank(), hvd.size(), hvd.local_rank())
        local_size = hvd.local_size()
    elif backend == "torch":
        import torch.distributed as td

        if not td.is_initialized():
            # Long enough for rank 0's one-off work while the others wait (checking every label of a large task on
            # a first run); a rank that dies is noticed at once all the same (its sockets close).
            minutes = float(os.environ.get("DINTS_TIMEOUT_MINUTES", 60))
            td.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timedelta(minutes=minutes))
            atexit.register(_destroy)  # an orderly shutdown: Gloo's threads abort the process when left running
        _INFO = DistInfo("torch", td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    else:
        _INFO = DistInfo("none", 0, 1, 0)
    if _INFO.world_size > 1:
        threads = threads_per_process(local_size)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
    return _INFO


def _destroy() -> None:
    import torch.distributed as td

    if td.is_initialized():
        td.destroy_process_group()


def info() -> DistInfo:
    """This process's :class:`DistInfo` (a single process until :func:`init` says otherwise)."""
    return _INFO if _INFO is not None else DistInfo("none", 0, 1, 0)


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    d = info()
    if d.backend == "horovod":
        import horovod.torch as hvd

        hvd.barrier()
    elif d.backend == "torch":
        import torch.distributed as td

        td.barrier()


def average_gradients(params, finite: bool = True) -> bool:
    """Average the gradients of ``params`` over all ranks in one flat allreduce, and agree on whether to step.

    A parameter without a gradient on this rank (an unsampled path) contributes zeros; one that has none on any
    rank keeps none, so the optimiser skips it as a single process would (no weight decay or momentum step on it).
    Every rank joins the allreduce even when its own loss was not finite (``finite`` False, no backward): the ranks'
    collectives stay in step, and all of them skip the step together.

    Returns:
        Whether the loss was finite on every rank (for one process: ``finite``).
    """
    d = info()
    if d.world_size == 1:
        return finite
    import torch

    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    ref = params[0] if params else torch.zeros(())
    has = torch.tensor([float(p.grad is not None) for p in params] + [float(not finite)], dtype=ref.dtype,
                       device=ref.device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [has])
    if d.backend == "horovod":
        import horovod.torch as hvd

        flat = hvd.allreduce(flat, op=hvd.Sum, name="grads")
    else:
        import torch.distributed as td

        td.all_reduce(flat)
    flat /= d.world_size
    if float(flat[-1]) > 0:  # some rank's loss was not finite: nobody steps
        return False
    had = flat[-1 - len(params):-1] > 0
    offset = 0
    for p, any_grad in zip(params, had.tolist()):
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone() if any_grad else None
        offset += n
    return True


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


def broadcast_object(obj: Any, root: int = 0) -> Any:
    """Rank ``root``'s ``obj`` (any picklable value) on every rank (identity for one process)."""
    d = info()
    if d.world_size == 1:
        return obj
    if d.backend == "horovod":
        import horovod.torch as hvd

        return hvd.broadcast_object(obj, root_rank=root)
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=root)
    return box[0]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0 (None on the others); ``[obj]`` for one process. Horovod has no
    gather, so there every rank receives them."""
    d = info()
    if d.world_size == 1:
        return [obj]
    if d.backend == "horovod":
        everything = gather_objects(obj)
        return everything if d.is_main else None
    import torch.distributed as td

    out: list[Any] | None = [None] * d.world_size if d.is_main else None
    td.gather_object(obj, out, dst=0)
    return out


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` for one process)."""
    d = info()
    if d.world_size == 1:
        return [obj]
    if d.backend == "horovod":
        import horovod.torch as hvd

        return hvd.allgather_object(obj)
    import torch.distributed as td

    out: list[Any] = [None] * d.world_size
    td.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 and give its result to every rank. An exception it raises is raised on every rank (so
    no rank is left waiting for the others); rank 0 keeps the original with its traceback."""
    d = info()
    if d.world_size == 1:
        return fn()
    result, error = None, None
    if d.is_main:
        try:
            result = fn()
        except Exception as exc:
            error = exc
    try:
        result, shared = broadcast_object((result, error))
    except Exception:  # an exception that cannot be pickled: pass its words
        result, shared = broadcast_object((None, RuntimeError(f"rank 0: {error!r}") if error else None))
    if error is not None:
        raise error
    if shared is not None:
        raise shared
    return result


def replica_digests(module) -> list[str]:
    """A digest of ``module``'s parameters and buffers from every rank, in rank order (equal when the replicas are)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return gather_objects(h.hexdigest()[:16])
