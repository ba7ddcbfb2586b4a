"""ExperimentConfig validation and JSON, baseline keys, sweep expansion, a headless run's events."""

from __future__ import annotations

import json

import pytest

from accelvit.cli import main as cli_main
from accelvit.data import DataConfig
from accelvit.errors import Cancelled, ConfigError
from accelvit.experiment import (STAGES, Experiment, ExperimentConfig, Metrics, Progress, StageFinished, StageStarted,
                                 SweepConfig, WarningEvent)
from accelvit.prune import PruneConfig
from accelvit.train import TrainConfig
from accelvit.utils import CancelToken


def tiny(**prune) -> ExperimentConfig:
    return ExperimentConfig(
        model="swin_pico", data=DataConfig(dataset="digits", img_size=16, batch_size=32, subset=64, eval_subset=32),
        train=TrainConfig(epochs=1), finetune=TrainConfig(epochs=1, lr=5e-4),
        prune=PruneConfig(head_criterion="l1", mlp_criterion="l1", **prune), device="cpu", measure_latency=False)


@pytest.mark.parametrize("override, field", [
    ({"data": {"dataset": "mnist"}}, "data.dataset"),
    ({"data": {"img_size": 4}}, "data.img_size"),
    ({"model": "resnet50"}, "model"),
    ({"prune": {"head_ratio": 1.5}}, "prune.head_ratio"),
    ({"prune": {"sparsity": -0.1}}, "prune.sparsity"),
    ({"prune": {"rank_ratio": 0.0}}, "prune.rank_ratio"),
    ({"train": {"epochs": -1}}, "train.epochs"),
    ({"finetune": {"epochs": -3}}, "finetune.epochs"),
    ({"finetune": {"lr": 0}}, "finetune.lr"),
    ({"device": "tpu"}, "device"),
    ({"seed": -1}, "seed"),
    ({"modle": "swin_pico"}, "modle"),
    ({"prune": {"head_ratoi": 0.5}}, "prune.head_ratoi"),
    ({"baseline_checkpoint": "/nonexistent/dir"}, "baseline_checkpoint"),
])
def test_bad_configs_are_rejected_naming_the_field(override, field):
    d = tiny().to_dict()
    for k, v in override.items():
        if isinstance(v, dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict(d).validate()
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


def test_config_json_round_trip_and_effective_seed_device():
    cfg = tiny(head_ratio=0.5, rank_ratio=0.5, sparsity=0.3)
    cfg.seed, cfg.device = 7, "cpu"
    d = json.loads(json.dumps(cfg.to_dict()))
    back = ExperimentConfig.from_dict(d)
    assert back.to_dict() == d
    assert d["train"]["seed"] == d["finetune"]["seed"] == d["data"]["seed"] == d["prune"]["seed"] == 7
    assert d["train"]["device"] == d["finetune"]["device"] == "cpu"
    assert back.validate() is back


def test_baseline_key_depends_only_on_what_makes_the_baseline():
    base = tiny()
    key = base.baseline_key()
    same = [tiny(head_ratio=0.5), tiny(sparsity=0.5)]
    same[0].finetune.epochs = 5
    same[1].data.eval_subset = 10
    same[1].measure_latency = True
    assert all(c.baseline_key() == key for c in same)
    different = [tiny(), tiny(), tiny(), tiny()]
    different[0].train.epochs = 2
    different[1].data.subset = 48
    different[2].seed = 1
    different[3].model = "swin_micro"
    assert len({c.baseline_key() for c in different} | {key}) == 5


def test_sweep_expands_grid_and_variants_with_any_prune_field():
    sweep = SweepConfig(base=tiny(), name="s", grid={"head_ratio": [0.25, 0.5], "rank_ratio": [None, 0.5]},
                        variants=[{"finetune.epochs": 0}, {"iht_interval": 4, "sparsity": 0.5}])
    configs = sweep.expand()
    assert len(configs) == 8
    assert {(c.prune.head_ratio, c.prune.rank_ratio) for c in configs} == {(0.25, None), (0.25, 0.5), (0.5, None),
                                                                           (0.5, 0.5)}
    assert configs[0].finetune.epochs == 0 and configs[1].prune.iht_interval == 4
    assert configs[1].name == "s head_ratio=0.25 rank_ratio=None iht_interval=4 sparsity=0.5"
    assert len({c.baseline_key() for c in configs}) == 1
    round_trip = SweepConfig.from_dict(json.loads(json.dumps(sweep.to_dict())))
    assert [c.to_dict() for c in round_trip.expand()] == [c.to_dict() for c in configs]
    with pytest.raises(ConfigError) as info:
        SweepConfig(base=tiny(), grid={"head_raito": [0.5]}).expand()
    assert info.value.field == "grid.head_raito"
    with pytest.raises(ConfigError) as info:
        SweepConfig(base=tiny(), grid={"head_ratio": [0.5, 2.0]}).expand()
    assert info.value.field == "prune.head_ratio" and "sweep point 2" in str(info.value)


def test_headless_experiment_emits_stages_in_order(tmp_path):
    events = []
    cfg = tiny(head_ratio=0.5, sparsity=0.5)
    cfg.control = True
    result = Experiment(cfg, on_event=events.append, home=tmp_path, artifact_dir=tmp_path / "out").run()
    started = [e.stage for e in events if isinstance(e, StageStarted)]
    finished = [e.stage for e in events if isinstance(e, StageFinished)]
    assert started == finished == list(STAGES)
    assert [e.stage for e in events if isinstance(e, Metrics)] == ["before", "pruned", "after", "control"]
    prog = [e for e in events if isinstance(e, Progress) and e.stage == "finetune"]
    assert prog and all(p.loss is not None and p.images_per_s > 0 and 0 <= p.overall <= 1 for p in prog)
    overall = [e.overall for e in events if hasattr(e, "overall")]
    assert overall == sorted(overall) and overall[-1] == pytest.approx(1.0)
    assert set(result.metrics) == {"before", "pruned", "after", "control"}
    after = result.metrics["after"]
    assert after["nonzero_params"] < result.metrics["pruned"]["nonzero_params"]  # IHT ran in the finetune
    assert result.metrics["pruned"]["params"] < result.metrics["before"]["params"]  # heads were removed
    assert result.metrics["control"]["params"] == result.metrics["before"]["params"]
    assert (tmp_path / "out" / "model" / "accelvit.json").exists() and (tmp_path / "out" / "report.json").exists()
    # the second experiment with the same baseline config loads the cached baseline ...
    events2 = []
    again = Experiment(tiny(head_ratio=0.5, sparsity=0.5), on_event=events2.append, home=tmp_path).run()
    info = next(e.info for e in events2 if isinstance(e, StageFinished) and e.stage == "baseline")
    assert info["source"] == "cache" and info["baseline_key"] == cfg.baseline_key()
    # ... and gives the same result as the run that trained it (same calibration, same finetune batches)
    for stage in ("before", "pruned", "after"):
        assert again.metrics[stage]["top1"] == result.metrics[stage]["top1"], stage
        assert again.metrics[stage]["loss"] == pytest.approx(result.metrics[stage]["loss"], rel=1e-6), stage

    # a saved baseline is only called "already pruned" when it is
    for path, pruned in ((info["path"], False), (str(tmp_path / "out" / "model"), True)):
        seen = []
        as_ckpt = ExperimentConfig.from_dict({**tiny().to_dict(), "baseline_checkpoint": path})
        Experiment(as_ckpt, on_event=seen.append, home=tmp_path, stages=("data", "baseline")).run()
        warned = any(isinstance(e, WarningEvent) and "already pruned" in e.message for e in seen)
        assert warned == pruned, path

    # `accelvit prune` on that baseline writes the same report format as this dashboard-style run
    ckpt = info["path"]
    out = tmp_path / "cli"
    assert cli_main(["prune", "--checkpoint", ckpt, "--dataset", "digits", "--img-size", "16", "--batch-size", "32",
                     "--subset", "64", "--eval-subset", "32", "--head-ratio", "0.5", "--head-criterion", "l1",
                     "--mlp-criterion", "l1", "--finetune-epochs", "1", "--device", "cpu", "--out", str(out)]) == 0
    run_report = json.loads((tmp_path / "out" / "report.json").read_text())
    cli_report = json.loads((out / "report.json").read_text())
    assert set(cli_report) == set(run_report)
    assert set(cli_report["metrics"]) == {"before", "pruned", "after"}
    for stage in ("before", "pruned", "after"):
        assert set(cli_report["metrics"][stage]) == set(run_report["metrics"][stage]), stage
    assert set(cli_report["prune_report"]) == set(run_report["prune_report"])
    assert cli_report["baseline"]["source"] == "checkpoint"
    assert sorted(p.name for p in out.glob("layers_*.csv")) == ["layers_after.csv", "layers_before.csv",
                                                               "layers_pruned.csv"]


def test_stage_seams_replace_select_and_call_through(tmp_path):
    calls = []

    def prune_then_note(run):
        info = Experiment.stage_prune(run)  # the default, called through
        calls.append(run.cfg.prune.head_ratio)
        return {**info, "noted": True}

    def cheap(model, device):
        return {"params": sum(p.numel() for p in model.parameters())}

    events = []
    result = Experiment(tiny(head_ratio=0.5), on_event=events.append, home=tmp_path,
                        stages=("data", "baseline", "before", "prune", "pruned"),
                        overrides={"prune": prune_then_note}, measure_cost=cheap).run()
    assert calls == [0.5]
    assert [e.stage for e in events if isinstance(e, StageStarted)] == ["data", "baseline", "before", "prune",
                                                                       "pruned"]
    assert set(result.metrics) == {"before", "pruned"}
    assert set(result.metrics["pruned"]) == {"top1", "top5", "loss", "n", "params", "per_class"}
    assert result.metrics["pruned"]["params"] < result.metrics["before"]["params"]
    info = next(e.info for e in events if isinstance(e, StageFinished) and e.stage == "prune")
    assert info["noted"] is True
    with pytest.raises(ConfigError, match="unknown stage 'prnue'"):
        Experiment(tiny(), stages=("data", "prnue"))
    with pytest.raises(ConfigError, match="unknown stage 'fit'"):
        Experiment(tiny(), overrides={"fit": prune_then_note})


def test_cancelled_before_start_runs_nothing(tmp_path):
    token = CancelToken()
    token.cancel()
    events = []
    with pytest.raises(Cancelled):
        Experiment(tiny(), on_event=events.append, cancel=token, home=tmp_path).run()
    assert events == []


def test_calibration_batches_are_seeded_and_mix_the_classes(tmp_path):
    """Split indices are sorted and a folder lists images class by class: calibration must shuffle (seeded)."""
    import numpy as np
    from PIL import Image

    for c in range(2):
        d = tmp_path / "imgs" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(40):
            Image.fromarray(np.full((16, 16, 3), 40 + 150 * c, dtype="uint8")).save(d / f"{i}.png")
    cfg = ExperimentConfig(model="swin_pico", data=DataConfig(dataset="folder", root=str(tmp_path / "imgs"),
                                                              img_size=16, batch_size=16, val_fraction=0.5,
                                                              test_fraction=0.1), device="cpu", seed=5)
    run = Experiment(cfg, stages=("data",), home=tmp_path)
    run.run()
    val_labels = [int(v) for _, y in run.data.val for v in y]
    assert set(val_labels[:16]) == {0}  # in file order the first batch would hold one class
    first = [next(iter(run.calibration_loader()))[1].tolist() for _ in range(2)]
    assert first[0] == first[1]  # seeded: the same batch every time
    assert set(first[0]) == {0, 1}, first[0]  # both classes in the first batch
