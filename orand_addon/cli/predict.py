from ._pending import pending_command

predict = pending_command("predict", "ORANDNet prediction")
