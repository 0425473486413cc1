"""Real multi-process runs: ``torchrun`` with gloo on the loopback interface (nothing leaves the machine), and a
fixture that keeps torchrun's variables away from the one-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def loopback() -> str:
    """Name of the loopback network interface (gloo binds there, nothing leaves the machine)."""
    return next(name for _, name in socket.if_nameindex() if name.startswith("lo"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, env: dict | None = None, nproc: int = 2) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run`` with ``nproc`` processes on 127.0.0.1 (gloo on the loopback)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(free_port()), *[str(a) for a in args]]
    full_env = {**{k: v for k, v in os.environ.items() if k not in DIST_ENV}, "GLOO_SOCKET_IFNAME": loopback(),
                "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=full_env)


@pytest.fixture(autouse=True)
def one_process_env(monkeypatch):
    """Import into a test module to run all its tests without torchrun's variables (an autouse fixture)."""
    for key in DIST_ENV:
        monkeypatch.delenv(key, raising=False)
