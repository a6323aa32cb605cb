"""The plan: every value the stages derive from the dataset's fingerprint and the GPU's memory, as ``plan.yaml``
(docs/method.md, "The plan").

``plan.yaml`` is a preset (top-level keys, then sections named after the stages) that sits under the presets and
the flags: defaults < plan < preset < environment variables < EXTRA_ARGS and flags. Each value carries a comment with
the rule and the figures it came from. The values:

- ``spacing``, ``intensity`` and ``ct_window`` (:mod:`dints.data.planrules`);
- per stage, ``patch_size`` and ``batch_size`` (search, retraining) and ``sw_batch_size`` (each stage's sliding
  window): the largest patch, then the largest batch, whose predicted peak memory fits ``--gpu_mb`` less
  :data:`dints.space.fit.HEADROOM` (:mod:`dints.space.fit`). The search is sized for the one-shot supernet at its
  ``channel_mul``, ``recompute`` and ``amp``; retraining (and the tests, which use its patch) for the architecture
  it retrains at its channel multiplier: the searched one once the search has decoded it (``code/main.sh`` re-plans
  before stage 2), until then the heaviest architecture of the space (every path, the most memory-hungry op).

A value a preset or a flag sets is planned around (the patch for the preset's spacing, the batch for its patch) and
written with the note that it is overridden.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np

from dints.data.planrules import plan_intensity, plan_spacing, resampled_shape
from dints.space import fit as fitting
from dints.space.network_memory import MB, predict, predict_supernet
from dints.space.opsets import opset_ops
from dints.space.sizes import input_divisor

#: ``--gpu_mb`` without a CUDA device: what a CPU run is planned for (MB).
CPU_GPU_MB = 8192.0
#: nnU-Net's cap on the batch: its crops cover at most this share of the dataset's voxels.
BATCH_SHARE = 0.05
#: The values the plan sets, by section (None: top level).
KEYS: dict[str | None, tuple[str, ...]] = {
    None: ("spacing", "intensity", "ct_window"),
    "search": ("patch_size", "batch_size", "sw_batch_size"),
    "retrain": ("patch_size", "batch_size", "sw_batch_size"),
    "test": ("patch_size", "sw_batch_size"),
}


def default_gpu_mb() -> tuple[float, str]:
    """``--gpu_mb``'s default and where it came from: the first CUDA device's memory, else :data:`CPU_GPU_MB`."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory / MB, f"the memory of {props.name}"
    return CPU_GPU_MB, "no CUDA device: the value planned for a CPU run"


@dataclass
class Entry:
    """One planned value: where it goes, what it is, why, and what overrides it (a preset or the command line)."""

    section: str | None
    key: str
    value: Any
    why: str
    overridden_by: str | None = None


def heaviest_arch(num_blocks: int, num_depths: int, ops: Sequence[str], use_downsample: bool, channel_mul: float,
                  patch: Sequence[int], in_channels: int, num_classes: int) -> SimpleNamespace:
    """The discrete architecture of the space that needs the most memory: every path active, each cell with the one
    op (the same everywhere) whose network the predictor finds heaviest at ``patch``."""
    paths = 3 * num_depths - 2
    best, best_bytes = None, -1
    for j in range(len(ops)):
        arch = SimpleNamespace(node_a=np.ones((num_blocks + 1, num_depths), dtype=np.int64),
                               arch_code_a=np.ones((num_blocks, paths), dtype=np.int64),
                               arch_code_c=np.full((num_blocks, paths), j, dtype=np.int64),
                               ops=list(ops), use_downsample=use_downsample, channel_mul=channel_mul / 2)
        need = predict(arch, patch, 2, channel_mul, in_channels, num_classes).total
        if need > best_bytes:
            best, best_bytes = arch, need
    return best


def _overrider(cfg, key: str) -> str | None:
    src = cfg.sources.get(key)
    return None if src is None else ("the command line" if src == "command line" else src)


def _eff(cfg, key: str, planned: Any) -> Any:
    return getattr(cfg, key) if key in cfg.sources else planned


def _shape(v: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in v)


def batch_cap(dataset_voxels: int, patch: Sequence[int], num_samples: int, min_batch: int) -> int:
    """nnU-Net's cap on the batch: its crops cover at most :data:`BATCH_SHARE` of the dataset's voxels (at least
    ``min_batch``)."""
    return max(min_batch, int(BATCH_SHARE * dataset_voxels // (math.prod(patch) * num_samples)))


def _sizes(section: str, memory: Callable[[tuple[int, ...], int], int], image: Sequence[int], divisor: int,
           budget: int, cfg, min_batch: int, what: str, dataset_voxels: int) -> tuple[list[Entry], tuple[int, ...]]:
    """Entries for ``patch_size`` and ``batch_size`` of one stage; returns them and the effective patch."""
    entries = []
    med = _shape(image)
    if "patch_size" in cfg.sources:
        patch = tuple(cfg.patch_size)
        one = memory(patch, min_batch)
        over = "" if one <= budget else f", OVER the budget of {budget / MB:.0f} MB"
        entries.append(Entry(section, "patch_size", list(patch), f"{what} with batch {min_batch}: {one / MB:.0f} MB "
                             f"predicted{over}", _overrider(cfg, "patch_size")))
        cap = batch_cap(dataset_voxels, patch, cfg.num_samples, min_batch)
        batch = fitting.largest_batch(memory, patch, budget, min_batch, cap)
    else:
        try:
            found = fitting.fit(memory, image, divisor, budget, min_batch,
                                lambda p: batch_cap(dataset_voxels, p, cfg.num_samples, min_batch))
        except fitting.DoesNotFit as err:
            raise fitting.DoesNotFit(f"{section}, {what}: {err}") from None
        patch, batch = found.patch, found.batch
        cap = batch_cap(dataset_voxels, patch, cfg.num_samples, min_batch)
        larger = ("no larger step lies within the median image" if found.larger_patch is None else
                  f"the next larger step {_shape(found.larger_patch)} needs {found.larger_patch_bytes / MB:.0f} MB")
        entries.append(Entry(section, "patch_size", list(patch),
                             f"the largest patch (sides multiples of {divisor}, in proportion to the median image "
                             f"{med}) whose {what} with batch {min_batch} fits the budget: "
                             f"{memory(patch, min_batch) / MB:.0f} MB predicted; {larger}"))
    if "batch_size" in cfg.sources:
        entries.append(Entry(section, "batch_size", cfg.batch_size,
                             f"{memory(patch, cfg.batch_size) / MB:.0f} MB predicted", _overrider(cfg, "batch_size")))
    else:
        crops = f" ({cfg.num_samples} crops each)" if cfg.num_samples > 1 else ""
        if batch == cap and memory(patch, batch + 1) <= budget:
            limit = (f"capped by nnU-Net's rule, a batch covers at most {BATCH_SHARE:.0%} of the dataset's voxels "
                     f"(at least {min_batch}): one more would fit, {memory(patch, batch + 1) / MB:.0f} MB")
        else:
            limit = f"one more needs {memory(patch, batch + 1) / MB:.0f} MB"
        entries.append(Entry(section, "batch_size", batch,
                             f"the largest batch{crops} at this patch within the budget: "
                             f"{memory(patch, batch) / MB:.0f} MB predicted; {limit}"
                             + (" (at least 2 for retraining)" if min_batch > 1 else "")))
    return entries, patch


def _sw_entry(section: str, cfg, infer: Callable[[int], int], budget: int, most: int, what: str) -> Entry:
    """``sw_batch_size``: the most windows per batch whose inference bound fits, at most ``most`` (the windows of the
    largest image)."""
    if "sw_batch_size" in cfg.sources:
        return Entry(section, "sw_batch_size", cfg.sw_batch_size, f"{infer(cfg.sw_batch_size) / MB:.0f} MB by the "
                     f"sliding-window bound ({what})", _overrider(cfg, "sw_batch_size"))
    n = fitting.largest_batch(lambda _, k: infer(k), (), budget, 1, most)
    return Entry(section, "sw_batch_size", n,
                 f"windows per sliding-window batch: the most, up to the {most} windows of the largest image, whose "
                 f"bound ({what}: a training step's activations and parameters, plus the whole image's "
                 f"probabilities) fits the budget: {infer(n) / MB:.0f} MB")


def make_plan(fingerprint: dict, configs: dict[str, Any], gpu_mb: float, arch: Any = None,
              arch_source: str | None = None, cuda: bool = True) -> list[Entry]:
    """The plan's entries, in the order ``plan.yaml`` writes them.

    Args:
        fingerprint: ``fingerprint.json``'s content.
        configs: each stage's resolved options (``search``, ``retrain``, ``test``) without any plan: what presets
            and flags set shows in their ``sources``.
        gpu_mb: the GPU memory to plan for (MB).
        arch: the architecture retraining uses (an :class:`dints.space.archfile.Arch`), or None before the search.
        arch_source: how to name it.
        cuda: plan for a CUDA device, with AMP where ``--amp`` is on; False: a CPU run (float32, as it runs).

    Raises:
        dints.space.fit.DoesNotFit: the smallest patch does not fit ``gpu_mb``.
    """
    search, retrain, test = configs["search"], configs["retrain"], configs["test"]
    budget = fitting.budget_bytes(gpu_mb)
    cases = fingerprint["cases"]
    spacings, shapes = [c["spacing"] for c in cases], [c["shape"] for c in cases]
    entries: list[Entry] = []

    def ruled(key: str, value: Any, why: str) -> Entry:  # a value from a rule, or the preset's or flag's instead
        if key not in search.sources:
            return Entry(None, key, value, why)
        return Entry(None, key, getattr(search, key), f"the rule gives {_yaml(value)}: {why}", _overrider(search, key))

    spacing, why = plan_spacing(spacings, shapes)
    entries.append(ruled("spacing", spacing, why))
    median = fingerprint["median"]
    kind, window, why = plan_intensity(fingerprint["channels"], fingerprint["intensity"], median["nonzero_ratio"])
    entries.append(ruled("intensity", kind, why))
    if window is not None and _eff(search, "intensity", kind) == "ct":
        entries.append(ruled("ct_window", window, "the window of --intensity ct, as above"))

    def images(cfg) -> tuple[list[int], list[int], int]:  # the median and the largest image, the dataset's voxels
        target = _eff(cfg, "spacing", spacing)
        resampled = [resampled_shape(sh, sp, target) for sh, sp in zip(shapes, spacings)]
        largest = max(resampled, key=math.prod)
        total = sum(math.prod(r) for r in resampled)
        return [int(v) for v in np.median(np.asarray(resampled), axis=0)], largest, total

    in_ch, classes = search.in_channels, search.num_classes
    amp = {s: bool(c.amp and cuda) for s, c in configs.items()}
    ops = opset_ops(search.opset, search.cellop)

    # The search: the one-shot supernet.
    image, largest, total = images(search)
    divisor = input_divisor(search.levels, bool(search.use_downsample))

    def supernet(patch, n, cfg=search):
        return predict_supernet(cfg.blocks, cfg.levels, patch, n * cfg.num_samples, cfg.channel_mul, in_ch, classes,
                                ops, recompute=bool(cfg.recompute), amp=amp["search"],
                                use_downsample=bool(cfg.use_downsample)).total

    what = (f"one-shot supernet step ({search.blocks} blocks, {search.levels} levels, channel_mul "
            f"{search.channel_mul:g}, {'AMP' if amp['search'] else 'float32'}"
            + (", pseudo-3D recomputed" if search.recompute and not amp['search'] else "") + ")")
    sized, patch = _sizes("search", supernet, image, divisor, budget, search, 1, what, total)
    entries += sized
    out_bytes = (classes + 1) * 4 * math.prod(largest)

    def supernet_infer(n: int) -> int:
        p = predict_supernet(search.blocks, search.levels, patch, n, search.channel_mul, in_ch, classes, ops,
                             recompute=bool(search.recompute), amp=amp["search"],
                             use_downsample=bool(search.use_downsample))
        return p.activations + p.logits + p.params + out_bytes

    entries.append(_sw_entry("search", search, supernet_infer, budget,
                             fitting.windows(largest, patch, search.sw_overlap), "the supernet"))

    # Retraining (and the tests, with its patch): the architecture it retrains.
    image, largest, total = images(retrain)
    mul = retrain.channel_mul if retrain.channel_mul is not None else (
        arch.channel_mul * 2 if arch is not None else 2 * search.channel_mul)
    if arch is None:
        arch = heaviest_arch(retrain.blocks, retrain.levels, ops, bool(retrain.use_downsample), mul, (divisor,) * 3,
                             in_ch, classes)
        about = (f"provisional, before the search: the heaviest architecture of the space (every path, op "
                 f"{ops[int(arch.arch_code_c[0, 0])]}) at channel_mul {mul:g}; re-planned from the searched one")
    else:
        about = f"the architecture {arch_source} at channel_mul {mul:g}"
    divisor = input_divisor(np.asarray(arch.node_a).shape[1], bool(getattr(arch, "use_downsample", True)))

    def discrete(p, n, cfg=retrain):
        return predict(arch, p, n * cfg.num_samples, mul, in_ch, classes, amp=amp["retrain"], momentum=cfg.momentum > 0).total

    what = f"training step ({'AMP' if amp['retrain'] else 'float32'})"
    try:
        sized, patch = _sizes("retrain", discrete, image, divisor, budget, retrain, 2, what, total)
    except fitting.DoesNotFit as err:
        if arch_source is not None:
            raise
        # Before the search: too heavy for the GPU only at its heaviest; the searched architecture decides.
        patch = tuple(_eff(retrain, "patch_size", (divisor,) * 3))
        sized = [Entry("retrain", "patch_size", list(patch), f"the smallest step, and over the budget even so ({err})",
                       _overrider(retrain, "patch_size")),
                 Entry("retrain", "batch_size", _eff(retrain, "batch_size", 2), "the least for retraining",
                       _overrider(retrain, "batch_size"))]
    sized[0].why = f"{about}; {sized[0].why}"
    entries += sized
    out_bytes = (classes + 1) * 4 * math.prod(largest)

    def discrete_infer(n: int, p=patch) -> int:
        pred = predict(arch, p, n, mul, in_ch, classes, amp=amp["retrain"])
        return pred.activations + pred.logits + pred.params + out_bytes

    entries.append(_sw_entry("retrain", retrain, discrete_infer, budget,
                             fitting.windows(largest, patch, retrain.sw_overlap), "the retrained network"))
    # The tests slide the retrained network's window: retraining's patch, unless a preset or flag sets theirs.
    test_patch = tuple(_eff(test, "patch_size", patch))
    if "patch_size" in test.sources:
        entries.append(Entry("test", "patch_size", list(test_patch), f"set by {_overrider(test, 'patch_size')}",
                             _overrider(test, "patch_size")))
    else:
        entries.append(Entry("test", "patch_size", list(test_patch), "the retraining's patch: the window the network "
                                                                     "was trained on"))
    entries.append(_sw_entry("test", test, lambda n: discrete_infer(n, test_patch), budget,
                             fitting.windows(largest, test_patch, test.sw_overlap), "the retrained network"))
    return entries


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def render(entries: Sequence[Entry], header: Sequence[str]) -> str:
    """``plan.yaml``'s text: the header as comments, then each value with its reason as a comment."""
    lines = [f"# {h}" for h in header]
    section: str | None = None
    for e in entries:
        if e.section != section:
            section = e.section
            lines.append(f"{section}:")
        pad = "  " if e.section else ""
        note = f"[set by {e.overridden_by}] " if e.overridden_by else ""
        lines.append(f"{pad}{e.key}: {_yaml(e.value)}  # {note}{e.why}")
    return "\n".join(lines) + "\n"


def describe(entries: Sequence[Entry]) -> list[str]:
    """The plan in one line per value, for the log."""
    out = []
    for e in entries:
        where = f"{e.section}: " if e.section else ""
        note = f" [set by {e.overridden_by}]" if e.overridden_by else ""
        out.append(f"{where}{e.key} {_yaml(e.value)}{note}: {e.why}")
    return out
