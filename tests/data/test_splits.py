"""Cross-validation folds and the search's weight/architecture halves."""

from __future__ import annotations

import json

import pytest

from dints.data.splits import load_or_create_splits, make_folds, search_halves
from dints.errors import DataError

IDS = [f"case_{i:02d}" for i in range(23)]


def test_folds_are_disjoint_cover_everything_and_balanced():
    folds = make_folds(IDS, 5, seed=0)
    assert len(folds) == 5
    vals = [set(f["val"]) for f in folds]
    assert set().union(*vals) == set(IDS)
    assert sum(len(v) for v in vals) == len(IDS)  # each case validated exactly once
    assert sorted(len(v) for v in vals) == [4, 4, 5, 5, 5]
    for f in folds:
        assert set(f["train"]) | set(f["val"]) == set(IDS)
        assert not set(f["train"]) & set(f["val"])


def test_folds_are_deterministic_and_order_independent():
    a = make_folds(IDS, 5, seed=3)
    b = make_folds(list(reversed(IDS)), 5, seed=3)
    assert a == b
    assert make_folds(IDS, 5, seed=4) != a  # the seed matters


def test_too_few_cases():
    with pytest.raises(DataError, match="3 training cases cannot make 5 folds"):
        make_folds(IDS[:3], 5)


def test_splits_file_written_once_and_reused(tmp_path):
    path = tmp_path / "splits.json"
    first = load_or_create_splits(path, IDS, 5, seed=0, task="T")
    saved = json.loads(path.read_text())
    assert saved["folds"] == first and saved["seed"] == 0 and saved["task"] == "T"
    # A different seed later does not silently re-split: the saved file wins.
    assert load_or_create_splits(path, IDS, 5, seed=99) == first


def test_splits_file_mismatch_errors(tmp_path):
    path = tmp_path / "splits.json"
    load_or_create_splits(path, IDS, 5, seed=0)
    with pytest.raises(DataError, match="holds 5 folds but --num_folds is 4"):
        load_or_create_splits(path, IDS, 4, seed=0)
    with pytest.raises(DataError, match="cases differ from dataset.json"):
        load_or_create_splits(path, IDS + ["new_case"], 5, seed=0)
    path.write_text("garbage")
    with pytest.raises(DataError, match="not a valid splits file"):
        load_or_create_splits(path, IDS, 5, seed=0)


def test_search_halves():
    train = make_folds(IDS, 5, 0)[0]["train"]
    w, a = search_halves(train, seed=0)
    assert not set(w) & set(a) and set(w) | set(a) == set(train)
    assert abs(len(w) - len(a)) <= 1
    assert search_halves(train, seed=0) == (w, a)
    with pytest.raises(DataError, match="at least 2 training cases"):
        search_halves(["only_one"])
