#!/usr/bin/env python
"""Stage 1: search a network topology for one task and fold (DESIGN.md §5).

    python code/search.py --config configs/tiny.yaml --data_root data --task Task99_Demo --fold 0 --work_root work
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config import load_config  # noqa: E402
from dints.errors import cli_main  # noqa: E402
from dints.stage import prepare, search_dir  # noqa: E402


def run_search(cfg) -> Path:
    """Prepare the task and the search run folder; returns the run folder."""
    ctx = prepare(cfg, search_dir(cfg), "search.log")
    ctx.logger.info("fold %d: %d training / %d validation cases; run folder %s",
                    cfg.fold, len(ctx.train_ids), len(ctx.val_ids), ctx.run_dir)
    return ctx.run_dir


def main(argv: list[str] | None = None) -> Path:
    return run_search(load_config(argv, "search"))


if __name__ == "__main__":
    cli_main(main)
