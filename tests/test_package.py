"""How the library is put together: it never reaches up into the stage scripts, and reads typed settings."""

from __future__ import annotations

import ast
import dataclasses
from argparse import Namespace
from pathlib import Path

import pytest

from dints.run.settings import DataSettings, InferSettings

PKG = Path(__file__).resolve().parents[1] / "code" / "dints"
STAGE_MODULES = {"config", "search", "retrain", "test", "fuse", "report", "visualize"}


def test_library_never_imports_the_stage_scripts():
    offenders = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offenders += [f"{path.relative_to(PKG)}: {n}" for n in names if n.split(".")[0] in STAGE_MODULES]
    assert not offenders


def test_settings_pick_their_fields_and_freeze_lists():
    opts = Namespace(patch_size=[16, 16, 8], sw_batch_size=2, sw_overlap=0.5, tta=1, amp=True, unrelated="x")
    infer = InferSettings.from_options(opts, tta=False)
    assert infer == InferSettings((16, 16, 8), 2, 0.5, False, True)
    with pytest.raises(AttributeError):
        DataSettings.from_options(opts)  # the data settings need fields these options lack
    with pytest.raises(dataclasses.FrozenInstanceError):
        infer.tta = True  # frozen: library code cannot change what the stage resolved
