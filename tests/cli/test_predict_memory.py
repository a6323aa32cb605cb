"""scripts/predict_memory.py: the memory predictor's command line."""

from __future__ import annotations

import json

import pytest
import torch

from dints.space.archfile import Arch, save_arch
from dints.space.decode import decode
from dints.space.network import DiscreteNet
from scripts import predict_memory


def test_cli_prints_the_prediction(tmp_path, capsys):
    arch = Arch.from_decoded(decode(torch.randn(4, 7), torch.randn(4, 7, 5)), opset=1, channel_mul=0.25)
    save_arch(arch, tmp_path / "arch.json")
    predict_memory.main(["--arch", str(tmp_path / "arch.json"), "--patch", "32", "32", "64", "--batch", "3", "--gpu_mb",
                 "1000"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("predicted memory (patch 32x32x64, batch 3, channel_mul 0.5, fp32): activations ")
    assert "largest batch" in lines[1]
    out = json.loads(lines[-1])
    net = DiscreteNet(arch, 1, 2, 0.5)  # retraining's default: twice the search's channels
    assert out["params_mb"] == pytest.approx(4 * sum(p.numel() for p in net.parameters()) / 2**20, abs=0.01)
    assert out["total_mb"] > out["activations_mb"] > 0 and out["batch_size"] == 3


def test_cli_refuses_a_patch_the_network_refuses(tmp_path, capsys):
    from dints.pipeline.cli import cli_main

    arch = Arch.from_decoded(decode(torch.randn(4, 7), torch.randn(4, 7, 5)), opset=1, channel_mul=0.25)
    save_arch(arch, tmp_path / "arch.json")
    with pytest.raises(SystemExit) as exc:
        cli_main(lambda: predict_memory.main(["--arch", str(tmp_path / "arch.json"), "--patch", "32", "32", "40"]))
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: --patch: patch [32, 32, 40]: a 3-level network needs 3 sides "
                                               "divisible by 16")
