"""The demo's report (``orand_demo/report/index.html``): one page for the whole run.

The comparison table (every stage's row at its best-mIoU and precision-aware thresholds, and DeepLab on val), the
time of each stage, the sweep curves of every map kind, per-class IoU of every stage, examples of the train split
through every stage (heat maps with their colour bar, masks with a class legend) and DeepLab's val predictions.
Needs matplotlib (the ``plot`` extra), like ``evaluate --report``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..evaluation import html
from ..evaluation.report import HEAT_LABEL, colorize, heat, pick_examples, require_matplotlib, _figure
from ..io.images import load_image, load_label_png

# (store kind, stage of the pipeline) of the map rows, in pipeline order
STAGE_OF = {"a": "sources", "b": "sources", "mean": "fusion", "or": "fusion", "and": "fusion",
            "orandnet": "ORANDNet", "rw": "IRN", "masks": "IRN"}
PANELS = (("a", "CNN CAM"), ("b", "ViT CAM"), ("mean", "mean"), ("or", "OR"), ("and", "AND"),
          ("orandnet", "ORANDNet"), ("rw", "random walk"))
STAGE_WORK = {"data": "synthetic dataset", "cams": "CNN and ViT trained, CAMs dumped", "fuse": "OR, AND, mean",
              "orandnet": "ORANDNet trained, maps predicted", "irn": "seeds, IRN trained, random walk, masks",
              "evaluate": "every kind scored over the sweep", "deeplab": "DeepLab trained twice, val segmented"}
CURVES = (("mean_iou", "mIoU"), ("mean_precision", "precision"), ("mean_recall", "recall"))


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def comparison_table(rows: Sequence[dict], seg_rows: Sequence[dict]) -> str:
    """Every stage's row (pseudo-masks on train) and DeepLab's (val), percent."""
    headers = ["stage", "row", "best thr", "mIoU", "precision", "recall", "PA thr", "mIoU", "precision", "recall"]
    out = []
    for r in rows:
        pa = r.get("pa") or {}
        out.append([STAGE_OF.get(r["kind"], ""), r["row"], "–" if r["best_thres"] is None else f"{r['best_thres']:.2f}",
                    _pct(r["mIoU"]), _pct(r["precision"]), _pct(r["recall"]),
                    "–" if r.get("pa_thres") is None else f"{r['pa_thres']:.2f}",
                    _pct(pa.get("mIoU")), _pct(pa.get("precision")), _pct(pa.get("recall"))])
    for r in seg_rows:
        out.append(["DeepLab (val)", f"{r['row']} (trained in {r['train_s']:.0f} s)", "", _pct(r["mIoU"]),
                    _pct(r["precision"]), _pct(r["recall"]), "", "", "", ""])
    return html.table(headers, out)


def stage_table(timings: Mapping[str, float]) -> str:
    rows = [[name, f"{seconds:.1f}", STAGE_WORK.get(name, "")] for name, seconds in timings.items()]
    rows.append(["all", f"{sum(timings.values()):.1f}", ""])
    return html.table(["stage", "seconds", "what it did"], rows, [""] * len(timings) + ["group"])


def sweep_chart(evaluations: Mapping[str, object], labels: Mapping[str, str], path: Path) -> Path:
    """Mean IoU, precision and recall against the background threshold, one line per map kind."""
    fig = _figure(15, 4.2)
    for n, (metric, title) in enumerate(CURVES):
        ax = fig.add_subplot(1, 3, n + 1)
        for kind, result in evaluations.items():
            if result.thresholds is None:
                continue
            line, = ax.plot(result.thresholds, 100 * result.curve(metric), label=labels.get(kind, kind))
            if metric == "mean_iou" and result.best is not None:
                ax.plot([result.thresholds[result.best]], [100 * result.curve(metric)[result.best]], "o",
                        color=line.get_color())
        ax.set_title(f"{title} (%)", fontsize=10)
        ax.set_xlabel("background threshold")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def class_table(evaluations: Mapping[str, object], labels: Mapping[str, str]) -> str:
    """Per-class IoU (percent) of every kind at its headline threshold, one column per kind."""
    kinds = list(evaluations)
    names = next(iter(evaluations.values())).class_names
    rows = [[name, *(_pct(100 * float(evaluations[k].headline["iou"][c])) for k in kinds)]
            for c, name in enumerate(names)]
    rows.append(["mean", *(_pct(100 * float(evaluations[k].headline["mean_iou"])) for k in kinds)])
    return html.table(["class", *(labels.get(k, k) for k in kinds)], rows, [""] * len(names) + ["group"])


def train_examples(store_path: Path, info, ids: Sequence[str], seeds: bool = True) -> tuple[list, set[int]]:
    """Each id through the pipeline: image, every map kind as a heat map, seeds, pseudo-mask, ground truth."""
    from ..store.store import Store

    rows, shown = [], set()
    with Store(store_path) as store:
        for image_id in ids:
            image = load_image(info.images, image_id)
            truth = load_label_png(info.masks / f"{image_id}.png")
            panels = [("image", image)]
            for kind, title in PANELS:
                if store.has(kind, image_id):
                    panels.append((title, heat(store.read_maps(kind, image_id)[0], image)))
            for group, title in ([("seeds", "IRN seeds")] if seeds else []) + [("masks", "pseudo-mask")]:
                if store.has(group, image_id):
                    mask = store.read_mask(group, image_id)
                    shown.update(np.unique(mask).tolist())
                    panels.append((title, colorize(mask)))
            shown.update(np.unique(truth).tolist())
            panels.append(("ground truth", colorize(truth)))
            rows.append((image_id, panels))
    return rows, shown


def deeplab_examples(info, runs: Sequence[tuple[str, Path]], ids: Sequence[str]) -> tuple[list, set[int]]:
    """Val images: each DeepLab run's mask next to the ground truth."""
    rows, shown = [], set()
    for image_id in ids:
        truth = load_label_png(info.masks / f"{image_id}.png")
        panels = [("image", load_image(info.images, image_id))]
        for title, folder in runs:
            png = folder / f"{image_id}.png"
            if png.is_file():
                mask = load_label_png(png)
                shown.update(np.unique(mask).tolist())
                panels.append((title, colorize(mask)))
        shown.update(np.unique(truth).tolist())
        panels.append(("ground truth", colorize(truth)))
        rows.append((image_id, panels))
    return rows, shown


def write_demo_report(out: Path, record: dict, evaluations: Mapping[str, object], store: Path, info,
                      deeplab_runs: Sequence[tuple[str, Path]] = (), examples: int = 6) -> Path:
    """Write ``out/index.html`` (and its charts) for a demo ``record`` (what ``results.json`` holds)."""
    require_matplotlib()
    out.mkdir(parents=True, exist_ok=True)
    labels = {r["kind"]: r["row"] for r in record["rows"]}
    names = list(info.class_names)
    m = record.get("machine") or {}
    where = f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('device', '?')}, torch {m.get('torch', '?')}"
    size = getattr(info, "image_size", None)  # the synthetic images share one size; real photos do not
    pixels = f" of {size[0]}×{size[1]} px" if size else ""
    body = [f"<p>{html.esc(record.get('dataset', 'synthetic'))}, size <code>{html.esc(record['size'])}</code>, seed "
            f"{record['seed']}: {len(info.train_ids)} train + {len(info.val_ids)} val images{pixels}, {len(names) - 1} "
            f"classes; {html.esc(where)}, {html.esc(record.get('date', ''))}. Percent; maps are scored over the "
            f"background thresholds of the sweep at their best-mIoU and their precision-aware threshold (the "
            f"first where mean precision ≥ mean recall).</p>",
            "<h2>Every stage</h2>", comparison_table(record["rows"], record.get("deeplab", [])),
            "<h2>Time per stage</h2>", stage_table(record.get("timings_s", {}))]
    maps = {k: r for k, r in evaluations.items() if r.thresholds is not None}
    if maps:
        body += ["<h2>Thresholds</h2>", html.file_img(sweep_chart(maps, labels, out / "sweeps.png"))]
    if evaluations:
        body += ["<h2>IoU per class</h2><p class='note'>At each row's best-mIoU threshold (masks as they are).</p>",
                 class_table(evaluations, labels)]
    chosen = pick_examples(list(info.train_ids), examples)
    rows, shown = train_examples(store, info, chosen)
    body += ["<h2>Examples (train)</h2>", html.colorbar(HEAT_LABEL), html.legend(names, shown),
             html.example_rows(rows)]
    if deeplab_runs:
        rows, shown = deeplab_examples(info, deeplab_runs, pick_examples(list(info.val_ids), examples))
        body += ["<h2>DeepLab (val)</h2>", html.legend(names, shown), html.example_rows(rows)]
    page = out / "index.html"
    page.write_text(html.page("orand-addon demo", "".join(body), html.panel_width(len(PANELS) + 4)))
    return page
