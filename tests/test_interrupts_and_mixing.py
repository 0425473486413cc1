"""Ctrl-C with worker processes always stops every process of the command and exits 130 (pressed at several
moments, the final merge included), a rerun with another CAM folder is refused instead of mixing the two, and a
file-size limit while predict merges into a complete store loses nothing: in each case the rerun completes a store
equal to an uninterrupted run's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import two_source_dumps, voc_mini_ids
from test_distributed import assert_same_store
from test_orandnet_data import make_tiny_store
from orand_addon.cli import cli
from orand_addon.store.store import Store

ROOT = Path(__file__).resolve().parents[1]
IDS = voc_mini_ids()

PRESS = """
import os, signal, sys, time, importlib
module, attribute = os.environ["PRESS_IN"].split(":")  # module:function or module:Class.method
owner = importlib.import_module(module)
*outer, name = attribute.split(".")
for part in outer:
    owner = getattr(owner, part)
real, calls = getattr(owner, name), [0]

def pressed(*args, **kwargs):  # Ctrl-C in a terminal: SIGINT to the whole process group, at the n-th call
    calls[0] += 1
    if calls[0] == int(os.environ["PRESS_AT"]):
        os.killpg(0, signal.SIGINT)
        time.sleep(1)  # whatever each process does with it, it has done it now
    return real(*args, **kwargs)

setattr(owner, name, pressed)
from orand_addon.fuse.stage import FuseStage
slow = FuseStage.fuse_one
def fuse_one(self, image_id):  # workers take a while per image, so Ctrl-C finds them busy
    time.sleep(0.2)
    return slow(self, image_id)
FuseStage.fuse_one = fuse_one
from orand_addon.cli import main
main(sys.argv[1:])
"""


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> Path:
    return two_source_dumps(tmp_path_factory.mktemp("dumps"))


@pytest.fixture(scope="module")
def reference(dumps, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    assert run(*fuse_args(dumps, out)).exit_code == 0
    return out


def fuse_args(dumps: Path, out: Path, *extra, a: Path | None = None) -> list:
    return ["fuse", "--cams-a", a or dumps / "amn", "--cams-b", dumps / "mct", "--out", out, "--no-progress", *extra]


def alive_in_session(sid: int) -> list[int]:
    """Processes (zombies aside) of the session ``sid``: the command's forkserver and workers among them."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                alive.append(int(entry.name))
    return alive


@pytest.mark.parametrize("where,at", [("orand_addon.engine.stage:Stage.collect", 1),
                                      ("orand_addon.engine.stage:Stage.collect", 6),
                                      ("orand_addon.engine.stage:merge_parts", 1)],
                         ids=["first image", "sixth image", "final merge"])
def test_ctrl_c_with_two_workers_stops_every_process_with_exit_130_and_the_rerun_completes(
        dumps, reference, tmp_path, where, at):
    out = tmp_path / "s.h5"
    proc = subprocess.Popen([sys.executable, "-c", PRESS, *map(str, fuse_args(dumps, out, "--workers", 2))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "PRESS_IN": where, "PRESS_AT": str(at),
                                 "ORAND_ADDON_SEAL_EVERY": "1"})
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    kept = int(re.fullmatch(rf"orand-addon: error: interrupted after (\d+) of 11 images; {re.escape(str(out))} keeps "
                            rf"them and the same command resumes where it stopped\n", stderr).group(1))
    deadline = time.monotonic() + 30
    while alive_in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive_in_session(proc.pid) == []  # no worker (or forkserver) keeps running
    with Store(out) as s:
        assert len(s.ids("or")) == kept
    res = run(*fuse_args(dumps, out, "--workers", 2))
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"fused {11 - kept} images ({kept} already in the store)"
    assert_same_store(reference, out, ignore=("command", "reports"))


def test_a_rerun_with_another_cam_folder_is_refused_instead_of_mixing(dumps, reference, tmp_path):
    out = tmp_path / "s.h5"
    shutil.copy(reference, out)
    other = tmp_path / "other_amn"  # the same files in another folder: another source all the same
    shutil.copytree(dumps / "amn", other)
    grown = tmp_path / "grown_amn"  # the folder's files with one more
    shutil.copytree(dumps / "amn", grown)
    shutil.copy(grown / f"{IDS[0]}.npy", grown / "2099_000001.npy")
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(IDS))
    for folder in (other, grown):
        res = run(*fuse_args(dumps, out, "--ids", ids, a=folder))
        assert res.exit_code == 2
        assert re.fullmatch(rf"orand-addon: error: {re.escape(str(out))}: /(or|and|mean) was written by '.*' with "
                            rf"other parameters \(--cams-a/-b/\.\.\. \(their files\) differ\); use a new output file or --overwrite\n",
                            res.output), res.output
        assert_same_store(reference, out)  # untouched
    res = run(*fuse_args(dumps, out, "--overwrite", a=other))
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "fused 11 images (0 already in the store)"
    with Store(out) as s:
        assert s.group_provenance("or")["parameters"]["sources"][0]["path"] == str(other.resolve())


def test_a_file_size_limit_while_predict_merges_keeps_the_store_and_the_rerun_completes(tmp_path):
    store = make_tiny_store(tmp_path)
    tiny = ["--no-progress", "--device", "cpu"]
    assert run("train", "--store", store, "--out", tmp_path / "run", "--iterations", 1, "--pretrained", "none",
               "--width-div", 8, *tiny).exit_code == 0
    ckpt = tmp_path / "run" / "model.pt"
    reference = tmp_path / "reference.h5"
    shutil.copy(store, reference)
    assert run("predict", "--store", reference, "--checkpoint", ckpt, *tiny).exit_code == 0
    before = {kind: Store(store).ids(kind) for kind in ("or", "and")}
    limit = store.stat().st_size + 4096  # every part fits, the store with /orandnet does not
    prelude = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from orand_addon.cli import main
        main(sys.argv[1:])
    """)
    proc = subprocess.run([sys.executable, "-c", prelude, "predict", "--store", str(store), "--checkpoint", str(ckpt),
                           *tiny], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    assert re.fullmatch(rf"orand-addon: error: {re.escape(str(store))}: cannot merge 11 finished images from "
                        rf"{re.escape(str(store))}\.parts \(the file-size limit \(ulimit -f\) of [\d.]+ MB is below "
                        rf"the [\d.]+ MB the store needs\); they are kept there, and the same command merges them "
                        rf"once there is room\n", proc.stderr), proc.stderr
    with Store(store) as s:  # opens, and nothing it held is lost
        assert {kind: s.ids(kind) for kind in ("or", "and")} == before and s.ids("orandnet") == []
    res = run("predict", "--store", store, "--checkpoint", ckpt, "--overwrite", *tiny)
    assert res.exit_code == 0, res.output
    assert f"merged 11 finished images left by an interrupted run into {store}" in res.output
    assert_same_store(reference, store, ignore=("command", "reports"))
