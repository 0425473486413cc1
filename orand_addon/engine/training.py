"""The training-run scaffold shared by ORANDNet (``train``), IRN (``refine --steps train``) and DeepLab
(``train-seg``): the resumable state and the settings it must match, one stop policy for Ctrl-C, the poly
learning-rate schedule, progress, and the cost line printed once the first steps are timed.

A training loop written with it::

    state = load_state(ckpt, current=settings, keys=RUN_DEFINING, what="an ORANDNet run", hint="...")  # resume
    restore_state(state, model, optimizer, scaler, ckpt, hint)
    with TrainingLoop(total, start, info, device, "train", show_progress, echo) as loop:
        for step, batch in ...:
            with loop.step(model):                           # one process: Ctrl-C stops the step at once ...
                set_poly_lr(optimizer, step, total, power)
                loss = forward_backward(...)
                with loop.commit():                          # ... except while the weights change
                    optimizer.step(); position += 1
            loop.done(loss=loss)
            if loop.stopping():                               # Ctrl-C during the commit (or on any rank)
                save(...); raise Interrupted(...)
    # KeyboardInterrupt out of loop.step: the step was abandoned, weights, optimizer, buffers and RNG are those of
    # the last finished step: save them and raise Interrupted.

Under torchrun every rank must take the same steps, so there a step always runs to its end (Ctrl-C is held for the
whole step) and all ranks stop after the same one (:func:`~orand_addon.runtime.distributed.any_rank`).
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..errors import OrandError, first_line
from ..runtime.distributed import DistInfo, any_rank
from ..runtime.interrupts import deferred_interrupt
from ..runtime.progress import progress
from ..runtime.seeding import rng_state, set_rng_state
from ..runtime.threads import FairThreads

if TYPE_CHECKING:  # torch is imported inside the functions: ``--help`` stays fast
    import torch


def poly_lr(base_lr: float, step: int, max_steps: int, power: float = 0.9) -> float:
    """Polynomial decay ``base * (1 - step / max_steps) ** power``.

    >>> round(poly_lr(0.1, 50, 100), 6)
    0.053589
    """
    return base_lr * (1 - min(step, max_steps) / max(max_steps, 1)) ** power


def set_poly_lr(optimizer: "torch.optim.Optimizer", step: int, total: int, power: float) -> float:
    """Set every parameter group's lr to the poly decay of its ``initial_lr`` (times its ``lr_mult``, default 1);
    returns the first group's lr.

    >>> import torch
    >>> opt = torch.optim.SGD([{"params": [torch.zeros(1)], "initial_lr": 0.1},
    ...                        {"params": [torch.zeros(1)], "initial_lr": 0.1, "lr_mult": 10}], lr=0.1)
    >>> round(set_poly_lr(opt, 50, 100, 0.9), 6), round(opt.param_groups[1]["lr"], 5)
    (0.053589, 0.53589)
    """
    for group in optimizer.param_groups:
        group["lr"] = poly_lr(group["initial_lr"], step, total, power) * group.get("lr_mult", 1.0)
    return optimizer.param_groups[0]["lr"]


# -- the resumable state ---------------------------------------------------------------------------------------

def changed(saved: dict, current: dict, keys: Sequence[str]) -> list[str]:
    """The names of ``keys`` whose values differ between a saved run and this one.

    >>> changed({"lr": 0.1, "seed": 0}, {"lr": 0.2, "seed": 0}, ["lr", "seed"])
    ['lr']
    """
    return [k for k in keys if saved.get(k) != current.get(k)]


def training_state(model: "torch.nn.Module", optimizer: "torch.optim.Optimizer",
                   scaler: "torch.amp.GradScaler | None", **extra: Any) -> dict:
    """What a resumed run needs (loadable with ``weights_only=True``): the weights, the optimizer, the gradient
    scaler (fp16 only), the RNG states, and ``extra`` (position, settings, history)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
            "rng": rng_state(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def restore_state(state: dict, model: "torch.nn.Module | None", optimizer: "torch.optim.Optimizer",
                  scaler: "torch.amp.GradScaler | None", where: Any, what: str, hint: str) -> None:
    """Load a :func:`training_state` into the objects (``model`` None: its weights are loaded elsewhere); a state
    that does not fit is a one-line error ``{where}: damaged {what} (...); {hint}``."""
    try:
        if model is not None:
            model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if state.get("rng"):
            set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise OrandError(f"{where}: damaged {what} ({type(exc).__name__}: {first_line(exc)}); {hint}") from None


# -- the loop --------------------------------------------------------------------------------------------------

class StepAbandoned(KeyboardInterrupt):
    """Ctrl-C stopped a step before it changed the weights; everything is as after the last finished step."""


class TrainingLoop:
    """Progress, the cost line, and the stop policy of one training run (see the module docstring).

    ``total``/``start``: steps of the run and where it starts; ``unit``: what a step is called in the progress bar
    and the cost line; ``echo``: where the cost line goes (rank 0 only under torchrun).
    """

    def __init__(self, total: int, start: int, info: DistInfo, device: "torch.device", desc: str,
                 show_progress: bool = True, echo: Callable[[str], None] | None = None, unit: str = "step",
                 cost_after: int = 2, resume_hint: str = "the same command with --resume continues"):
        self.total, self.start, self.info, self.device = total, start, info, device
        self.resume_hint = resume_hint
        self.desc, self.unit, self.echo = desc, unit, echo if info.is_main else None
        self.show_progress = show_progress and info.is_main
        self.cost_after = cost_after
        self.requested = False
        self._bar = None
        self._previous = None
        self._times: list[float] = []
        self._step_started = 0.0
        self._committing = False

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def __enter__(self) -> "TrainingLoop":
        self._threads = FairThreads() if self.device.type == "cpu" else None
        self._bar = progress(total=self.total, initial=self.start, desc=self.desc, unit=self.unit,
                             enabled=self.show_progress)
        try:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: Ctrl-C stays a plain KeyboardInterrupt
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        if self._bar is not None:
            self._bar.close()

    def _on_sigint(self, signum: int, frame: object) -> None:
        """Under torchrun, or during a commit: remember (the loop stops after the step). Otherwise stop at once:
        inside a step it is abandoned (:class:`StepAbandoned`), between steps nothing is half done."""
        if self.info.enabled or self._committing or self._committed:
            self.requested = True
            return
        raise StepAbandoned if self._in_step else KeyboardInterrupt

    _in_step = False
    _committed = False
    _threads: FairThreads | None = None

    # -- one step ----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, model: "torch.nn.Module | None" = None) -> Iterator[None]:
        """One training step. In one process Ctrl-C abandons it at once, except inside :meth:`commit`: the RNG
        states and the model's buffers (BatchNorm statistics) go back to where the step began, so a checkpoint
        saved then continues exactly. Under torchrun the step always runs to its end."""
        saved = None
        if not self.info.enabled:
            saved = (rng_state(), [b.detach().clone() for b in model.buffers()] if model is not None else [])
        self._step_started = time.perf_counter()
        self._in_step, self._committed = True, False
        try:
            yield
        except StepAbandoned:
            if saved is not None:
                set_rng_state(saved[0])
                for buffer, value in zip(model.buffers() if model is not None else [], saved[1]):
                    buffer.copy_(value)
            if model is not None:
                model.zero_grad(set_to_none=True)
            raise
        finally:
            self._in_step = self._committed = False

    @contextlib.contextmanager
    def commit(self) -> Iterator[None]:
        """The part of a step that changes the weights and the optimizer: never cut in half; after it the step
        runs to its end (its bookkeeping: position, losses), and Ctrl-C stops the loop after it."""
        self._committing = True
        try:
            yield
            self._committed = True
        finally:
            self._committing = False

    def done(self, n: int = 1, **postfix: str) -> None:
        """After a finished step: progress, and once the first steps are timed the cost line."""
        self._times.append(time.perf_counter() - self._step_started)
        if self._threads is not None:
            self._threads.update()
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(refresh=False, **postfix)
        left = self.total - self.start - len(self._times)
        if len(self._times) == self.cost_after and self.echo is not None and left > 0:
            line = cost_line(self.desc, left, self._times[1:] or self._times, self.unit, str(self.device),
                             self.resume_hint)
            self.say(line)

    def say(self, line: str) -> None:
        """``echo`` a line on a line of its own: the progress bar steps aside and is drawn again below it."""
        if self._bar is None or self._bar.disable:
            self.echo(line)
            return
        from tqdm import tqdm

        with tqdm.external_write_mode(file=self._bar.fp):
            self.echo(line)

    @staticmethod
    @contextlib.contextmanager
    def saving() -> Iterator[None]:
        """Hold Ctrl-C while a checkpoint is written (a second Ctrl-C must not cost the first one's checkpoint)."""
        with deferred_interrupt():
            yield

    def stopping(self) -> bool:
        """Whether the run stops after this step: Ctrl-C here, or on any rank under torchrun."""
        return any_rank(self.requested, self.info, self.device)


def cost_line(what: str, steps: int, seconds: Sequence[float], unit: str = "step", device: str = "cpu",
              resume_hint: str = "the same command with --resume continues") -> str:
    """What the rest of a run will cost, from the time of its first steps (the very first one, which warms up,
    left out when there are more).

    >>> cost_line("train", 4998, [11.7, 11.9], "iteration")
    'train: 4998 iterations left at 11.8 s each on cpu: about 16 h 22 min (Ctrl-C saves a checkpoint; the same command with --resume continues)'
    """
    each = sum(seconds) / len(seconds)
    return (f"{what}: {steps} {unit}s left at {each:.3g} s each on {device}: about {_duration(steps * each)} "
            f"(Ctrl-C saves a checkpoint; {resume_hint})")


def _duration(seconds: float) -> str:
    """
    >>> _duration(42), _duration(125), _duration(3 * 3600 + 7 * 60)
    ('42 s', '2 min 5 s', '3 h 7 min')
    """
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


__all__ = ["poly_lr", "set_poly_lr", "changed", "training_state", "restore_state", "TrainingLoop", "StepAbandoned",
           "cost_line"]
