"""``refine``: IRN on stored maps — seeds → train → walk, or any of the steps alone; every step resumes.

>>> parse_steps("seeds,walk")
('seeds', 'walk')
>>> default_run_dir("runs/fused.h5").as_posix()
'runs/fused_irn'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import OrandError
from .seed_step import SeedReport, import_seed_pngs, make_seeds
from .seeds import SeedOptions
from .train import FINAL, TrainOptions, TrainResult, train_irn
from .walk_step import WalkOptions, WalkReport, run_walk

STEPS = ("seeds", "train", "walk")


def parse_steps(text: str | Sequence[str]) -> tuple[str, ...]:
    """Steps from ``"seeds,train,walk"`` (any subset, run in pipeline order); error listing the valid names.

    >>> parse_steps("walk,seeds")
    ('seeds', 'walk')
    """
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    bad = [s for s in names if s not in STEPS]
    if bad or not names:
        raise OrandError(f"--steps {','.join(bad) or repr(text)}: valid steps are {', '.join(STEPS)}")
    return tuple(s for s in STEPS if s in names)


def default_run_dir(store: str | Path) -> Path:
    """``<store without .h5>_irn`` next to the store."""
    store = Path(store)
    return store.with_name(store.stem + "_irn")


@dataclass
class RefineReport:
    seeds: SeedReport | None = None
    train: TrainResult | None = None
    walk: WalkReport | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for part in (self.seeds, self.train, self.walk):
            if part is not None:
                out += part.lines()
        return out + self.notes


def refine(store: str | Path, kind: str, images: str | Path, steps: str | Sequence[str] = STEPS,
           run_dir: str | Path | None = None, seeds_png: str | Path | None = None, ids: Sequence[str] | None = None,
           seed_options: SeedOptions = SeedOptions(), train_options: TrainOptions = TrainOptions(),
           walk_options: WalkOptions = WalkOptions(), checkpoint: str | Path | None = None,
           workers: int | None = None, device: str = "auto", precision: str = "auto", resume: bool = True,
           checkpoint_every: int = 100, overwrite: bool = False, progress: bool = True,
           command: str = "orand-addon refine") -> RefineReport:
    """Run the IRN steps on ``store``: ``/seeds`` from the ``kind`` maps (or ``seeds_png``), IRN weights in
    ``run_dir`` (default :func:`default_run_dir`), then kind ``rw`` and ``/masks``.

    ``workers``: CRF processes for the seeds (default every CPU core) and data-loader workers for training
    (default min(4, cores)). ``checkpoint``: IRN weights for the walk (default ``RUN_DIR/irn.pt``).
    """
    from .inputs import cpu_count

    chosen = parse_steps(steps)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(store)
    if not Path(store).is_file() and not ("seeds" in chosen and seeds_png is not None):
        raise OrandError(f"{store}: store not found")
    report = RefineReport()
    if "seeds" in chosen:
        if seeds_png is not None:
            report.seeds = import_seed_pngs(store, seeds_png, images, ids, overwrite=overwrite, progress=progress,
                                            command=command)
        else:
            report.seeds = make_seeds(store, kind, images, ids, seed_options, workers, overwrite=overwrite,
                                      progress=progress, command=command)
    if "train" in chosen:
        loader_workers = min(4, cpu_count()) if workers is None else workers
        report.train = train_irn(store, images, run_dir, ids, train_options, device, precision, loader_workers,
                                 checkpoint_every, resume, progress)
    if "walk" in chosen:
        weights = Path(checkpoint) if checkpoint is not None else run_dir / FINAL
        if not weights.is_file():
            raise OrandError(f"{weights}: no IRN weights; run the train step first (--steps train) or pass --checkpoint")
        report.walk = run_walk(store, kind, images, weights, ids, walk_options, device, precision, overwrite,
                               progress, command)
    return report
