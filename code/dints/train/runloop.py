"""The training-loop harness shared by the search and retraining.

A stage supplies what differs — one training step, one validation, the objects and extra state it checkpoints — and
:class:`RunLoop` does the rest the same way for both: resuming from ``latest.pt``, the progress bar, TensorBoard
scalars, the guard against non-finite steps, validation on schedule with its CSV table and the best result, and
checkpoint cadence.

    loop = RunLoop("retrain fold 0", run_dir, LoopSettings.from_options(cfg), log, config, hint="lower --base_lr",
                   objects={"model": net, "optimizer": opt, "scaler": scaler, "loader": loader})
    loop.resume(cfg.resume, RESUME_KEYS)   # restores the objects; returns the checkpoint (or None) for the rest
    loop.run(step, validate, extra_state)
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tensorboardX import SummaryWriter
from tqdm import tqdm

from dints.errors import Interrupted, UserError
from dints.io import write_csv
from dints.run import dist, faults, layout
from dints.run.settings import LoopSettings
from dints.run.signals import StopRequest
from dints.train import checkpoint

#: Consecutive non-finite steps tolerated before a run stops.
MAX_BAD_STEPS = 10


@dataclass
class Step:
    """What one training step reports.

    Attributes:
        ok: every loss was finite and the optimisers stepped.
        scalars: TensorBoard scalars of the step (written, and kept in the run's trace, on logged iterations).
        postfix: progress-bar fields.
        loss: the training loss of the step (averaged between validations into the metrics table's ``train_loss``).
    """

    ok: bool
    scalars: dict[str, float] = field(default_factory=dict)
    postfix: dict[str, str] = field(default_factory=dict)
    loss: float | None = None


@dataclass
class Validation:
    """What one validation reports.

    Attributes:
        dice: the mean foreground Dice the best result is chosen by (unrounded; NaN never counts as better).
        row: the metrics table's row (``iteration`` is added by the loop).
        text: the log line's detail, after ``iteration <n>: ``.
        scalars: TensorBoard scalars (``val/...``).
    """

    dice: float
    row: dict[str, Any]
    text: str
    scalars: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, res: dict, label: str, extra_row: dict[str, Any] | None = None, extra_text: str = "") -> Validation:
        """From :func:`dints.evaluate.validation.validate`'s result: the row holds the mean and per-class Dice (5
        decimals) with ``extra_row`` between them, the text ``<label> Dice <mean> [<per class>]<extra_text>``."""
        mean, per_class = res["mean_dice"], res["class_dice"]
        row = {"val_dice": round(mean, 5), **(extra_row or {}),
               **{f"dice_{k + 1}": round(v, 5) for k, v in enumerate(per_class)}}
        text = f"{label} Dice {mean:.4f} {[round(v, 4) for v in per_class]}{extra_text}"
        scalars = {"val/dice": mean, **{f"val/dice_class{k + 1}": v for k, v in enumerate(per_class)}}
        return cls(mean, row, text, scalars)


class RunLoop:
    """Iterations ``start..iters-1`` of one run, resumable, with validation, best tracking and checkpoints.

    Files in ``run_dir`` (rank 0 writes): ``latest.pt`` (every ``ckpt_interval`` iterations unless the last step
    was not finite, at the end, and on SIGTERM/SIGINT; the one it replaces is kept as ``latest.prev.pt``),
    ``best.pt`` (when ``keep_best`` and the validation Dice improves), ``metrics.csv`` (one row per validation, with
    the mean training loss since the previous one), ``progress.png`` (redrawn at each validation by ``progress``)
    and ``tb/`` (TensorBoard). The scalars of every logged iteration are kept as the run's ``trace`` (in the
    checkpoints, so a resumed run draws its whole history).

    Args:
        desc: progress-bar label.
        run_dir: the run folder.
        settings: iterations and the validation, logging and checkpoint intervals.
        log: the stage's logger.
        config: the resolved configuration, recorded in every checkpoint.
        hint: what to try when steps keep failing (ends the error message).
        objects: what the checkpoints hold by ``state_dict()`` under these keys (network, optimisers, scalers, data
            streams), restored by ``load_state_dict`` on resume.
        keep_best: write ``best.pt`` at each improvement of the validation Dice.
        progress: draws ``progress.png`` from ``(path, trace, history)`` after each validation (rank 0).
    """

    def __init__(self, desc: str, run_dir: Path, settings: LoopSettings, log: logging.Logger,
                 config: dict[str, Any], hint: str, objects: dict[str, Any], keep_best: bool = False,
                 progress: Callable[[Path, list, list], Any] | None = None):
        self.desc, self.run_dir, self.s, self.log, self.hint = desc, Path(run_dir), settings, log, hint
        self.config, self.objects = config, objects
        self.keep_best, self.progress = keep_best, progress
        self.trace: list[dict[str, float]] = []
        self.loss_sum, self.loss_count = 0.0, 0  # training losses since the last validation
        self.latest, self.best_path = self.run_dir / layout.LATEST, self.run_dir / layout.BEST
        self.start, self.history, self.best, self.best_iteration = 0, [], -1.0, -1
        self.seconds, self.iterations_run = 0.0, 0
        self.replica_digests: list[str] = []
        self.saved_iteration: int | None = None  # the iteration latest.pt holds

    def resume(self, mode: str, keys: list[str]) -> dict[str, Any] | None:
        """Load ``latest.pt`` following ``--resume``; restore the objects, RNG states, position, history and best.

        Args:
            mode: ``auto``, ``yes`` or ``no``.
            keys: options that must equal the checkpoint's (compared with ``config``).

        Returns:
            The checkpoint, for the stage to restore anything else from; None when starting afresh.
        """
        # Rank 0 reads the file and hands it to the others: every rank resumes from the same state, even where the
        # other nodes cannot see rank 0's disk.
        state = dist.on_main(lambda: checkpoint.load_for_resume(self.latest, mode, self.config, keys, self.log))
        if state is None:
            return None
        for key, obj in self.objects.items():
            if key not in state:
                raise UserError(f"checkpoint {self.latest} holds no '{key}'; it was not written by this stage: move "
                                "it away or pass --resume no to start afresh")
            try:
                obj.load_state_dict(state[key])
            except (RuntimeError, KeyError, ValueError, TypeError) as exc:
                first = str(exc).strip().splitlines()[0]
                raise UserError(f"checkpoint {self.latest}: its '{key}' does not fit this run ({first}); was it "
                                "written for another architecture? Move it away or pass --resume no to start "
                                "afresh") from None
        checkpoint.set_rng_state(state["rng"])
        self.start, self.history, self.saved_iteration = state["iteration"], state["history"], state["iteration"]
        self.trace = state.get("trace", [])
        self.loss_sum, self.loss_count = state.get("loss_since_validation", (0.0, 0))
        self.best, self.best_iteration = state.get("best_dice", -1.0), state.get("best_iteration", -1)
        self.log.info("resumed from %s at iteration %d", self.latest, self.start)
        return state

    def _save(self, path: Path, it: int, extra: Callable[[], dict[str, Any]]) -> None:
        if dist.info().is_main:  # latest.pt keeps the one it replaces, the fallback should the new one be unreadable
            checkpoint.save(path, keep_previous=path == self.latest, **self.objects, **extra(), iteration=it,
                            history=self.history, trace=self.trace,
                            loss_since_validation=(self.loss_sum, self.loss_count), best_dice=self.best,
                            best_iteration=self.best_iteration, config=self.config)
        if path == self.latest:
            self.saved_iteration = it

    def run(self, step: Callable[[int], Step], validate: Callable[[int], Validation],
            extra: Callable[[], dict[str, Any]], log_scalars: Callable[[int], dict[str, float]] | None = None) -> None:
        """Run the remaining iterations.

        Args:
            step: performs iteration ``it`` (0-based).
            validate: validates after ``done`` iterations.
            extra: what the checkpoints hold besides the objects (plain values, tensors, metadata).
            log_scalars: extra scalars computed only on logged iterations (off the hot path).

        Raises:
            UserError: ``MAX_BAD_STEPS`` consecutive non-finite steps.
        """
        s, main = self.s, dist.info().is_main
        writer = None
        if main:
            writer = SummaryWriter(str(self.run_dir / layout.TENSORBOARD), purge_step=self.start)
        bar = tqdm(range(self.start, s.iters), initial=self.start, total=s.iters, desc=self.desc, disable=not main,
                   dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)
        t0 = time.perf_counter()
        try:
            self._iterate(bar, writer, step, validate, extra, log_scalars)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        self.seconds, self.iterations_run = time.perf_counter() - t0, s.iters - self.start
        if "model" in self.objects:  # every replica must have taken the same steps
            self.replica_digests = dist.replica_digests(self.objects["model"])
            if len(set(self.replica_digests)) > 1:
                self.log.warning("the processes' models differ after training: %s", self.replica_digests)

    def _iterate(self, bar, writer, step, validate, extra, log_scalars) -> None:
        """The iterations of :meth:`run` (``bar`` iterates over them), stopping on a signal or repeated faults."""
        s, bad = self.s, 0
        with StopRequest(self.log) as stop:
            for it in bar:
                faults.on_iteration(it)
                out = step(it)
                bad = 0 if out.ok else bad + 1
                if not out.ok:
                    self.log.warning("iteration %d: non-finite loss, step skipped (%d in a row)", it, bad)
                    if bad >= MAX_BAD_STEPS:
                        kept = (f"{self.latest} holds iteration {self.saved_iteration}, from before the fault"
                                if self.saved_iteration is not None else "no checkpoint was written yet")
                        raise UserError(f"the loss was not finite for {bad} consecutive iterations (last {it}); "
                                        f"{kept}; {self.hint}, or check the data")
                if out.ok and out.loss is not None:
                    self.loss_sum, self.loss_count = self.loss_sum + out.loss, self.loss_count + 1
                if it % s.log_interval == 0 or it == s.iters - 1:
                    scalars = dict(out.scalars)
                    if log_scalars is not None:
                        with torch.no_grad():
                            scalars.update(log_scalars(it))
                    self.trace.append({"iteration": it, **{k: float(v) for k, v in scalars.items()}})
                    if writer is not None:
                        for k, v in scalars.items():
                            writer.add_scalar(k, v, it)
                bar.set_postfix(out.postfix, refresh=False)
                done = it + 1
                if (s.val_interval and done % s.val_interval == 0) or done == s.iters:
                    self._validate(done, validate, extra, writer)
                # Not during a run of non-finite steps: should it end the run, latest.pt is from before the fault.
                if (done % s.ckpt_interval == 0 and bad == 0) or done == s.iters:
                    self._save(self.latest, done, extra)
                signame = stop.agreed()
                if signame is not None:
                    if self.saved_iteration != done:
                        self._save(self.latest, done, extra)
                    dist.barrier()  # rank 0's checkpoint is on disk before any rank exits
                    raise Interrupted(signame, f"checkpoint {self.latest} holds iteration {done} of {s.iters}")

    def _validate(self, done: int, validate: Callable[[int], Validation], extra, writer) -> None:
        res = validate(done)
        improved = res.dice > self.best
        if improved:
            self.best, self.best_iteration = res.dice, done
        train_loss = round(self.loss_sum / self.loss_count, 5) if self.loss_count else None
        self.loss_sum, self.loss_count = 0.0, 0
        self.history.append({"iteration": done, **res.row, "train_loss": train_loss})
        self.log.info("iteration %d: %s%s", done, res.text, " (best)" if improved and self.keep_best else "")
        if writer is not None:
            for k, v in res.scalars.items():
                writer.add_scalar(k, v, done)
        if dist.info().is_main:
            write_csv(self.run_dir / layout.METRICS, self.history)
            if self.progress is not None:
                try:
                    self.progress(self.run_dir / layout.PROGRESS, self.trace, self.history)
                except Exception as exc:  # a picture must never stop a training run
                    self.log.warning("could not draw %s (%s: %s)", layout.PROGRESS, type(exc).__name__, exc)
        if improved and self.keep_best:
            self._save(self.best_path, done, extra)
