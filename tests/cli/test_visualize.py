"""code/visualize.py: pictures of an architecture file from the command line, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dints.space.archfile import export_monai_arch, save_arch

ROOT = Path(__file__).resolve().parents[2]
# the architecture the picture tests draw
from space.test_visual import ARCH  # noqa: E402


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "code" / "visualize.py"), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_cli(tmp_path):
    path = save_arch(ARCH, tmp_path / "arch.json")
    out = run_cli(str(path), "--out", str(tmp_path / "fig"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fig" / "arch.png").stat().st_size > 0 and (tmp_path / "fig" / "arch.svg").exists()


@pytest.mark.slow
def test_cli_bad_file_subprocess(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text("{broken")
    out = run_cli(str(path), "--out", str(tmp_path / "fig"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: {path}: not valid JSON: Expecting property name enclosed "
                                               "in double quotes at line 1 column 2"]
    assert not (tmp_path / "fig").exists()


@pytest.mark.parametrize("content", [None, '{"num_blocks": 2}', '{"num_blocks": 2, "bogus": 1}'])
def test_cli_bad_file(tmp_path, capsys, content):
    import visualize  # code/visualize.py, in-process to keep the test fast

    from dints.pipeline.cli import cli_main

    path = tmp_path / "arch.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as exc:
        cli_main(lambda: visualize.main([str(path), "--out", str(tmp_path / "fig")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0] and "Traceback" not in err
    assert not (tmp_path / "fig").exists()


def test_cli_draws_a_monai_arch_code_file(tmp_path, capsys):
    import visualize

    export_monai_arch(ARCH, tmp_path / "arch.pth")
    written = visualize.main([str(tmp_path / "arch.pth"), "--out", str(tmp_path / "fig"), "--in_channels", "1"])
    assert [p.name for p in written] == ["arch.png", "arch.svg"] and all(p.stat().st_size > 0 for p in written)
