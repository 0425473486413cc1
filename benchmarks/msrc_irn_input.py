"""IRN on MSRC-v2 from another input kind: is ``ORANDNet + IRN`` below ``ORANDNet`` because of IRN or because of
what it is given? Copies the ``kind`` maps of a finished ``orand-addon demo --dataset msrc`` run into a new store,
runs ``refine`` there with the run's own IRN settings (seeds, IRN training, walk: nothing changed, nothing chosen
on ground truth), and scores ``rw`` and ``masks`` like the demo's table. Also prints the seed label fractions
(background / foreground / ignored) and the low end of the maps, which explain the result.

    python benchmarks/msrc_irn_input.py --run msrc_default --data MSRC-v2 --size default --kinds orandnet,or

Writes ``RUN/irn_input.json``; every kind gets its own folder ``RUN/irn_input/<kind>``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np


def seed_fractions(store, ids) -> dict:
    """Mean over images of the fractions of seed pixels that are background (0), an object, or ignored (255)."""
    fr = np.zeros(3)
    for image_id in ids:
        s = store.read_mask("seeds", image_id)
        fr += [(s == 0).mean(), ((s > 0) & (s < 255)).mean(), (s == 255).mean()]
    return dict(zip(("background", "object", "ignored"), (100 * fr / len(ids)).round(2).tolist()))


def map_floor(store, kind: str, ids) -> dict:
    """Over images, the median of the 1st/5th percentile of each pixel's highest map, and the share of pixels below
    IRN's background seed threshold 0.05."""
    lows, below = [], []
    for image_id in ids:
        top = np.asarray(store.read_maps(kind, image_id)[0], np.float32).max(0)
        lows.append(np.percentile(top, [1, 5]))
        below.append((top < 0.05).mean())
    return {"p1": float(np.median([l[0] for l in lows])), "p5": float(np.median([l[1] for l in lows])),
            "below_0.05_percent": 100 * float(np.mean(below))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="an 'orand-addon demo --dataset msrc' output folder")
    parser.add_argument("--data", type=Path, required=True, help="the raw MSRC-v2 folder the run was made from")
    parser.add_argument("--size", default="default")
    parser.add_argument("--kinds", default="orandnet,or")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from orand_addon.classes import read_id_list
    from orand_addon.demo.msrc.benchmark import MsrcBenchmark
    from orand_addon.demo.run import SWEEP, DemoRun
    from orand_addon.evaluation.stage import evaluate
    from orand_addon.refine.pipeline import RefineConfig, refine
    from orand_addon.store.store import Store

    run = DemoRun(args.run, size=args.size, seed=args.seed, device="cpu", progress=False, dataset="msrc")
    bench = MsrcBenchmark(args.size, args.data)
    folder = bench.make_data(run)
    plan = bench.stage_plan(run, folder)
    ids = read_id_list(args.run / "lists" / "train.txt")
    rows = []
    for kind in [k for k in args.kinds.split(",") if k]:
        work = args.run / "irn_input" / kind
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        store = work / "fused.h5"
        with Store(run.store) as source, Store(store, "a", class_names=source.class_names) as target:
            for image_id in ids:
                maps, keys = source.read_maps(kind, image_id)
                target.write_maps(kind, image_id, maps, keys=keys)
        start = time.perf_counter()
        refine(store, kind, folder.images, RefineConfig(run_dir=work / "irn", train_options=plan.irn, device="cpu",
                                                        progress=False), command="benchmarks/msrc_irn_input.py")
        row: dict = {"kind": kind, "seconds": round(time.perf_counter() - start, 1)}
        with Store(store) as s:
            row["seeds_percent"] = seed_fractions(s, ids)
            row["map_floor"] = map_floor(s, kind, ids)
        for name, spec, sweep in (("maps", kind, SWEEP), ("rw", "rw", SWEEP), ("masks", "masks", None)):
            result = evaluate(f"{store}:{spec}", folder.masks, ids=ids, sweep=sweep, classes=str(folder.classes_path))
            best = result.best if sweep else 0
            sc = result.scores[best]
            row[name] = {"thres": result.best_threshold if sweep else None, "mIoU": 100 * sc["mean_iou"],
                         "precision": 100 * sc["mean_precision"], "recall": 100 * sc["mean_recall"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.run / "irn_input.json").write_text(json.dumps({"size": args.size, "images": len(ids), "rows": rows},
                                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
