"""``orand-addon demo``: the whole pipeline on the bundled synthetic WSSS testbed."""

from __future__ import annotations

import click

from .common import device_option, progress_option, seed_option


@click.command(context_settings={"max_content_width": 110})
@click.option("--out", type=click.Path(file_okay=False), default="orand_demo", show_default=True,
              help="Output folder; a rerun reuses every finished stage in it.")
@click.option("--size", default="default", show_default=True,
              help="ci (about 2 min), default (about 8 min on 2 CPU cores), large (GPU), or NAME,key=value,... "
                   "(keys: n_train, n_val, image=HxW, cnn_epochs, vit_epochs).")
@click.option("--make-data", type=click.Path(file_okay=False), default=None,
              help="Only write the synthetic VOC-layout dataset into this folder, then stop.")
@click.option("--stop-after", type=click.Choice(["data", "cams", "fuse", "orandnet", "irn", "evaluate", "deeplab"]),
              default="deeplab", show_default=True, help="Stop after this stage.")
@device_option
@seed_option
@progress_option
def demo(out: str, size: str, make_data: str | None, stop_after: str, device: str, seed: int, progress: bool) -> None:
    """Run ORANDNet end to end on a synthetic dataset with exact ground truth: two classifiers (a CNN and a ViT)
    trained on image-level labels write CAMs in the native AMN and MCTformer formats, which are fused, refined by
    ORANDNet and IRN, scored at every stage, and used to train DeepLab with and without scale scheduling.

    \b
    Examples:
      orand-addon demo                       # about 8 minutes on 2 CPU cores, output in orand_demo/
      orand-addon demo --size ci --out /tmp/d
      orand-addon demo --make-data syn_voc/  # just the dataset (JPEGImages, SegmentationClassAug, lists, labels)
    """
    if make_data:
        from ..demo.synthetic import make_dataset, resolve_size

        spec = resolve_size(size)
        info = make_dataset(make_data, spec.n_train, spec.n_val, spec.image_size, seed=seed, show_progress=progress)
        click.echo(f"wrote {len(info.train_ids)} train + {len(info.val_ids)} val images to {info.root} "
                   f"(classes: {info.classes_path}, labels: {info.labels_path})")
        return
    from ..demo.run import run_demo

    run_demo(out, size=size, seed=seed, device=device, stop_after=stop_after, progress=progress, echo=click.echo)
