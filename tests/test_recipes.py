"""`--recipe official|paper`: bundled TOML, valid for every command that takes it, and the precedence
command line > --config > --recipe > built-in defaults; the paper recipe's segmentation model fails in one line
when its ImageNet weights are missing."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orand_addon.cli import COMMANDS, OrandGroup, cli, option_names
from orand_addon.recipes import load_recipe, recipe_path
from orand_addon.registries import RECIPES

RECIPE_COMMANDS = ("fuse", "train", "predict", "refine", "evaluate", "train-seg")


def command(name):
    return OrandGroup().get_command(None, name)


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_key_is_an_option_of_its_command(name):
    recipe = load_recipe(name)
    assert sorted(recipe) == sorted(RECIPE_COMMANDS)
    assert recipe_path(name).read_text().count("[") >= len(RECIPE_COMMANDS)
    for section, options in recipe.items():
        names = option_names(command(section))
        assert set(options) <= set(names), (name, section, sorted(set(options) - set(names)))


def test_every_recipe_command_offers_the_option():
    for name in COMMANDS:
        has = "recipe" in option_names(command(name))
        assert has == (name in RECIPE_COMMANDS), name


@pytest.fixture
def captured(monkeypatch):
    seen = {}

    def fake_train(store, out, config, resume, echo):
        seen["config"] = config
        return out

    monkeypatch.setattr("orand_addon.orandnet.train.train_orandnet", fake_train)
    monkeypatch.setattr("orand_addon.cli.train.check_train", lambda *a, **k: None)  # s.h5 and run are not there
    return seen


def train(*args):
    return CliRunner().invoke(cli, [*args[:args.index("train")], "train", "--store", "s.h5", "--out", "run",
                                    *args[args.index("train") + 1:]], catch_exceptions=False)


def test_recipe_sets_defaults_and_the_command_line_wins(captured):
    assert train("train").exit_code == 0
    default = captured["config"]
    assert (default.momentum, default.weight_decay, default.lr, default.crop, default.lr_schedule) == (
        0.0, 0.0, 1e-3, "aligned", "poly")
    assert train("train", "--recipe", "official").exit_code == 0
    c = captured["config"]
    assert (c.momentum, c.weight_decay, c.crop, c.lr_schedule, c.precision) == (1e-4, 0.0, "official", "official",
                                                                                  "fp32")
    assert train("train", "--recipe", "official", "--momentum", "0.5", "--crop", "aligned").exit_code == 0
    assert (captured["config"].momentum, captured["config"].crop) == (0.5, "aligned")
    assert (captured["config"].lr_schedule) == "official"


def test_config_file_wins_over_the_recipe_and_may_name_it(captured, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nmomentum = 0.25\n')
    assert train("--config", str(cfg), "train", "--recipe", "paper").exit_code == 0
    c = captured["config"]
    assert (c.momentum, c.crop, c.lr_schedule) == (0.25, "aligned", "poly")  # paper: aligned crops, poly
    cfg.write_text('[train]\nrecipe = "official"\nweight-decay = 0.001\n')
    assert train("--config", str(cfg), "train").exit_code == 0
    c = captured["config"]
    assert (c.momentum, c.weight_decay, c.crop) == (1e-4, 0.001, "official")
    assert train("--config", str(cfg), "train", "--weight-decay", "0").exit_code == 0
    assert captured["config"].weight_decay == 0.0


def test_unknown_recipe_is_a_usage_error():
    result = CliRunner().invoke(cli, ["fuse", "--recipe", "fast", "--cams-a", "a", "--cams-b", "b", "--out", "o.h5"])
    assert result.exit_code == 2
    assert "Invalid value for '--recipe': 'fast' is not one of 'official', 'paper'." in result.output


def test_paper_segmentation_without_resnet38_weights_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = CliRunner().invoke(cli, ["train-seg", "--recipe", "paper", "--images", str(tmp_path),
                                      "--masks", str(tmp_path), "--train-list", "train", "--out",
                                      str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orand-addon: error: ")  # every problem on one line
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert (f"no ImageNet ResNet-38 weights found offline in {folder}: put the ResNet-38 ImageNet weights of "
            f"PSA/SEAM: ilsvrc-cls_rna-a1_cls1000_ep-0001.params") in lines[0]
    assert "md5 ff21f45d6bf03284100dcbec571edfad" in lines[0] and "--pretrained PATH" in lines[0]
    assert not (tmp_path / "run").exists()
