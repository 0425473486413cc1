"""Every write session of the main store goes through the redo journal (orand_addon/store/wal.py): a SIGKILL, a
file-size limit or a torn/foreign journal during a merge never loses what the store held before (an earlier
command's groups), the rerun of the same command completes a store equal to an uninterrupted run's, readers are
refused while a replay is pending, and after every completed command the store is one plain HDF5 file with no
journal next to it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import click.testing
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from helpers import assert_same_store, leave_parts, voc_mini_ids, write_voc_mini_cams  # noqa: E402,F401
from orand_addon.cli import cli
from orand_addon.errors import StoreError
from orand_addon.store import wal
from orand_addon.store.journal import parts_dir, sealed_parts
from orand_addon.store.store import Store

ROOT = Path(__file__).resolve().parents[1]
EARLIER_IDS = 6  # the earlier command fuses the first 6 of the 11 VOC-mini ids; the later one all 11


# -- fixtures and helpers ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dumps")
    write_voc_mini_cams(root / "amn", "amn", seed=1)
    write_voc_mini_cams(root / "mct", "mctformer", seed=2, blur=16)
    (root / "first.txt").write_text("\n".join(sorted(voc_mini_ids())[:EARLIER_IDS]) + "\n")
    return root


@pytest.fixture(scope="module")
def reference(dumps, tmp_path_factory) -> Path:
    """The store of one uninterrupted run over all ids."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    assert run(*fuse_args(dumps, out)).exit_code == 0
    assert_plain(out)
    return out


@pytest.fixture(scope="module")
def earlier(dumps, tmp_path_factory) -> Path:
    """A store holding an earlier command's work: or/and/mean of the first 6 ids."""
    out = tmp_path_factory.mktemp("earlier") / "earlier.h5"
    assert run(*fuse_args(dumps, out, "--ids", dumps / "first.txt")).exit_code == 0
    assert_plain(out)
    return out


def fuse_args(dumps: Path, out: Path, *extra) -> list[str]:
    return [str(a) for a in ("fuse", "--cams-a", dumps / "amn", "--cams-b", dumps / "mct", "--out", out,
                             "--no-progress", *extra)]


def run(*args) -> click.testing.Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def cli_process(args: list[str], prelude: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """``orand-addon ARGS`` in its own Python process, after ``prelude`` (code run first, e.g. a hook)."""
    code = textwrap.dedent(prelude) + "\nfrom orand_addon.cli import main\nimport sys\nmain(sys.argv[1:])\n"
    return python_process(code, [str(a) for a in args], env)


def python_process(code: str, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def file_size_limit(limit: int) -> str:
    """A prelude setting the file-size limit (Python ignores SIGXFSZ: a write past it fails with EFBIG)."""
    return f"import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"


def contents(path: Path) -> dict:
    """What a store holds, read with plain h5py: ``(group, id) -> (data, attrs)`` plus each group's attrs."""
    out: dict = {}
    with h5py.File(path, "r") as h5:
        for group in h5:
            out[group] = dict(h5[group].attrs)
            for image_id in h5[group]:
                ds = h5[group][image_id]
                out[group, image_id] = (ds[()], {k: np.asarray(v) for k, v in ds.attrs.items()})
    return out


def assert_keeps(before: dict, path: Path, group_attrs: bool = True) -> dict:
    """Every dataset of ``before`` is in the store ``path``, bit for bit, with its attributes (and each group's
    attributes unless ``group_attrs`` is False); returns what the store holds now."""
    now = contents(path)
    for key, value in before.items():
        if isinstance(key, str):
            assert key in now and (now[key] == value or not group_attrs), key
            continue
        assert key in now, key
        np.testing.assert_array_equal(now[key][0], value[0], err_msg=str(key))
        assert now[key][0].dtype == value[0].dtype
        assert sorted(now[key][1]) == sorted(value[1])
        for name in value[1]:
            np.testing.assert_array_equal(now[key][1][name], value[1][name])
    return now


def assert_plain(path: Path) -> None:
    """A completed command left one plain HDF5 file: no journal, no uncommitted tail, every dataset readable."""
    assert not Path(wal.journal_path(path)).exists()
    fd = os.open(path, os.O_RDONLY)
    try:
        assert wal.stored_eoa(fd) == os.fstat(fd).st_size
    finally:
        os.close(fd)
    contents(path)


def ids_in(path: Path, group: str) -> list[str]:
    with h5py.File(path, "r") as h5:
        return sorted(h5[group]) if group in h5 else []


def rolled_back_to_a_commit(before: dict, path: Path, limit: int, group_attrs: bool = True) -> int:
    """After a file-size limit: the store is one plain file within the limit, holds what it held ``before`` and the
    same new ids in every group, a whole number of 2-image commits; returns how many new ids."""
    assert_plain(path)  # rolled back to its last commit at once: no journal, no tail past the committed end
    assert path.stat().st_size <= limit
    assert_keeps(before, path, group_attrs=group_attrs)
    added = len(ids_in(path, "or")) - EARLIER_IDS
    assert added in (0, 2, 4) and all(len(ids_in(path, g)) == EARLIER_IDS + added for g in ("and", "mean"))
    return added


def new_ids(reference: Path, store: Path) -> list[str]:
    """The ids of ``reference`` that ``store`` lacks, in order."""
    return sorted(set(ids_in(reference, "or")) - set(ids_in(store, "or")))


# -- (a) SIGKILL in the middle of a merge ------------------------------------------------------------------------

KILL_AFTER_COPIES = """
import os, signal
from orand_addon.store import journal
real, copies = journal.copy_entry, [0]
def copy_entry(*args):
    if copies[0] == {n}:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind: as a power cut or the OOM killer
    copies[0] += 1
    return real(*args)
journal.copy_entry = copy_entry
"""


@pytest.mark.parametrize("copies", [3, 8])
def test_a_merge_killed_midway_keeps_the_earlier_command_s_data_and_the_rerun_completes(
        dumps, earlier, reference, tmp_path, copies):
    out = tmp_path / "s.h5"
    shutil.copy(earlier, out)
    before = contents(out)
    # a run with worker processes left the 5 new images in parts of 2 (or, and, mean each); the next run merges
    # them before it starts, committing after every part (6 copies)
    leave_parts(reference, out, new_ids(reference, out), per_part=2)
    res = cli_process(fuse_args(dumps, out), prelude=KILL_AFTER_COPIES.replace("{n}", str(copies)))
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert Path(wal.journal_path(out)).exists()  # the writer died with the store open
    committed = 2 * (copies // 6)  # images of the parts merged whole before the kill
    now = assert_keeps(before, out)  # plain h5py: the earlier data are intact, the merge stopped at a commit
    for group in ("or", "and", "mean"):
        assert len(ids_in(out, group)) == EARLIER_IDS + committed
    assert len([k for k in now if not isinstance(k, str)]) == 3 * (EARLIER_IDS + committed)

    res = run(*fuse_args(dumps, out))
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "fused 0 images (11 already in the store)"
    assert re.fullmatch(rf"{re.escape(str(out))}: an interrupted write was rolled back to the store's last "
                        rf"checkpoint \(dropped [\d.]+ MB written after it\)", lines[1]), lines
    assert f"merged {5 - committed} finished images left by an interrupted run into {out}" in lines
    assert not parts_dir(out).exists()
    assert_plain(out)
    assert_keeps(before, out)
    assert_same_store(reference, out, ignore=("command", "reports"))


# -- (b) a file-size limit during a merge ------------------------------------------------------------------------

NO_PRECHECK = """
from orand_addon.store import journal
journal.room_needed = lambda store, parts: None  # as if another process filled the disk after the check
"""


@pytest.mark.parametrize("extra", [1_000, 2_000_000, 5_000_000])
def test_a_file_size_limit_during_a_merge_is_one_line_and_keeps_the_earlier_data(
        dumps, earlier, reference, tmp_path, extra):
    out = tmp_path / "s.h5"
    shutil.copy(earlier, out)
    before = contents(out)
    leave_parts(reference, out, new_ids(reference, out), per_part=2)  # as in the test above
    limit = out.stat().st_size + extra
    res = cli_process(fuse_args(dumps, out), prelude=NO_PRECHECK + file_size_limit(limit))
    assert res.returncode == 2, res.stderr
    assert res.stderr == (f"orand-addon: error: {out}: merging the finished images failed (File too large); they "
                          f"are kept in {parts_dir(out)} and the same command merges them once there is room\n")
    merged = rolled_back_to_a_commit(before, out, limit)
    assert len(sealed_parts(parts_dir(out))) == 3

    res = run(*fuse_args(dumps, out))
    assert res.exit_code == 0, res.output
    merged_line = f"merged {5 - merged} finished images left by an interrupted run into {out}"
    assert res.output.splitlines()[:2] == ["fused 0 images (11 already in the store)", merged_line]
    assert_plain(out)
    assert_same_store(reference, out, ignore=("command", "reports"))


@pytest.mark.parametrize("extra", [1_000, 2_000_000, 5_000_000])
def test_a_file_size_limit_while_one_process_writes_the_store_keeps_the_earlier_data_and_every_commit(
        dumps, earlier, reference, tmp_path, extra):
    out = tmp_path / "s.h5"
    shutil.copy(earlier, out)
    before = contents(out)
    limit = out.stat().st_size + extra
    res = cli_process(fuse_args(dumps, out), prelude=file_size_limit(limit), env={"ORAND_ADDON_SEAL_EVERY": "2"})
    assert res.returncode == 2, res.stderr
    assert res.stderr == (f"orand-addon: error: {out}: writing failed (File too large); the images written before "
                          f"the last commit are kept and the same command resumes once there is room\n")
    written = rolled_back_to_a_commit(before, out, limit, group_attrs=False)  # a first commit records this command
    assert not parts_dir(out).exists()

    res = run(*fuse_args(dumps, out))
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"fused {5 - written} images ({EARLIER_IDS + written} already in the store)"
    assert_plain(out)
    assert_same_store(reference, out, ignore=("command", "reports"))


def test_a_file_size_limit_during_orand_addon_merge_keeps_the_store_and_the_shards(
        dumps, earlier, reference, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    shutil.copy(earlier, out)
    before = contents(out)
    for rank in (0, 1):  # two torchrun ranks fuse the 5 ids the store lacks into their shards
        with monkeypatch.context() as env:
            env.setenv("RANK", str(rank))
            env.setenv("WORLD_SIZE", "2")
            assert run(*fuse_args(dumps, out)).exit_code == 0
    shards = sorted(tmp_path.glob("s.rank*-of-2.h5"))
    assert len(shards) == 2
    res = cli_process(["merge", "--from-shards", out, "--no-progress"],
                      prelude=file_size_limit(out.stat().st_size + 1_500_000))
    assert res.returncode == 2, res.stderr
    assert res.stderr == (f"orand-addon: error: {out}: merging the shards failed (File too large); the store keeps "
                          f"what was merged up to its last checkpoint, the shards are kept, and the same merge "
                          f"command resumes once there is room\n")
    assert_plain(out)
    assert_keeps(before, out, group_attrs=False)  # the merge's first commit records the shards' command
    assert sorted(tmp_path.glob("s.rank*-of-2.h5")) == shards

    res = run("merge", "--from-shards", out, "--no-progress")
    assert res.exit_code == 0, res.output
    assert_plain(out)
    assert_same_store(reference, out, ignore=("command", "reports"))


WRITE_TINY = """
import resource, sys
import numpy as np
from orand_addon.store.store import Store
path, kind, start, stop, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    with Store(path, "a", journal=True) as store:
        for i in range(start, stop):
            if kind == "masks":
                store.write_mask("masks", f"id{i:05d}", np.arange(i, i + 64 * 48, dtype=np.uint32).reshape(64, 48) % 7)
            else:
                store.write_maps("or", f"id{i:05d}", np.full((1, 2, 2), i, np.float32), [1])
            if (i + 1) % 64 == 0:
                store.flush()
except OSError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""


def tiny_expected(kind: str, i: int) -> np.ndarray:
    if kind == "masks":
        return (np.arange(i, i + 64 * 48, dtype=np.uint32).reshape(64, 48) % 7).astype(np.uint8)
    return np.full((1, 2, 2), i, np.float16)


@pytest.mark.parametrize("kind,extra", [("maps", 3_000), ("maps", 40_000), ("maps", 150_000), ("masks", 60_000)])
def test_a_file_size_limit_in_the_metadata_flush_of_many_tiny_datasets_keeps_every_earlier_id(tmp_path, kind, extra):
    """The case that lost every earlier id without the journal (the group index is rewritten at each flush)."""
    path = tmp_path / "tiny.h5"
    group = "masks" if kind == "masks" else "or"
    res = python_process(WRITE_TINY, [path, kind, 0, 1000, 0])
    assert res.returncode == 0, res.stderr
    before = contents(path)
    limit = path.stat().st_size + extra
    res = python_process(WRITE_TINY, [path, kind, 1000, 6000, limit])
    assert res.returncode == 2, res.stderr  # not a crash at exit (chunked data are written before the rename)
    assert res.stderr == f"[Errno 27] File too large: '{path}'\n"
    assert_plain(path)
    assert_keeps(before, path)
    ids = ids_in(path, group)
    assert len(ids) == 1000 or len(ids) % 64 == 0  # exactly up to a commit (after every 64th id)
    with h5py.File(path, "r") as h5:
        for image_id in ids:
            np.testing.assert_array_equal(h5[group][image_id][()], tiny_expected(kind, int(image_id[2:])))
    res = python_process(WRITE_TINY, [path, kind, 1000, 2000, 0])  # the rerun
    assert res.returncode == 0, res.stderr
    assert_plain(path)
    assert len(ids_in(path, group)) == 2000


# -- (c) a kill inside a commit; torn and foreign journals -------------------------------------------------------

KILL_IN_COMMIT = """
import os, signal, sys
import numpy as np
from orand_addon.store import wal
from orand_addon.store.store import Store
path, phase = sys.argv[1], sys.argv[2]
real_fsync, real_pwrite, state = os.fsync, wal.pwrite_all, {"journal_synced": False}
def is_journal(fd):
    return os.readlink(f"/proc/self/fd/{fd}").endswith(wal.JOURNAL_SUFFIX)
def fsync(fd):
    real_fsync(fd)
    if is_journal(fd) and os.fstat(fd).st_size:  # the commit point: the journal is complete and durable
        if phase == "after_journal":
            os.kill(os.getpid(), signal.SIGKILL)
        state["journal_synced"] = True
def pwrite_all(fd, data, at):
    real_pwrite(fd, data, at)
    if phase == "mid_apply" and state["journal_synced"] and not is_journal(fd):
        os.kill(os.getpid(), signal.SIGKILL)  # the first page is applied, the others are not
os.fsync, wal.pwrite_all = fsync, pwrite_all
with Store(path, "a", journal=True) as store:
    for i in range(40):
        store.write_maps("extra", f"x{i:02d}", np.full((2, 3, 5), i, np.float32), [1, 2])
    store.flush()
sys.exit("not killed")
"""


def kill_in_commit(earlier: Path, path: Path, phase: str) -> dict:
    """Copy ``earlier`` to ``path`` and kill a writer of 40 new ids at ``phase`` of its commit; returns what the
    store held before."""
    shutil.copy(earlier, path)
    before = contents(path)
    res = python_process(KILL_IN_COMMIT, [path, phase])
    assert res.returncode == -signal.SIGKILL, res.stderr
    return before


def assert_has_the_extra_ids(path: Path) -> None:
    with h5py.File(path, "r") as h5:
        assert sorted(h5["extra"]) == [f"x{i:02d}" for i in range(40)]
        for i in range(40):
            np.testing.assert_array_equal(h5["extra"][f"x{i:02d}"][()], np.full((2, 3, 5), i, np.float16))
            assert h5["extra"][f"x{i:02d}"].attrs["keys"].tolist() == [1, 2]


@pytest.mark.parametrize("phase", ["after_journal", "mid_apply"])
def test_a_kill_after_the_commit_point_is_replayed_by_the_next_writer(earlier, tmp_path, phase):
    path = tmp_path / "s.h5"
    before = kill_in_commit(earlier, path, phase)
    jpath = wal.journal_path(path)
    pending = (f"{path}: an interrupted write is not finished ({jpath} is pending); rerun the command that was "
               f"writing this store, which finishes it first")
    # (d) readers are refused while the journal waits: the store's pages may be half old, half new
    with pytest.raises(StoreError) as err:
        Store(path)
    assert str(err.value) == pending
    res = run("inspect", path)
    assert res.exit_code == 2 and res.output == f"orand-addon: error: {pending}\n"

    with Store(path, "a", journal=True) as store:
        pages = re.fullmatch(rf"{re.escape(str(path))}: finished an interrupted write from its journal \((\d+) "
                             rf"pages\); the store is at that write's last checkpoint", store.recovered)
        assert pages and int(pages.group(1)) >= 2, store.recovered
    assert_plain(path)
    assert_keeps(before, path)
    assert_has_the_extra_ids(path)
    assert run("inspect", path).exit_code == 0


TORN = {
    "header byte flipped": lambda data: data.__setitem__(20, data[20] ^ 0xFF),
    "cut before its index": lambda data: data.__delitem__(slice(len(data) - 10, None)),
    "page byte flipped": lambda data: data.__setitem__(wal.DATA0 + 100, data[wal.DATA0 + 100] ^ 0xFF),
    "empty": lambda data: data.clear(),
}


@pytest.mark.parametrize("damage", sorted(TORN))
def test_a_torn_journal_is_dropped_and_the_store_stays_at_its_last_commit(earlier, tmp_path, damage):
    path = tmp_path / "s.h5"
    before = kill_in_commit(earlier, path, "after_journal")
    jpath = Path(wal.journal_path(path))
    data = bytearray(jpath.read_bytes())
    TORN[damage](data)
    jpath.write_bytes(data)
    Store(path).close()  # an incomplete journal never blocks readers: the store is at its last commit
    with Store(path, "a", journal=True) as store:
        assert re.fullmatch(rf"{re.escape(str(path))}: an interrupted write was rolled back to the store's last "
                            rf"checkpoint \(dropped [\d.]+ MB written after it\)", store.recovered), store.recovered
        assert "extra" not in store.groups()
    assert_plain(path)
    assert contents(path).keys() == before.keys()
    assert_keeps(before, path)


def test_a_journal_of_another_copy_of_the_store_is_refused_and_moved_aside(earlier, tmp_path):
    path = tmp_path / "s.h5"
    kill_in_commit(earlier, path, "after_journal")
    jpath = wal.journal_path(path)
    saved = Path(jpath).read_bytes()

    copy = tmp_path / "copy.h5"  # the store and its journal copied elsewhere: another inode
    shutil.copy(path, copy)
    Path(wal.journal_path(copy)).write_bytes(saved)
    original = copy.read_bytes()
    with pytest.raises(StoreError) as err:
        Store(copy, "a", journal=True)
    cj = wal.journal_path(copy)
    assert str(err.value) == (f"{copy}: the journal {cj} was written for another copy or version of this store (was "
                              f"it copied or restored?); moved it to {cj}.foreign and left the store as it is; rerun "
                              f"the command")
    assert copy.read_bytes() == original and Path(cj + ".foreign").read_bytes() == saved
    Store(copy, "a", journal=True).close()  # the rerun goes on from the store as it is
    assert_plain(copy)

    # the same file, but moved on since the journal was written: its pages match neither their old nor new bytes
    with Store(path, "a", journal=True) as store:
        assert store.recovered.startswith(f"{path}: finished an interrupted write")
        store.write_maps("later", "y", np.zeros((1, 2, 2)), [1])
    Path(jpath).write_bytes(saved)
    moved_on = path.read_bytes()
    with pytest.raises(StoreError, match="was written for another copy or version of this store"):
        Store(path, "a", journal=True)
    assert path.read_bytes() == moved_on
    assert_has_the_extra_ids(path)


def test_a_second_writer_is_refused_while_the_first_holds_the_store(earlier, tmp_path):
    path = tmp_path / "s.h5"
    shutil.copy(earlier, path)
    with Store(path, "a", journal=True), pytest.raises(StoreError) as err:
        Store(path, "a", journal=True)
    assert str(err.value) == (f"{path}: cannot open store for writing (another process has it open; wait for it to "
                              f"finish)")
    assert_plain(path)


# -- (e) after every completed command: plain HDF5, no journal ---------------------------------------------------

def test_every_completed_command_leaves_a_plain_hdf5_file_and_no_journal(dumps, reference, tmp_path):
    out = tmp_path / "s.h5"
    assert run(*fuse_args(dumps, out, "--ids", dumps / "first.txt")).exit_code == 0  # a new store
    assert_plain(out)
    assert ids_in(out, "or") == sorted(voc_mini_ids())[:EARLIER_IDS]
    assert run(*fuse_args(dumps, out)).exit_code == 0  # a merge into it, and the run's record
    assert_plain(out)
    assert_same_store(reference, out, ignore=("command", "reports"))
    res = run(*fuse_args(dumps, out, "--fusion-norm", "none", "--overwrite"))  # deletes the stale groups first
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "fused 11 images (0 already in the store)"
    assert_plain(out)
    with h5py.File(out, "r") as h5, h5py.File(reference, "r") as ref:
        assert sorted(h5["or"]) == sorted(ref["or"])
        assert '"normalize": false' in h5["or"].attrs["provenance"]
    assert not list(tmp_path.glob("*journal*")) and not list(tmp_path.glob(".*"))
