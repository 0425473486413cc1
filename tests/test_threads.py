"""Fair CPU use (orand_addon/runtime/threads.py): torch's thread count follows the cores other processes leave
free, a user's fixed count is kept, and the command line makes idle OpenMP threads sleep."""

from __future__ import annotations

import subprocess
import sys
import time

import torch

from orand_addon.runtime.threads import FairThreads


def test_a_busy_neighbour_takes_a_thread_away_and_a_fixed_count_is_kept(monkeypatch):
    monkeypatch.delenv("ORAND_ADDON_THREADS", raising=False)  # tests/conftest.py fixes it for the other tests
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"])
    try:
        fair = FairThreads(cores=2, interval=1.0)
        time.sleep(1.5)
        assert fair.update() == 1 and torch.get_num_threads() == 1  # the neighbour holds one of the 2 cores
        monkeypatch.setenv("ORAND_ADDON_THREADS", "2")
        fixed = FairThreads(cores=2, interval=1.0)
        time.sleep(1.5)
        assert fixed.update() == 2 and torch.get_num_threads() == 2  # fixed by the user: no adaptation
    finally:
        busy.kill()
        busy.wait()
        torch.set_num_threads(before)


def test_never_more_threads_than_torch_was_given(monkeypatch):
    monkeypatch.delenv("ORAND_ADDON_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fair = FairThreads(cores=2, interval=0.0)
        assert fair.cores == 1 and fair.update() == 1
    finally:
        torch.set_num_threads(before)


def test_the_command_line_makes_idle_openmp_threads_sleep():
    code = ("import os\nfrom orand_addon.cli import main\nimport sys\ntry:\n    main(['--version'])\n"
            "except SystemExit:\n    pass\nprint(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60).stdout
    assert out.strip().splitlines()[-1] == "PASSIVE"
