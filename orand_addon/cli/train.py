from ._pending import pending_command

train = pending_command("train", "ORANDNet training")
