from ._pending import pending_command

demo = pending_command("demo", "the synthetic demo")
