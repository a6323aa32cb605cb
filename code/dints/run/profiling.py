"""Measurements that benchmarks and experiments share."""

from __future__ import annotations

import torch


def saved_activation_mb(net: torch.nn.Module, x: torch.Tensor) -> float:
    """Activation memory of one forward+backward pass: the tensors autograd saves for backward, in MB.

    Counted through ``torch.autograd.graph.saved_tensors_hooks``, once per storage (a tensor saved by several
    operations, or views of one tensor, count once); parameters are not activations and are left out. Exact on
    any device, and independent of allocator caching.

    Args:
        net: the network (its parameters must require grad for backward to run).
        x: an input batch.

    Returns:
        Megabytes (1024**2 bytes).
    """
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    out.float().sum().backward()
    return sum(seen.values()) / 1024**2


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak memory of this process so far, in MB: resident set size, and CUDA memory allocated on a GPU.

    Returns:
        ``{"peak_rss_mb": ...}`` plus ``"peak_cuda_mb"`` when ``device`` is a CUDA device.
    """
    import resource

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # kilobytes on Linux
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 1024**2
    return out
