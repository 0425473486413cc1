from orand_addon import confusion_matrix, fuse_or, maps_to_mask, read_cams, segmentation_scores
from orand_addon.fuse.align import select_classes
from orand_addon.io.images import load_label_png
import numpy as np

amn, mct = read_cams("amn_cams/"), read_cams("mct_cams/")   # lazy {image id: CamRecord(keys (K,), maps (K, H, W))}
conf = np.zeros((21, 21), np.int64)
for image_id in sorted(set(amn) & set(mct)):                  # only the ids both methods dumped
    gt = load_label_png(f"VOC2012/SegmentationClassAug/{image_id}.png")     # (H, W): 0, 1..20, 255 void
    keys = amn[image_id].keys                                 # 0-based classes of the image
    a, _, _ = select_classes(amn[image_id], keys, gt.shape)   # (K, H, W) in keys' order, at the GT size
    b, _, _ = select_classes(mct[image_id], keys, gt.shape)
    or_maps = fuse_or([a, b])                                  # paper Eq. 1, each class map divided by its max
    conf += confusion_matrix(gt, maps_to_mask(or_maps, keys, 0.15), num_classes=21)
print(segmentation_scores(conf)["mean_iou"])                  # dataset-level, never a mean over images
