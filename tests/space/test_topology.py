"""Topology tables against MONAI's TopologySearch/TopologyConstruction and hand-worked D=2 cases."""

from __future__ import annotations

import contextlib
import io
from functools import lru_cache

import numpy as np
import pytest
import torch
from monai.networks.nets import TopologySearch
from monai.networks.nets.dints import TopologyConstruction

from dints.space import topology


@lru_cache(maxsize=None)
def monai_search(num_depths: int) -> TopologySearch:
    with contextlib.redirect_stdout(io.StringIO()):  # MONAI prints a patch-size hint
        return TopologySearch(channel_mul=0.125, num_blocks=2, num_depths=num_depths, use_downsample=True)


@pytest.mark.parametrize("num_depths", [2, 3, 4, 5])
def test_path_table_matches_monai(num_depths):
    with contextlib.redirect_stdout(io.StringIO()):
        ref = TopologyConstruction(channel_mul=0.125, num_blocks=1, num_depths=num_depths)
    src, tgt, kind = topology.path_table(num_depths)
    assert src.tolist() == ref.arch_code2in
    assert tgt.tolist() == ref.arch_code2out
    assert kind.tolist() == ref.arch_code2ops
    assert topology.num_paths(num_depths) == len(ref.arch_code2out)


def test_path_table_d4_design_values():
    src, tgt, kind = topology.path_table(4)
    assert src.tolist() == [0, 1, 0, 1, 2, 1, 2, 3, 2, 3]
    assert tgt.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    # kind: +1 when the source is coarser (up), -1 when finer (down)
    assert kind.tolist() == [int(np.sign(s - t)) for s, t in zip(src.tolist(), tgt.tolist())]


@pytest.mark.parametrize("num_depths", [2, 3, 4])
def test_children_and_patterns_match_monai(num_depths):
    ref = monai_search(num_depths)
    ch = topology.children(num_depths)
    pat = topology.node_patterns(num_depths)
    assert ch.shape == (2 ** (3 * num_depths - 2) - 1, 3 * num_depths - 2)
    np.testing.assert_array_equal(ch.numpy(), ref.child_list)
    np.testing.assert_array_equal(pat.numpy(), ref.node_act_list)
    assert topology.num_children(num_depths) == len(ref.child_list)
    assert topology.num_patterns(num_depths) == len(ref.node_act_list)


@pytest.mark.parametrize("num_depths", [2, 3, 4])
def test_child_patterns_match_monai(num_depths):
    ref = monai_search(num_depths)
    # get_topology_entropy builds node2in[n] (children whose OUTPUT pattern is n) and node2out[n] (children whose
    # INPUT pattern is n) as a side effect.
    ref.get_topology_entropy(torch.zeros(2, len(ref.child_list)))
    in_idx, out_idx = topology.child_patterns(num_depths)
    for n in range(len(ref.node_act_list)):
        assert torch.nonzero(out_idx == n).flatten().tolist() == sorted(ref.node2in[n])
        assert torch.nonzero(in_idx == n).flatten().tolist() == sorted(ref.node2out[n])


def test_child_patterns_hand_worked_d2():
    # D=2 paths: 0: 0->0, 1: 1->0, 2: 0->1, 3: 1->1. Patterns: 0 = {1}, 1 = {0}, 2 = {0, 1}.
    ch = topology.children(2)
    in_idx, out_idx = topology.child_patterns(2)
    cases = {  # path set -> (input pattern, output pattern)
        (3,): (0, 0),
        (2,): (1, 0),
        (1,): (0, 1),
        (0,): (1, 1),
        (0, 3): (2, 2),
        (1, 2): (2, 2),
        (0, 2): (1, 2),
        (1, 3): (0, 2),
    }
    for paths, (i, o) in cases.items():
        row = torch.zeros(4, dtype=torch.long)
        row[list(paths)] = 1
        j = int(topology.child_index(row))
        assert ch[j].tolist() == row.tolist()
        assert (int(in_idx[j]), int(out_idx[j])) == (i, o), paths


def test_index_round_trip_and_errors():
    pat = topology.node_patterns(3)
    assert topology.pattern_index(pat).tolist() == list(range(7))
    ch = topology.children(3)
    assert topology.child_index(ch).tolist() == list(range(127))
    with pytest.raises(ValueError):
        topology.pattern_index(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        topology.num_paths(1)


def test_tables_are_fresh_copies():
    topology.children(2)[0, 0] = 7
    topology.node_patterns(2)[0, 0] = 7
    topology.child_patterns(2)[0][0] = 7
    assert topology.children(2)[0].tolist() == [0, 0, 0, 1]
    assert topology.node_patterns(2)[0].tolist() == [0, 1]
    assert int(topology.child_patterns(2)[0][0]) == 0


@pytest.mark.parametrize("channel_mul", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("use_downsample", [True, False])
def test_level_channels_match_monai_filter_nums(channel_mul, use_downsample):
    with contextlib.redirect_stdout(io.StringIO()):
        ref = TopologyConstruction(channel_mul=channel_mul, num_blocks=1, num_depths=4, use_downsample=use_downsample)
    s = int(use_downsample)
    assert topology.level_channels(4, channel_mul, use_downsample) == ref.filter_nums[s : s + 4]


def test_level_shape():
    assert topology.level_shape((96, 96, 64), 0) == (48, 48, 32)
    assert topology.level_shape((96, 96, 64), 3) == (6, 6, 4)
    assert topology.level_shape((96, 96, 64), 3, use_downsample=False) == (12, 12, 8)
    with pytest.raises(ValueError):
        topology.level_shape((96, 96, 40), 3)
