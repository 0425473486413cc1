"""IRN refinement (Ahn, Cho, Kwak, CVPR 2019) of stored class maps: seeds + dense CRF, IRN training, random walk.

Core (pure functions): :mod:`.paths` (pairs and paths), :mod:`.random_walk` (the sparse walk and the labels after
it), :mod:`.seeds` (seed rule + CRF), :mod:`.losses`. Shells: :mod:`.seed_step`, :mod:`.train`,
:mod:`.walk_step`, :mod:`.refine` (all steps); under torchrun :mod:`.ddp` (DDP training equal to one process) and
:mod:`.outputs` (per-rank shards of the seeds and the walk). The names below are imported lazily (``torch`` only
when needed); ``refine`` and ``random_walk`` share their module's name, so import them from the module::

    from orand_addon.irn import make_seeds, train_irn, run_walk, TrainOptions, WalkOptions, SeedOptions
    from orand_addon.irn.refine import refine
    from orand_addon import random_walk
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "walk_to_maps": "random_walk",
    "prepare_cam": "random_walk",
    "make_seed": "seeds",
    "SeedOptions": "seeds",
    "CrfParams": "seeds",
    "make_seeds": "seed_step",
    "import_seed_pngs": "seed_step",
    "TrainOptions": "train",
    "train_irn": "train",
    "WalkOptions": "walk_step",
    "run_walk": "walk_step",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
