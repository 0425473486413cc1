"""The orand-addon command line with test hooks, run as a script by torchrun (``torchrun ... tests/helpers/hooks.py
COMMAND ...``) or by a test's subprocess. Every hook is switched on by an environment variable:

* ``WRITE_LOG``: every map, mask and PNG write of the rank is logged to ``$WRITE_LOG/rank{RANK}.txt`` as ``GROUP ID``
  (PNG files as ``png ID``; :func:`helpers.stores.written` reads it back);
* ``KILL_RANK``/``KILL_AFTER``/``KILL_KIND``: that rank kills itself (SIGKILL: no cleanup of any kind) right after its
  ``KILL_AFTER``-th logged write to group ``KILL_KIND`` (any group when unset);
* ``STOP_RANK``/``STOP_AFTER``/``STOP_MODULE``: that rank presses Ctrl-C (SIGINT to itself) during its
  ``STOP_AFTER``-th call of ``STOP_MODULE.train_step`` (e.g. ``orand_addon.segment.train``).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path


def install_write_hooks(rank: str) -> None:
    from orand_addon.segment import stage as segment_stage
    from orand_addon.store.store import Store

    log = Path(os.environ["WRITE_LOG"]) / f"rank{rank}.txt"
    kill = os.environ.get("KILL_RANK") == rank
    after, group_to_count = int(os.environ.get("KILL_AFTER", "0")), os.environ.get("KILL_KIND", "")
    count = [0]

    def record(group: str, image_id: str) -> None:
        with open(log, "a") as fh:
            fh.write(f"{group} {image_id}\n")
        count[0] += not group_to_count or group == group_to_count
        if kill and count[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)

    def logged(write):
        def wrapper(self, group, image_id, *args, **kwargs):
            write(self, group, image_id, *args, **kwargs)
            record(group, image_id)
        return wrapper

    save_png = segment_stage.save_label_png

    def logged_png(path, mask):
        save_png(path, mask)
        record("png", Path(path).stem)

    Store.write_maps = logged(Store.write_maps)
    Store.write_mask = logged(Store.write_mask)
    segment_stage.save_label_png = logged_png


def install_ctrl_c_hook(module: str, after: int) -> None:
    owner = importlib.import_module(module)
    real, steps = owner.train_step, [0]

    def ctrl_c_step(*args, **kwargs):
        steps[0] += 1
        if steps[0] == after:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    owner.train_step = ctrl_c_step


HOOK = Path(__file__).resolve()

if __name__ == "__main__":
    sys.path.insert(0, str(HOOK.parents[2]))
    rank = os.environ.get("RANK", "0")
    if "WRITE_LOG" in os.environ:
        install_write_hooks(rank)
    if os.environ.get("STOP_RANK") == rank:
        install_ctrl_c_hook(os.environ["STOP_MODULE"], int(os.environ["STOP_AFTER"]))
    from orand_addon.cli import main

    main(sys.argv[1:])
