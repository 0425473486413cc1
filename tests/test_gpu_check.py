"""The prepared GPU check (benchmarks/gpu_check.py) passes its CPU dry run: every GPU path it measures runs, at tiny
sizes, and it writes the JSON the README's speed table is made from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] and result["ddp"] == {**result["ddp"], "ok": True, "backend": "gloo"}
    whats = {row["what"] for section in ("orandnet", "random_walk", "deeplab") for row in result[section]}
    assert whats >= {"orandnet inference", "orandnet training", "random walk", "deeplab training step", "segment"}
    assert {r["arch"] for r in result["orandnet"]} == {"fcn8s", "fcn8s-same"}
    assert all(r["ms_per_map"] > 0 for r in result["orandnet"] if r["what"] == "orandnet inference")
    assert "ddp smoke (gloo): ok" in proc.stdout
