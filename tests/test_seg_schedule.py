"""Scale scheduling: epochs map to factors as documented (both readings of the paper), bad schedules are clear
errors before any training starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orand_addon.cli import cli
from orand_addon.errors import OrandError
from orand_addon.segment.schedule import (check_fits, factor_for_epoch, format_schedule, parse_schedule,
                                          schedule_length)


def table(ranges: list[tuple[int, int, int]], epochs: int) -> list[int]:
    """Factor per epoch written out from (factor, first epoch, last epoch) ranges, 1 elsewhere."""
    out = [1] * epochs
    for factor, first, last in ranges:
        for e in range(first, last + 1):
            out[e] = factor
    return out


def factors(spec: str, epochs: int) -> list[int]:
    s = parse_schedule(spec)
    return [factor_for_epoch(s, e) for e in range(epochs)]


def test_paper_default_epochs_0_1_at_8_then_4_then_2_then_full():
    # DESIGN §7: [0,2) x1/8, [2,4) x1/4, [4,6) x1/2, then full size
    assert factors("8:2,4:2,2:2", 10) == table([(8, 0, 1), (4, 2, 3), (2, 4, 5)], 10)


def test_end_epoch_spelling_expresses_the_same_reading():
    assert factors("8@2,4@4,2@6", 10) == factors("8:2,4:2,2:2", 10)
    assert format_schedule(parse_schedule("8@2,4@4,2@6")) == "8:2,4:2,2:2"


def test_other_reading_phase_lengths_2_4_6():
    # "for the initial 2, 4 and 6 epochs" read as lengths: [0,2) x8, [2,6) x4, [6,12) x2
    expected = table([(8, 0, 1), (4, 2, 5), (2, 6, 11)], 14)
    assert factors("8:2,4:4,2:6", 14) == expected
    assert factors("8@2,4@6,2@12", 14) == expected
    assert schedule_length(parse_schedule("8:2,4:4,2:6")) == 12


@pytest.mark.parametrize("spec", ["none", "NONE", "", "off"])
def test_none_switches_it_off(spec):
    assert parse_schedule(spec) == ()
    assert factors(spec, 5) == [1] * 5


@pytest.mark.parametrize("spec, message", [
    ("8:2,4:x", "--scale-schedule '8:2,4:x': epoch count 'x' is not an integer"),
    ("8,4", "--scale-schedule '8,4': '8' is not factor:epochs or factor@end"),
    ("8:2,,2:2", "--scale-schedule '8:2,,2:2': '' is not factor:epochs or factor@end"),
    ("8:2,4@4", "mixes factor:epochs and factor@end; use one spelling"),
    ("0:2", "factor 0 must be 1 or more"),
    ("8:0", "phase '8:0' lasts 0 epochs; each phase needs at least one epoch"),
    ("8@4,4@2", "end epoch 2 in '4@2' is not after the previous end (4)"),
])
def test_parse_errors_are_one_line(spec, message):
    with pytest.raises(OrandError) as err:
        parse_schedule(spec)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_schedule_longer_than_training():
    check_fits(parse_schedule("8:2,4:2,2:2"), 6)  # exactly as long is allowed
    with pytest.raises(OrandError, match=r"covers 6 epochs but --epochs is 4; use --epochs 6 or more"):
        check_fits(parse_schedule("8:2,4:2,2:2"), 4, "8:2,4:2,2:2")


@pytest.mark.parametrize("schedule, epochs, message", [
    ("8:2,4:x", "10", "epoch count 'x' is not an integer"),
    ("8:2,4:2,2:2", "5", "--scale-schedule '8:2,4:2,2:2' covers 6 epochs but --epochs is 5"),
])
def test_cli_refuses_bad_schedule_before_reading_anything(tmp_path, schedule, epochs, message):
    # images/masks do not even exist: the schedule is checked first, and nothing is written
    res = CliRunner().invoke(cli, ["train-seg", "--images", str(tmp_path / "none"), "--masks", str(tmp_path / "m"),
                                   "--train-list", "train", "--out", str(tmp_path / "run"), "--epochs", epochs,
                                   "--scale-schedule", schedule, "--no-progress"])
    assert res.exit_code == 2
    assert res.output.startswith("orand-addon: error: ") and message in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_two_readings_of_the_paper_by_name():
    """'8, 4, 2 for the initial 2, 4 and 6 epochs': end epochs (paper, the default) or phase lengths."""
    assert [factor_for_epoch(parse_schedule("paper"), e) for e in range(8)] == table([(8, 0, 1), (4, 2, 3),
                                                                                      (2, 4, 5)], 8)
    assert [factor_for_epoch(parse_schedule("paper-durations"), e) for e in range(14)] == table(
        [(8, 0, 1), (4, 2, 5), (2, 6, 11)], 14)
    assert format_schedule(parse_schedule("paper")) == "8:2,4:2,2:2"  # the default spelling
    with pytest.raises(OrandError, match="'paper-lengths' is not factor:epochs or factor@end"):
        parse_schedule("paper-lengths")
