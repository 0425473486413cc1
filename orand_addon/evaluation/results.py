"""What an evaluation prints and writes: the terminal table, JSON and CSV files, and the baseline gate.

Files hold fractions (0..1, full precision); the terminal shows percent. NaN (a class absent from both ground
truth and prediction) is ``null`` in JSON and an empty cell in CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..errors import OrandError
from ..runtime.files import atomic_write_text
from .stage import EvalResult
from .functional import MEANS, METRICS

GATED: tuple[str, ...] = ("mean_iou", "mean_precision", "mean_recall")
HEADERS = {"iou": "IoU", "precision": "Precision", "recall": "Recall", "fp_union": "FP/union",
           "fn_union": "FN/union"}


class BaselineRegression(OrandError):
    """A metric fell more than the tolerance below the baseline (the CI gate)."""

    exit_code = 1


def _num(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _means(scores: dict) -> dict:
    return {m: _num(scores[m]) for m in MEANS}


def result_dict(result: EvalResult) -> dict:
    """The JSON document of ``result``."""
    from ..version import __version__

    s = result.headline
    per_class = {
        name: {**{m: _num(s[m][k]) for m in METRICS}, "gt_pixels": int(s["gt_pixels"][k]),
               "pred_pixels": int(s["pred_pixels"][k]), "tp": int(s["tp"][k])}
        for k, name in enumerate(result.class_names)
    }
    doc = {
        "orand_addon_version": __version__, "pred": result.pred, "gt": result.gt, "num_images": result.num_images,
        "mode": result.mode, "threshold": result.threshold,
        "unsure": {"policy": result.unsure_policy, "pixels": result.unsure_pixels}, "resized": result.resized,
        "scoring": {"scored_classes": result.scored_classes, "undefined": result.undefined,
                    "precision_rule": result.precision_rule},
        "units": "fractions 0..1 (the terminal shows percent)", "classes": result.class_names,
        "metrics": _means(s), "per_class": per_class,
        "confusion": result.conf[result.selected].tolist(), "unsure_per_class": result.unsure[result.selected].tolist(),
        "sweep": None,
    }
    if result.mode == "sweep":
        marks = {}
        for name, index in (("best", result.best), ("precision_aware", result.precision_aware)):
            marks[name] = None if index is None else {"threshold": result.thresholds[index],
                                                      "metrics": _means(result.scores[index])}
        doc["sweep"] = {"thresholds": result.thresholds,
                        **{m: [_num(v) for v in result.curve(m)] for m in MEANS}, **marks}
    return doc


def write_json(result: EvalResult, path: str | Path) -> dict:
    doc = result_dict(result)
    _write_text(path, json.dumps(doc, indent=1) + "\n")
    return doc


def write_csv(result: EvalResult, path: str | Path) -> None:
    """Per-class rows (and a final ``mean`` row) at the selected threshold."""
    s = result.headline
    text = io.StringIO(newline="")
    out = csv.writer(text)
    out.writerow(["class", *METRICS, "gt_pixels", "pred_pixels", "tp"])
    for k, name in enumerate(result.class_names):
        out.writerow([name, *(_cell(s[m][k]) for m in METRICS),
                      int(s["gt_pixels"][k]), int(s["pred_pixels"][k]), int(s["tp"][k])])
    out.writerow(["mean", *(_cell(s[m]) for m in MEANS), "", "", ""])
    _write_text(path, text.getvalue())


def _cell(value) -> str:
    return "" if math.isnan(float(value)) else repr(float(value))


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OrandError(f"{path}: cannot create the folder ({exc.strerror})") from None


def _write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    _ensure_parent(path)
    atomic_write_text(path, text, what="results file")


def _pct(value) -> str:
    return "-" if value is None or math.isnan(float(value)) else f"{100 * float(value):.2f}"


def table_lines(result: EvalResult) -> list[str]:
    """The terminal summary: what was scored, one row per class, the means, and the sweep's thresholds."""
    s = result.headline
    if result.mode == "masks":
        how = f"label masks (255 = no prediction: {result.unsure_policy}, {result.unsure_pixels} labelled pixels)"
    elif result.mode == "sweep":
        how = f"background threshold {result.threshold:g} (best mIoU of the sweep)"
    else:
        how = f"background threshold {result.threshold:g}"
    width = max(12, *(len(n) for n in result.class_names))
    lines = [f"{result.pred}: {result.num_images} images against {result.gt}; {how}"]
    rules = []
    if result.scored_classes != "all":
        rules.append(f"{len(result.class_names)} classes scored ({result.scored_classes}: pixels of the last class "
                     f"left out)")
    if result.undefined != "zero":
        rules.append("precision without predictions / recall without ground truth left out of the means (nan)")
    if rules:
        lines.append("scoring: " + "; ".join(rules))
    if result.resized:
        lines.append(f"resized {result.resized} predictions to the ground-truth size (--resize-pred)")
    lines.append(f"{'class':<{width}} " + " ".join(f"{HEADERS[m]:>9}" for m in METRICS) + f" {'GT pixels':>11}")
    for k, name in enumerate(result.class_names):
        row = " ".join(f"{_pct(s[m][k]):>9}" for m in METRICS)
        note = "  (absent from GT and prediction)" if not s["present"][k] else ""
        lines.append(f"{name:<{width}} {row} {int(s['gt_pixels'][k]):>11}{note}")
    counted = int(s["present"].sum())
    label = f"mean ({counted}/{len(result.class_names)})"
    lines.append(f"{label:<{width}} " + " ".join(f"{_pct(s[m]):>9}" for m in MEANS))
    if result.mode == "sweep":
        lines.extend(sweep_lines(result))
    return lines


def sweep_lines(result: EvalResult) -> list[str]:
    t = result.thresholds
    out = [f"sweep {t[0]:g}..{t[-1]:g} ({len(t)} thresholds):"]
    aware = "precision-aware" + (" (official)" if result.precision_rule == "official" else "")
    for name, index in (("best mIoU", result.best), (aware, result.precision_aware)):
        if index is None:
            out.append(f"  {name}: none (mean precision never reaches mean recall)")
            continue
        s = result.scores[index]
        out.append(f"  {name:<16} threshold {t[index]:<6g} mIoU {_pct(s['mean_iou'])}  precision "
                   f"{_pct(s['mean_precision'])}  recall {_pct(s['mean_recall'])}")
    out += edge_warnings(t, result.best, result.precision_aware)
    return out


def edge_warnings(thresholds: list[float], best: int | None, precision_aware: int | None) -> list[str]:
    """A warning for a chosen threshold at the edge of the sweep, where the true one may lie outside it: the best
    mIoU at either end, the precision-aware one (the first threshold where precision reaches recall) at the start.

    >>> edge_warnings([0.05, 0.1, 0.15], 0, 1)
    ['  warning: the best-mIoU threshold 0.05 is the lowest of the sweep; it may lie below: sweep lower, e.g. --sweep 0.005:0.15:0.005']
    >>> edge_warnings([0.05, 0.1, 0.15], 2, 2)
    ['  warning: the best-mIoU threshold 0.15 is the highest of the sweep; it may lie above: sweep higher, e.g. --sweep 0.05:0.25:0.05']
    >>> edge_warnings([0.05, 0.1, 0.15], 1, 2)
    []
    """
    n = len(thresholds)
    if n < 2:
        return []
    lo, hi = thresholds[0], thresholds[-1]
    step = (hi - lo) / (n - 1)
    lower = f"sweep lower, e.g. --sweep {lo / 10:.3g}:{hi:g}:{lo / 10:.3g}" if lo > 0 else None
    higher = f"sweep higher, e.g. --sweep {lo:g}:{min(1.0, hi + 2 * step):.3g}:{step:.3g}" if hi < 1 else None
    out = []
    for name, index, ends in (("best-mIoU", best, (0, n - 1)), ("precision-aware", precision_aware, (0,))):
        if index not in ends:
            continue
        end, side, hint = ("lowest", "below", lower) if index == 0 else ("highest", "above", higher)
        if hint is not None:
            out.append(f"  warning: the {name} threshold {thresholds[index]:g} is the {end} of the sweep; it may lie "
                       f"{side}: {hint}")
    return out


# -- the CI gate ----------------------------------------------------------------------------------------------------

def load_baseline(path: str | Path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise OrandError(f"{path}: baseline file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OrandError(f"{path}: baseline is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
        raise OrandError(f"{path}: not an 'orand-addon evaluate --json' file (no 'metrics')")
    return doc


def compare_baseline(current: dict, baseline: dict, tolerance: float, per_class: bool = False) -> list[str]:
    """Metrics of ``current`` more than ``tolerance`` points (percent) below ``baseline`` (both
    :func:`result_dict` documents), as ``name now < before (-drop)`` texts. Gated: mean IoU, precision and
    recall, and with ``per_class`` each class's IoU. A metric that became undefined counts as fallen.

    >>> compare_baseline({"metrics": {"mean_iou": 0.60, "mean_recall": 0.7}},
    ...                  {"metrics": {"mean_iou": 0.62, "mean_recall": 0.702}}, 0.5)
    ['mean_iou 60.00 < 62.00 (-2.00)']
    """
    pairs = [(m, current["metrics"].get(m), baseline["metrics"].get(m)) for m in GATED]
    if per_class:
        if baseline.get("classes") and current.get("classes") and baseline["classes"] != current["classes"]:
            raise OrandError("the baseline was computed with other classes; per-class comparison is impossible")
        now, before = current.get("per_class", {}), baseline.get("per_class", {})
        pairs += [(f"iou[{c}]", now.get(c, {}).get("iou"), v.get("iou")) for c, v in before.items()]
    fallen = []
    for name, value, base in pairs:
        if base is None:
            continue
        if value is None:
            fallen.append(f"{name} undefined (baseline {100 * base:.2f})")
        elif 100 * (base - value) > tolerance + 1e-9:
            fallen.append(f"{name} {100 * value:.2f} < {100 * base:.2f} ({100 * (value - base):+.2f})")
    return fallen


def gate(current: dict, baseline_path: str | Path, tolerance: float, per_class: bool = False) -> str:
    """Raise :class:`BaselineRegression` naming every fallen metric; returns a one-line pass message."""
    if tolerance < 0:
        raise OrandError(f"--tolerance {tolerance}: must be >= 0 (points of percent)")
    baseline = load_baseline(baseline_path)
    if baseline.get("classes") and baseline["classes"] != current["classes"]:
        raise OrandError(f"{baseline_path}: baseline has other classes ({len(baseline['classes'])}) than this run "
                         f"({len(current['classes'])})")
    fallen = compare_baseline(current, baseline, tolerance, per_class)
    if fallen:
        raise BaselineRegression(f"{len(fallen)} metrics fell more than {tolerance:g} points below the baseline "
                                 f"{baseline_path}: {'; '.join(fallen)}")
    return f"baseline {baseline_path}: no metric fell more than {tolerance:g} points"

