"""``orand-addon demo``: the whole pipeline on the synthetic WSSS testbed, ending in a Table-1-like table.

Stages (each resumes: rerunning the demo reuses every finished stage of the same output folder)::

    data -> cams (CNN as AMN dumps, ViT as MCTformer dumps) -> fuse -> orandnet (train + predict)
         -> irn (seeds, train, walk) -> evaluate (every kind on train) -> deeplab (with and without scale scheduling)

The settings of each size are in :data:`PLANS`: the reference recipes, shrunk where the 64x80-pixel images and a
2-core CPU force it (written next to each field). Nothing is tuned against the ground truth: every map row of the
table is scored over a threshold sweep and reported at its best-mIoU and at its precision-aware threshold.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import OrandError

STAGES = ("data", "cams", "fuse", "orandnet", "irn", "evaluate", "deeplab")
SWEEP = "0.05:0.95:0.05"


@dataclass(frozen=True)
class DemoPlan:
    """Training lengths and the few settings the small images force, per size."""

    size: str
    orandnet_iterations: int          # paper 5,000 at VOC size; lr 1e-2 since it starts from scratch (no ImageNet)
    orandnet_width_div: int = 4       # VGG16 channels / 4: the full network is ~15x slower on 2 CPU cores
    irn_epochs: int = 3               # as IRN
    irn_batch: int = 16               # IRN 32
    irn_radius: int = 5               # IRN 10 needs crops of >= 76 px; the images are 64 px high
    seg_epochs: int = 8
    seg_schedule: str = "4:2,2:2"     # paper 8:2,4:2,2:2 on 321-px crops; capped at 1/4 of a 64-px crop
    notes: tuple[str, ...] = field(default_factory=tuple)


PLANS: dict[str, DemoPlan] = {
    "ci": DemoPlan("ci", orandnet_iterations=200, irn_epochs=1, seg_epochs=5, seg_schedule="4:1,2:1"),
    "default": DemoPlan("default", orandnet_iterations=1000),
    "large": DemoPlan("large", orandnet_iterations=5000, orandnet_width_div=1, irn_radius=10, seg_epochs=20,
                      seg_schedule="8:2,4:2,2:2"),
}


def plan_for(size: str) -> DemoPlan:
    """The plan of a named size (``ci``, ``default``, ``large``); a size with overrides uses its base name's plan.

    >>> plan_for("ci,n_train=60").orandnet_iterations
    200
    >>> plan_for("image=64x96").size
    'default'
    """
    base = size.split(",")[0].strip()
    return PLANS[base] if base in PLANS else PLANS["default"]


@dataclass
class DemoRun:
    """Where a demo writes, and what it has measured so far."""

    out: Path
    size: str = "default"
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    echo: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    seg_rows: list[dict] = field(default_factory=list)
    evaluations: dict = field(default_factory=dict)  # kind -> EvalResult of the evaluate stage (for the report)

    @property
    def store(self) -> Path:
        return self.out / "fused.h5"

    def stage(self, name: str, fn: Callable[[], object]) -> object:
        self.echo(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {name}")
        start = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - start, 1)
        self.echo(f"    {name}: {self.timings[name]:.1f} s")
        return result


def _orandnet_stage(run: DemoRun, plan: DemoPlan, info) -> None:
    from ..orandnet import PredictConfig, TrainConfig, predict_orandnet, train_orandnet

    run_dir = run.out / "runs" / "orandnet"
    config = TrainConfig(iterations=plan.orandnet_iterations, lr=1e-2, momentum=0.9, weight_decay=5e-4,
                         loss="official", pretrained="none",
                         arch="fcn8s-same", width_div=plan.orandnet_width_div, seed=run.seed, device=run.device,
                         checkpoint_every=max(100, plan.orandnet_iterations // 5), progress=run.progress)
    resume = (run_dir / "last.pt").is_file() or (run_dir / "model.pt").is_file()  # a finished run returns at once
    checkpoint = train_orandnet(run.store, run_dir, config, resume=resume, echo=run.echo)
    predict_orandnet(run.store, checkpoint, PredictConfig(device=run.device, progress=run.progress), echo=run.echo)


def _irn_stage(run: DemoRun, plan: DemoPlan, info) -> None:
    from ..refine import TrainOptions
    from ..refine.pipeline import RefineConfig, refine

    crop = min(info.image_size)
    options = TrainOptions(crop_size=crop, batch_size=plan.irn_batch, epochs=plan.irn_epochs, radius=plan.irn_radius,
                           backbone="trainable", pretrained="none", seed=run.seed)
    report = refine(run.store, "orandnet", info.images,
                    RefineConfig(run_dir=run.out / "runs" / "irn", train_options=options, device=run.device,
                                 progress=run.progress), command="orand-addon demo")
    for note in report.notes:
        run.echo(f"    note: {note}")


# (row label, store kind, what it is)
MAP_ROWS = (
    ("CNN CAM (AMN dump)", "a"),
    ("ViT CAM (MCTformer dump)", "b"),
    ("naive mean", "mean"),
    ("OR", "or"),
    ("AND", "and"),
    ("ORANDNet", "orandnet"),
    ("ORANDNet + IRN", "rw"),
)


def _scores(result, index: int) -> dict:
    s = result.scores[index]
    return {"mIoU": 100 * s["mean_iou"], "precision": 100 * s["mean_precision"], "recall": 100 * s["mean_recall"]}


def _evaluate_stage(run: DemoRun, info) -> None:
    from ..evaluation.stage import evaluate

    run.rows = []
    for label, kind in MAP_ROWS:
        result = evaluate(f"{run.store}:{kind}", info.masks, ids=list(info.train_ids), sweep=SWEEP,
                          classes=str(info.classes_path))
        row = {"row": label, "kind": kind, "best_thres": result.best_threshold, **_scores(result, result.best)}
        pa = result.precision_aware
        row["pa_thres"] = result.precision_aware_threshold
        row["pa"] = _scores(result, pa) if pa is not None else None
        run.rows.append(row)
        run.evaluations[kind] = result
    masks = evaluate(f"{run.store}:masks", info.masks, ids=list(info.train_ids), classes=str(info.classes_path))
    run.rows.append({"row": "ORANDNet + IRN masks (IRN bg 0.25)", "kind": "masks", "best_thres": None,
                     **_scores(masks, 0), "pa_thres": None, "pa": None})
    run.evaluations["masks"] = masks


def _write_report(run: DemoRun, record: dict) -> None:
    """The report of the whole run (:mod:`.report`): after the evaluate stage, DeepLab's rows when it ran."""
    from .report import write_demo_report
    from .synthetic import load_dataset

    runs = [(r["row"], Path(r["val_masks"])) for r in run.seg_rows if "val_masks" in r]
    try:
        page = write_demo_report(run.out / "report", record, run.evaluations, run.store,
                                 load_dataset(run.out / "data"), runs)
        run.echo(f"    report: {page}")
    except OrandError as exc:  # matplotlib missing: the table still stands
        run.echo(f"    report skipped: {exc}")


def _deeplab_stage(run: DemoRun, plan: DemoPlan, info) -> None:
    from ..segment import SegmentConfig, SegTrainConfig, segment_images, train_segmentation

    run.seg_rows = []
    for label, schedule in (("DeepLab, no scale schedule", "none"), (f"DeepLab, scale schedule {plan.seg_schedule}",
                                                                     plan.seg_schedule)):
        out = run.out / "runs" / ("deeplab_" + ("plain" if schedule == "none" else "scheduled"))
        config = SegTrainConfig(
            images=str(info.images), masks=f"{run.store}:masks", train_list=list(info.train_ids), out=str(out),
            model="deeplabv2-resnet18-os16", classes=str(info.classes_path), scale_schedule=schedule,
            epochs=plan.seg_epochs, batch_size=10, crop_size=min(info.image_size), optimizer="adamw", lr=1e-3,
            head_lr_mult=1.0, pretrained="none", device=run.device, seed=run.seed, show_progress=run.progress,
            resume=(out / "last.pt").is_file())
        start = time.perf_counter()
        model = out / "model.pt"
        if not model.is_file():
            model = train_segmentation(config)
        seconds = time.perf_counter() - start
        scores = segment_images(model, info.images, list(info.val_ids),
                                SegmentConfig(out=out / "val_masks", gt=info.masks, scales=(1.0,), flip=True,
                                              device=run.device, show_progress=run.progress))
        run.seg_rows.append({"row": label, "mIoU": 100 * scores["miou"],
                             "precision": 100 * scores.get("mean_precision", float("nan")),
                             "recall": 100 * scores.get("mean_recall", float("nan")), "train_s": round(seconds, 1),
                             "val_masks": str(out / "val_masks")})


def format_table(run: DemoRun) -> list[str]:
    """The result table (percent), map rows at their best-mIoU and precision-aware thresholds."""
    lines = [f"pseudo-masks on the synthetic train split ({run.size}); maps scored over thresholds {SWEEP}",
             f"{'':38s} {'best thr':>8s} {'mIoU':>6s} {'prec':>6s} {'rec':>6s} | {'PA thr':>6s} {'mIoU':>6s} "
             f"{'prec':>6s} {'rec':>6s}"]
    for r in run.rows:
        best = f"{r['best_thres']:8.2f}" if r["best_thres"] is not None else f"{'-':>8s}"
        left = f"{r['row']:38s} {best} {r['mIoU']:6.1f} {r['precision']:6.1f} {r['recall']:6.1f}"
        if r["pa"] is not None:
            right = f"{r['pa_thres']:6.2f} {r['pa']['mIoU']:6.1f} {r['pa']['precision']:6.1f} {r['pa']['recall']:6.1f}"
        else:
            right = f"{'-':>6s}"
        lines.append(f"{left} | {right}")
    if run.seg_rows:
        lines.append("")
        lines.append("DeepLab trained on the ORANDNet + IRN masks, scored on the val split")
        for r in run.seg_rows:
            lines.append(f"{r['row']:38s} {'':8s} {r['mIoU']:6.1f} {r['precision']:6.1f} {r['recall']:6.1f}"
                         f"   (trained in {r['train_s']:.0f} s)")
    return lines


def run_demo(out: str | Path = "orand_demo", size: str = "default", seed: int = 0, device: str = "auto",
             stop_after: str = "deeplab", progress: bool = True, echo: Callable[[str], None] = print) -> DemoRun:
    """Run the demo into ``out`` up to ``stop_after``; returns the run (table rows, timings)."""
    from ..classes import get_class_set
    from ..fuse.stage import FuseOptions, run_fuse
    from .synthetic import make_cams, make_dataset, resolve_size

    if stop_after not in STAGES:
        raise OrandError(f"unknown stage {stop_after!r}; valid: {', '.join(STAGES)}")
    spec = resolve_size(size)
    plan = plan_for(size)
    run = DemoRun(Path(out), size=size, seed=seed, device=device, progress=progress, echo=echo)
    last = STAGES.index(stop_after)
    echo(f"orand-addon demo: size {size} ({spec.n_train} train + {spec.n_val} val images of "
         f"{spec.height}x{spec.width}), output in {run.out}")
    info = run.stage("data", lambda: make_dataset(run.out / "data", spec.n_train, spec.n_val, spec.image_size,
                                                  seed=seed, show_progress=progress))
    steps: list[tuple[str, Callable[[], object]]] = [
        ("cams", lambda: make_cams(info.root, run.out / "cams", seed=seed, device=device,
                                   epochs={"cnn": spec.cnn_epochs, "vit": spec.vit_epochs}, show_progress=progress)),
    ]
    cams: dict = {}

    def fuse() -> None:
        class_set = get_class_set(str(info.classes_path))
        run_fuse([cams["cnn"], cams["vit"]], run.store, class_set, info.labels(),
                 FuseOptions(formats=("amn", "mctformer"), keep_sources=True), ids=list(info.train_ids),
                 command="orand-addon demo", progress=progress)

    for index, (name, fn) in enumerate([
        *steps,
        ("fuse", fuse),
        ("orandnet", lambda: _orandnet_stage(run, plan, info)),
        ("irn", lambda: _irn_stage(run, plan, info)),
        ("evaluate", lambda: _evaluate_stage(run, info)),
        ("deeplab", lambda: _deeplab_stage(run, plan, info)),
    ], start=1):
        if index > last:
            echo(f"stopped after '{stop_after}' (--stop-after)")
            break
        result = run.stage(name, fn)
        if name == "cams":
            cams.update(result)
    if run.rows:
        for line in format_table(run):
            echo(line)
    record = {"size": size, "plan": asdict(plan), "seed": seed, "timings_s": run.timings, "rows": run.rows,
              "deeplab": run.seg_rows, "machine": machine(device), "date": time.strftime("%Y-%m-%d %H:%M %z")}
    path = run.out / "results.json"
    record = keep_earlier(_read_json(path), record)
    path.write_text(json.dumps(record, indent=2) + "\n")
    echo(f"wrote {path}")
    if run.evaluations:
        _write_report(run, record)
    return run


# -- results.json across reruns ----------------------------------------------------------------------------------

RECOMPUTED = ("evaluate",)  # stages a rerun computes again in full; every other stage resumes what is done


def machine(device: str = "auto") -> dict:
    """Where the numbers were measured: CPU, cores, the compute device, torch."""
    import os
    import platform

    import torch

    from ..runtime.devices import resolve_device

    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {"platform": platform.platform(terse=True), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "device": f"{dev.type}: {name}", "torch": torch.__version__}


def keep_earlier(previous: dict | None, current: dict) -> dict:
    """``current`` with the timings of earlier runs into the same folder (same size, seed and machine) kept: a
    resumed stage adds its time to the earlier one (a finished stage adds ~0 s instead of replacing the time it
    took with the resume's), a stage computed again in full (:data:`RECOMPUTED`) has this run's time, and stages
    and rows this run did not reach keep their earlier values.

    >>> old = {"size": "ci", "seed": 0, "machine": {"cores": 2}, "rows": [{"row": "OR"}],
    ...        "timings_s": {"data": 5.0, "evaluate": 3.0, "deeplab": 90.0},
    ...        "deeplab": [{"row": "plain", "train_s": 80.0}]}
    >>> new = {"size": "ci", "seed": 0, "machine": {"cores": 2}, "timings_s": {"data": 0.1, "evaluate": 2.9},
    ...        "rows": [], "deeplab": []}
    >>> merged = keep_earlier(old, new)
    >>> merged["timings_s"], merged["rows"], merged["deeplab"][0]["train_s"]
    ({'data': 5.1, 'evaluate': 2.9, 'deeplab': 90.0}, [{'row': 'OR'}], 80.0)
    >>> keep_earlier({**old, "seed": 1}, new)["timings_s"]
    {'data': 0.1, 'evaluate': 2.9}
    """
    same = previous is not None and all(previous.get(k) == current.get(k) for k in ("size", "seed", "machine"))
    if not same:
        return current
    timings = dict(previous.get("timings_s", {}))
    for stage, seconds in current["timings_s"].items():
        timings[stage] = seconds if stage in RECOMPUTED else round(timings.get(stage, 0.0) + seconds, 1)
    earlier_seg = {r["row"]: r for r in previous.get("deeplab", [])}
    seg = [{**r, "train_s": round(earlier_seg.get(r["row"], {}).get("train_s", 0.0) + r["train_s"], 1)}
           for r in current["deeplab"]] or previous.get("deeplab", [])
    return {**current, "timings_s": timings, "rows": current["rows"] or previous.get("rows", []), "deeplab": seg}


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
