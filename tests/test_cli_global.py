"""The CLI behaves the same wherever an option is written, and digits trains without augmentation by default."""

from __future__ import annotations

import json

import pytest

from accelvit.cli import build_parser, main
from accelvit.commands.common import data_config_from_args
from accelvit.commands.run import config_from_args
from accelvit.runs import RunStore


@pytest.mark.parametrize("order", ["before", "after"])
def test_home_and_verbose_before_or_after_the_subcommand(tmp_path, capsys, monkeypatch, order):
    home = tmp_path / "store"
    rid, _ = RunStore(home).create_run({"model": "swin_pico"}, name="stored run", status="finished")
    monkeypatch.delenv("ACCELVIT_HOME", raising=False)
    argv = (["--home", str(home), "-v", "runs", "--json"] if order == "before"
            else ["runs", "--json", "--home", str(home), "-v"])
    assert main(argv) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in runs] == [rid]


def test_an_option_after_the_subcommand_wins_and_one_before_is_kept():
    p = build_parser()
    assert p.parse_args(["--home", "A", "runs"]).home == "A"  # SUPPRESS: the subparser keeps it
    assert p.parse_args(["--home", "A", "runs", "--home", "B"]).home == "B"
    assert p.parse_args(["runs"]).home is None and p.parse_args(["runs"]).verbose is False
    assert p.parse_args(["runs", "-v"]).verbose is True


@pytest.mark.parametrize("argv, expected", [
    (["--dataset", "digits"], False),            # digits: augmentation off unless asked, as in the dashboard
    (["--dataset", "digits", "--augment"], True),
    (["--dataset", "cifar10"], True),            # photos: on
    (["--dataset", "cifar10", "--no-augment"], False),
])
def test_augmentation_default_by_data_set_in_train_prune_and_run(argv, expected):
    p = build_parser()
    train = p.parse_args(["train", "--model", "swin_pico", "--out", "o", *argv])
    assert data_config_from_args(train, img_size=16).augment is expected
    prune = p.parse_args(["prune", "--checkpoint", "x", "--out", "o", *argv])
    assert data_config_from_args(prune, img_size=16).augment is expected
    run = p.parse_args(["run", "--model", "swin_pico", *argv])
    assert config_from_args(run).data.augment is expected


def test_augment_and_no_augment_together_are_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--augment", "--no-augment"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_run_keeps_the_augmentation_a_config_file_asks_for(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": "swin_pico", "data": {"dataset": "digits", "augment": True}}))
    args = build_parser().parse_args(["run", "--config", str(cfg)])
    assert config_from_args(args).data.augment is True
