"""The synthetic benchmark for ``orand-addon demo --dataset synthetic``: its data, its two CAM sources and the
settings of every stage per size (:data:`PLANS`), for the shared runner in :mod:`orand_addon.demo.run`.

The reference recipes, shrunk where the 64x80-pixel images and a 2-core CPU force it (written next to each field),
and without ImageNet weights (the networks start from scratch on these drawings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..run import DemoRun, StagePlan
    from .generator import DatasetInfo


@dataclass(frozen=True)
class DemoPlan:
    """Training lengths and the few settings the small images force, per size."""

    size: str
    orandnet_iterations: int          # paper 5,000 at VOC size; lr 1e-2 since it starts from scratch (no ImageNet)
    orandnet_width_div: int = 4       # VGG16 channels / 4: the full network is ~15x slower on 2 CPU cores
    irn_epochs: int = 3               # as IRN
    irn_batch: int = 16               # IRN 32
    irn_radius: int = 5               # IRN 10 needs crops of >= 76 px; the images are 64 px high
    seg_epochs: int = 8
    seg_schedule: str = "4:2,2:2"     # paper 8:2,4:2,2:2 on 321-px crops; capped at 1/4 of a 64-px crop
    notes: tuple[str, ...] = field(default_factory=tuple)


PLANS: dict[str, DemoPlan] = {
    "ci": DemoPlan("ci", orandnet_iterations=200, irn_epochs=1, seg_epochs=5, seg_schedule="4:1,2:1"),
    "default": DemoPlan("default", orandnet_iterations=1000),
    "large": DemoPlan("large", orandnet_iterations=5000, orandnet_width_div=1, irn_radius=10, seg_epochs=20,
                      seg_schedule="8:2,4:2,2:2"),
}


def plan_for(size: str) -> DemoPlan:
    """The plan of a named size (``ci``, ``default``, ``large``); a size with overrides uses its base name's plan.

    >>> plan_for("ci,n_train=60").orandnet_iterations
    200
    >>> plan_for("image=64x96").size
    'default'
    """
    base = size.split(",")[0].strip()
    return PLANS[base] if base in PLANS else PLANS["default"]


class SyntheticBenchmark:
    """The synthetic testbed: a VOC-layout dataset drawn on the fly, a small CNN (AMN dumps) and a small ViT
    (MCTformer dumps) trained on its image labels."""

    name = "synthetic"
    source_rows = ("CNN CAM (AMN dump)", "ViT CAM (MCTformer dump)")
    source_formats = ("amn", "mctformer")

    def __init__(self, size: str = "default"):
        from .sizes import resolve_size

        self.size = size
        self.spec = resolve_size(size)
        self.plan = plan_for(size)

    def header(self) -> str:
        s = self.spec
        return f"size {self.size} ({s.n_train} train + {s.n_val} val images of {s.height}x{s.width})"

    def record(self) -> dict:
        return {"plan": asdict(self.plan)}

    def make_data(self, run: "DemoRun") -> "DatasetInfo":
        from .generator import make_dataset

        return make_dataset(run.out / "data", self.spec.n_train, self.spec.n_val, self.spec.image_size,
                            seed=run.seed, show_progress=run.progress)

    def make_cams(self, run: "DemoRun", info: "DatasetInfo") -> dict[str, Path]:
        from .cams import make_cams

        dirs = make_cams(info.root, run.out / "cams", seed=run.seed, device=run.device,
                         epochs={"cnn": self.spec.cnn_epochs, "vit": self.spec.vit_epochs},
                         show_progress=run.progress)
        return {"a": dirs["cnn"], "b": dirs["vit"]}

    def stage_plan(self, run: "DemoRun", info: "DatasetInfo") -> "StagePlan":
        from ...orandnet import TrainConfig
        from ...refine import TrainOptions
        from ..run import StagePlan

        p = self.plan
        orandnet = TrainConfig(iterations=p.orandnet_iterations, lr=1e-2, momentum=0.9, weight_decay=5e-4,
                               loss="official", pretrained="none",
                               arch="fcn8s-same", width_div=p.orandnet_width_div, seed=run.seed, device=run.device,
                               checkpoint_every=max(100, p.orandnet_iterations // 5), progress=run.progress)
        irn = TrainOptions(crop_size=min(info.image_size), batch_size=p.irn_batch, epochs=p.irn_epochs,
                           radius=p.irn_radius, backbone="trainable", pretrained="none", seed=run.seed)
        seg = dict(model="deeplabv2-resnet18-os16", epochs=p.seg_epochs, batch_size=10,
                   crop_size=min(info.image_size), optimizer="adamw", lr=1e-3, head_lr_mult=1.0, pretrained="none")
        return StagePlan(orandnet=orandnet, irn=irn, seg=seg, seg_schedule=p.seg_schedule)
