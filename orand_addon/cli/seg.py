from ._pending import pending_command

train_seg = pending_command("train-seg", "the segmentation stage")
segment = pending_command("segment", "the segmentation stage")
