#!/usr/bin/env python
"""Stage 1 with SEARCH_SEEDS=K: choose one of K seeded searches and install it as the search run's result.

    python code/choose_search.py --search_seeds 3 --config configs/tiny.yaml --data_root data --task Task99_Demo \
        --work_root work

Reads ``<search run>/seeds/seed<s>/`` for ``--seed`` s0 .. s0+K-1 (``code/search.py --seed_folder 1`` writes them;
``code/main.sh 1`` with ``SEARCH_SEEDS=K`` runs them, then this), checks that each is finished and was made with this
run's options, and chooses the one with the highest supernet validation Dice at its last validation (a tie goes to
the lower seed). Its architecture files, ``metrics.csv``, ``progress.png``, record and summary are copied into the
search run folder, where the later stages read them, with ``search_choice.json``: every candidate, the rule, the
chosen seed and why. One line per candidate and one for the choice go to the console and the folder's
``search.log``. Rerunning it installs the same files again.
"""

from __future__ import annotations

from config import load_config, to_dict
from dints.errors import ConfigError
from dints.pipeline.cli import cli_main
from dints.pipeline.search_choice import Candidate, choose_and_install
from dints.run import layout, lock
from dints.run.runlog import setup_logging


def options(p) -> None:
    p.add_argument("--search_seeds", type=int, required=True,
                   help="K: how many seeded searches to choose among (--seed and the next K-1), K >= 2")


def main(argv: list[str] | None = None) -> Candidate:
    cfg = load_config(argv, "search", prog="choose_search.py", description=__doc__.split("\n\n")[0],
                      add_options=options)
    count = vars(cfg).pop("search_seeds")
    cfg.sources.pop("search_seeds", None)
    if count < 2:
        raise ConfigError(f"--search_seeds must be >= 2 to choose among searches, got {count} (one search writes the "
                          "search run folder itself)")
    run = layout.search_dir(cfg.work_root, cfg.task, cfg.mem)
    exists = run.is_dir()  # else there is no search to choose: the first seed's folder is named as missing
    notes = lock.acquire(run).notes if exists else []  # not while a search or another choice writes the folder
    log = setup_logging(run / layout.LOGS["search"] if exists else None)
    for note in notes:
        log.warning("%s", note)
    seeds = list(range(cfg.seed, cfg.seed + count))
    return choose_and_install(cfg.work_root, cfg.task, cfg.mem, seeds, to_dict(cfg), log)


if __name__ == "__main__":
    cli_main(main)
