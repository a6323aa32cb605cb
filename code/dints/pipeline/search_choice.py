"""Stage 1 with several seeds: choose one of K seeded searches and install it as the search run's result.

DARTS-style searches decode other architectures from other seeds. With ``SEARCH_SEEDS=K`` (``code/main.sh``) stage 1
runs K searches, ``--seed`` s0 .. s0+K-1, each in its own folder (:func:`dints.run.layout.search_seed_dir`), with
every other option the same, then chooses one by :data:`RULE` and copies its files into the search run folder, where
the later stages read them:

- the architecture files (``arch.json``, ``arch.pth``, their pictures, every ``arch_<iter>`` snapshot), the
  ``metrics.csv`` and ``progress.png``;
- ``config_search.json``: the chosen search's record, with ``search_seeds`` (the seeds chosen among) and
  ``chosen_seed``;
- ``search_choice.json``: every candidate (seed, supernet validation Dice, decoded memory ratio, ``arch.json``'s
  sha256, folder), the rule, the chosen seed and the reason in words;
- ``summary.json`` last (the stage's marker): the chosen search's summary with ``search_seeds`` and ``chosen_seed``.

Each file is written atomically and the marker is removed first, so an interrupted installation is redone, to the
same bytes, by the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from dints.errors import ConfigError, UserError
from dints.io import atomic_write, write_json
from dints.pipeline import records
from dints.run import layout
from dints.run.settings import RECORD_KEYS

#: How one of the seeded searches is chosen.
RULE = ("the highest supernet validation Dice at the search's last validation (summary.json's val_dice, measured "
        "after its last iteration on the search fold's validation cases); a tie goes to the lower seed")
#: The files of a search folder that hold its architecture: arch.json, arch.pth, arch.png/.svg, arch_<iter>.*.
ARCH_FILE = re.compile(rf"^{re.escape(Path(layout.ARCH).stem)}(_\d+)?\.(json|pth|png|svg)$")
#: The search's other results the search run folder shows (besides its record and summary).
OTHER_FILES = (layout.METRICS, layout.PROGRESS)


@dataclass(frozen=True)
class Candidate:
    """One finished seeded search, as the choice sees it."""

    seed: int
    folder: Path
    val_dice: float
    mem_ratio: float | None
    arch_sha256: str
    summary: dict[str, Any]
    record: dict[str, Any]

    def facts(self) -> dict[str, Any]:
        """What ``search_choice.json`` says about this search."""
        return {"seed": self.seed, "val_dice": self.val_dice, "mem_ratio": self.mem_ratio,
                "mem_ratio_expected": self.summary.get("mem_ratio_expected"),
                "iterations": self.summary.get("iterations"), "arch_sha256": self.arch_sha256,
                "folder": str(self.folder)}


def _read_json(path: Path, seed: int, folder: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"seed {seed}: {folder} holds no finished search ({path.name} is missing); rerun stage 1 "
                        "(bash code/main.sh 1 with the same SEARCH_SEEDS) to finish it") from None
    except ValueError:
        raise UserError(f"seed {seed}: {path} is not valid JSON ({what})") from None
    if not isinstance(data, dict):
        raise UserError(f"seed {seed}: {path} is not a JSON object ({what})")
    return data


def read_candidate(folder: Path, seed: int, current: dict[str, Any] | None = None) -> Candidate:
    """The finished search in ``folder``, made with ``--seed seed``.

    Args:
        current: this run's resolved search options; the search must have been made with the same values of
            :data:`~dints.run.settings.RECORD_KEYS` (``seed`` excepted, which must be ``seed``).

    Raises:
        UserError: the search is not finished, cannot be ranked (no validation Dice) or was made with other options,
            in one line naming its folder.
    """
    folder = Path(folder)
    summary = _read_json(folder / layout.SUMMARY, seed, folder, "the search's summary")
    record = _read_json(folder / layout.config_record("search"), seed, folder, "the search's record")
    arch = folder / layout.ARCH
    if not arch.is_file():
        raise UserError(f"seed {seed}: {folder} holds no finished search ({layout.ARCH} is missing); rerun stage 1 "
                        "(bash code/main.sh 1 with the same SEARCH_SEEDS) to finish it")
    config = record.get("config")
    if not isinstance(config, dict) or config.get("seed") != seed:
        raise UserError(f"seed {seed}: {folder / layout.config_record('search')} is not the record of a search with "
                        f"--seed {seed}")
    if current is not None:
        key = records.first_difference(config, {**current, "seed": seed}, RECORD_KEYS["search"])
        if key is not None:
            raise ConfigError(f"seed {seed}: the search in {folder} was made with --{key} "
                              f"{json.dumps(config.get(key))}, and this run has {json.dumps(current.get(key))}; "
                              "FORCE=1 redoes the searches, or another WORK_ROOT keeps both")
    dice = summary.get("val_dice")
    if not isinstance(dice, (int, float)) or isinstance(dice, bool) or not math.isfinite(dice):
        raise UserError(f"seed {seed}: {folder / layout.SUMMARY} has no validation Dice (val_dice {dice!r}): the "
                        "searches cannot be ranked (a search with at least one iteration validates after its last)")
    return Candidate(seed, folder, float(dice), summary.get("mem_ratio"),
                     hashlib.sha256(arch.read_bytes()).hexdigest(), summary, record)


def read_candidates(work_root: str | Path, task: str, mem: float, seeds: Sequence[int],
                    current: dict[str, Any] | None = None) -> list[Candidate]:
    """Every seeded search of the run, in the order of ``seeds`` (see :func:`read_candidate`)."""
    return [read_candidate(layout.search_seed_dir(work_root, task, mem, s), s, current) for s in seeds]


def choose(candidates: Sequence[Candidate]) -> tuple[Candidate, str]:
    """The candidate :data:`RULE` chooses, and why, in words.

    Raises:
        ValueError: no candidates.
    """
    if not candidates:
        raise ValueError("no searches to choose among")
    ranked = sorted(candidates, key=lambda c: (-c.val_dice, c.seed))
    best = ranked[0]
    tied = [c.seed for c in ranked if c.val_dice == best.val_dice]
    if len(tied) > 1:
        reason = (f"seeds {', '.join(map(str, tied))} share the highest supernet validation Dice, "
                  f"{best.val_dice:.4f}; the lower seed, {best.seed}, is chosen")
    else:
        reason = f"seed {best.seed} has the highest supernet validation Dice, {best.val_dice:.4f}"
    rest = [c for c in ranked if c.val_dice != best.val_dice]
    if rest:
        reason += f" (next: seed {rest[0].seed}, {rest[0].val_dice:.4f})"
    return best, reason


def _copy(src: Path, dst: Path) -> None:
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def install(run: Path, chosen: Candidate, candidates: Sequence[Candidate], reason: str) -> Path:
    """Make ``chosen`` the search run folder's result (see the module's docstring); returns ``search_choice.json``.

    Architecture files and other results of an earlier search in ``run`` that ``chosen`` lacks are removed, so the
    folder never mixes two searches.
    """
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    (run / layout.SUMMARY).unlink(missing_ok=True)  # unfinished until the new summary lands
    names = sorted(p.name for p in chosen.folder.iterdir() if p.is_file() and ARCH_FILE.match(p.name))
    names += [n for n in OTHER_FILES if (chosen.folder / n).is_file()]
    for p in run.iterdir():
        if p.is_file() and (ARCH_FILE.match(p.name) or p.name in OTHER_FILES) and p.name not in names:
            p.unlink()
    for name in names:
        _copy(chosen.folder / name, run / name)
    seeds = [c.seed for c in candidates]
    facts = {"search_seeds": seeds, "chosen_seed": chosen.seed}
    write_json(run / layout.config_record("search"), {**chosen.record, **facts})
    choice = write_json(run / layout.SEARCH_CHOICE, {
        "rule": RULE, "seeds": seeds, "chosen_seed": chosen.seed, "reason": reason,
        "candidates": [c.facts() for c in candidates]})
    write_json(run / layout.SUMMARY, {**chosen.summary, **facts, "chosen_from": str(chosen.folder)})
    return choice


def choose_and_install(work_root: str | Path, task: str, mem: float, seeds: Sequence[int],
                       current: dict[str, Any] | None, log: logging.Logger) -> Candidate:
    """Read the seeded searches, log one line each, choose one, log why, and install it in the search run folder."""
    candidates = read_candidates(work_root, task, mem, seeds, current)
    for c in candidates:
        ratio = "?" if c.mem_ratio is None else f"{c.mem_ratio:.3f}"
        log.info("seed %d: supernet validation Dice %.4f, memory ratio %s decoded, arch.json sha256 %s (%s)",
                 c.seed, c.val_dice, ratio, c.arch_sha256[:12], c.folder)
    chosen, reason = choose(candidates)
    run = layout.search_dir(work_root, task, mem)
    install(run, chosen, candidates, reason)
    log.info("chose seed %d among %d searches: %s; installed in %s (%s)", chosen.seed, len(candidates), reason, run,
             layout.SEARCH_CHOICE)
    return chosen
