"""Scale scheduling (ORANDNet): the first epochs train on image/pseudo-mask pairs downsampled by a factor.

The paper downsamples "by 8, 4 and 2 for the initial 2, 4 and 6 epochs". Two spellings express a schedule:

* ``factor:epochs`` (durations, in order) -- ``8:2,4:2,2:2`` is epochs [0,2) at 1/8, [2,4) at 1/4, [4,6) at 1/2,
  then full size. This is the default and the reading of DESIGN §7 ("2, 4 and 6" are the epochs where each
  phase *ends*).
* ``factor@end`` (cumulative end epochs) -- ``8@2,4@4,2@6`` spells the same schedule with the paper's numbers as
  end epochs. The other reading of the paper, where 2, 4 and 6 are the *lengths* of the phases, is
  ``8:2,4:4,2:6`` (or ``8@2,4@6,2@12``): [0,2) at 1/8, [2,6) at 1/4, [6,12) at 1/2.

The two readings also have names (:data:`NAMED`): ``paper`` (end epochs, the default) and ``paper-durations``.
Why the default reads the numbers as end epochs: docs/segmentation.md.

``none`` (or an empty string) switches scheduling off. Factors are integers >= 1; the two spellings cannot be
mixed in one string. After the last phase every epoch is full size (factor 1).

>>> s = parse_schedule("8:2,4:2,2:2")
>>> [factor_for_epoch(s, e) for e in range(8)]
[8, 8, 4, 4, 2, 2, 1, 1]
>>> parse_schedule("8@2,4@4,2@6") == s
True
>>> [factor_for_epoch(parse_schedule("8:2,4:4,2:6"), e) for e in range(13)]
[8, 8, 4, 4, 4, 4, 2, 2, 2, 2, 2, 2, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OrandError
from ..registries import SCALE_SCHEDULES, implementations

PAPER_SCHEDULE = "8:2,4:2,2:2"
NAMED: dict[str, str] = implementations(SCALE_SCHEDULES, {"paper": "8@2,4@4,2@6", "paper-durations": "8:2,4:4,2:6"})


@dataclass(frozen=True)
class Phase:
    """Epochs ``[start, end)`` train at ``1/factor`` of the crop size."""

    factor: int
    start: int
    end: int


Schedule = tuple[Phase, ...]


def _int(text: str, what: str, spec: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise OrandError(
            f"--scale-schedule {spec!r}: {what} {text.strip()!r} is not an integer "
            f"(expected e.g. {PAPER_SCHEDULE} or 8@2,4@4,2@6 or none)"
        ) from None


def parse_schedule(spec: str) -> Schedule:
    """Parse ``factor:epochs,...`` (durations) or ``factor@end,...`` (end epochs); ``none`` -> ``()``.

    >>> parse_schedule("none")
    ()
    >>> parse_schedule("paper") == parse_schedule(PAPER_SCHEDULE), format_schedule(parse_schedule("paper-durations"))
    (True, '8:2,4:4,2:6')
    >>> parse_schedule("4:1, 2:3")
    (Phase(factor=4, start=0, end=1), Phase(factor=2, start=1, end=4))
    >>> parse_schedule("8:2,4@4")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: --scale-schedule '8:2,4@4': mixes factor:epochs and factor@end; use one spelling
    """
    text = (spec or "").strip()
    if text.lower() in ("", "none", "off"):
        return ()
    text = NAMED.get(text.lower(), text)
    items = [item.strip() for item in text.split(",")]
    kinds = {":" if ":" in item else "@" if "@" in item else "?" for item in items}
    if "?" in kinds or not items or any(not item for item in items):
        bad = next((item for item in items if (":" not in item and "@" not in item) or not item), "")
        raise OrandError(
            f"--scale-schedule {spec!r}: {bad!r} is not factor:epochs or factor@end "
            f"(expected e.g. {PAPER_SCHEDULE} or 8@2,4@4,2@6 or none)"
        )
    if len(kinds) > 1:
        raise OrandError(f"--scale-schedule {spec!r}: mixes factor:epochs and factor@end; use one spelling")
    sep = kinds.pop()
    phases: list[Phase] = []
    start = 0
    for item in items:
        left, _, right = item.partition(sep)
        factor = _int(left, "factor", spec)
        number = _int(right, "epoch count" if sep == ":" else "end epoch", spec)
        if factor < 1:
            raise OrandError(f"--scale-schedule {spec!r}: factor {factor} must be 1 or more (1 = full size)")
        end = start + number if sep == ":" else number
        if end <= start:
            what = f"phase {item!r} lasts {number} epochs" if sep == ":" else (
                f"end epoch {number} in {item!r} is not after the previous end ({start})")
            raise OrandError(f"--scale-schedule {spec!r}: {what}; each phase needs at least one epoch")
        phases.append(Phase(factor, start, end))
        start = end
    return tuple(phases)


def schedule_length(schedule: Schedule) -> int:
    """Epochs covered by the schedule (full size afterwards).

    >>> schedule_length(parse_schedule("8:2,4:2,2:2")), schedule_length(())
    (6, 0)
    """
    return schedule[-1].end if schedule else 0


def factor_for_epoch(schedule: Schedule, epoch: int) -> int:
    """Downsampling factor of 0-based ``epoch`` (1 once the schedule is over).

    >>> s = parse_schedule("8@2,4@4,2@6")
    >>> factor_for_epoch(s, 0), factor_for_epoch(s, 3), factor_for_epoch(s, 5), factor_for_epoch(s, 6)
    (8, 4, 2, 1)
    """
    for phase in schedule:
        if phase.start <= epoch < phase.end:
            return phase.factor
    return 1


def check_fits(schedule: Schedule, epochs: int, spec: str = "") -> None:
    """Refuse a schedule that asks for more epochs than the training has.

    >>> check_fits(parse_schedule("8:2,4:2,2:2"), 6)
    >>> check_fits(parse_schedule("8:2,4:2,2:2"), 5, "8:2,4:2,2:2")
    Traceback (most recent call last):
    ...
    orand_addon.errors.OrandError: --scale-schedule '8:2,4:2,2:2' covers 6 epochs but --epochs is 5; use --epochs 6 or more (full size afterwards) or a shorter schedule
    """
    length = schedule_length(schedule)
    if length > epochs:
        raise OrandError(
            f"--scale-schedule {spec or format_schedule(schedule)!r} covers {length} epochs but --epochs is "
            f"{epochs}; use --epochs {length} or more (full size afterwards) or a shorter schedule"
        )


def format_schedule(schedule: Schedule) -> str:
    """The canonical ``factor:epochs`` spelling (``none`` when empty).

    >>> format_schedule(parse_schedule("8@2,4@4,2@6"))
    '8:2,4:2,2:2'
    """
    if not schedule:
        return "none"
    return ",".join(f"{p.factor}:{p.end - p.start}" for p in schedule)


def describe_epoch(schedule: Schedule, epoch: int, crop_size: int) -> str:
    """Human-readable per-epoch log line of the scale.

    >>> describe_epoch(parse_schedule("8:2"), 0, 321)
    'epoch 1: scale 1/8 (crop 321 -> 40 px)'
    >>> describe_epoch(parse_schedule("8:2"), 2, 321)
    'epoch 3: full size (crop 321 px)'
    """
    factor = factor_for_epoch(schedule, epoch)
    if factor == 1:
        return f"epoch {epoch + 1}: full size (crop {crop_size} px)"
    return f"epoch {epoch + 1}: scale 1/{factor} (crop {crop_size} -> {max(1, crop_size // factor)} px)"
