from ._pending import pending_command

evaluate = pending_command("evaluate", "evaluation")
