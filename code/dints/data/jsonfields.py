"""Fields of a task's ``dataset.json`` that both layouts share, checked in one place."""

from __future__ import annotations

from pathlib import Path

from dints.errors import DataError


def int_keyed(mapping: object, key: str, where: Path) -> dict[int, str]:
    """A mapping of indices ``0..n-1`` to names (MSD's ``modality`` and ``labels``, nnU-Net's ``channel_names``).

    Raises:
        DataError: naming ``where`` and ``key``: not a non-empty mapping, keys not integers, or not 0..n-1.
    """
    if not isinstance(mapping, dict) or not mapping:
        raise DataError(f"{where}: '{key}' must be a non-empty mapping of indices to names")
    try:
        out = {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise DataError(f"{where}: the keys of '{key}' must be integers, got {list(mapping)}") from None
    if sorted(out) != list(range(len(out))):
        raise DataError(f"{where}: the keys of '{key}' must be 0..{len(out) - 1}, got {sorted(out)}")
    return out
