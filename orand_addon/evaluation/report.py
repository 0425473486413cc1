"""The visual report of an evaluation (``orand-addon evaluate --report DIR``).

Writes ``eval_classes.png`` (per-class IoU / precision / recall), ``eval_sweep.png`` (mean IoU / precision /
recall against the background threshold, with the best-mIoU and precision-aware thresholds marked; sweeps
only), ``eval_examples.png`` (rows of image | source maps | fused maps | pseudo-mask | ground truth, with the
heat maps' colour bar and a legend of the mask classes) and ``index.html``: one self-contained page with the
charts, the numbers as tables, and the examples as one readable picture per panel (:mod:`.html`).

matplotlib is an optional extra (``pip install 'orand-addon[plot]'``); it is imported only here, and only its
object API is used (no pyplot state, no backend switching).
"""

from __future__ import annotations

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
from . import html
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
    """RGB picture of (K, H, W) maps: the per-pixel maximum in the 'jet' colour map (0 blue .. 1 red), blended half
    and half with the image if given."""
    from matplotlib import colormaps

    top = np.clip(maps.max(axis=0), 0, 1) if maps.shape[0] else np.zeros(maps.shape[-2:], np.float32)
    rgb = colormaps[html.HEAT_COLORMAP](top)[..., :3] * 255
    if image is not None and image.shape[:2] == top.shape:
        rgb = 0.5 * rgb + 0.5 * image
    return rgb.astype(np.uint8)


HEAT_LABEL = "heat maps: the highest class map per pixel, half blended with the image"


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
    """``(column titles, rows (id, RGB panels), mask values shown, whether there are heat maps)`` for the example
    grid."""
    gt = GroundTruth(result.gt)
    source = open_prediction(spec)
    shown: set[int] = set()
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
            mask = _pseudo_mask(resize_prediction(source.read(image_id), label.shape), result.threshold)
            shown.update(np.unique(mask).tolist() + np.unique(label).tolist())
            panels += [colorize(mask), colorize(label)]
            rows.append((image_id, panels))
        return titles, rows, sorted(shown), bool(columns)
    finally:
        source.close()


def example_grid(titles: list[str], rows: list, path: Path, class_names: Sequence[str] = (),
                 shown: Sequence[int] = (), heat_maps: bool = True) -> Path:
    """The examples as one PNG (for documents): panels of 2.4 inches, the colour bar of the heat maps (if any)
    and the legend of the mask classes below them."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    fig = _figure(2.4 * len(titles), 2.0 * len(rows) + 1.1)
    grid = fig.add_gridspec(len(rows) + 1, len(titles), height_ratios=[1] * len(rows) + [0.35])
    for r, (image_id, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=10)
            if c == 0:
                ax.set_ylabel(image_id, fontsize=9)
    split = max(1, len(titles) // 3) if heat_maps else 0
    if heat_maps:
        bar = fig.add_subplot(grid[len(rows), :split])
        fig.colorbar(ScalarMappable(Normalize(0, 1), html.HEAT_COLORMAP), cax=bar, orientation="horizontal")
        bar.set_title("heat maps (blended with the image)", fontsize=9)
    palette = voc_palette() / 255
    handles = [Patch(color=palette[v], label="void / none" if v == 255 else
                     (class_names[v] if v < len(class_names) else str(v))) for v in shown]
    if handles and split < len(titles):
        holder = fig.add_subplot(grid[len(rows), split:])
        holder.axis("off")
        holder.legend(handles=handles, loc="center", ncol=min(len(handles), 8), fontsize=9, title="mask classes",
                      title_fontsize=9, frameon=False)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def examples_html(titles: list[str], rows: list, class_names: Sequence[str], shown: Sequence[int],
                  heat_maps: bool = True) -> str:
    """The examples for the page: a colour bar (with heat maps), a class legend, and each image's panels with
    their titles."""
    return ((html.colorbar(HEAT_LABEL) if heat_maps else "") + html.legend(class_names, shown)
            + html.example_rows([(image_id, list(zip(titles, panels))) for image_id, panels in rows]))


def _fmt(value: float) -> str:
    return "–" if math.isnan(float(value)) else f"{100 * float(value):.2f}"


def html_page(result: EvalResult, charts: list[Path], examples: str = "", columns: int = 8) -> str:
    s = result.headline
    metrics = ("iou", "precision", "recall", "fp_union", "fn_union")
    rows = [[n, *(_fmt(s[m][k]) for m in metrics)] for k, n in enumerate(result.class_names)]
    rows.append(["mean", *(_fmt(s[f"mean_{m}"]) for m in metrics)])
    threshold = "" if result.threshold is None else f", background threshold {result.threshold:g}"
    sweep = "".join(f"<li>{html.esc(line.strip())}</li>" for line in sweep_lines(result)[1:]) \
        if result.mode == "sweep" else ""
    body = (f"<p>{result.num_images} images against {html.esc(result.gt)}{threshold}. Percent; dataset-level counts, "
            f"ground-truth 255 ignored, means over the classes present.</p><ul>{sweep}</ul>"
            + html.table(["class", "IoU", "precision", "recall", "FP/union", "FN/union"], rows,
                         [""] * len(result.class_names) + ["group"])
            + "".join(f"<p>{html.file_img(p)}</p>" for p in charts)
            + (f"<h2>Examples</h2>{examples}" if examples else ""))
    return html.page(result.pred, body, html.panel_width(columns))


def write_report(result: EvalResult, out_dir: str | Path, images: str | Path | None = None, examples: int = 4,
                 spec: PredSpec | None = None) -> Path:
    """Write the pictures and ``index.html`` into ``out_dir``; returns the page's path."""
    require_matplotlib()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OrandError(f"{out}: cannot create the report folder ({exc.strerror})") from None
    charts = [class_chart(result, out / "eval_classes.png")]
    if result.mode == "sweep":
        charts.append(sweep_chart(result, out / "eval_sweep.png"))
    chosen = pick_examples(result.ids, examples)
    shown_html, columns = "", 1
    if chosen:
        titles, rows, shown, heat_maps = example_rows(result, spec or PredSpec(result.pred), images, chosen)
        example_grid(titles, rows, out / "eval_examples.png", result.class_names, shown, heat_maps)
        shown_html = examples_html(titles, rows, result.class_names, shown, heat_maps)
        columns = len(titles)
    page = out / "index.html"
    atomic_write_text(page, html_page(result, charts, shown_html, columns), what="report page")
    return page
