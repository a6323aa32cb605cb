"""Checkpoints (dints.train.checkpoint): what they hold reads back with a weights-only load; a file crafted to run
code is refused before anything in it runs; a checkpoint of the older format is refused with the way out."""

from __future__ import annotations

import logging
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from dints.errors import UserError
from dints.train import checkpoint
from helpers import payload

LOG = logging.getLogger("test_checkpoint")


def test_a_checkpoint_reads_back_weights_only_and_restores_the_random_states(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    checkpoint.save(tmp_path / "latest.pt", model=net, optimizer=opt, iteration=5, config={"lr": 0.1}, history=[])
    want = (random.random(), np.random.rand(), torch.rand(1))
    state = torch.load(tmp_path / "latest.pt", weights_only=True)  # plain torch, no allowlist
    checkpoint.set_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == want
    assert torch.equal(state["model"]["weight"], net.weight.detach()) and state["iteration"] == 5
    assert state["optimizer"]["state"][0]["momentum_buffer"].shape == (2, 3)


def test_a_crafted_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    path = payload.write(tmp_path / "evil.pt", marker)
    with pytest.raises(checkpoint.UnsafeCheckpoint, match=r"evil\.pt holds objects a weights-only load refuses "
                                                         r"\(posix\.system\): it was not "
                                                         r"written by this program, and nothing in it was run"):
        checkpoint.load(path)
    assert not marker.exists()
    # The file really is an attack: a full unpickler runs it (in another process, to keep this one clean).
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"],
                   capture_output=True)
    assert marker.exists()


def test_a_crafted_latest_pt_stops_the_resume_and_is_not_passed_over(tmp_path):
    marker = tmp_path / "ran"
    latest = payload.write(tmp_path / "latest.pt", marker)
    good = tmp_path / "latest.prev.pt"
    checkpoint.save(good, iteration=2, config={}, history=[])
    with pytest.raises(UserError, match=r"latest\.pt holds objects .*; move it away, or pass --resume no"):
        checkpoint.load_for_resume(latest, "auto", {}, [], LOG)
    assert not marker.exists()


def test_a_checkpoint_of_the_older_format_is_refused_with_the_way_out(tmp_path):
    old = {"iteration": 3, "config": {}, "history": [], "rng": {"numpy": np.random.get_state()}}
    torch.save(old, tmp_path / "latest.pt")
    with pytest.raises(UserError, match=r"latest\.pt was written by an older version of this program \(it holds "
                                        r"numpy objects, which a weights-only load refuses\); move it away, or pass "
                                        r"--resume no to start afresh"):
        checkpoint.load_for_resume(tmp_path / "latest.pt", "auto", {}, [], LOG)
