"""The command line as a whole: --config files, --help of every command, one-line errors."""

from __future__ import annotations

import pytest

from helpers import run, voc_mini_ids, write_voc_mini_cams  # noqa: E402,F401 (one_process_env: autouse fixture)
from orand_addon.cli import COMMANDS
from orand_addon.store.store import Store


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help_with_examples(command):
    res = run(command, "--help")
    assert res.exit_code == 0, res.output
    assert "Usage: cli " + command in res.output or f"Usage: orand-addon {command}" in res.output
    assert "Example" in res.output


def test_config_file_sets_defaults_by_flag_name(tmp_path):
    ids = voc_mini_ids()[:2]
    write_voc_mini_cams(tmp_path / "a", "amn", seed=1, ids=ids)
    write_voc_mini_cams(tmp_path / "b", "mctformer", seed=2, ids=ids)
    config = tmp_path / "c.toml"
    config.write_text(f'[fuse]\ncams-a = "{tmp_path / "a"}"\ncams_b = "{tmp_path / "b"}"\nkinds = "and"\n'
                      f'fusion-norm = "none"\nprogress = false\ndtype = "float32"\n')
    res = run("--config", config, "fuse", "--out", tmp_path / "x.h5")
    assert res.exit_code == 0, res.output
    with Store(tmp_path / "x.h5") as s:
        assert s.kinds() == ["and"]
        assert s.group_provenance("and")["parameters"]["normalize"] is False
        assert s.h5["and"][ids[0]].dtype.name == "float32"
    res = run("--config", config, "fuse", "--out", tmp_path / "y.h5", "--kinds", "or")  # the command line wins
    assert res.exit_code == 0, res.output
    with Store(tmp_path / "y.h5") as s:
        assert s.kinds() == ["or"]


def test_config_file_errors_are_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[evaluate]\nclases = "coco"\n')
    res = run("--config", config, "evaluate", "--help")
    assert res.exit_code == 2
    assert "[evaluate] has unknown options ['clases']" in res.output
    config.write_text('[fusee]\nout = "x"\n')
    assert "unknown sections ['fusee']" in run("--config", config, "fuse", "--help").output
    config.write_text('[fuse\n')
    assert "not valid TOML" in run("--config", config, "fuse", "--help").output


def test_a_bug_is_one_line_unless_the_traceback_is_asked_for(tmp_path, monkeypatch, capsys):
    from orand_addon import cli as cli_module
    from orand_addon.fuse import stage as fuse_module

    def broken(*args, **kwargs):
        raise RuntimeError("Unable to open object\n(invalid identifier)")

    monkeypatch.setattr(fuse_module, "run_fuse", broken)
    write_voc_mini_cams(tmp_path / "a", "irn", seed=0, ids=voc_mini_ids()[:1])
    write_voc_mini_cams(tmp_path / "b", "irn", seed=1, ids=voc_mini_ids()[:1])
    args = ["fuse", "--cams-a", str(tmp_path / "a"), "--cams-b", str(tmp_path / "b"), "--out", str(tmp_path / "x.h5")]
    monkeypatch.setenv("ORAND_ADDON_TRACEBACK", "0")
    with pytest.raises(SystemExit) as info:
        cli_module.main(args)
    assert info.value.code == 1
    assert capsys.readouterr().err == (
        "orand-addon: internal error: RuntimeError: Unable to open object (invalid identifier) (a bug; rerun with "
        "ORAND_ADDON_TRACEBACK=1 for the traceback to report)\n")
    monkeypatch.setenv("ORAND_ADDON_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="Unable to open object"):
        cli_module.main(args)


def test_help_shows_every_source_option_and_plain_percent_signs():
    res = run("fuse", "--help")
    assert res.exit_code == 0
    for option in ("--cams-c", "--format-a", "--format-c", "--shift-a", "--shift-b", "--shift-c"):
        assert option in res.output, option
    assert "--cams-d," in res.output and "\n  --cams-d" not in res.output  # the fourth source: named, not listed
    assert "35-50% smaller" in res.output and "%%" not in res.output
    for command in COMMANDS:
        assert "%%" not in run(command, "--help").output, command


def test_refine_help_names_seed_and_mask_thresholds_apart():
    res = run("refine", "--help")
    assert "--seed-bg-thres" in res.output and "--seed-fg-thres" in res.output and "--sem-seg-bg-thres" in res.output
    assert "\n  --bg-thres" not in res.output and "\n  --fg-thres" not in res.output  # old spellings: hidden aliases
    assert "ImageNet ResNet-50 weights" in res.output
