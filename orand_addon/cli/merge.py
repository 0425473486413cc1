from ._pending import pending_command

merge = pending_command("merge", "sharded runs")
