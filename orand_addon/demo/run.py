"""``orand-addon demo``: the whole pipeline on a benchmark, ending in a Table-1-like table, ``results.json`` and
the visual report. The machinery here serves every benchmark; what differs (data, CAM sources, the settings of
each stage per size) comes from :mod:`.synthetic` (``--dataset synthetic``) or :mod:`.msrc` (``--dataset msrc``).

Stages (each resumes: rerunning the demo reuses every finished stage of the same output folder)::

    data -> cams (source a as AMN dumps, source b as MCTformer dumps) -> fuse -> orandnet (train + predict)
         -> irn (seeds, train, walk) -> evaluate (every kind on train, and two baselines) -> deeplab (with and
         without scale scheduling, scored on val)

They are the library's own entry points (``run_fuse``, ``train_orandnet``/``predict_orandnet``, ``refine``,
``evaluate``, ``train_segmentation``/``segment_images``), i.e. what a user runs on their own dumps. Nothing is
tuned against the ground truth: every map row of the table is scored over a threshold sweep and reported at its
best-mIoU and at its precision-aware threshold (evaluation choices); masks are scored as they are.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from ..errors import OrandError
from .synthetic.benchmark import PLANS, DemoPlan, plan_for  # noqa: F401 (the synthetic plans, re-exported)

if TYPE_CHECKING:
    from ..orandnet import TrainConfig
    from ..refine import TrainOptions

STAGES = ("data", "cams", "fuse", "orandnet", "irn", "evaluate", "deeplab")
DATASETS = ("synthetic", "msrc")
SWEEP = "0.05:0.95:0.05"
CENTRE_FRACTION = 0.6


@dataclass(frozen=True)
class StagePlan:
    """What the pipeline trains, per stage, for one benchmark and size."""

    orandnet: "TrainConfig"
    irn: "TrainOptions"
    seg: dict                          # SegTrainConfig keywords besides the paths, the schedule and resume
    seg_schedule: str
    seg_scales: tuple[float, ...] = (1.0,)


class Benchmark(Protocol):
    """A dataset for the demo (see :class:`~.synthetic.benchmark.SyntheticBenchmark`)."""

    name: str
    source_rows: tuple[str, str]
    source_formats: tuple[str, str]

    def header(self) -> str: ...
    def record(self) -> dict: ...
    def make_data(self, run: "DemoRun"): ...
    def make_cams(self, run: "DemoRun", data) -> dict[str, Path]: ...
    def stage_plan(self, run: "DemoRun", data) -> StagePlan: ...


@dataclass
class DemoRun:
    """Where a demo writes, and what it has measured so far."""

    out: Path
    size: str = "default"
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    echo: Callable[[str], None] = print
    dataset: str = "synthetic"
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


def _fuse_stage(run: DemoRun, bench: Benchmark, data, cams: dict[str, Path]) -> None:
    from ..classes import get_class_set
    from ..fuse.stage import FuseOptions, run_fuse

    run_fuse([cams["a"], cams["b"]], run.store, get_class_set(str(data.classes_path)), data.labels(),
             FuseOptions(formats=bench.source_formats, keep_sources=True), ids=list(data.train_ids),
             command="orand-addon demo", progress=run.progress)


def _orandnet_stage(run: DemoRun, plan: StagePlan) -> None:
    from ..orandnet import PredictConfig, predict_orandnet, train_orandnet

    run_dir = run.out / "runs" / "orandnet"
    resume = (run_dir / "last.pt").is_file() or (run_dir / "model.pt").is_file()  # a finished run returns at once
    checkpoint = train_orandnet(run.store, run_dir, plan.orandnet, resume=resume, echo=run.echo)
    predict_orandnet(run.store, checkpoint, PredictConfig(device=run.device, progress=run.progress), echo=run.echo)


def _irn_stage(run: DemoRun, plan: StagePlan, data) -> None:
    from ..refine.pipeline import RefineConfig, refine

    report = refine(run.store, "orandnet", data.images,
                    RefineConfig(run_dir=run.out / "runs" / "irn", train_options=plan.irn, device=run.device,
                                 progress=run.progress), command="orand-addon demo")
    for note in report.notes:
        run.echo(f"    note: {note}")


def map_rows(bench: Benchmark) -> tuple[tuple[str, str], ...]:
    """(row label, store kind) of the map rows of the table, in the paper's order."""
    return ((bench.source_rows[0], "a"), (bench.source_rows[1], "b"), ("naive mean", "mean"), ("OR", "or"),
            ("AND", "and"), ("ORANDNet", "orandnet"), ("ORANDNet + IRN", "rw"))


def _scores(result, index: int) -> dict:
    s = result.scores[index]
    return {"mIoU": 100 * s["mean_iou"], "precision": 100 * s["mean_precision"], "recall": 100 * s["mean_recall"]}


def _mask_row(label: str, kind: str, result) -> dict:
    return {"row": label, "kind": kind, "best_thres": None, **_scores(result, 0), "pa_thres": None, "pa": None}


def centre_box(shape: tuple[int, int], label: int, fraction: float = CENTRE_FRACTION):
    """Baseline mask: ``label`` in the middle ``fraction`` of each side, background around it.

    >>> centre_box((5, 10), 3).tolist()[1]
    [0, 0, 3, 3, 3, 3, 3, 3, 0, 0]
    """
    import numpy as np

    h, w = shape
    y0, x0 = int(round(h * (1 - fraction) / 2)), int(round(w * (1 - fraction) / 2))
    mask = np.zeros(shape, np.uint8)
    mask[y0:h - y0, x0:w - x0] = label
    return mask


def baseline_masks(data, ids: Sequence[str], out: Path, progress: bool) -> dict[str, Path]:
    """PNG masks of the two label-only baselines (the first image label; background for an image without one):
    ``centre box`` (middle 60 % of each side) and ``label everywhere``. Written once; a rerun keeps them."""
    import numpy as np

    from ..io.images import image_size, save_label_png
    from ..runtime.progress import progress as bar

    labels = data.labels()
    folders = {"centre box (middle 60 %)": out / "centre_box", "image label everywhere": out / "label_everywhere"}
    todo = [i for i in ids if not all((f / f"{i}.png").is_file() for f in folders.values())]
    for image_id in bar(todo, desc="baselines", unit="img", enabled=progress):
        present = labels.get(image_id)
        label = int(present[0]) + 1 if present is not None and len(present) else 0
        shape = image_size(data.images, image_id)
        save_label_png(folders["centre box (middle 60 %)"] / f"{image_id}.png", centre_box(shape, label))
        save_label_png(folders["image label everywhere"] / f"{image_id}.png", np.full(shape, label, np.uint8))
    return folders


def _evaluate_stage(run: DemoRun, bench: Benchmark, data) -> None:
    from ..evaluation.stage import evaluate

    ids, classes = list(data.train_ids), str(data.classes_path)
    run.rows = []
    for label, kind in map_rows(bench):
        result = evaluate(f"{run.store}:{kind}", data.masks, ids=ids, sweep=SWEEP, classes=classes)
        row = {"row": label, "kind": kind, "best_thres": result.best_threshold, **_scores(result, result.best)}
        pa = result.precision_aware
        row["pa_thres"] = result.precision_aware_threshold
        row["pa"] = _scores(result, pa) if pa is not None else None
        run.rows.append(row)
        run.evaluations[kind] = result
    masks = evaluate(f"{run.store}:masks", data.masks, ids=ids, classes=classes)
    run.rows.append(_mask_row("ORANDNet + IRN masks (IRN bg 0.25)", "masks", masks))
    run.evaluations["masks"] = masks
    for label, folder in baseline_masks(data, ids, run.out / "baselines", run.progress).items():
        result = evaluate(str(folder), data.masks, ids=ids, classes=classes)
        run.rows.append(_mask_row(f"baseline: {label}", "baseline", result))


def _write_report(run: DemoRun, record: dict, data) -> None:
    """The report of the whole run (:mod:`.report`): after the evaluate stage, DeepLab's rows when it ran."""
    from .report import write_demo_report

    runs = [(r["row"], Path(r["val_masks"])) for r in run.seg_rows if "val_masks" in r]
    try:
        page = write_demo_report(run.out / "report", record, run.evaluations, run.store, data, runs)
        run.echo(f"    report: {page}")
    except OrandError as exc:  # matplotlib missing: the table still stands
        run.echo(f"    report skipped: {exc}")


def _deeplab_stage(run: DemoRun, plan: StagePlan, data) -> None:
    from ..segment import SegmentConfig, SegTrainConfig, segment_images, train_segmentation

    run.seg_rows = []
    for label, schedule in (("DeepLab, no scale schedule", "none"),
                            (f"DeepLab, scale schedule {plan.seg_schedule}", plan.seg_schedule)):
        out = run.out / "runs" / ("deeplab_" + ("plain" if schedule == "none" else "scheduled"))
        config = SegTrainConfig(
            images=str(data.images), masks=f"{run.store}:masks", train_list=list(data.train_ids), out=str(out),
            classes=str(data.classes_path), scale_schedule=schedule, device=run.device, seed=run.seed,
            show_progress=run.progress, resume=(out / "last.pt").is_file(), **plan.seg)
        start = time.perf_counter()
        model = out / "model.pt"
        if not model.is_file():
            model = train_segmentation(config)
        seconds = time.perf_counter() - start
        scores = segment_images(model, data.images, list(data.val_ids),
                                SegmentConfig(out=out / "val_masks", gt=data.masks, scales=plan.seg_scales, flip=True,
                                              device=run.device, show_progress=run.progress))
        run.seg_rows.append({"row": label, "mIoU": 100 * scores["miou"],
                             "precision": 100 * scores.get("mean_precision", float("nan")),
                             "recall": 100 * scores.get("mean_recall", float("nan")), "train_s": round(seconds, 1),
                             "val_masks": str(out / "val_masks")})


def format_table(run: DemoRun, title: str | None = None) -> list[str]:
    """The result table (percent), map rows at their best-mIoU and precision-aware thresholds."""
    lines = [title or f"pseudo-masks on the {run.dataset} train split ({run.size}); maps scored over thresholds "
                      f"{SWEEP}",
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


def get_benchmark(dataset: str, size: str, data: str | Path | None) -> Benchmark:
    """The benchmark of ``--dataset`` at ``--size`` (``msrc`` reads the raw MSRC-v2 folder ``data``)."""
    if dataset == "synthetic":
        if data is not None:
            raise OrandError("--data is for --dataset msrc (the synthetic dataset is drawn, not read)")
        from .synthetic.benchmark import SyntheticBenchmark

        return SyntheticBenchmark(size)
    if dataset == "msrc":
        if data is None:
            raise OrandError("--dataset msrc needs --data DIR: the raw MSRC-v2 folder (Images/, "
                             "newsegmentations_mats/)")
        from .msrc.benchmark import MsrcBenchmark

        return MsrcBenchmark(size, data)
    raise OrandError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")


def run_demo(out: str | Path = "orand_demo", size: str = "default", seed: int = 0, device: str = "auto",
             stop_after: str = "deeplab", progress: bool = True, echo: Callable[[str], None] = print,
             dataset: str = "synthetic", data: str | Path | None = None) -> DemoRun:
    """Run the demo of ``dataset`` into ``out`` up to ``stop_after``; returns the run (table rows, timings)."""
    import torch

    if stop_after not in STAGES:
        raise OrandError(f"unknown stage {stop_after!r}; valid: {', '.join(STAGES)}")
    bench = get_benchmark(dataset, size, data)
    run = DemoRun(Path(out), size=size, seed=seed, device=device, progress=progress, echo=echo, dataset=dataset)
    last = STAGES.index(stop_after)
    echo(f"orand-addon demo: {dataset}, {bench.header()}, output in {run.out}")
    info = run.stage("data", lambda: bench.make_data(run))
    state: dict = {}
    steps: list[tuple[str, Callable[[], object]]] = [
        ("cams", lambda: state.setdefault("cams", bench.make_cams(run, info))),
        ("fuse", lambda: _fuse_stage(run, bench, info, state["cams"])),
        ("orandnet", lambda: _orandnet_stage(run, state["plan"])),
        ("irn", lambda: _irn_stage(run, state["plan"], info)),
        ("evaluate", lambda: _evaluate_stage(run, bench, info)),
        ("deeplab", lambda: _deeplab_stage(run, state["plan"], info)),
    ]
    state["plan"] = bench.stage_plan(run, info)
    for index, (name, fn) in enumerate(steps, start=1):
        if index > last:
            echo(f"stopped after '{stop_after}' (--stop-after)")
            break
        run.stage(name, fn)
    if run.rows:
        for line in format_table(run):
            echo(line)
    record = {"dataset": dataset, "size": size, **bench.record(), "seed": seed,
              "torch_threads": torch.get_num_threads(), "timings_s": run.timings, "rows": run.rows,
              "deeplab": run.seg_rows, "machine": machine(device), "date": time.strftime("%Y-%m-%d %H:%M %z")}
    path = run.out / "results.json"
    record = keep_earlier(_read_json(path), record)
    path.write_text(json.dumps(record, indent=2) + "\n")
    echo(f"wrote {path}")
    if run.evaluations:
        _write_report(run, record, info)
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
