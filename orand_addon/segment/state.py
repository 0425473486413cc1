"""``train-seg``'s run folder: the resumable ``last.pt`` (weights, optimizer, RNG states of the CPU and, when CUDA
is in use, of the GPUs, position inside the epoch) and the checks that a run folder may be started or resumed.

``--batch-size`` is the global batch (all processes together), so a checkpoint continues with any number of
processes that divides it: a run of 4 GPUs can resume on 1 and vice versa; another ``--batch-size`` is refused.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.training import restore_state as restore_state_into
from ..engine.training import training_state
from ..errors import OrandError, first_line
from ..runtime.files import atomic_save, load_checkpoint

CHECKPOINT = "last.pt"
FINAL = "model.pt"
# Config fields that define a run: --resume refuses to continue a run when one of them changed.
RUN_DEFINING = ("model", "class_names", "epochs", "batch_size", "crop_size", "lr", "momentum", "weight_decay",
                "power", "head_lr_mult", "optimizer", "scale_schedule", "scale_range", "loss", "smoothing", "seed",
                "train_ids")


def check_run_folder(out: Path, resume: bool) -> None:
    """A new run needs a folder without ``last.pt``; ``--resume`` needs one with it."""
    if (out / CHECKPOINT).is_file() and not resume:
        raise OrandError(f"{out}: already holds a training run ({CHECKPOINT}); pass --resume to continue it or "
                         f"choose a new --out")
    if resume and not (out / CHECKPOINT).is_file():
        raise OrandError(f"--resume: {out / CHECKPOINT} not found")


def save_state(path: Path, net, optimizer, scaler, position: dict, run: dict, meta: dict) -> None:
    """Everything a resumed run needs; ``run['batch_size']`` is the global batch the steps were taken with."""
    atomic_save(training_state(net, optimizer, scaler, meta=meta, run=run, position=position), path)


def check_same_run(path: Path, saved: dict, run: dict) -> None:
    """Refuse to resume a run with other run-defining settings (the global batch named on its own).

    >>> check_same_run(Path("last.pt"), {"batch_size": 4, "lr": 1.0}, {"batch_size": 6, "lr": 1.0})
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: --resume: last.pt was trained with a global batch of 4 images per step, this run takes 6 (--batch-size is the global batch, whatever the number of processes); resume with --batch-size 4
    """
    if saved.get("batch_size") != run.get("batch_size"):
        raise OrandError(f"--resume: {path} was trained with a global batch of {saved.get('batch_size')} images per "
                         f"step, this run takes {run.get('batch_size')} (--batch-size is the global batch, whatever "
                         f"the number of processes); resume with --batch-size {saved.get('batch_size')}")
    changed = [k for k in RUN_DEFINING if saved.get(k) != run.get(k)]
    if changed:
        raise OrandError(f"--resume: {path} was trained with other settings ({', '.join(changed)} differ); "
                         f"use the original options or a new --out")


def restore_state(path: Path, net, optimizer, scaler, run: dict) -> dict:
    """Load ``last.pt`` into the objects (after checking the run is the same); returns its position."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("position"), dict) or not isinstance(
            state.get("run"), dict):
        raise OrandError(f"{path}: not a resumable train-seg checkpoint")
    check_same_run(path, state["run"], run)
    restore_state_into(state, net, optimizer, scaler, f"--resume: {path}", "train-seg checkpoint", "start a new --out")
    try:
        position = dict(state["position"])
        for key in ("epoch", "batch"):
            position[key] = int(position[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise OrandError(f"--resume: {path}: damaged train-seg checkpoint ({type(exc).__name__}: {first_line(exc)}); "
                         f"start a new --out") from None
    return position


def save_final(path: Path, net, run: dict, meta: dict) -> Path:
    """``model.pt``: the weights and class names ``segment`` needs."""
    return atomic_save({"model": net.state_dict(), "meta": meta, "run": run}, path)
