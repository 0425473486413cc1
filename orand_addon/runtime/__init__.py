"""Shared machinery of the stage shells, one concern per module:

* :mod:`.devices` — ``--device`` and ``--precision`` (autocast, gradient scaler, cuDNN mode);
* :mod:`.seeding` — seeds and the RNG states a checkpoint keeps;
* :mod:`.files` — atomic files and checkpoints (``weights_only=True``);
* :mod:`.interrupts` — Ctrl-C in loops (:class:`~.interrupts.StopRequest`);
* :mod:`.workers` — worker processes that leave Ctrl-C to the main process, CPU shares;
* :mod:`.memory` — returning freed heap memory;
* :mod:`.provenance` — digests and parameter records;
* :mod:`.progress` — progress bars;
* :mod:`.distributed` — torchrun: ranks, the process group, DDP.
"""
