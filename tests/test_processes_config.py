"""``ExperimentConfig.processes``: validated, outside the baseline key, and refused in one process."""

from __future__ import annotations

import dataclasses

import pytest

from accelvit import distributed as D
from accelvit.cli import main
from accelvit.data import DataConfig
from accelvit.errors import ConfigError
from accelvit.experiment import Experiment, ExperimentConfig


def cfg(**kw) -> ExperimentConfig:
    return ExperimentConfig(model="swin_pico", data=DataConfig(dataset="digits", img_size=16, batch_size=32),
                            device="cpu", **kw)


@pytest.fixture(autouse=True)
def one_process(monkeypatch):
    for v in D.ENV_VARS:
        monkeypatch.delenv(v, raising=False)


@pytest.mark.parametrize("bad", [0, -1, 65, 2.0, True, "2", None])
def test_processes_must_be_a_whole_number_from_1_to_64(bad):
    with pytest.raises(ConfigError, match="whole number") as err:
        cfg(processes=bad).validate()
    assert err.value.field == "processes"


def test_processes_round_trips_and_defaults_to_1():
    assert cfg().processes == 1 and ExperimentConfig.from_dict({}).processes == 1  # old stored configs
    c = cfg(processes=4).validate()
    assert ExperimentConfig.from_dict(c.to_dict()).processes == 4


def test_the_global_batch_must_split_evenly():
    c = cfg(processes=3)
    with pytest.raises(ConfigError, match="multiple of 3") as err:
        c.validate()
    assert err.value.field == "processes"
    dataclasses.replace(c, data=DataConfig(dataset="digits", img_size=16, batch_size=33)).validate()


def test_processes_is_not_part_of_the_baseline_key():
    assert cfg(processes=2).baseline_key() == cfg().baseline_key()


def test_one_process_refuses_more_and_says_how_to_start_it():
    with pytest.raises(ConfigError, match=r"torchrun --nproc_per_node 2 -m accelvit run") as err:
        D.check_world(2)
    assert err.value.field == "processes"
    D.check_world(1)
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node 2"):
        Experiment(cfg(processes=2)).run()  # the runner itself checks, whoever calls it


def test_under_torchrun_processes_must_match_the_world(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    D.check_world(4)
    D.check_world(1)  # 1: as many as torchrun started
    with pytest.raises(ConfigError, match="torchrun started 4; start it with --nproc_per_node 2"):
        D.check_world(2)


def test_accelvit_run_with_processes_in_one_process_is_an_error(tmp_path, capsys):
    rc = main(["--home", str(tmp_path), "run", "--dataset", "digits", "--model", "swin_pico", "--device", "cpu",
               "--set", "processes=2", "--no-progress"])
    assert rc == 2
    assert "processes: 2 processes were asked for, but this is one process" in capsys.readouterr().err
    assert not (tmp_path / "runs.db").exists() or "processes" not in (tmp_path / "runs.db").read_bytes().decode(
        errors="replace")  # nothing recorded
