from ._pending import pending_command

refine = pending_command("refine", "IRN refinement")
