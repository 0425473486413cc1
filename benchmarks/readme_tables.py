"""The README's result tables, generated from a demo's ``results.json`` (or a ``benchmarks/run.py`` summary), with
the machine and the date they were measured on, so the README never drifts from a run.

    python benchmarks/readme_tables.py orand_demo/results.json                       # print the tables
    python benchmarks/readme_tables.py benchmarks/results/summary_default.json --write README.md

``--write FILE`` replaces what stands between ``<!-- readme_tables:NAME -->`` and ``<!-- /readme_tables:NAME -->``
in FILE (NAME: ``demo``, the pseudo-mask and DeepLab tables with their header; ``msrc``, the same for a
``--dataset msrc`` run; ``losses``, the ORANDNet loss
comparison of a summary run with ``--losses``); blocks without markers are left alone, and the file is not touched
when nothing changed. Percent with one decimal, as the demo prints them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

BLOCKS = ("demo", "msrc", "losses")


def _pct(value: float | None) -> str:
    """
    >>> _pct(40.98), _pct(None), _pct(float("nan"))
    ('41.0', '–', '–')
    """
    return "–" if value is None or value != value else f"{value:.1f}"


def _thr(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _seconds(value: float) -> str:
    """
    >>> _seconds(42.4), _seconds(486.0)
    ('42 s', '8 min 6 s')
    """
    value = int(round(value))
    return f"{value} s" if value < 60 else f"{value // 60} min {value % 60} s"


def where_measured(record: dict) -> str:
    """One sentence: the dataset and size, the seed, the machine, the date and the stage times of a run."""
    m = record.get("machine") or {}
    timings = record.get("timings_s", {})
    stages = ", ".join(f"{name} {_seconds(s)}" for name, s in timings.items())
    where = (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('device', '?')}, torch {m.get('torch', '?')}"
             if m else "an unrecorded machine")
    if record.get("dataset", "synthetic") == "msrc":
        plan = record.get("plan", {})
        what = (f"`orand-addon demo --dataset msrc` (size `{record['size']}`: {plan.get('n_train', '?')} train + "
                f"{plan.get('n_val', '?')} val photos of MSRC-v2")
    else:
        from orand_addon.demo.synthetic.sizes import resolve_size

        size = resolve_size(record["size"])
        what = (f"`orand-addon demo` (size `{record['size']}`: {size.n_train:,} train + {size.n_val:,} val images of "
                f"{size.height}×{size.width} px")
    return (f"Measured with {what}, seed {record.get('seed', 0)}) on {where}, {record.get('date', 'undated')}; "
            f"{_seconds(sum(timings.values()))} in all ({stages}).")


def mask_table(record: dict) -> list[str]:
    """Pseudo-masks on the train split: each map row at its best-mIoU and precision-aware threshold."""
    lines = ["| pseudo-masks (train) | best thr | mIoU | precision | recall | PA thr | mIoU | precision | recall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        pa = r.get("pa")
        right = (f"{_thr(r.get('pa_thres'))} | {_pct(pa['mIoU'])} | {_pct(pa['precision'])} | {_pct(pa['recall'])}"
                 if pa else "– | – | – | –")
        lines.append(f"| {r['row']} | {_thr(r.get('best_thres'))} | {_pct(r['mIoU'])} | {_pct(r['precision'])} | "
                     f"{_pct(r['recall'])} | {right} |")
    return lines


def deeplab_table(record: dict) -> list[str]:
    if not record.get("deeplab"):
        return []
    lines = ["| DeepLab on the ORANDNet + IRN masks (val) | mIoU | precision | recall | training |",
             "|---|---|---|---|---|"]
    for r in record["deeplab"]:
        lines.append(f"| {r['row']} | {_pct(r['mIoU'])} | {_pct(r['precision'])} | {_pct(r['recall'])} | "
                     f"{_seconds(r['train_s'])} |")
    return lines


def loss_table(record: dict) -> list[str]:
    """The ORANDNet loss comparison of a summary run with ``--losses`` (empty without it)."""
    if not record.get("losses"):
        return []
    lines = ["| loss | best thr | mIoU | precision | recall |", "|---|---|---|---|---|"]
    for r in record["losses"]:
        name = r["row"].removeprefix("ORANDNet loss=")
        lines.append(f"| `{name}` | {_thr(r.get('best_thres'))} | {_pct(r['mIoU'])} | {_pct(r['precision'])} | "
                     f"{_pct(r['recall'])} |")
    return lines


def blocks(record: dict) -> dict[str, str]:
    """The text of each README block this record fills."""
    demo = [where_measured(record), "", *mask_table(record)]
    seg = deeplab_table(record)
    name = "msrc" if record.get("dataset") == "msrc" else "demo"  # each dataset has its own README block
    out = {name: "\n".join(demo + ([""] + seg if seg else []))}
    losses = loss_table(record)
    if losses:
        out["losses"] = "\n".join(losses)
    return out


def replace_block(text: str, name: str, content: str) -> str:
    """``text`` with the lines between the markers of block ``name`` replaced by ``content``.

    >>> replace_block("a\\n<!-- readme_tables:demo -->\\nold\\n<!-- /readme_tables:demo -->\\nb", "demo", "new")
    'a\\n<!-- readme_tables:demo -->\\nnew\\n<!-- /readme_tables:demo -->\\nb'
    >>> replace_block("<!-- readme_tables:x -->\\n<!-- /readme_tables:x -->", "x", "t")
    '<!-- readme_tables:x -->\\nt\\n<!-- /readme_tables:x -->'
    """
    pattern = re.compile(rf"(<!-- readme_tables:{name} -->\n).*?(<!-- /readme_tables:{name} -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="a demo's results.json or a benchmarks/run.py summary")
    parser.add_argument("--write", type=Path, default=None, help="replace the marked blocks of this file")
    args = parser.parse_args(argv)
    try:
        record = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        print(f"readme_tables: {args.results}: {exc}", file=sys.stderr)
        return 2
    if not record.get("rows"):
        print(f"readme_tables: {args.results} has no table rows (did the demo reach its evaluate stage?)",
              file=sys.stderr)
        return 2
    found = blocks(record)
    if args.write is None:
        print("\n\n".join(found.values()))
        return 0
    text = args.write.read_text()
    new = text
    for name, content in found.items():
        new = replace_block(new, name, content)
    if new != text:
        args.write.write_text(new)
    marked = [n for n in found if f"<!-- readme_tables:{n} -->" in text]
    print(f"{args.write}: {'updated' if new != text else 'unchanged'} (blocks: {', '.join(marked) or 'no markers'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
