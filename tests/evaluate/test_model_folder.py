"""Model archives (dints.evaluate.model_folder): every member is checked before anything is unpacked; a zip that
could write outside its folder, hide a link, carry an unlisted file or unpack into a bomb is refused in one line."""

from __future__ import annotations

import hashlib
import stat
import zipfile
from pathlib import Path

import pytest

from dints.errors import UserError
from dints.evaluate.model_folder import MANIFEST, MAX_UNPACKED_RATIO, ModelFolder, check_archive


def make_zip(path: Path, members: dict[str, bytes], manifest: dict[str, bytes] | None = None,
             infos: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> Path:
    """A zip of ``members`` under ``model/`` with a MANIFEST.sha256 listing ``manifest`` (default: the members),
    plus raw ``infos``."""
    listed = members if manifest is None else manifest
    lines = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(listed.items()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(f"model/{name}", data)
        z.writestr(f"model/{MANIFEST}", lines)
        for info, data in infos:
            z.writestr(info, data)
    return path


FILES = {"model.json": b"{}", "arch.json": b"{}", "fold0.pt": b"weights"}


def refused(tmp_path: Path, zip_path: Path, words: str) -> str:
    with pytest.raises(UserError, match=words) as exc:
        ModelFolder.open(zip_path)
    line = str(exc.value)
    print(f"ARCHIVE| {line.replace(str(tmp_path), '…')}")
    assert "\n" not in line
    assert [p.name for p in tmp_path.iterdir()] == [zip_path.name], "something was unpacked"
    return line


def test_a_well_formed_zip_passes_the_checks(tmp_path):
    with zipfile.ZipFile(make_zip(tmp_path / "ok.zip", FILES)) as z:
        assert check_archive(tmp_path / "ok.zip", z) == "model"


@pytest.mark.parametrize("name, words", [
    ("/tmp/evil.sh", r"member '/tmp/evil.sh' has an absolute path; refused before unpacking"),
    ("model/../evil.sh", r"member 'model/\.\./evil.sh' has a '\.\.' or empty path component"),
    ("model/sub/evil.sh", r"member 'model/sub/evil.sh' is not a file of the model folder model/"),
])
def test_a_member_that_would_land_elsewhere_is_refused(tmp_path, name, words):
    info = zipfile.ZipInfo(name)
    path = make_zip(tmp_path / "evil.zip", FILES, {**FILES, name.split("/")[-1]: b"x"}, infos=[(info, b"x")])
    refused(tmp_path, path, words)


def test_a_second_top_folder_is_refused(tmp_path):
    path = make_zip(tmp_path / "evil.zip", FILES, infos=[(zipfile.ZipInfo("other/x"), b"x")])
    refused(tmp_path, path, r"expected one model folder inside, found \['model', 'other'\]")


def test_a_symbolic_link_is_refused(tmp_path):
    info = zipfile.ZipInfo("model/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = make_zip(tmp_path / "evil.zip", FILES, {**FILES, "link": b"/etc/passwd"}, infos=[(info, b"/etc/passwd")])
    refused(tmp_path, path, r"member 'model/link' is a symbolic link; refused before unpacking")


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path):
    path = make_zip(tmp_path / "evil.zip", {**FILES, "extra.py": b"import os"}, FILES)
    refused(tmp_path, path, r"model/extra\.py is not listed in MANIFEST\.sha256; refused before unpacking")


def test_a_zip_without_a_manifest_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        for name, data in FILES.items():
            z.writestr(f"model/{name}", data)
    refused(tmp_path, tmp_path / "evil.zip", r"model/MANIFEST\.sha256 is missing")


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    zeros = bytes(50 * 1024**2)  # 50 MB of zeros compress about a thousandfold
    path = make_zip(tmp_path / "bomb.zip", {**FILES, "fold0.pt": zeros})
    assert path.stat().st_size * MAX_UNPACKED_RATIO < len(zeros)
    line = refused(tmp_path, path, rf"unpacks to \d+ bytes, more than {MAX_UNPACKED_RATIO}x its size .*zip bomb")
    assert int(line.split("unpacks to ")[1].split()[0]) > len(zeros)


def test_a_crafted_fold_file_is_refused_without_running(tmp_path):
    """A model folder whose fold0.pt carries a payload, listed with its true checksum (a folder from someone else):
    the checksums pass, the weights-only load refuses it, and nothing in it runs."""
    import json

    from dints.space.archfile import save_arch
    from helpers import payload
    from space.test_visual import ARCH

    folder, marker = tmp_path / "model", tmp_path / "ran"
    folder.mkdir()
    save_arch(ARCH, folder / "arch.json")
    meta = {"format": 1, "folds": [0], "in_channels": 1, "num_classes": 2, "channel_mul": 0.25}
    (folder / "model.json").write_text(json.dumps(meta))
    payload.write(folder / "fold0.pt", marker, around={})
    (folder / MANIFEST).write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                                           for p in sorted(folder.iterdir())))
    model = ModelFolder.open(folder)
    with pytest.raises(UserError, match=r"fold0\.pt: holds objects a weights-only load refuses \(posix\.system\): "
                                        r"not a fold's weights, and nothing in it was run"):
        model.networks([0], "cpu")
    assert not marker.exists()
