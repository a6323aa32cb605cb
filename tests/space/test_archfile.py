"""arch.json round trips and validation; MONAI arch-code .pth import/export checked with MONAI itself."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os

import numpy as np
import pytest
import torch
from monai.networks.nets import DiNTS, TopologyInstance, TopologySearch

from dints.errors import WriteError
from dints.space import archfile, decode
from dints.space.archfile import Arch, export_monai_arch, import_monai_arch, load_arch, save_arch

# A hand-made D=2, B=2 architecture. Paths: 0: 0->0, 1: 1->0, 2: 0->1, 3: 1->1.
# Block 0 reads level 0 and feeds both levels (paths 0, 2); block 1 reads both and feeds level 1 (paths 2, 3).
HAND = dict(
    num_blocks=2,
    num_depths=2,
    opset=1,
    ops=["skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_3x1x3", "conv_1x3x3"],
    node_a=[[1, 0], [1, 1], [0, 1]],
    arch_code_a=[[1, 0, 1, 0], [0, 0, 1, 1]],
    arch_code_c=[[1, 0, 4, 0], [0, 0, 2, 3]],
    use_downsample=True,
    channel_mul=0.5,
    mem_budget=0.8,
    mem_ratio=0.79,
    mem_ratio_expected=0.8,
    decode="budget",
    log_prob=-3.25,
    other_decode={"decode": "paper", "mem_ratio": 0.93, "log_prob": -2.5},
    task="Task09_Spleen",
    fold=2,
    iteration=1200,
)


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):  # MONAI prints a patch-size hint
        return fn(*args, **kwargs)


def write_json(tmp_path, data, name="arch.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_round_trip(tmp_path):
    arch = Arch(**HAND)
    path = save_arch(arch, tmp_path / "run" / "arch.json")
    assert path.exists() and os.listdir(path.parent) == ["arch.json"]  # no temporary file left behind
    assert load_arch(path) == arch
    data = json.loads(path.read_text())
    assert data == HAND  # exactly the docs/method.md, "Decoding" fields, as plain JSON
    # one matrix row per line
    assert "[1, 0, 1, 0]," in path.read_text()
    node_a, code_a, code_c = arch.codes()
    assert node_a.dtype == torch.long and node_a.shape == (3, 2) and code_c.tolist() == HAND["arch_code_c"]
    # optional fields may be omitted
    minimal = {k: HAND[k] for k in archfile._REQUIRED}
    loaded = load_arch(write_json(tmp_path, minimal, "min.json"))
    assert loaded.task is None and loaded.use_downsample is True and loaded.channel_mul == 0.5


def test_save_is_atomic(tmp_path, monkeypatch):
    path = save_arch(Arch(**HAND), tmp_path / "arch.json")
    before = path.read_text()
    changed = Arch(**{**HAND, "iteration": 9999})

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(archfile.os, "replace", fail)
    with pytest.raises(WriteError, match=r"cannot write .*arch.json: disk full; the previous arch.json is kept"):
        save_arch(changed, path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["arch.json"]


def test_from_decoded_and_arrays():
    g = torch.Generator().manual_seed(0)
    alpha_a, alpha_c = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, 3, generator=g)
    dec = decode.decode(alpha_a, alpha_c)
    arch = Arch.from_decoded(dec, opset=0, cellop=3, channel_mul=0.25, task="T", fold=0, iteration=3)
    assert arch.ops == ["skip_connect", "conv_2d_3x3x1", "conv_3x3x3"]
    assert (arch.num_blocks, arch.num_depths) == (5, 3)
    assert arch.codes()[1].equal(dec.arch_code_a)
    as_numpy = Arch(**{**HAND, "node_a": np.array(HAND["node_a"], dtype=float)})
    assert as_numpy.node_a == HAND["node_a"] and isinstance(as_numpy.node_a[0][0], int)


def mutate(path_in_dict, value):
    data = copy.deepcopy(HAND)
    if callable(value):
        value(data)
    else:
        target = data
        for key in path_in_dict[:-1]:
            target = target[key]
        target[path_in_dict[-1]] = value
    return data


def drop(key):
    return lambda d: d.pop(key)


def add(key):
    return lambda d: d.update({key: 1})


BAD = [
    # (field named in the message, mutation, words expected in the message)
    ("num_blocks", (("num_blocks",), 0), "int >= 1"),
    ("node_a", (("num_blocks",), 3), "expected 4 rows"),  # codes no longer match the block count
    ("num_depths", (("num_depths",), 1), "int >= 2"),
    ("opset", (("opset",), 7), "expected one of"),
    ("ops", (("ops",), ["conv_3x3x3", "skip_connect"]), "leading part"),
    ("use_downsample", (("use_downsample",), "yes"), "true or false"),
    ("channel_mul", (("channel_mul",), -1), "positive"),
    ("mem_budget", (("mem_budget",), 1.5), "[0, 1]"),
    ("fold", (("fold",), -1), ">= 0"),
    ("decode", (("decode",), "greedy"), "expected one of ['paper', 'budget']"),
    ("log_prob", (("log_prob",), 0.5), "<= 0"),
    ("other_decode", (("other_decode",), {"decode": "paper", "mem_ratio": 0.4}), "expected null or"),
    ("other_decode", (("other_decode",), {"decode": "best", "mem_ratio": 0.4, "log_prob": -1.0}), "expected null or"),
    ("task", (("task",), 3), "string"),
    ("node_a", (("node_a", 2), [0, 1, 0]), "expected 2 entries"),
    ("node_a", (("node_a", 0, 1), 2), "outside 0..1"),
    ("arch_code_a", (("arch_code_a", 0, 0), 0.5), "expected an int"),
    ("arch_code_c", (("arch_code_c", 1, 3), 5), "outside 0..4"),
    ("arch_code_a", (("arch_code_a", 1), [0, 0, 0, 0]), "no active path"),
    ("node_a", (("node_a", 0), [0, 1]), "inactive at boundary 0"),  # path 0 of block 0 reads level 0
    ("node_a", (("node_a", 1), [1, 0]), "level 1 is inactive at boundary 1 but block 0 feeds it"),
    ("node_a", (("node_a", 2), [1, 1]), "level 0 is active at boundary 2 but no path of block 1 feeds it"),
    ("node_a", (("node_a", 0), [1, 1]), "never reads"),
    ("num_blocks", ((), drop("num_blocks")), "missing"),
    ("extra", ((), add("extra")), "unknown field"),
]


@pytest.mark.parametrize("field,change,words", BAD, ids=[f"{b[0]}:{b[2]}" for b in BAD])
def test_validation_errors_name_file_and_field(tmp_path, field, change, words):
    path = write_json(tmp_path, mutate(*change))
    with pytest.raises(ValueError) as err:
        load_arch(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert f"field '{field}'" in message
    assert words in message, message


def test_file_level_errors(tmp_path):
    for text, words in [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object")]:
        path = tmp_path / "bad.json"
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"^{path}: .*{words}"):
            load_arch(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_arch(tmp_path / "missing.json")


def test_constructor_validates():
    # Built in code rather than loaded: same checks, messages without a file name.
    with pytest.raises(ValueError, match="^field 'node_a': level 1 is inactive at boundary 2 but block 1 feeds it"):
        Arch(**mutate(("node_a", 2), [0, 0]))
    with pytest.raises(ValueError, match="^field 'arch_code_c'"):
        Arch(**mutate(("arch_code_c", 0, 0), -1))


# --- MONAI arch-code files ----------------------------------------------------------------------------------------


def cell_kernels(cell) -> list[tuple[int, ...]]:
    return [tuple(m.kernel_size) for m in cell.op.ops[0].modules() if isinstance(m, torch.nn.Conv3d)]


KERNELS = {  # our op name -> the convolution kernels MONAI builds for it
    "skip_connect": [],
    "conv_3x3x3": [(3, 3, 3)],
    "conv_3x3x1": [(3, 3, 1), (1, 1, 3)],
    "conv_3x1x3": [(3, 1, 3), (1, 3, 1)],
    "conv_1x3x3": [(1, 3, 3), (3, 1, 1)],
}


def test_export_builds_the_same_network_in_monai(tmp_path):
    g = torch.Generator().manual_seed(3)
    alpha_a, alpha_c = torch.randn(4, 7, generator=g) * 3, torch.randn(4, 7, 5, generator=g)
    arch = Arch.from_decoded(decode.decode(alpha_a, alpha_c), opset=1, channel_mul=0.25)
    path = export_monai_arch(arch, tmp_path / "arch_code.pth")
    ckpt = torch.load(path, weights_only=False)  # as MONAI's tutorial loads it
    space = quiet(
        TopologyInstance,
        arch_code=[ckpt["arch_code_a"], ckpt["arch_code_c"]],
        channel_mul=0.25,
        num_blocks=4,
        num_depths=3,
        use_downsample=True,
    )
    active = {(b, i) for b, row in enumerate(arch.arch_code_a) for i, on in enumerate(row) if on}
    assert set(space.cell_tree.keys()) == {str(k) for k in active}
    for b, i in active:
        assert cell_kernels(space.cell_tree[str((b, i))]) == KERNELS[arch.ops[arch.arch_code_c[b][i]]]
    net = DiNTS(space, in_channels=1, num_classes=3, use_downsample=True, node_a=torch.from_numpy(ckpt["node_a"]))
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    assert import_monai_arch(path, channel_mul=0.25) == arch


def test_import_monai_decode_output(tmp_path):
    space = quiet(TopologySearch, channel_mul=0.125, num_blocks=3, num_depths=3, use_downsample=True)
    g = torch.Generator().manual_seed(1)
    alpha_a, alpha_c = torch.randn(3, 7, generator=g) * 3, torch.randn(3, 7, 5, generator=g)
    with torch.no_grad():
        space.log_alpha_a.copy_(alpha_a)
        space.log_alpha_c.copy_(alpha_c)
    node_a, code_a, code_c, code_a_max = space.decode()
    # the dict MONAI's tutorial search writes
    tutorial = {"node_a": node_a, "arch_code_a": code_a, "arch_code_a_max": code_a_max, "arch_code_c": code_c,
                "iter_num": 10, "epochs": 2, "best_dsc": np.float64(0.5)}
    torch.save(tutorial, tmp_path / "search_code_10.pth")
    arch = import_monai_arch(tmp_path / "search_code_10.pth", channel_mul=0.125, task="T", iteration=10)
    ours = decode.decode(alpha_a, alpha_c)
    assert arch.codes()[0].equal(ours.node_a) and arch.codes()[1].equal(ours.arch_code_a)
    assert arch.arch_code_c == code_c.tolist() and arch.iteration == 10 and arch.ops == archfile.opset_ops(1)

    # Auto3DSeg-style keys, tensors, one-hot op codes
    auto = {"node_a": torch.from_numpy(node_a), "code_a": torch.from_numpy(code_a),
            "code_c": torch.nn.functional.one_hot(torch.from_numpy(code_c), 5)}
    torch.save(auto, tmp_path / "auto.pt")
    assert import_monai_arch(tmp_path / "auto.pt", channel_mul=0.125).codes()[2].tolist() == code_c.tolist()


def test_import_errors(tmp_path):
    good = archfile.monai_arch_codes(Arch(**HAND))
    torch.save({k: v for k, v in good.items() if k != "arch_code_c"}, tmp_path / "nokey.pth")
    with pytest.raises(ValueError, match=r"nokey.pth: field 'arch_code_c': missing"):
        import_monai_arch(tmp_path / "nokey.pth")
    bad = dict(good, node_a=good["node_a"][:2])
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape.pth: field 'node_a'"):
        import_monai_arch(tmp_path / "shape.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a loadable"):
        import_monai_arch(tmp_path / "junk.pth")
    # arbitrary pickled objects are refused (weights_only loading), never executed
    torch.save({"node_a": good["node_a"], "x": contextlib.nullcontext()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil.pth: holds objects a weights-only load refuses "
                                         r"\(contextlib\.nullcontext\)"):
        import_monai_arch(tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="cannot read"):
        import_monai_arch(tmp_path / "missing.pth")
    opset0 = Arch(**{**HAND, "opset": 0, "ops": archfile.opset_ops(0), "arch_code_c": [[1, 0, 3, 0], [0, 0, 2, 3]]})
    with pytest.raises(ValueError, match="opset"):
        export_monai_arch(opset0, tmp_path / "x.pth")
