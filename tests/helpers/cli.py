"""Running the command line in tests: in this process (:func:`run`), or in its own process group with Ctrl-C
pressed as a terminal does (:func:`ctrl_c_during`)."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner, Result

from orand_addon.cli import cli


def run(*args) -> Result:
    """``orand-addon ARGS`` in this process (exceptions propagate: a bug shows its traceback)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


CTRL_C_AFTER = """
import os, signal, sys, time
import importlib
module, cls, method = sys.argv[1].rsplit(".", 2)
owner = getattr(importlib.import_module(module), cls)
real = getattr(owner, method)

def pressed(*args, **kwargs):  # the first time: Ctrl-C in the terminal, i.e. SIGINT to the whole process group
    if not os.environ.get("PRESSED"):
        os.environ["PRESSED"] = "1"
        try:
            os.killpg(0, signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            time.sleep(1)  # the worker processes got it too: give them time to show what they do with it
            raise
    return real(*args, **kwargs)

setattr(owner, method, pressed)
from orand_addon.cli import main
main(sys.argv[2:])
"""


def ctrl_c_during(hook: str, *args) -> subprocess.CompletedProcess:
    """Run ``orand-addon ARGS`` in its own process group and press Ctrl-C (SIGINT to the group, as a terminal does)
    the first time the main process calls ``hook`` (``module.Class.method``)."""
    return subprocess.run([sys.executable, "-c", CTRL_C_AFTER, hook, *[str(a) for a in args]], capture_output=True,
                          text=True, timeout=120, start_new_session=True)
