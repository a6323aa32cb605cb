"""How the library is put together: floors that only look down, no import cycles, no reaching up into the stage
scripts, and typed settings."""

from __future__ import annotations

import ast
import dataclasses
from argparse import Namespace
from pathlib import Path

import pytest

from dints.run.settings import DataSettings, InferSettings

PKG = Path(__file__).resolve().parents[1] / "code" / "dints"
STAGE_MODULES = {"config", "search", "retrain", "test", "fuse", "report", "visualize", "predict", "choose_search"}
#: The floors of the package docstring, from the ground up: a module's floor is that of its top-level name.
FLOORS = [{"errors", "io", "run"}, {"space", "data"}, {"train"}, {"evaluate"}, {"pipeline"}]


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (``dints.space.ops``); packages by their ``__init__``."""
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in it (function-local imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "dints"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "dints":
            for a in node.names:  # `from dints.space import ops` imports the module dints.space.ops
                out.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module)
    return out - {"dints"}


def floor(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, names in enumerate(FLOORS) if top in names)


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_every_module_has_a_floor_and_imports_only_its_floor_or_lower():
    g = graph()
    for m in g:
        if m != "dints":
            floor(m)  # StopIteration: a new top-level folder that the floors do not name
    upward = sorted(f"{m} (floor {floor(m)}) imports {i} (floor {floor(i)})" for m, deps in g.items() if m != "dints"
                    for i in deps if floor(i) > floor(m))
    print("floors:", [sorted(f) for f in FLOORS])
    assert not upward, upward


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as the modules along it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_two_modules_import_each_other():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check finds one


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
