"""benchmarks/readme_tables.py: the README's tables from a demo record, every number in its cell, the machine and
date in the header, and --write replacing only the marked blocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "benchmarks" / "results" / "summary_default.json"  # a real demo run (benchmarks/run.py)


def tables(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "readme_tables.py"), *map(str, args)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)}, timeout=120)


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_every_number_of_the_record_lands_in_its_cell(tmp_path):
    record = json.loads(SUMMARY.read_text())
    record["machine"] = {"cpu": "x86_64", "cores": 2, "device": "cpu: x86_64", "torch": "2.14.1"}
    record["date"] = "2025-01-02 03:04 +0000"
    (tmp_path / "r.json").write_text(json.dumps(record))
    res = tables(tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    total = sum(record["timings_s"].values())
    assert lines[0].startswith("Measured with `orand-addon demo` (size `default`: 1,000 train + 200 val images of "
                               "64×80 px, seed 0) on x86_64, 2 cores, cpu: x86_64, torch 2.14.1, 2025-01-02 03:04 "
                               f"+0000; {int(round(total)) // 60} min {int(round(total)) % 60} s in all (data ")
    rows = {cells(line)[0]: cells(line) for line in lines if line.startswith("| ")}
    for r in record["rows"]:
        row = rows[r["row"]]
        assert row[2:5] == [f"{r[m]:.1f}" for m in ("mIoU", "precision", "recall")], row
        if r["pa"]:
            assert row[5] == f"{r['pa_thres']:.2f}" and row[6:9] == [f"{r['pa'][m]:.1f}" for m in
                                                                     ("mIoU", "precision", "recall")]
        else:
            assert row[1] == row[5] == "–"
    for r in record["deeplab"]:
        assert rows[r["row"]][1:4] == [f"{r[m]:.1f}" for m in ("mIoU", "precision", "recall")]
    for r in record["losses"]:
        name = "`" + r["row"].removeprefix("ORANDNet loss=") + "`"
        assert rows[name][1:5] == [f"{r['best_thres']:.2f}", *(f"{r[m]:.1f}" for m in ("mIoU", "precision", "recall"))]


def test_write_replaces_only_the_marked_blocks(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\nintro\n<!-- readme_tables:demo -->\nstale table\n<!-- /readme_tables:demo -->\nmiddle\n"
                      "<!-- readme_tables:losses -->\n<!-- /readme_tables:losses -->\nend\n")
    res = tables(SUMMARY, "--write", readme)
    assert res.returncode == 0 and "updated (blocks: demo, losses)" in res.stdout, res.stdout + res.stderr
    text = readme.read_text()
    assert text.startswith("# x\nintro\n<!-- readme_tables:demo -->\nMeasured with") and "stale" not in text
    assert "\nmiddle\n<!-- readme_tables:losses -->\n| loss |" in text and text.endswith(
        "<!-- /readme_tables:losses -->\nend\n")
    before = readme.stat().st_mtime_ns
    assert "unchanged" in tables(SUMMARY, "--write", readme).stdout and readme.stat().st_mtime_ns == before
    (tmp_path / "empty.json").write_text('{"size": "ci", "rows": []}')
    res = tables(tmp_path / "empty.json")
    assert res.returncode == 2 and "has no table rows" in res.stderr


def test_a_real_photo_run_fills_its_own_block_and_names_the_dataset(tmp_path):
    record = json.loads(SUMMARY.read_text())
    record.update(dataset="msrc", size="ci", plan={"n_train": 60, "n_val": 20}, losses=[])
    (tmp_path / "r.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- readme_tables:demo -->\nsynthetic\n<!-- /readme_tables:demo -->\n"
                      "<!-- readme_tables:msrc -->\n<!-- /readme_tables:msrc -->\n")
    res = tables(tmp_path / "r.json", "--write", readme)
    assert res.returncode == 0 and "updated (blocks: msrc)" in res.stdout, res.stdout + res.stderr
    text = readme.read_text()
    assert "<!-- readme_tables:demo -->\nsynthetic\n" in text  # the synthetic block is left alone
    assert ("<!-- readme_tables:msrc -->\nMeasured with `orand-addon demo --dataset msrc` (size `ci`: 60 train + 20 "
            "val photos of MSRC-v2, seed 0)") in text
    first = record["rows"][0]
    assert f"| {first['row']} | {first['best_thres']:.2f} | {first['mIoU']:.1f} |" in text
