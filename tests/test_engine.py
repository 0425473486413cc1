"""The stage engine's guarantees, shown on the real fuse stage over VOC-mini dumps: a killed process, a full disk (a
file-size limit), a damaged store, a dead worker and a second writer lose nothing finished, end with one line, and
the rerun of the same command completes a store equal to an uninterrupted run's."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from helpers import assert_same_store, leave_parts, two_source_dumps  # noqa: E402
from orand_addon.cli import cli
from orand_addon.store.journal import parts_dir, sealed_parts
from orand_addon.store.store import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> Path:
    return two_source_dumps(tmp_path_factory.mktemp("dumps"))


@pytest.fixture(scope="module")
def reference(dumps, tmp_path_factory) -> Path:
    """The store of one uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    res = CliRunner().invoke(cli, fuse_args(dumps, out))
    assert res.exit_code == 0, res.output
    return out


def fuse_args(dumps: Path, out: Path, *extra) -> list[str]:
    return [str(a) for a in ("fuse", "--cams-a", dumps / "amn", "--cams-b", dumps / "mct", "--out", out,
                             "--no-progress", *extra)]


def run(*args) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(cli, [str(a) for a in args])


def fuse_process(dumps: Path, out: Path, *extra, prelude: str = "", env: dict | None = None,
                 **kwargs) -> subprocess.CompletedProcess:
    """``orand-addon fuse`` in its own Python process, after ``prelude`` (code run first, e.g. a hook)."""
    code = textwrap.dedent(prelude) + "\nfrom orand_addon.cli import main\nimport sys\nmain(sys.argv[1:])\n"
    return subprocess.run([sys.executable, "-c", code, *fuse_args(dumps, out, *extra)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kwargs)


KILL_AT_SIXTH = """
import os, signal
from orand_addon.fuse.stage import FuseStage
real, calls = FuseStage.fuse_one, [0]
def fuse_one(self, image_id):
    calls[0] += 1
    if calls[0] == 6:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind: as a power cut or the OOM killer
    return real(self, image_id)
FuseStage.fuse_one = fuse_one
"""


def test_a_killed_run_keeps_its_commits_and_the_rerun_completes_the_same_store(dumps, reference, tmp_path):
    out = tmp_path / "s.h5"
    res = fuse_process(dumps, out, prelude=KILL_AT_SIXTH, env={"ORAND_ADDON_SEAL_EVERY": "2"})
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert not parts_dir(out).exists() or not sealed_parts(parts_dir(out))  # one process writes the store itself
    res = run(*fuse_args(dumps, out)[0:])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "fused 7 images (4 already in the store)"  # images 1-4, committed two by two
    assert re.fullmatch(rf"{re.escape(str(out))}: an interrupted write was rolled back to the store's last "
                        rf"checkpoint \(dropped [\d.]+ MB written after it\)", lines[1]), lines  # the 5th image
    assert not parts_dir(out).exists()
    assert_same_store(reference, out, ignore=("command", "reports"))


def test_a_file_size_limit_at_the_merge_of_worker_parts_keeps_them_and_the_rerun_merges_them(dumps, reference,
                                                                                            tmp_path):
    out = tmp_path / "s.h5"
    with Store(reference) as ref:  # what a run whose workers wrote part files left when it was stopped
        leave_parts(reference, out, ref.ids("or"), per_part=2)
    limit = reference.stat().st_size // 2  # every part fits, the whole store does not
    prelude = f"import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
    res = fuse_process(dumps, out, prelude=prelude)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr
    assert re.match(rf"orand-addon: error: {re.escape(str(out))}: cannot merge 11 finished images from "
                    rf"{re.escape(str(parts_dir(out)))} \(the file-size limit \(ulimit -f\) of [\d.]+ MB is below the "
                    rf"[\d.]+ MB the store needs\); they are kept there, and the same command merges them once there "
                    rf"is room$", res.stderr.strip()), res.stderr
    res = run(*fuse_args(dumps, out))
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[:2] == ["fused 0 images (11 already in the store)",
                                           f"merged 11 finished images left by an interrupted run into {out}"]
    assert_same_store(reference, out, ignore=("command", "reports"))


def test_a_file_size_limit_while_writing_loses_only_the_images_since_the_last_commit(dumps, reference, tmp_path):
    out = tmp_path / "s.h5"
    one_image = reference.stat().st_size // 11
    limit = int(one_image * 2.5)  # parts of 2 images fit; the third part's second image is cut off mid-write
    prelude = f"import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
    res = fuse_process(dumps, out, prelude=prelude, env={"ORAND_ADDON_SEAL_EVERY": "3"})
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr
    assert "writing failed (File too large)" in res.stderr or "cannot merge" in res.stderr, res.stderr
    res = run(*fuse_args(dumps, out))
    assert res.exit_code == 0, res.output
    assert_same_store(reference, out, ignore=("command", "reports"))


def test_a_failed_write_that_lost_the_attributes_heap_still_repairs_and_completes(dumps, reference, tmp_path,
                                                                                  monkeypatch):
    """The attributes' strings live in a global heap ("GCOL"); a store cut off before it used to end the repair with
    "bad global heap collection signature" and leave the store unusable."""
    out = tmp_path / "s.h5"
    with monkeypatch.context() as patch:  # a store as versions without the journal wrote it
        real = Store.__init__
        patch.setattr(Store, "__init__", lambda self, *args, journal=False, **kwargs: real(self, *args, **kwargs))
        assert run(*fuse_args(dumps, out)).exit_code == 0
    heap = out.read_bytes().find(b"GCOL")
    assert heap > 0
    os.truncate(out, heap)  # nothing from the attributes' heap on reached the disk
    res = run(*fuse_args(dumps, out))
    assert res.exit_code == 0, res.output
    assert any(re.match(rf"repaired {re.escape(str(out))} after a failed write: kept 0 entries; lost \d+", line)
               for line in res.output.splitlines()), res.output
    assert_same_store(reference, out, ignore=("command", "reports"))


def test_a_store_damaged_by_a_failed_write_is_repaired_and_completed(dumps, reference, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    with monkeypatch.context() as patch:  # a store as versions without the journal (store/wal.py) wrote it
        real = Store.__init__
        patch.setattr(Store, "__init__", lambda self, *args, journal=False, **kwargs: real(self, *args, **kwargs))
        assert run(*fuse_args(dumps, out)).exit_code == 0
    size = out.stat().st_size
    os.truncate(out, size - size // 10)  # the tail never reached the disk: HDF5 no longer opens the file
    with pytest.raises(OSError, match="truncated file"):
        h5py.File(out, "r")
    res = run(*fuse_args(dumps, out))
    assert res.exit_code == 0, res.output
    repaired = next(line for line in res.output.splitlines() if line.startswith("repaired"))
    kept, lost = map(int, re.match(rf"repaired {re.escape(str(out))} after a failed write: kept (\d+) entries; lost "
                                   rf"(\d+) entries written last", repaired).groups())
    assert kept + lost == 33 and lost >= 1  # 11 images x (or, and, mean)
    assert_same_store(reference, out, ignore=("command", "reports"))


def test_a_worker_that_dies_ends_the_run_with_one_line_and_the_rerun_completes(dumps, reference, tmp_path):
    out = tmp_path / "s.h5"
    marker = f"orand-test-{os.getpid()}-{time.monotonic_ns()}"
    # a script, not -c: the workers run its top level too (as __mp_main__), so they are the slow ones
    slow = tmp_path / "slow_fuse.py"
    slow.write_text("""
import sys, time
from orand_addon.fuse.stage import FuseStage
real = FuseStage.fuse_one
def fuse_one(self, image_id):
    time.sleep(0.5)
    return real(self, image_id)
FuseStage.fuse_one = fuse_one
if __name__ == "__main__":
    from orand_addon.cli import main
    main(sys.argv[1:])
""")
    proc = subprocess.Popen([sys.executable, str(slow), *fuse_args(dumps, out, "--workers", "2")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "ORAND_TEST_MARKER": marker,
                                 "ORAND_ADDON_SEAL_EVERY": "1"})
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        victim = _worker_of(marker)
    assert victim is not None, "no worker process seen"
    time.sleep(1.0)
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert re.match(r"orand-addon: error: a worker process died while computing \S+ \(killed, or out of memory\?\); "
                    r"the finished images are kept and the same command resumes\n$", stderr), stderr
    res = run(*fuse_args(dumps, out, "--workers", "2"))  # the lock was released, nothing finished is redone
    assert res.exit_code == 0, res.output
    assert_same_store(reference, out, ignore=("command", "reports"))


def _worker_of(marker: str) -> int | None:
    """A pool worker of the run marked ``marker``: a process with the marker in its environment whose parent has it
    too (the forkserver) and which is not the forkserver or the main process."""
    marked = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            marked[int(entry.name)] = ppid
        except (OSError, ValueError, IndexError):
            continue
    children = [pid for pid, ppid in marked.items() if ppid in marked and marked[ppid] in marked]
    return children[0] if children else None


def test_a_second_writer_of_the_same_store_is_refused_with_one_line(dumps, tmp_path):
    out = tmp_path / "s.h5"
    folder = parts_dir(out)
    folder.mkdir()
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write('{"pid": 4242}')
        fh.flush()
        res = run(*fuse_args(dumps, out))
    assert res.exit_code == 2
    assert res.output == (f"orand-addon: error: {out}: another orand-addon command is writing this store "
                          f'({{"pid": 4242}}); wait for it to finish\n')
    assert run(*fuse_args(dumps, out)).exit_code == 0
