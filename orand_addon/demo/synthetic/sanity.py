"""The testbed's sanity check: build data and CAMs, fuse them, and score every kind of map against the GT.

    python -m orand_addon.demo.synthetic.sanity --out runs/synthetic --size default --figure docs/images/synthetic_examples.png

Prints the mIoU / precision / recall of each source (CNN as AMN dump, ViT as MCTformer dump) and of the OR, AND and
mean maps made by :func:`orand_addon.fuse.stage.run_fuse`, at the best background threshold of a sweep and at a fixed
one, with the time of each stage; writes ``OUT/sanity.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

from ...errors import OrandError
from ...io.sources import read_cams
from .cams import SOURCE_FORMATS, make_cams
from .generator import DatasetInfo, make_dataset
from .quality import THRESHOLDS, best_scores, confusions, scores, source_maps, store_maps
from .sizes import resolve_size

FUSED_KINDS = ("mean", "or", "and")


def evaluate_testbed(info: DatasetInfo, cam_dirs: dict[str, Path], work_dir: str | Path, split: str = "train",
                     fixed_thres: float = 0.25, show_progress: bool = True) -> dict[str, dict]:
    """Scores of both sources and of their mean/OR/AND fusion on ``split`` (``train`` or ``val``).

    Each entry has ``best`` (scores at the best-mIoU background threshold, with ``bg_thres``) and ``fixed``
    (scores at ``fixed_thres``).
    """
    from ...fuse.stage import FuseOptions, run_fuse

    ids = {"train": info.train_ids, "val": info.val_ids}.get(split)
    if ids is None:
        raise OrandError(f"unknown split {split!r}; valid: train, val")
    thresholds = sorted(set(THRESHOLDS) | {fixed_thres})
    at = thresholds.index(fixed_thres)
    streams = {name: source_maps(read_cams(path, format=SOURCE_FORMATS[name]), ids) for name, path in cam_dirs.items()}
    store = Path(work_dir) / f"fused_{split}.h5"
    options = FuseOptions(formats=tuple(SOURCE_FORMATS[n] for n in cam_dirs), kinds=FUSED_KINDS, dtype="float32")
    run_fuse(list(cam_dirs.values()), store, info.class_set(), info.labels(), options, ids=ids, images=info.images,
             command="orand_addon.demo.synthetic.sanity", overwrite=True, progress=show_progress)
    streams.update({kind: store_maps(store, kind, ids) for kind in FUSED_KINDS})
    out = {}
    for name, stream in streams.items():
        confs = confusions(stream, info, thresholds)
        out[name] = {"best": best_scores(confs, thresholds), "fixed": {**scores(confs[at]), "bg_thres": fixed_thres}}
    return out


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table of :func:`evaluate_testbed` results.

    >>> print(format_table({"cnn": {"best": {"miou": 40.0, "precision": 50.0, "recall": 60.0, "bg_thres": 0.5},
    ...                             "fixed": {"miou": 30.0, "precision": 35.0, "recall": 70.0, "bg_thres": 0.25}}}))
    maps    | best thr  mIoU  prec   rec | @0.25  mIoU  prec   rec
    cnn     |     0.50  40.0  50.0  60.0 |        30.0  35.0  70.0
    """
    fixed = next(iter(results.values()))["fixed"]["bg_thres"] if results else 0.0
    lines = [f"{'maps':<7} | best thr  mIoU  prec   rec | @{fixed:<4}  mIoU  prec   rec"]
    for name, r in results.items():
        b, f = r["best"], r["fixed"]
        lines.append(f"{name:<7} | {b['bg_thres']:8.2f} {b['miou']:5.1f} {b['precision']:5.1f} {b['recall']:5.1f} | "
                     f"{'':5} {f['miou']:5.1f} {f['precision']:5.1f} {f['recall']:5.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m orand_addon.demo.synthetic.sanity", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="working folder (data/, cams/, fused_*.h5)")
    parser.add_argument("--size", default="default", help="ci, default, large, or NAME,key=value,...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--split", default="train", choices=["train", "val"])
    parser.add_argument("--figure", type=Path, default=None, help="also write the example picture here")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    ns = parser.parse_args(argv)
    size = resolve_size(ns.size)
    times = {}
    start = time.perf_counter()
    info = make_dataset(ns.out / "data", size.n_train, size.n_val, size.image_size, ns.seed, ns.progress)
    times["data_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    dirs = make_cams(info.root, ns.out / "cams", ns.seed, ns.device,
                     epochs={"cnn": size.cnn_epochs, "vit": size.vit_epochs}, show_progress=ns.progress)
    times["classifiers_and_cams_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    results = evaluate_testbed(info, dirs, ns.out, ns.split, show_progress=ns.progress)
    times["evaluate_s"] = round(time.perf_counter() - start, 1)
    print(f"synthetic testbed, size {ns.size!r} ({size}), {ns.split} split")
    print(format_table(results))
    print("times: " + ", ".join(f"{k} {v}" for k, v in times.items()))
    record = {"size": ns.size, "spec": size.__dict__, "split": ns.split, "seed": ns.seed, "results": results,
              "times": times}
    (ns.out / "sanity.json").write_text(json.dumps(record, indent=1) + "\n")
    if ns.figure:
        from .figure import plot_examples

        plot_examples(info, dirs, ns.figure)
    return record


if __name__ == "__main__":
    try:
        main()
    except OrandError as exc:
        raise SystemExit(f"orand_addon.demo.synthetic.sanity: error: {exc}") from None
