"""IRN refinement (Ahn, Cho, Kwak, CVPR 2019) of stored class maps: seeds + dense CRF, IRN training, random walk.

Core (pure functions): :mod:`.paths` (pairs and paths), :mod:`.random_walk` (the sparse walk and the labels after
it), :mod:`.seeds` (seed rule + CRF), :mod:`.losses`. Shells: :mod:`.seed_stage`, :mod:`.train`,
:mod:`.walk_stage`, :mod:`.pipeline` (all steps); under torchrun :mod:`.ddp` (DDP training equal to one process);
the seeds and the walk are stages of :mod:`orand_addon.engine.stage`. The names below are imported lazily (``torch`` only
when needed); ``random_walk`` shares its module's name, so import it from the module or the package root::

    from orand_addon.refine import make_seeds, train_irn, run_walk, TrainOptions, WalkOptions, SeedOptions
    from orand_addon.refine import refine
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
    "make_seeds": "seed_stage",
    "import_seed_pngs": "seed_stage",
    "TrainOptions": "train",
    "train_irn": "train",
    "WalkOptions": "walk_stage",
    "run_walk": "walk_stage",
    "refine": "pipeline",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
