"""Hostile and oversized input files: each is refused with one line naming it (exit 2), before anything of its
declared size is allocated, and a command reading one stays under 1 GB of memory (measured on the child process).

The hostile files are built here, each a few KB (the zip bomb ~1 MB), from real VOC-mini dumps."""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import resource
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from helpers import GT, JPEG, voc_mini_ids, write_voc_mini_cams
from orand_addon.cli import cli
from orand_addon.errors import FormatError, UnsafePickleError
from orand_addon.io.safe_pickle import safe_load_npy
from orand_addon.io.sources import load_cam_object

ROOT = Path(__file__).resolve().parents[1]
IDS = voc_mini_ids()[:2]
VICTIM = IDS[0]
HINT = "for genuinely large maps raise the limit with orand-addon --max-input-mb MB or ORAND_ADDON_MAX_INPUT_MB"
MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray


class Reduce:
    """Pickles as ``fn(*args)`` (then ``BUILD state`` when a state is given): how a hostile file is spelled."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def float_storage(n: int = 1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage is deprecated, and it is what real dumps hold
        return torch.zeros(n).storage()


def tensor_view(shape, stride, storage=None, state=None) -> Reduce:
    return Reduce(torch._utils._rebuild_tensor_v2,
                  (storage if storage is not None else float_storage(), 0, shape, stride, False,
                   collections.OrderedDict()), state)


def array_state(shape, dtype, data) -> Reduce:
    """``numpy.ndarray`` rebuilt from a (hostile) state, as numpy pickles arrays."""
    return Reduce(MULTIARRAY._reconstruct, (np.ndarray, (0,), b"b"), (1, shape, np.dtype(dtype), False, data))


def amn_dump(high_res) -> dict:
    return {"keys": torch.tensor([0]), "cam": torch.zeros(2, 3, 3), "high_res": high_res}


def npy_header(shape, descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def save(path: Path, obj) -> Path:
    np.save(path, obj, allow_pickle=True)
    return path


def legacy_storage_bytes(declared: int, held: int) -> bytes:
    """A torch storage in torch's own storage format that declares ``declared`` floats and holds ``held``."""
    out = io.BytesIO()
    for value in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(value, out, protocol=2)

    storage = object()

    class Declaring(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", declared, None) if obj is storage else None

    Declaring(out, protocol=2).dump(storage)
    pickle.dump(["0"], out, protocol=2)
    out.write(np.int64(declared).tobytes() + bytes(4 * held))
    return out.getvalue()


def storage_declaring(declared: int) -> Reduce:
    from torch.storage import _load_from_bytes

    return tensor_view((1,), (1,), storage=Reduce(_load_from_bytes, (legacy_storage_bytes(declared, 4),)))


def self_holding() -> list:
    items: list = []
    items.append(items)
    return items


# -- each hostile pickle: refused in-process, one line, nothing of its size allocated ------------------------------

HOSTILE = {
    "reconstruct-shape": (lambda: amn_dump(Reduce(MULTIARRAY._reconstruct, (np.ndarray, (60000, 60000), b"b"))),
                          FormatError, r"a pickled array of shape 60000 x 60000 int8 would take 13\.4 GB in "
                                       r"memory, above the input limit of 256 MB \(refused before reading it; "
                                       + re.escape(HINT)),
    "reconstruct-state": (lambda: amn_dump(array_state((2, 60000, 60000), "f4", b"")),
                          FormatError, r"a pickled array of shape 2 x 60000 x 60000 float32 would take 26\.8 GB"),
    "object-array-short-list": (lambda: amn_dump(array_state((3,), object, [1])),  # numpy itself segfaults on it
                                UnsafePickleError, r"refused a pickle holding an object array of shape 3 with 1 "
                                                   r"items \(refused before building it\)$"),
    "array-bytes-mismatch": (lambda: amn_dump(array_state((2, 3), "f4", b"x" * 5)),
                             UnsafePickleError, r"refused a pickle holding a 2 x 3 float32 array with 5 bytes of data"),
    "structured-dtype": (lambda: amn_dump(np.zeros((1, 2, 2), [("a", "f4")])),
                         UnsafePickleError, r"refused a pickle holding a structured or unknown numpy dtype"),
    "view-outside-storage": (lambda: amn_dump(tensor_view((3, 3), (3, 1))),
                             UnsafePickleError, r"refused a pickle holding a 3 x 3 tensor view that reaches element 8 "
                                                r"of a storage of 1 \(refused before building it\)$"),
    "stride-0-view": (lambda: amn_dump(tensor_view((2, 20000, 20000), (0, 0, 0))),
                      FormatError, r"a tensor view of shape 2 x 20000 x 20000 would take 3\.0 GB in memory"),
    "build-on-a-tensor": (lambda: amn_dump(tensor_view((1,), (1,), state=(float_storage(), 0, (60000, 60000),
                                                                          (60000, 1)))),
                          UnsafePickleError, r"refused a pickle holding a state applied to a rebuilt PickledTensor"),
    "storage-declaring-more": (lambda: amn_dump(storage_declaring(10**9)),
                               UnsafePickleError, r"refused a pickle holding a tensor storage that declares 3\.7 GB "
                                                  r"but holds 16 bytes"),
    "memo-sharing": (lambda: dict.fromkeys(range(3500), np.ones((400, 480), np.float32)),
                     FormatError, r"its pickled objects, every shared reference counted, would take 2\.5 GB"),
    "holds-itself": (lambda: {"keys": self_holding()},
                     FormatError, r"a container that holds itself \(not a CAM dump\); refused before reading it$"),
    "forbidden-global": (lambda: {"keys": Reduce(os.getcwd, ())},
                         UnsafePickleError, r"refused to unpickle posix\.getcwd \(only numpy arrays, plain containers, "
                                            r"scalars and torch tensors are loaded; nothing from the file was run\)$"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_pickle_is_refused_naming_the_file(case, tmp_path):
    build, error, pattern = HOSTILE[case]
    path = save(tmp_path / f"{VICTIM}.npy", build())
    assert path.stat().st_size < 2_000_000
    with pytest.raises(error) as info:
        safe_load_npy(path)
    assert re.match(re.escape(f"{path}: ") + pattern, str(info.value)), str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_a_npy_header_declaring_37_gib_is_refused_as_truncated(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(npy_header((1, 99000, 100000)) + bytes(64))
    with pytest.raises(FormatError) as info:
        safe_load_npy(path)
    assert str(info.value) == (f"{path}: its header declares a 1 x 99000 x 100000 float32 array (36.9 GB) but holds "
                               f"64 bytes (truncated, or not written by numpy)")


def write_zip_bomb(path: Path, shape=(1, 16384, 16384)) -> Path:
    """An ``.npz`` whose ``high_res`` member inflates to ``shape`` float32 zeros (1 GiB from ~1 MB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("keys.npy", "w") as fh:
            fh.write(npy_header((1,), "<i8") + np.zeros(1, np.int64).tobytes())
        with archive.open("high_res.npy", "w", force_zip64=True) as fh:
            fh.write(npy_header(shape))
            zeros = bytes(1 << 24)
            for _ in range(int(np.prod(shape)) * 4 // len(zeros)):
                fh.write(zeros)
    return path


def test_a_zip_bomb_npz_is_refused_before_it_is_inflated(tmp_path):
    path = write_zip_bomb(tmp_path / f"{VICTIM}.npz")
    assert path.stat().st_size < 1_500_000
    with pytest.raises(FormatError) as info:
        load_cam_object(path)
    assert str(info.value) == (f"{path}[high_res.npy]: the array of shape 1 x 16384 x 16384 float32 would take 1 GB "
                               f"in memory, above the input limit of 256 MB (refused before reading it; {HINT})")


# -- the commands: one line, exit 2, peak memory measured on the child --------------------------------------------

def measured(args: list, env: dict | None = None) -> tuple[int, str, str, float]:
    """``orand-addon ARGS`` in a child process: (exit code, stdout, stderr, peak resident memory in MB). The child's
    address space is capped (8 GB) so that a regression fails fast instead of exhausting the machine."""
    cap = 8 << 30

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "orand_addon", *map(str, args)], stdout=out, stderr=err,
                                preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss / 1024


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dumps")
    write_voc_mini_cams(root / "amn", "amn", seed=1, ids=IDS)
    write_voc_mini_cams(root / "mct", "mctformer", seed=2, ids=IDS)
    return root


def hostile_folder(dumps: Path, tmp_path: Path, write) -> Path:
    """The amn dumps with the first id's file replaced by ``write(folder)``."""
    folder = tmp_path / "amn"
    folder.mkdir()
    for path in (dumps / "amn").iterdir():
        if not path.name.startswith(VICTIM):
            (folder / path.name).write_bytes(path.read_bytes())
    write(folder)
    return folder


BOMBS = {
    "stride-0 tensor": (lambda f: save(f / f"{VICTIM}.npy", amn_dump(tensor_view((2, 20000, 20000), (0, 0, 0)))),
                        r"a tensor view of shape 2 x 20000 x 20000 would take 3\.0 GB in memory"),
    "zip bomb": (lambda f: write_zip_bomb(f / f"{VICTIM}.npz"),
                 r"the array of shape 1 x 16384 x 16384 float32 would take 1 GB in memory"),
    "memo sharing": (lambda f: save(f / f"{VICTIM}.npy", dict.fromkeys(range(3500), np.ones((400, 480), np.float32))),
                     r"its pickled objects, every shared reference counted, would take 2\.5 GB in memory"),
    "reconstruct": (lambda f: save(f / f"{VICTIM}.npy", amn_dump(array_state((2, 60000, 60000), "f4", b""))),
                    r"a pickled array of shape 2 x 60000 x 60000 float32 would take 26\.8 GB in memory"),
    "npy header": (lambda f: (f / f"{VICTIM}.npy").write_bytes(npy_header((1, 99000, 100000)) + bytes(64)),
                   r"its header declares a 1 x 99000 x 100000 float32 array \(36\.9 GB\) but holds 64 bytes"),
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_fuse_refuses_a_memory_bomb_in_one_line_under_1_gb(bomb, dumps, tmp_path):
    write, pattern = BOMBS[bomb]
    folder = hostile_folder(dumps, tmp_path, write)
    victim = next(folder.glob(f"{VICTIM}.*"))
    out = tmp_path / "s.h5"
    code, stdout, stderr, peak = measured(["fuse", "--cams-a", folder, "--cams-b", dumps / "mct", "--out", out,
                                           "--no-progress"])
    assert code == 2, stderr
    assert re.fullmatch(re.escape(f"orand-addon: error: {victim}") + r"(\[high_res\.npy\])?: " + pattern + r".*\n",
                        stderr), stderr
    assert peak < 1024, f"peak memory {peak:.0f} MB"


def test_evaluate_refuses_a_store_declaring_a_60000_x_60000_map_under_1_gb(tmp_path):
    store = tmp_path / "s.h5"
    res = CliRunner().invoke(cli, ["fuse", "--cams-a", *fused_sources(tmp_path), "--out", store, "--no-progress"])
    assert res.exit_code == 0, res.output
    with h5py.File(store, "a") as h5:  # an entry replaced by a declared (1, 60000, 60000) map (no data written)
        del h5["or"][VICTIM]
        ds = h5["or"].create_dataset(VICTIM, shape=(1, 60000, 60000), dtype="f2", chunks=(1, 1000, 1000))
        ds.attrs["keys"] = np.array([0])
    assert store.stat().st_size < 5_000_000
    code, _, stderr, peak = measured(["evaluate", "--pred", f"{store}:or", "--gt", GT, "--no-progress"])
    assert code == 2
    assert stderr == (f"orand-addon: error: {store}: /or/{VICTIM}, 1 x 60000 x 60000 float16, would take 13.4 GB in "
                      f"memory, above the input limit of 256 MB (refused before reading it; {HINT})\n")
    assert peak < 1024, f"peak memory {peak:.0f} MB"


def fused_sources(tmp_path: Path) -> list:
    write_voc_mini_cams(tmp_path / "a", "amn", seed=1, ids=IDS)
    write_voc_mini_cams(tmp_path / "b", "mctformer", seed=2, ids=IDS)
    return [tmp_path / "a", "--cams-b", tmp_path / "b"]


def test_the_limit_is_raised_or_lowered_by_the_documented_option_and_variable(dumps, tmp_path, monkeypatch):
    """A VOC dump is ~1.5 MB: refused under a 1 MB limit (option or variable), read by default."""
    victim = dumps / "amn" / f"{VICTIM}.npy"
    args = ["fuse", "--cams-a", dumps / "amn", "--cams-b", dumps / "mct", "--no-progress"]
    res = CliRunner().invoke(cli, ["--max-input-mb", "1", *args, "--out", tmp_path / "a.h5"])
    assert res.exit_code == 2
    assert re.fullmatch(re.escape(f"orand-addon: error: {victim}: ") + r"its pickled payload would take 1\.\d MB in "
                        r"memory, above the input limit of 1 MB \(refused before reading it; " + re.escape(HINT) +
                        r"\)\n", res.output), res.output
    monkeypatch.setenv("ORAND_ADDON_MAX_INPUT_MB", "1")
    assert CliRunner().invoke(cli, [*args, "--out", tmp_path / "b.h5"]).exit_code == 2
    assert CliRunner().invoke(cli, ["--max-input-mb", "4", *args, "--out", tmp_path / "c.h5"]).exit_code == 0
    assert os.environ["ORAND_ADDON_MAX_INPUT_MB"] == "1"  # the option applies to its command only
    monkeypatch.setenv("ORAND_ADDON_MAX_INPUT_MB", "lots")
    res = CliRunner().invoke(cli, [*args, "--out", tmp_path / "d.h5"])
    assert res.exit_code == 2 and res.output == ("orand-addon: error: ORAND_ADDON_MAX_INPUT_MB='lots': expected a "
                                                 "number of megabytes of at least 1, e.g. 1024\n")


# -- writing: never through a symlink in the output folder ---------------------------------------------------------

def test_export_and_reports_never_write_through_a_symlink_in_their_output_folder(tmp_path):
    store = tmp_path / "s.h5"
    assert CliRunner().invoke(cli, ["fuse", "--cams-a", *fused_sources(tmp_path), "--out", store,
                                    "--no-progress"]).exit_code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    planted = {"lists": ["or_ids.txt", "cls_labels.npy"], "png": [f"{VICTIM}.png"], "irn": [f"{VICTIM}.npy"],
               "report": ["index.html", "eval_classes.png"]}
    for folder, names in planted.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).symlink_to(victim)
    for target in ("lists", "png", "irn"):
        res = CliRunner().invoke(cli, ["export", "--store", store, "--kind", "or", "--to", target, "--bg-thres", "0.3",
                                       "--out", tmp_path / target, "--no-progress"])
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["evaluate", "--pred", f"{store}:or", "--gt", GT, "--report", tmp_path / "report",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert victim.read_text() == "precious"
    for folder, names in planted.items():
        for name in names:
            assert not (tmp_path / folder / name).is_symlink() and (tmp_path / folder / name).stat().st_size > 0
        assert not [p for p in (tmp_path / folder).iterdir() if p.name.endswith(".tmp")]
    assert (tmp_path / "lists" / "or_ids.txt").read_text().split() == IDS


# -- messages that must not mislead ---------------------------------------------------------------------------------

def test_checkpoints_refused_by_weights_only_loading_say_so_in_one_line_without_torch_warnings(tmp_path):
    """A real torch.save archive (pickle protocol 5, a numpy array) is refused as such, not called "not a torch.save
    file"; a TorchScript archive is named; torch's own warnings about the file are not printed before the line."""
    archive = tmp_path / "protocol5.pt"
    torch.save({"model": torch.zeros(2), "mean": np.zeros(3)}, archive, pickle_protocol=5)
    script = tmp_path / "script.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), script)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"garbage")
    expected = {
        archive: f"{archive}: refused to load checkpoint: a torch.save file that weights-only loading cannot read "
                 f"(Unsupported operand 149; nothing from the file was run)",
        script: f"{script}: a TorchScript archive (torch.jit.save), not a torch.save checkpoint",
        garbage: f"{garbage}: corrupt or unreadable checkpoint (not a torch.save file: Unsupported operand 103)",
    }
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "one.jpg").write_bytes((JPEG / f"{voc_mini_ids()[0]}.jpg").read_bytes())
    for path, line in expected.items():
        code, stdout, stderr, _ = measured(["segment", "--checkpoint", path, "--images", tmp_path / "img", "--out",
                                            tmp_path / "out", "--no-progress"])
        assert code == 2 and stdout == ""
        assert stderr == f"orand-addon: error: {line}\n"


def test_inspect_exits_2_when_a_file_was_refused_as_hostile(dumps, tmp_path):
    folder = hostile_folder(dumps, tmp_path, lambda f: save(f / f"{VICTIM}.npy", amn_dump(tensor_view((3, 3), (3, 1)))))
    res = CliRunner().invoke(cli, ["inspect", str(folder)])
    assert res.exit_code == 2
    lines = res.output.splitlines()
    assert lines[-3:] == ["problems: 1",
                          f"  {folder / VICTIM}.npy: refused a pickle holding a 3 x 3 tensor view that reaches element "
                          f"8 of a storage of 1 (refused before building it)",
                          f"orand-addon: error: {folder}: 1 of 2 files were refused or could not be read (listed "
                          f"above)"]


def png_declaring(path: Path, side: int) -> Path:
    """A greyscale PNG whose header declares ``side`` x ``side`` pixels, with almost no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(side + 1)))
                     + chunk(b"IEND", b""))
    return path


def test_label_pngs_declaring_huge_images_are_refused_before_decoding(tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    big, bomb = png_declaring(pred / f"{IDS[0]}.png", 9000), png_declaring(pred / f"{IDS[1]}.png", 20000)
    res = CliRunner().invoke(cli, ["evaluate", "--pred", pred, "--gt", GT, "--no-progress"])
    assert res.exit_code == 2
    assert res.output == (f"orand-addon: error: {big}: the decoded image of shape 9000 x 9000 x 1 float32 would take "
                          f"309 MB in memory, above the input limit of 256 MB (refused before reading it; {HINT})\n")
    big.unlink()
    res = CliRunner().invoke(cli, ["evaluate", "--pred", pred, "--gt", GT, "--no-progress"])
    assert res.exit_code == 2
    assert res.output == (f"orand-addon: error: {bomb}: unreadable label PNG (Image size (400000000 pixels) exceeds "
                          f"limit of 178956970 pixels, could be decompression bomb DOS attack.)\n")
