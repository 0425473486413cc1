"""The checks every command runs before it starts (see :mod:`.problems`), and the id lists they resolve.

Shared pieces: which ids a folder or store holds (:func:`folder_ids`, :func:`store_ids`), the one-line message for
a list whose ids are partly missing (:func:`missing_ids_problem`), default lists (the ids actually present), the
pretrained weights (:func:`check_weights`, downloads into the hub cache when online). Per command:
:func:`check_refine`, :func:`check_train`, :func:`check_predict`, :func:`check_fuse`, :func:`check_evaluate`; the
segmentation commands are in :mod:`.checks_seg`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import OrandError
from .problems import Problems

EXAMPLES = 3


def folder_ids(folder: str | Path, suffixes: Sequence[str] | None = None) -> set[str]:
    """Ids (file stems) of the files in ``folder`` with one of ``suffixes`` (default: the image suffixes); empty
    when it is not a folder."""
    if suffixes is None:
        from ..io.images import IMAGE_SUFFIXES as suffixes
    try:
        with os.scandir(folder) as entries:
            return {e.name.rsplit(".", 1)[0] for e in entries
                    if "." in e.name and "." + e.name.rsplit(".", 1)[1] in suffixes}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def store_ids(store: str | Path, group: str) -> list[str] | None:
    """The ids of ``/group`` in a store (None when the store cannot be opened: that is reported elsewhere)."""
    from ..store.store import Store

    try:
        with Store(store, "r") as s:
            return s.ids(group)
    except (OrandError, OSError):
        return None


def missing_ids_problem(option: str, spec: str, listed: Sequence[str], present: Iterable[str], what: str,
                        leave_out: str) -> str | None:
    """The one line for a list whose ids are not all present, or None.

    >>> missing_ids_problem("--ids", "val", ["a", "b", "c"], {"b"}, "no image in JPEG/", "to segment every image")
    '--ids val: 2 of its 3 ids have no image in JPEG/ (e.g. a, c); pass a list file of the ids you have (one id per line), or leave --ids out to segment every image'
    """
    have = set(present)
    missing = [i for i in dict.fromkeys(listed) if i not in have]
    if not missing:
        return None
    return (f"{option} {spec}: {len(missing)} of its {len(set(listed))} ids have {what} (e.g. "
            f"{', '.join(missing[:EXAMPLES])}); pass a list file of the ids you have (one id per line), or leave "
            f"{option} out {leave_out}")


def read_list(problems: Problems, option: str, spec: str | Sequence[str] | None) -> list[str] | None:
    """The ids of a list option (a file or a bundled list name), or None (not given, or unreadable: recorded)."""
    from ..classes import read_id_list

    if spec is None:
        return None
    if not isinstance(spec, (str, Path)):
        return list(spec)
    with problems.check():
        try:
            return read_id_list(spec)
        except OrandError as exc:
            message = str(exc)
            if message.startswith(f"{spec}:"):  # the message names the file already
                raise OrandError(f"{option} {message}") from None
            raise OrandError(f"{option} {spec}: {message}") from None
    return None


def check_folder(problems: Problems, option: str, folder: str | Path | None, what: str) -> bool:
    """Whether ``folder`` (if given) is an existing folder; records the problem otherwise."""
    if folder is None or Path(folder).is_dir():
        return True
    problems.add(f"{option} {folder}: {what} folder not found")
    return False


def check_weights(problems: Problems, arch: str, spec: str | None) -> None:
    """The pretrained weights ``spec`` (imagenet: cached, or downloaded now into the hub cache) are there."""
    from ..pretrained import pretrained_path

    problems.run(pretrained_path, arch, spec)


def check_store(problems: Problems, store: str | Path, kinds: Sequence[str], hint: str) -> bool:
    """The store opens and holds every kind of ``kinds``; records the problems, returns whether it is usable."""
    from ..store.store import MASK_GROUPS, Store

    if not Path(store).is_file():
        problems.add(f"{store}: store not found")
        return False
    with problems.check():
        with Store(store, "r") as s:
            missing = [k for k in kinds if not s.ids(k)]
            if missing:
                have = ", ".join(s.groups()) or "nothing"
                what = "masks" if missing[0] in MASK_GROUPS else "maps"
                raise OrandError(f"{store}: no /{missing[0]} {what} (has: {have}); {hint}")
        return True
    return False


# -- refine -----------------------------------------------------------------------------------------------------

def check_refine(p: Problems, store: str | Path, kind: str, images: str | Path, config, dist,
                 ids_spec: str | None = None) -> None:
    """Everything ``refine`` needs for its steps, before the first step starts (``config``: a RefineConfig)."""
    from ..refine.pipeline import check_steps_for, default_run_dir, parse_steps
    from ..refine.train import FINAL, total_steps

    steps = p.run(parse_steps, config.steps) or ()
    p.run(check_steps_for, steps, dist)
    c, t = config, config.train_options
    needs_kind = ("seeds" in steps and c.seeds_png is None) or "walk" in steps
    folder_ok = check_folder(p, "--images", images, "image")
    if c.seeds_png is not None:
        check_folder(p, "--seeds-png", c.seeds_png, "seed PNG")
    ids: list[str] | None = None
    if not Path(store).is_file():
        if not ("seeds" in steps and c.seeds_png is not None):
            p.add(f"{store}: store not found")
    elif needs_kind and check_store(p, store, [kind], "--kind names maps the store holds (fuse, predict)"):
        ids = _kind_ids(p, store, kind, c.ids, ids_spec, folder_ok and images)
    elif "train" in steps and "seeds" not in steps:
        ids = _listed_present(p, store, "seeds", c.ids, ids_spec, "run the seeds step first (--steps seeds)")
    for name, value in (("--seed-fg-thres", c.seed_options.fg_thres), ("--seed-bg-thres", c.seed_options.bg_thres),
                        ("--sem-seg-bg-thres", c.walk_options.bg_thres)):
        if not 0 <= value <= 1:
            p.add(f"{name} {value:g}: a background score, between 0 and 1")
    run_dir = Path(c.run_dir) if c.run_dir is not None else default_run_dir(store)
    trains = "train" in steps and not (c.resume and (run_dir / FINAL).is_file())
    if trains:
        if ids is None and c.seeds_png is not None and "seeds" in steps:
            ids = c.ids or sorted(folder_ids(c.seeds_png, (".png",)))
        if ids is not None and (len(ids) < t.batch_size or total_steps(len(ids), t) < 1):
            p.add(f"--batch-size {t.batch_size}: more than the {len(ids)} images to train IRN on (use a smaller "
                  f"--batch-size)")
        side = (t.crop_size + 3) // 4
        if side < 2 * t.radius - 1:
            p.add(f"--crop-size {t.crop_size} is too small for pairs within radius {t.radius} (at least "
                  f"{4 * (2 * t.radius - 1) - 3} pixels)")
        if t.backbone == "frozen" and t.pretrained == "none":
            p.add("--pretrained none with a frozen backbone would train on random features; use --backbone "
                  "trainable (or ImageNet weights)")
        else:
            check_weights(p, t.arch, t.pretrained)
    if "walk" in steps and "train" not in steps:
        weights = Path(c.checkpoint) if c.checkpoint is not None else run_dir / FINAL
        if not weights.is_file():
            p.add(f"{weights}: no IRN weights; run the train step first (--steps train) or pass --checkpoint")


def _kind_ids(p: Problems, store: str | Path, kind: str, wanted: Sequence[str] | None, ids_spec: str,
              images: str | Path | None) -> list[str] | None:
    """The ids the steps take from ``/kind`` (``wanted`` must all be there), each with an image of its size."""
    from ..refine.checks import check_images
    from ..store.store import Store

    ids = _listed_present(p, store, kind, wanted, ids_spec, "the maps to refine")
    if ids is not None and images:
        with Store(store, "r") as s:
            p.run(check_images, images, ids, lambda i: s.map_shape(kind, i)[1:], f"/{kind} maps")
    return ids


def _listed_present(p: Problems, store: str | Path, group: str, wanted: Sequence[str] | None, ids_spec: str,
                    hint: str) -> list[str] | None:
    present = store_ids(store, group)
    if present is None:
        return None
    if not present:
        p.add(f"{store}: no /{group} ({hint})")
        return None
    if wanted is None:
        return present
    problem = missing_ids_problem("--ids", str(ids_spec), wanted, present, f"no /{group} in {store}",
                                  f"to take every id of /{group}")
    if problem:
        p.add(problem)
        return None
    return list(dict.fromkeys(wanted))


# -- ORANDNet ---------------------------------------------------------------------------------------------------

def check_train(p: Problems, store: str | Path, out: str | Path, config, resume: bool,
                ids_spec: str | None = None) -> None:
    """``train``: the settings, the store (kinds or, and; the ids), the run folder and the VGG16 weights."""
    from ..orandnet.train import OUTPUT_FILES

    p.run(config.check)
    if check_store(p, store, ["or", "and"], "fuse with --kinds or,and first") and config.ids is not None:
        present = set(store_ids(store, "or") or ()) & set(store_ids(store, "and") or ())
        p.add(missing_ids_problem("--ids", str(ids_spec), config.ids, present, f"no /or and /and maps in {store}",
                                  "to train on every id of the store"))
    out = Path(out)
    if out.exists() and not out.is_dir():
        p.add(f"{out}: --out must be a folder, this is a file")
    elif resume and not any((out / name).is_file() for name in OUTPUT_FILES):
        p.add(f"{out / OUTPUT_FILES[0]}: no checkpoint to resume (run without --resume to start)")
    elif not resume:
        existing = [out / name for name in OUTPUT_FILES if (out / name).exists()]
        if existing:
            p.add(f"{existing[0]} exists; pass --resume to continue that run or choose another --out")
    if config.pretrained == "imagenet" and config.width_div != 1:
        p.add(f"--pretrained imagenet needs the full VGG16 width (--width-div 1, got {config.width_div})")
    elif not resume:
        check_weights(p, "vgg16", config.pretrained)


def check_predict(p: Problems, store: str | Path, checkpoint: str | Path, config, ids_spec: str | None = None) -> None:
    """``predict``: the store (kind or; the ids), the checkpoint file and the numbers."""
    if check_store(p, store, ["or"], "run 'orand-addon fuse' first") and config.ids is not None:
        p.add(missing_ids_problem("--ids", str(ids_spec), config.ids, store_ids(store, "or") or (), f"no /or maps in {store}",
                                  "to predict every id of /or"))
    if not Path(checkpoint).is_file():
        p.add(f"{checkpoint}: checkpoint not found (--checkpoint takes the model.pt, or the last.pt of an unfinished "
              f"run, that 'orand-addon train' wrote)")
    if config.batch_size < 0:
        p.add(f"--batch-size must be >= 1 (or 0 for automatic), got {config.batch_size}")


# -- fuse, evaluate ---------------------------------------------------------------------------------------------

def check_fuse(p: Problems, sources: Sequence[str], formats: Sequence[str], labels, ids: Sequence[str] | None,
               on_missing: str, images: str | Path | None) -> None:
    """``fuse``: every source opens (format detected), the ids are in every source, the image folder exists."""
    from ..fuse.stage import resolve_ids
    from ..io.sources import read_cams

    opened = [p.run(read_cams, s, format=f, labels=labels) for s, f in zip(sources, formats)]
    if all(o is not None for o in opened):
        p.run(resolve_ids, opened, ids, on_missing)
    check_folder(p, "--images", images, "image")


def check_evaluate(p: Problems, pred: str, gt: str, bg_thres: float | None, sweep: str | None, images: str | None,
                   report: str | None, baseline: str | None, tolerance: float) -> None:
    """``evaluate``: the prediction and ground truth exist, the thresholds parse, the report can be drawn, the
    baseline reads."""
    from ..evaluation.functional import parse_sweep
    from ..io.sources import split_store_spec

    if bg_thres is not None and sweep is not None:
        p.add("give either --bg-thres or --sweep, not both")
    if sweep is not None:
        p.run(parse_sweep, sweep)
    spec = split_store_spec(pred)
    if not Path(spec[0] if spec else pred).exists():  # what a store holds: the stage's messages
        p.add(f"{pred}: prediction folder or store not found")
    check_folder(p, "--gt", gt, "ground-truth")  # ids without ground truth or prediction: the stage's one line
    check_folder(p, "--images", images, "image")
    if report:
        from ..evaluation.report import require_matplotlib

        p.run(require_matplotlib)
    if baseline:
        from ..evaluation.results import load_baseline

        p.run(load_baseline, baseline)
    if tolerance < 0:
        p.add(f"--tolerance {tolerance}: must be >= 0 (points of percent)")
