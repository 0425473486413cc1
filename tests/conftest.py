import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# A shell that starts pytest in the background (`pytest &`, some CI runners) leaves SIGINT ignored; the Ctrl-C
# tests send SIGINT to this process and need Python's default handler, which raises KeyboardInterrupt.
signal.signal(signal.SIGINT, signal.default_int_handler)

# A bug shows its traceback in the tests (and in the subprocesses they start) instead of the one-line message
# that users get.
os.environ.setdefault("ORAND_ADDON_TRACEBACK", "1")

# Tests never download anything: ``--pretrained imagenet`` without a cached file ends in the offline message (the
# download path itself is tested with a replaced download function, tests/test_pretrained.py).
os.environ["ORAND_ADDON_OFFLINE"] = "1"

# Results compared across runs (a resumed training against a straight one, torchrun ranks against one process, the
# CI demo against its baseline) are equal only with the same torch thread count: fix it to one (what torchrun gives
# each rank), instead of following the cores other processes leave free (the adaptation itself is tested in
# tests/test_threads.py, which unsets this).
os.environ.setdefault("ORAND_ADDON_THREADS", "1")

# The heap settings of the command line (runtime/memory.py) for the tests that call it in this process (CliRunner
# runs the click group, not main()) and for the processes they start.
from orand_addon.runtime.memory import keep_freed_memory  # noqa: E402

keep_freed_memory()
