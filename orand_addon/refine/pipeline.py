"""``refine``: IRN on stored maps — seeds → train → walk, or any of the steps alone; every step resumes.

Under torchrun the training is DDP and the seeds and walk steps write one shard per rank, which
``orand-addon merge --from-shards STORE`` joins. Training reads ``/seeds`` from the store, so under torchrun
``seeds`` and ``train`` cannot be steps of one run (:func:`check_steps_for`): run ``--steps seeds``, merge, then
``--steps train,walk`` (the weights are written by rank 0 before any rank starts the walk), and merge again.

>>> parse_steps("seeds,walk")
('seeds', 'walk')
>>> default_run_dir("runs/fused.h5").as_posix()
'runs/fused_irn'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..runtime.distributed import DistInfo
from ..store.shards import shard_path
from ..errors import OrandError
from ..engine.stage import StageReport
from .seed_stage import import_seed_pngs, make_seeds
from .seeds import SeedOptions
from .train import FINAL, TrainOptions, TrainResult, train_irn
from .walk_stage import WalkOptions, run_walk

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


def check_steps_for(steps: Sequence[str], dist: DistInfo) -> None:
    """Under torchrun the seeds are in shards until merged, so training cannot follow them in the same run.

    >>> check_steps_for(("train", "walk"), DistInfo(0, 2))
    >>> check_steps_for(("seeds", "train", "walk"), DistInfo(0, 2))
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: --steps seeds,train,walk under torchrun: the ranks write their seeds into shards that 'orand-addon merge' must join before training reads them; run --steps seeds, then orand-addon merge --from-shards STORE, then --steps train,walk
    """
    if dist.enabled and "seeds" in steps and "train" in steps:
        rest = ",".join(s for s in steps if s != "seeds")
        raise OrandError(f"--steps {','.join(steps)} under torchrun: the ranks write their seeds into shards that "
                         f"'orand-addon merge' must join before training reads them; run --steps seeds, then "
                         f"orand-addon merge --from-shards STORE, then --steps {rest}")


def default_run_dir(store: str | Path) -> Path:
    """``<store without .h5>_irn`` next to the store."""
    store = Path(store)
    return store.with_name(store.stem + "_irn")


@dataclass
class RefineReport:
    seeds: StageReport | None = None
    train: TrainResult | None = None
    walk: StageReport | None = None
    notes: list[str] = field(default_factory=list)
    dist: DistInfo = DistInfo()
    store: Path | None = None

    def lines(self) -> list[str]:
        """What was done; under torchrun the per-image steps per rank (with the merge to run) and training once."""
        if not self.dist.enabled:
            return [line for part in (self.seeds, self.train, self.walk) if part is not None
                    for line in part.lines()] + self.notes
        where = f"rank {self.dist.rank} of {self.dist.world_size}"
        out = [f"{where}: {line}" for line in self.seeds.lines()] if self.seeds is not None else []
        out += self.train.lines() if self.train is not None and self.dist.is_main else []
        out += [f"{where}: {line}" for line in self.walk.lines()] if self.walk is not None else []
        if (self.seeds is not None or self.walk is not None) and self.store is not None:
            out.append(f"{where}: wrote {shard_path(self.store, self.dist.rank, self.dist.world_size)}; when every "
                       f"rank is done: orand-addon merge --from-shards {self.store}")
        return out + self.notes


@dataclass(frozen=True)
class RefineConfig:
    """Everything ``refine`` takes besides the store, the kind and the images (the CLI's options).

    ``steps``: any of seeds, train, walk. ``run_dir``: where the IRN weights go (default :func:`default_run_dir`).
    ``seeds_png``: take the seeds from label PNGs instead of computing them. ``checkpoint``: IRN weights for the walk
    (default ``RUN_DIR/irn.pt``). ``workers``: CRF processes for the seeds (default every CPU core) and data-loader
    workers for training (default min(4, cores)); under torchrun the cores are shared by the ranks of a machine.
    ``class_names``: the classes of a store that ``seeds_png`` creates (VOC when None), which an existing store must
    have. ``resume``: continue ``RUN_DIR/irn_last.pt`` (and skip a finished ``irn.pt``) when the settings match.
    """

    steps: str | tuple[str, ...] = STEPS
    run_dir: str | Path | None = None
    seeds_png: str | Path | None = None
    ids: tuple[str, ...] | None = None
    seed_options: SeedOptions = SeedOptions()
    train_options: TrainOptions = TrainOptions()
    walk_options: WalkOptions = WalkOptions()
    checkpoint: str | Path | None = None
    workers: int | None = None
    device: str = "auto"
    precision: str = "auto"
    resume: bool = True
    checkpoint_every: int = 100
    overwrite: bool = False
    progress: bool = True
    class_names: tuple[str, ...] | None = None


def refine(store: str | Path, kind: str, images: str | Path, config: RefineConfig = RefineConfig(),
           command: str = "orand-addon refine", dist: DistInfo = DistInfo()) -> RefineReport:
    """Run the IRN steps on ``store``: ``/seeds`` from the ``kind`` maps (or ``config.seeds_png``), IRN weights in
    ``config.run_dir``, then kind ``rw`` and ``/masks``. ``dist``: this rank under torchrun (see the module
    docstring)."""
    from ..runtime.workers import cpu_share

    c = config
    chosen = parse_steps(c.steps)
    check_steps_for(chosen, dist)
    run_dir = Path(c.run_dir) if c.run_dir is not None else default_run_dir(store)
    ids = list(c.ids) if c.ids is not None else None
    if not Path(store).is_file() and not ("seeds" in chosen and c.seeds_png is not None):
        raise OrandError(f"{store}: store not found")
    report = RefineReport(dist=dist, store=Path(store))
    if "seeds" in chosen:
        if c.seeds_png is not None:
            report.seeds = import_seed_pngs(store, c.seeds_png, images, ids, overwrite=c.overwrite,
                                            progress=c.progress, command=command, dist=dist,
                                            class_names=c.class_names)
        else:
            report.seeds = make_seeds(store, kind, images, ids, c.seed_options, c.workers, overwrite=c.overwrite,
                                      progress=c.progress, command=command, dist=dist, class_names=c.class_names)
    if "train" in chosen:
        loader_workers = min(4, cpu_share()) if c.workers is None else c.workers
        report.train = train_irn(store, images, run_dir, ids, c.train_options, c.device, c.precision,
                                 loader_workers, c.checkpoint_every, c.resume, c.progress, dist)
    if "walk" in chosen:
        weights = Path(c.checkpoint) if c.checkpoint is not None else run_dir / FINAL
        if not weights.is_file():
            raise OrandError(f"{weights}: no IRN weights; run the train step first (--steps train) or pass --checkpoint")
        report.walk = run_walk(store, kind, images, weights, ids, c.walk_options, c.device, c.precision,
                               c.overwrite, c.progress, command, dist, c.class_names)
    return report
