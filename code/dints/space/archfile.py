"""The architecture file (``arch.json``) that connects search and retraining (docs/method.md, "Decoding").

An :class:`Arch` is plain named data: the decoded codes, the op set they index, the search settings needed to
interpret them, the memory figures and where it came from. :func:`save_arch` / :func:`load_arch` write and read it as
JSON; :func:`export_monai_arch` / :func:`import_monai_arch` convert to and from the ``.pth`` arch-code files of
MONAI's DiNTS tutorial and Auto3DSeg, so an architecture can move between the two code bases.

Every problem with a file is reported as an ``ArchError`` (a ``ValueError`` and a user error) whose message starts with the file and names the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dints.errors import ArchError
from dints.io import atomic_write, load_torch, refusal
from dints.space import topology
from dints.space.decode import Decoded
from dints.space.opsets import OPSETS, opset_ops

Matrix = list[list[int]]

#: The decodes of a search's distribution (``--decode``).
DECODES = ("paper", "budget")

_REQUIRED = ("num_blocks", "num_depths", "opset", "ops", "node_a", "arch_code_a", "arch_code_c")


@dataclass
class Arch:
    """A searched DiNTS architecture.

    Attributes:
        num_blocks: number of blocks B.
        num_depths: number of resolution levels D.
        opset: op set id (key of :data:`dints.space.opsets.OPSETS`).
        ops: op names in index order; the first ``len(ops)`` ops of the op set (``cellop``).
        node_a: ``(B + 1) x D`` 0/1 rows; row b marks the levels active at the input of block b.
        arch_code_a: ``B x P`` 0/1 rows (``P = 3D - 2``), the active paths of each block.
        arch_code_c: ``B x P`` op indices into ``ops``; entries of inactive paths are kept but unused.
        use_downsample: whether the stem halves the input resolution.
        channel_mul: channel multiplier the search ran with (retraining usually doubles it).
        mem_budget: memory budget of the search as a fraction of the full supernet, if known.
        mem_ratio: usage/full memory ratio of this architecture (its active paths' cost over the cost of every
            path, :func:`dints.space.relax.decoded_memory_ratio`), if known.
        mem_ratio_expected: the search distribution's expected usage/full when the architecture was decoded (what
            the memory loss drives towards the budget), if known.
        decode: how the search's distribution was decoded: ``paper`` (the most probable topology-consistent
            architecture) or ``budget`` (the most probable one within ``mem_budget``), if known.
        log_prob: the log-probability of this architecture's topology (its paths) under the search distribution,
            if known.
        other_decode: the other decode's result for comparison, ``{"decode", "mem_ratio", "log_prob"}``, if known.
        task: task the architecture was searched on, if known.
        fold: fold of that search, if known.
        iteration: search iteration the architecture was decoded at, if known.

    The codes are stored as nested lists of ints (tensors and arrays are converted on construction);
    :meth:`codes` gives them as tensors. Construction validates everything and raises ``ValueError`` naming the
    offending field.
    """

    num_blocks: int
    num_depths: int
    opset: int
    ops: list[str]
    node_a: Matrix
    arch_code_a: Matrix
    arch_code_c: Matrix
    use_downsample: bool = True
    channel_mul: float = 0.5
    mem_budget: float | None = None
    mem_ratio: float | None = None
    mem_ratio_expected: float | None = None
    decode: str | None = None
    log_prob: float | None = None
    other_decode: dict[str, Any] | None = None
    task: str | None = None
    fold: int | None = None
    iteration: int | None = None

    def __post_init__(self) -> None:
        for name in ("node_a", "arch_code_a", "arch_code_c"):
            setattr(self, name, _as_matrix(getattr(self, name), name))
        self.ops = list(self.ops) if isinstance(self.ops, (list, tuple)) else self.ops
        _validate(self)

    @property
    def num_paths(self) -> int:
        """Paths per block, ``3D - 2``."""
        return topology.num_paths(self.num_depths)

    def codes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The codes as LongTensors: ``node_a (B+1, D)``, ``arch_code_a (B, P)``, ``arch_code_c (B, P)``."""
        return (
            torch.tensor(self.node_a, dtype=torch.long),
            torch.tensor(self.arch_code_a, dtype=torch.long),
            torch.tensor(self.arch_code_c, dtype=torch.long),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields (a deep copy)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Any, source: str = "arch") -> Arch:
        """Build and validate an :class:`Arch` from a dict as stored in ``arch.json``.

        Args:
            data: the parsed JSON object.
            source: name used at the start of error messages (the file path).

        Returns:
            The architecture.

        Raises:
            ValueError: ``"<source>: field '<name>': <problem>"`` for a missing, unknown or invalid field.
        """
        if not isinstance(data, dict):
            raise ArchError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for name in data:
            if name not in known:
                raise ArchError(f"{source}: field {name!r}: unknown field")
        for name in _REQUIRED:
            if name not in data:
                raise ArchError(f"{source}: field {name!r}: missing")
        try:
            return cls(**data)
        except ValueError as err:
            raise ArchError(f"{source}: {err}") from None

    @classmethod
    def from_decoded(cls, decoded: Decoded, opset: int, cellop: int | None = None, **fields: Any) -> Arch:
        """Wrap a :class:`dints.space.decode.Decoded` result.

        Args:
            decoded: output of :func:`dints.space.decode.decode`.
            opset: op set id of the search.
            cellop: number of ops per cell (all of the op set if None).
            **fields: remaining :class:`Arch` fields (``use_downsample``, ``channel_mul``, ``mem_budget``, ...).

        Returns:
            The validated architecture.
        """
        num_blocks, num_depths = decoded.node_a.shape[0] - 1, decoded.node_a.shape[1]
        return cls(
            num_blocks=num_blocks,
            num_depths=num_depths,
            opset=opset,
            ops=opset_ops(opset, cellop),
            node_a=decoded.node_a,
            arch_code_a=decoded.arch_code_a,
            arch_code_c=decoded.arch_code_c,
            **fields,
        )


def _as_matrix(value: Any, name: str) -> Any:
    # Accept tensors and arrays for convenience; keep anything else as given so validation reports it.
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.all(value == np.round(value)):
            raise ArchError(f"field {name!r}: non-integer values")
        return value.astype(np.int64).tolist()
    return value


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_matrix(value: Any, name: str, rows: int, cols: int, lo: int, hi: int) -> None:
    # A rows x cols list of lists of ints in [lo, hi].
    if not isinstance(value, list) or len(value) != rows:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise ArchError(f"field {name!r}: expected {rows} rows of {cols}, got {got}")
    for r, row in enumerate(value):
        if not isinstance(row, list) or len(row) != cols:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise ArchError(f"field {name!r}: row {r}: expected {cols} entries, got {got}")
        for c, x in enumerate(row):
            if not _is_int(x):
                raise ArchError(f"field {name!r}: row {r}, column {c}: expected an int, got {x!r}")
            if not lo <= x <= hi:
                raise ArchError(f"field {name!r}: row {r}, column {c}: {x} is outside {lo}..{hi}")


def _validate(arch: Arch) -> None:
    """Check types, shapes, value ranges and the consistency of node and path codes."""
    if not _is_int(arch.num_blocks) or arch.num_blocks < 1:
        raise ArchError(f"field 'num_blocks': expected an int >= 1, got {arch.num_blocks!r}")
    if not _is_int(arch.num_depths) or arch.num_depths < 2:
        raise ArchError(f"field 'num_depths': expected an int >= 2, got {arch.num_depths!r}")
    if not _is_int(arch.opset) or arch.opset not in OPSETS:
        raise ArchError(f"field 'opset': expected one of {sorted(OPSETS)}, got {arch.opset!r}")
    full_set = OPSETS[arch.opset]
    if (
        not isinstance(arch.ops, list)
        or not 1 <= len(arch.ops) <= len(full_set)
        or arch.ops != full_set[: len(arch.ops)]
    ):
        raise ArchError(f"field 'ops': expected a leading part of opset {arch.opset} {full_set}, got {arch.ops!r}")
    if not isinstance(arch.use_downsample, bool):
        raise ArchError(f"field 'use_downsample': expected true or false, got {arch.use_downsample!r}")
    if not _is_number(arch.channel_mul) or not arch.channel_mul > 0:
        raise ArchError(f"field 'channel_mul': expected a positive number, got {arch.channel_mul!r}")
    for name in ("mem_budget", "mem_ratio", "mem_ratio_expected"):
        value = getattr(arch, name)
        if value is not None and (not _is_number(value) or not 0 <= value <= 1):
            raise ArchError(f"field {name!r}: expected a number in [0, 1] or null, got {value!r}")
    if arch.decode is not None and arch.decode not in DECODES:
        raise ArchError(f"field 'decode': expected one of {list(DECODES)} or null, got {arch.decode!r}")
    if arch.log_prob is not None and (not _is_number(arch.log_prob) or arch.log_prob > 0):
        raise ArchError(f"field 'log_prob': expected a number <= 0 or null, got {arch.log_prob!r}")
    other = arch.other_decode
    if other is not None and not (
        isinstance(other, dict) and set(other) == {"decode", "mem_ratio", "log_prob"} and other["decode"] in DECODES
        and _is_number(other["mem_ratio"]) and 0 <= other["mem_ratio"] <= 1
        and _is_number(other["log_prob"]) and other["log_prob"] <= 0
    ):
        raise ArchError("field 'other_decode': expected null or {\"decode\": " + " or ".join(map(repr, DECODES))
                        + f", \"mem_ratio\": a number in [0, 1], \"log_prob\": a number <= 0}}, got {other!r}")
    if arch.task is not None and not isinstance(arch.task, str):
        raise ArchError(f"field 'task': expected a string or null, got {arch.task!r}")
    for name in ("fold", "iteration"):
        value = getattr(arch, name)
        if value is not None and (not _is_int(value) or value < 0):
            raise ArchError(f"field {name!r}: expected an int >= 0 or null, got {value!r}")

    b, d, p = arch.num_blocks, arch.num_depths, topology.num_paths(arch.num_depths)
    _check_matrix(arch.node_a, "node_a", b + 1, d, 0, 1)
    _check_matrix(arch.arch_code_a, "arch_code_a", b, p, 0, 1)
    _check_matrix(arch.arch_code_c, "arch_code_c", b, p, 0, len(arch.ops) - 1)
    try:
        topology.check_codes(arch.arch_code_a, arch.node_a)
    except topology.CodeError as exc:
        raise ArchError(f"field {exc.field!r}: {exc}") from None


def _format_json(data: dict[str, Any]) -> str:
    # One matrix row per line keeps arch.json readable and diffable: collapse every innermost list onto one line.
    def one_line(match: re.Match[str]) -> str:
        return re.sub(r"\s+", " ", match.group(0)).replace("[ ", "[").replace(" ]", "]")

    return re.sub(r"\[[^\[\]{}]*\]", one_line, json.dumps(data, indent=2))


def save_arch(arch: Arch, path: str | os.PathLike[str]) -> Path:
    """Write an architecture to ``path`` as JSON, atomically.

    Args:
        arch: the architecture (validated again before writing).
        path: destination, usually ``<run>/arch.json``; parent folders are created.

    Returns:
        The path written.
    """
    path = Path(path)
    _validate(arch)
    text = _format_json(arch.to_dict()) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def load_arch(path: str | os.PathLike[str]) -> Arch:
    """Read and validate an architecture file.

    Args:
        path: an ``arch.json`` written by :func:`save_arch` (or by hand in the same format).

    Returns:
        The architecture.

    Raises:
        ValueError: the file is missing, unreadable, not JSON or invalid; the message names the file and the field.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ArchError(f"{path}: cannot read architecture file: {err.strerror or err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArchError(f"{path}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    return Arch.from_dict(data, source=str(path))


# --- MONAI arch-code files --------------------------------------------------------------------------------------

#: MONAI's 3-D cell (``Cell.OPS3D``) has exactly opset 1's ops in the same order, so its op indices are ours.
MONAI_OPSET = 1


def read_arch(path: str | os.PathLike[str]) -> Arch:
    """An architecture from ``arch.json`` or a MONAI arch-code ``.pth``/``.pt`` file (by its suffix).

    Raises:
        ArchError: missing or invalid file (naming it and the field).
    """
    path = Path(path)
    if not path.is_file():
        raise ArchError(f"architecture file {path} does not exist (run the search first, or pass --arch)")
    if path.suffix in (".pth", ".pt"):
        return import_monai_arch(path)
    return load_arch(path)


def _to_array(value: Any, source: str, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - any unconvertible object is a bad field
        raise ArchError(f"{source}: field {name!r}: not an array") from None
    if arr.dtype.kind not in "biuf" or arr.ndim not in (2, 3):
        raise ArchError(f"{source}: field {name!r}: expected a numeric 2-D array, got {arr.dtype} {arr.shape}")
    if not np.all(arr == np.round(arr)):
        raise ArchError(f"{source}: field {name!r}: non-integer values")
    return arr


def import_monai_arch(
    path: str | os.PathLike[str],
    *,
    cellop: int | None = None,
    use_downsample: bool = True,
    channel_mul: float = 0.5,
    **fields: Any,
) -> Arch:
    """Read a MONAI DiNTS arch-code file (``torch.save`` of a dict) into an :class:`Arch`.

    Accepts the tutorial's keys ``node_a``, ``arch_code_a``, ``arch_code_c`` and Auto3DSeg's ``node_a``,
    ``code_a``, ``code_c``; values may be numpy arrays or tensors. ``arch_code_c`` may hold op indices ``(B, P)``
    (what ``TopologySearch.decode`` returns) or one-hot rows ``(B, P, K)``. Ops are MONAI's 3-D cell ops, which
    are opset 1.

    Args:
        path: the ``.pth``/``.pt`` file.
        cellop: number of ops per cell (default: all five).
        use_downsample: whether the network's stem halves the input (MONAI's default True).
        channel_mul: channel multiplier of the search that produced the file.
        **fields: further :class:`Arch` fields (``mem_budget``, ``task``, ``fold``, ``iteration``).

    Returns:
        The validated architecture.

    Raises:
        ValueError: unreadable file, missing keys, bad shapes or an inconsistent architecture.
    """
    path = Path(path)
    source = str(path)
    try:
        data = load_torch(path, numpy_arrays=True)  # weights only: nothing in the file runs
    except OSError as err:
        raise ArchError(f"{source}: cannot read arch-code file: {err.strerror or err}") from None
    except pickle.UnpicklingError as err:
        if refusal(err) is None:
            raise ArchError(f"{source}: not a loadable arch-code file (not a torch file)") from None
        raise ArchError(f"{source}: holds objects a weights-only load refuses ({refusal(err)}): not an arch-code "
                        "file, and nothing in it was run") from None
    except Exception as err:  # noqa: BLE001 - torch raises several types for corrupt files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArchError(f"{source}: not a loadable arch-code file ({first})") from None
    return arch_from_monai_codes(data, source, cellop=cellop, use_downsample=use_downsample, channel_mul=channel_mul,
                                 **fields)


def arch_from_monai_codes(
    data: Any,
    source: str = "arch codes",
    *,
    cellop: int | None = None,
    use_downsample: bool = True,
    channel_mul: float = 0.5,
    **fields: Any,
) -> Arch:
    """An :class:`Arch` from MONAI's arch codes, however they were read (a ``.pth`` file, JSON, a dict in memory).

    MONAI numbers the paths of a block and the children exactly as we do (docs/method.md, "Search space"), so the
    codes are taken as they are; only their form is converted. The keys, forms and defaults are those of
    :func:`import_monai_arch`.

    Args:
        data: ``{"node_a", "arch_code_a" or "code_a", "arch_code_c" or "code_c"}`` (other keys are ignored);
            values are nested lists, numpy arrays or tensors.
        source: what the codes came from, at the start of error messages.
        cellop, use_downsample, channel_mul, **fields: see :func:`import_monai_arch`.

    Returns:
        The validated architecture.

    Raises:
        ArchError: missing keys, bad shapes or an inconsistent architecture (naming ``source`` and the field).
    """
    if not isinstance(data, dict):
        raise ArchError(f"{source}: expected a dict of arch codes, got {type(data).__name__}")

    def pick(*names: str) -> tuple[str, np.ndarray]:
        for name in names:
            if name in data:
                return name, _to_array(data[name], source, name)
        raise ArchError(f"{source}: field {names[0]!r}: missing (also looked for {list(names[1:])})")

    _, node_a = pick("node_a")
    name_a, code_a = pick("arch_code_a", "code_a")
    name_c, code_c = pick("arch_code_c", "code_c")
    if code_a.ndim != 2:
        raise ArchError(f"{source}: field {name_a!r}: expected shape (blocks, paths), got {code_a.shape}")
    ops = opset_ops(MONAI_OPSET, cellop)
    if code_c.ndim == 3:
        # One-hot op codes, as TopologyConstruction stores them internally.
        if code_c.shape[-1] < len(ops) or not np.all(code_c.sum(-1) == 1) or not np.all((code_c == 0) | (code_c == 1)):
            raise ArchError(f"{source}: field {name_c!r}: a 3-D op code must be one-hot over the last axis")
        code_c = code_c.argmax(-1)
    num_blocks, p = code_a.shape
    if (p + 2) % 3 or p < 4:
        raise ArchError(f"{source}: field {name_a!r}: {p} paths per block is not 3*D - 2")
    try:
        return Arch(
            num_blocks=num_blocks,
            num_depths=(p + 2) // 3,
            opset=MONAI_OPSET,
            ops=ops,
            node_a=node_a,
            arch_code_a=code_a,
            arch_code_c=code_c,
            use_downsample=use_downsample,
            channel_mul=channel_mul,
            **fields,
        )
    except ValueError as err:
        raise ArchError(f"{source}: {err}") from None




def monai_arch_codes(arch: Arch) -> dict[str, np.ndarray]:
    """The codes in the form MONAI's ``TopologySearch.decode`` returns them.

    Returns:
        ``{"node_a": int64 (B+1, D), "arch_code_a": float64 (B, P), "arch_code_c": int64 (B, P)}``: pass
        ``[arch_code_a, arch_code_c]`` as ``TopologyInstance(arch_code=...)`` and ``node_a`` to ``DiNTS``.

    Raises:
        ValueError: the op set is not MONAI's (opset 1).
    """
    if arch.opset != MONAI_OPSET:
        raise ArchError(f"field 'opset': MONAI's DiNTS cell only has opset {MONAI_OPSET} ops, got opset {arch.opset}")
    return {
        "node_a": np.asarray(arch.node_a, dtype=np.int64),
        "arch_code_a": np.asarray(arch.arch_code_a, dtype=np.float64),
        "arch_code_c": np.asarray(arch.arch_code_c, dtype=np.int64),
    }


def export_monai_arch(arch: Arch, path: str | os.PathLike[str]) -> Path:
    """Write an architecture as a MONAI arch-code file (``torch.save`` of :func:`monai_arch_codes`), atomically.

    The file loads in MONAI's tutorial and Auto3DSeg scripts (``torch.load(..., weights_only=False)``, or
    ``weights_only=True`` with numpy's array globals allowed).

    Args:
        arch: an opset-1 architecture.
        path: destination file.

    Returns:
        The path written.
    """
    path = Path(path)
    codes = monai_arch_codes(arch)
    atomic_write(path, lambda tmp: torch.save(codes, tmp))
    return path
