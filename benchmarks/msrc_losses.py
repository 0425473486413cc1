"""ORANDNet's loss on MSRC-v2: train it with each loss on the fused store of an MSRC demo run (same settings as
that run's size), predict, and score on the same train ids as the demo's table.

    python benchmarks/msrc_losses.py --run msrc_default --size default --losses official,bg-softmax,bce

On MSRC-v2 most images hold one object class, and the official loss (a softmax across the image's classes) gives
a single-class image zero loss and zero gradient: it learns from the multi-class images only. This script is the
measurement behind the loss the MSRC demo uses (docs/msrc.md). Writes a JSON next to the run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="an 'orand-addon demo --dataset msrc' output folder")
    parser.add_argument("--data", type=Path, required=True, help="the raw MSRC-v2 folder the run was made from")
    parser.add_argument("--size", default="default")
    parser.add_argument("--losses", default="official,bg-softmax,bce")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from orand_addon.classes import read_id_list
    from orand_addon.demo.msrc.benchmark import MsrcBenchmark
    from orand_addon.demo.run import SWEEP, DemoRun
    from orand_addon.evaluation.stage import evaluate
    from orand_addon.orandnet import PredictConfig, predict_orandnet, train_orandnet
    from orand_addon.store.store import Store

    run = DemoRun(args.run, size=args.size, seed=args.seed, device="cpu", progress=False, dataset="msrc")
    bench = MsrcBenchmark(args.size, args.data)
    folder = bench.make_data(run)
    plan = bench.stage_plan(run, folder)
    ids = read_id_list(args.run / "lists" / "train.txt")
    with Store(run.store) as store:
        multi = sum(len(store.read_maps("or", i)[1]) > 1 for i in ids)
    rows = []
    for loss in [x for x in args.losses.split(",") if x]:
        work = args.run / "losses" / loss
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        store = work / "fused.h5"
        with Store(run.store) as source, Store(store, "a", class_names=source.class_names) as target:
            for kind in ("or", "and"):
                for image_id in ids:
                    maps, keys = source.read_maps(kind, image_id)
                    target.write_maps(kind, image_id, maps, keys=keys)
        start = time.perf_counter()
        config = replace(plan.orandnet, loss=loss, progress=False)
        ckpt = train_orandnet(store, work / "run", config, echo=lambda _: None)
        predict_orandnet(store, ckpt, PredictConfig(device="cpu", progress=False), echo=lambda _: None)
        result = evaluate(f"{store}:orandnet", folder.masks, ids=ids, sweep=SWEEP, classes=str(folder.classes_path))
        s = result.scores[result.best]
        rows.append({"loss": loss, "best_thres": result.best_threshold, "mIoU": 100 * s["mean_iou"],
                     "precision": 100 * s["mean_precision"], "recall": 100 * s["mean_recall"],
                     "seconds": round(time.perf_counter() - start, 1)})
        print(f"{loss:12s} thr {result.best_threshold:.2f}  mIoU {rows[-1]['mIoU']:.1f}  prec {rows[-1]['precision']:.1f}"
              f"  rec {rows[-1]['recall']:.1f}  ({rows[-1]['seconds']} s)", flush=True)
    record = {"size": args.size, "iterations": plan.orandnet.iterations, "images": len(ids),
              "multi_class_images": int(multi), "rows": rows}
    (args.run / "losses.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{multi} of {len(ids)} training images have more than one class; wrote {args.run / 'losses.json'}")


if __name__ == "__main__":
    main()
