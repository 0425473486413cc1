"""The visual report of an evaluation (``orand-addon evaluate --report DIR``).

Writes ``eval_classes.png`` (per-class IoU / precision / recall), ``eval_sweep.png`` (mean IoU / precision /
recall against the background threshold, with the best-mIoU and precision-aware thresholds marked; sweeps
only), ``eval_examples.png`` (rows of image | source maps | fused maps | pseudo-mask | ground truth, VOC
palette) and ``index.html``, one self-contained page with the pictures embedded and the numbers as tables.

matplotlib is an optional extra (``pip install 'orand-addon[plot]'``); it is imported only here, and only its
object API is used (no pyplot state, no backend switching).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import OrandError
from ..io.images import load_image, voc_palette
from ..masks import maps_to_mask
from ..runtime.files import atomic_write, atomic_write_text
from .stage import EvalResult
from .predictions import GroundTruth, Prediction, PredSpec, open_prediction, resize_prediction
from .results import sweep_lines

MISSING_PLOT = "the report needs matplotlib: pip install 'orand-addon[plot]'"
SOURCE_KINDS = ("a", "b", "c", "d", "e", "f", "g", "h")
FUSED_KINDS = ("or", "and", "mean", "orandnet", "rw")
TITLES = {"or": "OR", "and": "AND", "mean": "mean", "orandnet": "ORANDNet", "rw": "random walk",
          **{k: f"source {k.upper()}" for k in SOURCE_KINDS}}
CURVES = (("mean_iou", "mIoU", "tab:blue"), ("mean_precision", "precision", "tab:green"),
          ("mean_recall", "recall", "tab:red"))


def require_matplotlib() -> None:
    """Fail early, in one line, when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OrandError(MISSING_PLOT) from None


def _figure(width: float, height: float):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path) -> Path:
    """Write a figure as PNG atomically (never through a symlink at ``path``)."""
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png"), what="report picture")


def colorize(mask: np.ndarray) -> np.ndarray:
    """A label mask as RGB with the VOC palette (255 = void / no prediction in cream).

    >>> colorize(np.array([[0, 1, 255]], np.uint8)).tolist()
    [[[0, 0, 0], [128, 0, 0], [224, 224, 192]]]
    """
    return voc_palette()[np.asarray(mask, np.uint8)]


def heat(maps: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """RGB picture of (K, H, W) maps: the per-pixel maximum in the 'jet' colour map, over the image if given."""
    from matplotlib import colormaps

    top = np.clip(maps.max(axis=0), 0, 1) if maps.shape[0] else np.zeros(maps.shape[-2:], np.float32)
    rgb = colormaps["jet"](top)[..., :3] * 255
    if image is not None and image.shape[:2] == top.shape:
        rgb = 0.5 * rgb + 0.5 * image
    return rgb.astype(np.uint8)


def class_chart(result: EvalResult, path: Path) -> Path:
    """Grouped bars of per-class IoU, precision and recall (percent) with the means in the title."""
    s = result.headline
    names = result.class_names
    fig = _figure(max(8.0, 0.45 * len(names) + 2), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    for offset, (metric, label, colour) in zip((-0.27, 0, 0.27), (("iou", "IoU", "tab:blue"),
                                                                   ("precision", "precision", "tab:green"),
                                                                   ("recall", "recall", "tab:red"))):
        ax.bar(x + offset, np.nan_to_num(100 * s[metric]), width=0.27, color=colour, label=label)
    for k in np.flatnonzero(~s["present"]):
        ax.text(k, 2, "absent", rotation=90, ha="center", va="bottom", fontsize=7, color="0.5")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(f"{result.pred}: mIoU {100 * s['mean_iou']:.1f}, precision {100 * s['mean_precision']:.1f}, "
                 f"recall {100 * s['mean_recall']:.1f} ({result.num_images} images)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def sweep_chart(result: EvalResult, path: Path) -> Path:
    """Mean IoU, precision and recall against the background threshold; best and precision-aware marked."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    t = np.asarray(result.thresholds)
    for metric, label, colour in CURVES:
        ax.plot(t, 100 * result.curve(metric), color=colour, label=label)
    for index, text, style in ((result.best, "best mIoU", "--"), (result.precision_aware, "precision-aware", ":")):
        if index is not None:
            ax.axvline(t[index], color="0.3", linestyle=style, label=f"{text} {t[index]:g}")
    ax.set_xlabel("background threshold")
    ax.set_ylabel("%")
    ax.legend(fontsize=8)
    ax.set_title(f"{result.pred} ({result.num_images} images)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def pick_examples(ids: Sequence[str], count: int) -> list[str]:
    """``count`` ids spread evenly over ``ids``.

    >>> pick_examples(["a", "b", "c", "d", "e"], 3)
    ['a', 'c', 'e']
    """
    if count <= 0 or not ids:
        return []
    if count >= len(ids):
        return list(ids)
    return [ids[int(round(i * (len(ids) - 1) / (count - 1)))] for i in range(count)] if count > 1 else [ids[0]]


def _pseudo_mask(pred: Prediction, threshold: float | None) -> np.ndarray:
    if pred.mask is not None:
        return pred.mask
    return maps_to_mask(pred.maps, pred.keys, threshold)


def example_rows(result: EvalResult, spec: PredSpec, image_dir: str | Path | None, ids: Sequence[str]):
    """``(column titles, rows of RGB panels)`` for the example grid."""
    gt = GroundTruth(result.gt)
    source = open_prediction(spec)
    try:
        kind = spec.spec.rsplit(":", 1)[-1] if hasattr(source, "read_kind") else None
        kinds = set(source.siblings())
        columns = [k for k in (*SOURCE_KINDS, *FUSED_KINDS) if k in kinds]
        if source.holds == "maps" and kind not in columns:
            columns.append(kind or "maps")
        mask_title = "pseudo-mask" if result.threshold is None else f"pseudo-mask (bg {result.threshold:g})"
        titles = (["image"] if image_dir else []) + [TITLES.get(c, c) for c in columns] + [mask_title, "ground truth"]
        rows = []
        for image_id in ids:
            label = gt.read(image_id)
            image = load_image(image_dir, image_id) if image_dir else None
            panels = [image] if image is not None else []
            for column in columns:
                pred = source.read_kind(column, image_id) if column in kinds else source.read(image_id)
                if pred is None:
                    panels.append(np.full((*label.shape, 3), 255, np.uint8))
                    continue
                panels.append(heat(resize_prediction(pred, label.shape).maps, image))
            own = resize_prediction(source.read(image_id), label.shape)
            panels += [colorize(_pseudo_mask(own, result.threshold)), colorize(label)]
            rows.append((image_id, panels))
        return titles, rows
    finally:
        source.close()


def example_grid(titles: list[str], rows: list, path: Path) -> Path:
    fig = _figure(2.2 * len(titles), 1.8 * len(rows) + 0.4)
    for r, (image_id, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            ax = fig.add_subplot(len(rows), len(titles), r * len(titles) + c + 1)
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(image_id, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _embed(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _fmt(value: float) -> str:
    return "&ndash;" if math.isnan(float(value)) else f"{100 * float(value):.2f}"


def html_page(result: EvalResult, pictures: list[Path]) -> str:
    s = result.headline
    head = "".join(f"<th>{h}</th>" for h in ("class", "IoU", "precision", "recall", "FP/union", "FN/union"))
    body = "".join(
        f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{_fmt(s[m][k])}</td>" for m in
                                                   ("iou", "precision", "recall", "fp_union", "fn_union")) + "</tr>"
        for k, n in enumerate(result.class_names))
    means = "".join(f"<td><b>{_fmt(s[m])}</b></td>" for m in
                    ("mean_iou", "mean_precision", "mean_recall", "mean_fp_union", "mean_fn_union"))
    threshold = "" if result.threshold is None else f", background threshold {result.threshold:g}"
    sweep = "".join(f"<li>{html.escape(line.strip())}</li>" for line in sweep_lines(result)[1:]) \
        if result.mode == "sweep" else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>orand-addon evaluation</title><style>"
        "body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:right}"
        "td:first-child{text-align:left}img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(result.pred)}</h1><p>{result.num_images} images against {html.escape(result.gt)}"
        f"{threshold}. Percent; dataset-level counts, ground-truth 255 ignored, means over the classes present."
        f"</p><ul>{sweep}</ul>" + "".join(f"<p>{_embed(p)}</p>" for p in pictures) +
        f"<table><tr>{head}</tr>{body}<tr><td><b>mean</b></td>{means}</tr></table></body></html>\n"
    )


def write_report(result: EvalResult, out_dir: str | Path, images: str | Path | None = None, examples: int = 4,
                 spec: PredSpec | None = None) -> Path:
    """Write the pictures and ``index.html`` into ``out_dir``; returns the page's path."""
    require_matplotlib()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OrandError(f"{out}: cannot create the report folder ({exc.strerror})") from None
    pictures = [class_chart(result, out / "eval_classes.png")]
    if result.mode == "sweep":
        pictures.append(sweep_chart(result, out / "eval_sweep.png"))
    chosen = pick_examples(result.ids, examples)
    if chosen:
        titles, rows = example_rows(result, spec or PredSpec(result.pred), images, chosen)
        pictures.append(example_grid(titles, rows, out / "eval_examples.png"))
    page = out / "index.html"
    atomic_write_text(page, html_page(result, pictures), what="report page")
    return page
