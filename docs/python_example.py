"""From Python: fuse two methods' CAMs, score the OR maps, and refine them with IRN's random walk, on your files.

    python docs/python_example.py --cams-a amn_cams/ --cams-b mct_cams/ --gt VOC2012/SegmentationClassAug \\
        --images VOC2012/JPEGImages [--irn runs/fused_irn/irn.pt] [--limit 100]

Where each array comes from:

* ``read_cams(folder)``: a lazy mapping ``image id -> CamRecord`` of the dumps in the folder (any format
  ``orand-addon inspect`` recognises). ``record.keys`` (K,) are the image's 0-based foreground classes (0 =
  aeroplane), ``record.maps`` (K, H, W) float32 in [0, 1] one map per key, at the size the file stores its
  full-size maps at. Only ids that both methods dumped can be fused: iterate over those, never assume an id.
* ``select_classes(record, keys, size)``: one method's maps in the class order ``keys``, resized to ``size``
  (absent classes are zero maps), so the two methods' maps line up pixel by pixel and class by class.
* ``fuse_or`` / ``fuse_and``: paper Eq. 1 on a list of (K, H, W) arrays, each class map divided by its max.
* ``load_label_png``: the ground truth (H, W) uint8, 0 background, 1..20 the classes, 255 void (ignored).
* ``maps_to_mask(maps, keys, t)``: a label mask (H, W): the class with the highest map, background where every map
  is below ``t``.
* ``confusion_matrix(gt, pred, 21)``: the (21, 21) pixel counts of one image; add them over the dataset, then
  ``segmentation_scores(conf)`` gives per-class and mean IoU, precision and recall (never average per image).
* ``random_walk(cam, edge)``: IRN's propagation. ``cam`` (K, h, w) are the maps at stride 4 (h = ceil(H / 4));
  ``edge`` (h, w) is IRN's boundary probability at stride 4, from IRN weights that ``orand-addon refine --steps
  seeds,train`` trains (``RUN_DIR/irn.pt``): ``predict_edge(load_trained(irn.pt), image)``. Without IRN weights
  this example walks with ``edge = 0`` (no boundaries: the walk only spreads the maps), to show the shapes.

The test suite runs this file on the bundled VOC-mini images with CAM dumps written from their masks
(``tests/test_python_example.py``), so it stays runnable.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from orand_addon import confusion_matrix, fuse_or, maps_to_mask, random_walk, read_cams, segmentation_scores
from orand_addon.fuse.align import select_classes
from orand_addon.io.images import load_image, load_label_png
from orand_addon.refine.network import load_trained, normalize_image, predict_edge
from orand_addon.refine.random_walk import prepare_cam, walk_to_maps

NUM_CLASSES = 21  # VOC: background + 20


def fused_or_maps(record_a, record_b, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, OR maps (K, H, W))`` of one image: both methods' maps in A's class order at ``size``, fused."""
    keys = record_a.keys
    maps_a, _, _ = select_classes(record_a, keys, size)
    maps_b, _, _ = select_classes(record_b, keys, size)  # B's maps of A's classes (a class B lacks: zeros)
    return keys, fuse_or([maps_a, maps_b])


def walked_maps(or_maps: np.ndarray, image: np.ndarray, irn: Path | None) -> np.ndarray:
    """IRN's random walk of one image's maps (K, H, W) -> (K, H, W) in [0, 1], as ``refine --steps walk``."""
    cam = prepare_cam(torch.from_numpy(or_maps))  # (K, h, w): the maps at stride 4
    if irn is not None:
        edge = predict_edge(load_trained(irn, torch.device("cpu")), normalize_image(image))  # (h, w)
    else:
        edge = torch.zeros(cam.shape[-2:])  # no IRN weights: no boundaries
    rw = random_walk(cam, edge, beta=10, exp_times=8, radius=5)  # (K, h, w)
    return walk_to_maps(rw, or_maps.shape[-2:]).numpy()  # x4 upsampled, cropped, divided by the max


def run(cams_a: str | Path, cams_b: str | Path, gt: str | Path, images: str | Path | None = None,
        irn: str | Path | None = None, threshold: float = 0.15, limit: int | None = None) -> dict:
    """Score the OR maps (and, with ``images``, their random walk) of the ids both methods dumped; returns
    ``{"ids": [...], "or": scores, "rw": scores or None}`` (scores: :func:`segmentation_scores`)."""
    a, b = read_cams(cams_a), read_cams(cams_b)
    ids = sorted(set(a) & set(b))[:limit]
    if not ids:
        raise SystemExit(f"no image id is in both {cams_a} and {cams_b}")
    conf_or = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    conf_rw = np.zeros_like(conf_or)
    for image_id in ids:
        truth = load_label_png(Path(gt) / f"{image_id}.png")  # (H, W): 0, 1..20, 255
        keys, or_maps = fused_or_maps(a[image_id], b[image_id], truth.shape)
        conf_or += confusion_matrix(truth, maps_to_mask(or_maps, keys, threshold), NUM_CLASSES)
        if images is not None:
            rw = walked_maps(or_maps, load_image(images, image_id), Path(irn) if irn else None)
            conf_rw += confusion_matrix(truth, maps_to_mask(rw, keys, 0.25), NUM_CLASSES)  # IRN's background 0.25
    return {"ids": ids, "or": segmentation_scores(conf_or),
            "rw": segmentation_scores(conf_rw) if images is not None else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cams-a", required=True)
    parser.add_argument("--cams-b", required=True)
    parser.add_argument("--gt", required=True, help="ground-truth label PNGs (<id>.png)")
    parser.add_argument("--images", help="image folder: also run the random walk")
    parser.add_argument("--irn", help="IRN weights (RUN_DIR/irn.pt of 'orand-addon refine') for the boundary map")
    parser.add_argument("--threshold", type=float, default=0.15, help="background threshold of the OR maps")
    parser.add_argument("--limit", type=int, default=None, help="only the first N common ids")
    args = parser.parse_args(argv)
    result = run(args.cams_a, args.cams_b, args.gt, args.images, args.irn, args.threshold, args.limit)
    for name in ("or", "rw"):
        s = result[name]
        if s is not None:
            print(f"{name}: {len(result['ids'])} images, mIoU {100 * s['mean_iou']:.2f}, precision "
                  f"{100 * s['mean_precision']:.2f}, recall {100 * s['mean_recall']:.2f}")


if __name__ == "__main__":
    main()
