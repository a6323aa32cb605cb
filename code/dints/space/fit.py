"""The largest patch, then the largest batch, whose predicted memory fits a GPU (docs/method.md, "The plan").

A patch is searched along one sequence of steps: it starts at the median image (each side rounded down to what the
network accepts, at least one such step), and each step takes one step off the side that is largest relative to the
median image, so the sides stay in proportion to the image's physical extent. The first patch of the sequence that
fits with the smallest batch is the plan's; then the batch grows while it fits. Both are maximal by construction:
the patch before it in the sequence does not fit, and neither does one more crop.

The memory of a patch and batch comes from a callable (the predictors of :mod:`dints.space.network_memory`), so the
rule is tested on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

#: Bytes per megabyte (MiB).
MB = 1024**2
#: Share of the GPU memory the plan keeps free: the CUDA context, cuDNN's workspace and the allocator's slack.
HEADROOM = 0.15


def budget_bytes(gpu_mb: float, headroom: float = HEADROOM) -> int:
    """The bytes a planned step may take on a GPU of ``gpu_mb`` MB."""
    return int(gpu_mb * (1 - headroom) * MB)


def patch_steps(image: Sequence[int], divisor: int) -> Iterator[tuple[int, ...]]:
    """Patches from the largest, the median ``image`` shape with each side rounded down to a multiple of ``divisor``
    (at least ``divisor``), to ``divisor`` on every side; each one side smaller by ``divisor`` than the one before,
    the side largest relative to ``image`` (the first such axis on a tie)."""
    patch = [max(divisor, int(s) // divisor * divisor) for s in image]
    yield tuple(patch)
    while any(p > divisor for p in patch):
        ratios = [p / max(int(s), 1) if p > divisor else -1.0 for p, s in zip(patch, image)]
        k = ratios.index(max(ratios))
        patch[k] -= divisor
        yield tuple(patch)


@dataclass(frozen=True)
class Fit:
    """A planned patch and batch.

    Attributes:
        patch: the patch (voxels per side).
        batch: crops per step.
        predicted: the predicted peak bytes of a step at this patch and batch.
        larger_patch: the step before ``patch`` in :func:`patch_steps` (None: the median image itself fits).
        larger_patch_bytes: its predicted bytes at the smallest batch.
        next_batch_bytes: the predicted bytes of one more crop.
        capped: the batch was stopped by ``max_batch``, not by the memory.
    """

    patch: tuple[int, ...]
    batch: int
    predicted: int
    larger_patch: tuple[int, ...] | None
    larger_patch_bytes: int | None
    next_batch_bytes: int
    capped: bool = False


class DoesNotFit(ValueError):
    """Not even the smallest patch fits with the smallest batch."""


def fit(memory: Callable[[tuple[int, ...], int], int], image: Sequence[int], divisor: int, budget: int,
        min_batch: int = 1, max_batch: Callable[[tuple[int, ...]], int] | None = None) -> Fit:
    """The largest patch of :func:`patch_steps` whose ``memory(patch, min_batch)`` is at most ``budget`` bytes, then
    the largest batch (at most ``max_batch(patch)``) whose ``memory(patch, batch)`` is.

    Raises:
        DoesNotFit: the smallest patch with ``min_batch`` crops is over the budget (its bytes in the message).
    """
    larger = larger_bytes = None
    for patch in patch_steps(image, divisor):
        need = memory(patch, min_batch)
        if need <= budget:
            break
        larger, larger_bytes = patch, need
    else:
        raise DoesNotFit(f"a {'x'.join(map(str, patch))} patch with batch {min_batch} needs {need / MB:.0f} MB "
                         f"predicted, over the {budget / MB:.0f} MB planned for")
    cap = None if max_batch is None else max_batch(tuple(patch))
    batch = largest_batch(memory, patch, budget, min_batch, cap)
    return Fit(tuple(patch), batch, memory(patch, batch), larger, larger_bytes, memory(patch, batch + 1),
               capped=cap is not None and batch == cap and memory(patch, batch + 1) <= budget)


def largest_batch(memory: Callable[[tuple[int, ...], int], int], patch: tuple[int, ...], budget: int,
                  min_batch: int = 1, max_batch: int | None = None) -> int:
    """The largest batch from ``min_batch`` (returned even when over the budget) to ``max_batch`` whose
    ``memory(patch, batch)`` is at most ``budget``."""
    batch = min_batch
    # Memory grows linearly with the batch beyond one crop: jump to the estimate, then settle on the exact answer.
    two, three = memory(patch, min_batch + 1), memory(patch, min_batch + 2)
    if three > two:
        batch = max(min_batch, min_batch + 1 + int((budget - two) // (three - two)))
    if max_batch is not None:
        batch = min(batch, max_batch)
    while batch > min_batch and memory(patch, batch) > budget:
        batch -= 1
    while (max_batch is None or batch < max_batch) and memory(patch, batch + 1) <= budget:
        batch += 1
    return batch


def windows(image: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """How many sliding windows of ``patch`` with ``overlap`` cover ``image`` (MONAI's scan: the step is
    ``patch * (1 - overlap)``, at least one voxel, and a side no larger than the patch takes one window)."""
    count = 1
    for s, p in zip(image, patch):
        step = max(1, int(p * (1 - overlap)))
        count *= 1 if s <= p else math.ceil((s - p) / step) + 1
    return count
