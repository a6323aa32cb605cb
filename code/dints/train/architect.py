"""The bilevel search step (docs/method.md): one weight step, then (after warmup) one architecture step.

First-order and alternating. The weight step trains the supernet's weights on a batch of the weight half with the
architecture parameters frozen; the architecture step trains ``alpha_a``/``alpha_c`` on a batch of the
architecture half with the weights frozen, on

    seg_loss + w(t) * (EP * entropy + |mem - usage/full| + topology * topology_weight * topology_loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from dints.run.settings import SearchSettings
from dints.space import relax
from dints.space.archfile import Arch
from dints.space.decode import Decoded, decode, decode_within
from dints.space.supernet import SuperNet
from dints.train.losses import seg_loss_fn
from dints.train.optim import optimise
from dints.train.schedule import ramp, step_lr, temperature

#: The search's weight learning rate halves at these fractions of the post-warmup iterations.
SEARCH_LR_MILESTONES = (0.4, 0.8)


class Decoding(NamedTuple):
    """One decode of the search distribution: the architecture, its own usage/full memory ratio and the
    log-probability of its topology."""

    decoded: Decoded
    mem_ratio: float
    log_prob: float


@dataclass
class StepResult:
    """What one step computed (Python floats, for logging)."""

    loss: float
    terms: dict[str, float]
    finite: bool


def _set_requires_grad(params, flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


class Architect:
    """Owns the supernet's two optimisers and performs the search's weight and architecture steps.

    The temperature is an argument of every step (from :meth:`tau`), never state of the supernet, so a resumed run
    computes exactly what an uninterrupted one does.

    Args:
        net: the supernet. In multi-process runs every rank holds a replica and gradients are averaged explicitly
            after each backward (:func:`dints.run.dist.average_gradients`), so frozen parameter groups and unsampled
            paths need none of DDP's unused-parameter handling.
        settings: optimisers, schedules, losses and the crop batch the memory estimate is sized for.
        world_size: number of processes; it scales the learning rates of the weights and of the architecture.
        amp: mixed precision (CUDA only).

    As the DiNTS authors' search script does, the two architecture parameter sets have an Adam optimiser each
    (``opt_a`` for ``alpha_a``, ``opt_c`` for ``alpha_c``; betas (0.5, 0.999), no weight decay), both at
    ``arch_lr`` times the number of processes, and their gradients are not clipped; the weights' gradients are
    clipped at ``grad_clip``.
    """

    def __init__(self, net: SuperNet, settings: SearchSettings, world_size: int = 1, amp: bool = False):
        s = self.settings = settings
        self.net = net
        self.base_lr = s.base_lr * world_size
        self.opt_w = torch.optim.SGD(net.weight_parameters(), lr=self.base_lr, momentum=s.momentum,
                                     weight_decay=s.weight_decay)
        self.arch_lr = s.arch_lr * world_size
        self.opt_a = torch.optim.Adam([net.alpha_a], lr=self.arch_lr, betas=(0.5, 0.999), weight_decay=0.0)
        self.opt_c = torch.optim.Adam([net.alpha_c], lr=self.arch_lr, betas=(0.5, 0.999), weight_decay=0.0)
        self.amp = amp
        self.scaler_w = torch.amp.GradScaler("cuda", enabled=amp)
        self.scaler_a = torch.amp.GradScaler("cuda", enabled=amp)
        self.loss_fn = seg_loss_fn()
        #: Input shape the memory estimate is sized for, ``(batch * samples, C, *patch)``.
        self.mem_shape = (s.batch_size * s.num_samples, net.in_channels, *s.patch_size)

    # -------------------------------------------------------------- schedules
    def lr(self, it: int) -> float:
        """Weight learning rate at iteration ``it``."""
        s = self.settings
        return step_lr(self.base_lr, it, s.iters, SEARCH_LR_MILESTONES, start=s.warmup_iters)

    def tau(self, it: int) -> float:
        """Temperature at iteration ``it``."""
        s = self.settings
        return temperature(it, s.warmup_iters, s.iters, s.EF, s.ef_end)

    # -------------------------------------------------------------- losses
    def memory(self, tau: float) -> relax.MemoryEstimate:
        """Expected memory of the current architecture distribution (usage, full, ratio)."""
        return relax.memory_estimate(self.net.alpha_a, self.net.alpha_c, self.net.ops, self.mem_shape,
                                     self.net.channel_mul, self.net.use_downsample, tau)

    def arch_regularisers(self, tau: float) -> dict[str, torch.Tensor]:
        """Entropy, memory and topology terms (unweighted), each a scalar tensor; disabled terms are 0."""
        a, c = self.net.alpha_a, self.net.alpha_c
        zero = a.new_zeros(())
        mem = self.memory(tau)
        return {
            "entropy": relax.entropy_loss(a, c, tau) if self.settings.EP else zero,
            "memory": relax.memory_loss(mem.ratio, self.settings.mem),
            "topology": relax.topology_loss(relax.child_probs(a, tau)) if self.settings.topology else zero,
            "mem_ratio": mem.ratio.detach(),
        }

    def _forward_loss(self, batch: dict, device: torch.device, tau: float) -> torch.Tensor:
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=self.amp):
            logits = self.net(x, use_max=bool(self.settings.use_max), tau=tau)
        return self.loss_fn(logits.float(), y)

    def decodings(self, budget: bool = True) -> dict[str, Decoding]:
        """The current logits decoded both ways (at tau = 1), ``paper`` and ``budget`` (docs/method.md, "Decoding");
        with ``budget`` False the paper's decode only.

        Ops are decoded first, the same for both (each cell's most likely op); the memory ratios are the decoded
        architectures' own usage/full for the crop batch of this search. ``budget`` is ``paper`` itself when that
        already lies in ``[--mem - --decode_band, --mem]``; otherwise the most probable consistent architecture there,
        else within ``--mem`` (~0.1 s at D=4, B=12), or, if none fits, the one of least memory.
        """
        a, c, net = self.net.alpha_a.detach().cpu(), self.net.alpha_c.detach().cpu(), self.net
        paper = decode(a, c)
        share = relax.decoded_path_memory(paper.arch_code_c, net.ops, self.mem_shape, net.channel_mul,
                                          net.use_downsample)

        def of(d: Decoded) -> Decoding:
            return Decoding(d, float((share * d.arch_code_a).sum()), -float(d.cost))

        if not budget:
            return {"paper": of(paper)}
        return {"paper": of(paper), "budget": of(decode_within(a, c, share, self.settings.mem,
                                                                self.settings.decode_band))}

    def decoded_ratios(self) -> dict[str, float]:
        """The decoded memory ratios to log: the chosen decode's, and the paper's beside it when ``--decode budget``."""
        both = self.decodings(budget=self.settings.decode != "paper")  # the budget decode only when it is logged
        ratios = {"memory/ratio_decoded": both[self.settings.decode].mem_ratio}
        if self.settings.decode != "paper":
            ratios["memory/ratio_decoded_paper"] = both["paper"].mem_ratio
        return ratios

    def found_arch(self, it: int, log=None, **provenance) -> Arch:
        """The discrete architecture the logits decode to after ``it`` iterations (``--decode``), with its memory
        ratios, its log-probability and the other decode's for comparison.

        ``mem_ratio`` is the decoded architecture's own usage/full, ``mem_ratio_expected`` the search distribution's
        (at the temperature of the last completed iteration). Ties settled by index order are logged as a warning,
        and so is a budget decode that found nothing within the budget.

        Args:
            it: completed iterations (recorded as ``iteration``).
            log: logger for the warnings.
            **provenance: further :class:`~dints.space.archfile.Arch` fields (``task``, ``fold``).
        """
        kind = self.settings.decode
        both = self.decodings()
        chosen, other_kind = both[kind], "budget" if kind == "paper" else "paper"
        other = both[other_kind]
        d = chosen.decoded
        with torch.no_grad():
            expected = float(self.memory(self.tau(max(it, 1) - 1)).ratio)
        if log is not None:
            if d.ties:
                log.warning("iteration %d: %d decoding decision(s) tied and were settled by the lowest index", it,
                            d.ties)
            if not d.fits:
                log.warning("iteration %d: no architecture fits the memory budget %g; decoded the one of least "
                            "memory (%.3f)", it, self.settings.mem, chosen.mem_ratio)
        net = self.net
        return Arch.from_decoded(d, net.opset, len(net.ops), use_downsample=net.use_downsample,
                                 channel_mul=net.channel_mul, mem_budget=self.settings.mem,
                                 mem_ratio=round(chosen.mem_ratio, 6), mem_ratio_expected=round(expected, 6),
                                 decode=kind, log_prob=round(min(chosen.log_prob, 0.0), 6),
                                 other_decode={"decode": other_kind, "mem_ratio": round(other.mem_ratio, 6),
                                               "log_prob": round(min(other.log_prob, 0.0), 6)},
                                 iteration=it, **provenance)

    def unlikely_paths(self, arch: Arch) -> int:
        """How many of ``arch``'s active paths the search distribution gives a probability under 0.5 (at tau = 1):
        the paths the decoder added only to connect the network (the gap the topology loss is meant to close)."""
        eta = relax.path_probs(self.net.alpha_a.detach().cpu(), 1.0)
        return int(((eta < 0.5) & torch.tensor(arch.arch_code_a, dtype=torch.bool)).sum())

    # -------------------------------------------------------------- steps
    def weight_loss(self, batch: dict, it: int, device: torch.device) -> torch.Tensor:
        """The weight step's loss on ``batch`` (segmentation), with the weights, and only they, requiring gradients."""
        _set_requires_grad(self.net.arch_parameters(), False)
        _set_requires_grad(self.net.weight_parameters(), True)
        return self._forward_loss(batch, device, self.tau(it))

    def arch_loss(self, batch: dict, it: int, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        """The architecture step's loss on ``batch`` and its terms, with the architecture parameters, and only they,
        requiring gradients (:meth:`arch_step` unfreezes the weights after its backward pass)."""
        s = self.settings
        tau = self.tau(it)
        _set_requires_grad(self.net.weight_parameters(), False)
        _set_requires_grad(self.net.arch_parameters(), True)
        seg = self._forward_loss(batch, device, tau)
        reg = self.arch_regularisers(tau)
        w = ramp(it, s.warmup_iters, s.iters)
        loss = seg + w * (reg["entropy"] + reg["memory"] + s.topology_weight * reg["topology"])
        terms = {"seg_a": float(seg.detach()), "entropy": float(reg["entropy"].detach()),
                 "memory": float(reg["memory"].detach()), "topology": float(reg["topology"].detach()),
                 "mem_ratio": float(reg["mem_ratio"]), "ramp": w, "tau": tau}
        return loss, terms

    def weight_step(self, batch: dict, it: int, device: torch.device) -> StepResult:
        """One SGD step on the weights (architecture frozen)."""
        for g in self.opt_w.param_groups:
            g["lr"] = self.lr(it)
        loss = self.weight_loss(batch, it, device)
        ok = optimise(loss, self.opt_w, self.scaler_w, self.net.weight_parameters(), self.settings.grad_clip)
        return StepResult(float(loss.detach()), {}, ok)

    def arch_step(self, batch: dict, it: int, device: torch.device) -> StepResult:
        """One Adam step on ``alpha_a`` and ``alpha_c`` (weights frozen)."""
        loss, terms = self.arch_loss(batch, it, device)
        ok = optimise(loss, [self.opt_a, self.opt_c], self.scaler_a, self.net.arch_parameters(), grad_clip=0.0)
        _set_requires_grad(self.net.weight_parameters(), True)
        return StepResult(float(loss.detach()), terms, ok)

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Optimiser and scaler states."""
        return {"opt_w": self.opt_w.state_dict(), "opt_a": self.opt_a.state_dict(), "opt_c": self.opt_c.state_dict(),
                "scaler_w": self.scaler_w.state_dict(), "scaler_a": self.scaler_a.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.opt_w.load_state_dict(state["opt_w"])
        self.opt_a.load_state_dict(state["opt_a"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.scaler_w.load_state_dict(state["scaler_w"])
        self.scaler_a.load_state_dict(state["scaler_a"])
