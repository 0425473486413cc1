"""The run folder's logs of ``train-seg``: messages (stderr + ``train.log``), one ``log.csv`` row per epoch, and
TensorBoard events in ``tb/`` when TensorBoard is installed. Under torchrun rank 0 alone writes them
(:func:`open_log` gives the other ranks a :class:`QuietLog`)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from ..runtime.distributed import DistInfo

LOG_FIELDS = ("epoch", "factor", "input_px", "steps", "loss", "lr", "val_miou", "seconds")


class RunLog:
    """Messages to stderr + train.log, epoch rows to log.csv, and TensorBoard when installed."""

    def __init__(self, out: Path):
        self.out = out
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tb"))
        except ImportError:
            pass

    def message(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
        with open(self.out / "train.log", "a") as fh:
            fh.write(text + "\n")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def epoch(self, row: dict) -> None:
        path = self.out / "log.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.tb is not None:
            for key in ("loss", "lr", "val_miou", "factor"):
                if row.get(key) not in (None, ""):
                    self.tb.add_scalar(f"train/{key}", float(row[key]), int(row["epoch"]))
            self.tb.flush()


class QuietLog:
    """The log of the ranks other than 0: everything is dropped (rank 0 logs what one process would)."""

    def message(self, text: str) -> None:
        return None

    def epoch(self, row: dict) -> None:
        return None

    def close(self) -> None:
        return None


def open_log(out: Path, info: DistInfo) -> RunLog | QuietLog:
    """Rank 0's :class:`RunLog` of ``out`` (the folder is created), a :class:`QuietLog` on the other ranks."""
    if not info.is_main:
        return QuietLog()
    out.mkdir(parents=True, exist_ok=True)
    return RunLog(out)
