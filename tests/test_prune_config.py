"""PruneConfig: validation names the field; JSON round trip; no-op detection."""

from __future__ import annotations

import json

import pytest

from accelvit.errors import ConfigError
from accelvit.prune import PruneConfig


def test_defaults_are_a_valid_noop() -> None:
    cfg = PruneConfig().validate()
    assert cfg.is_noop() and not cfg.needs_calibration
    assert not PruneConfig(sparsity=0.5).is_noop()
    assert PruneConfig(head_ratio=0.3).needs_calibration            # taylor by default
    assert not PruneConfig(head_ratio=0.3, head_criterion="l1").needs_calibration


def test_json_round_trip() -> None:
    cfg = PruneConfig(head_ratio=0.5, head_criterion="l1", stage_head_ratios=[0.1, 0.2], rank_ratio=0.5,
                      activation_aware=True, svd_layers=("qkv", "reduction"), sparsity=0.5, iht_scope="global",
                      iht_interval=4, iht_ramp_frac=0.5, calib_batches=3, seed=7)
    back = PruneConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.svd_layers, tuple)


@pytest.mark.parametrize("kwargs,field", [
    (dict(head_ratio=1.0), "head_ratio"),
    (dict(head_ratio=-0.1), "head_ratio"),
    (dict(head_ratio="0.3"), "head_ratio"),
    (dict(head_criterion="magnitude"), "head_criterion"),
    (dict(head_ranking="local"), "head_ranking"),
    (dict(stage_head_ratios=[0.2, 1.5]), "stage_head_ratios[1]"),
    (dict(stage_head_ratios=[]), "stage_head_ratios"),
    (dict(mlp_ratio=1.2), "mlp_ratio"),
    (dict(mlp_criterion="x"), "mlp_criterion"),
    (dict(rank_ratio=0.0), "rank_ratio"),
    (dict(rank_ratio=1.5), "rank_ratio"),
    (dict(rank_ratio=0.5, energy=0.9), "energy"),
    (dict(energy=0.0), "energy"),
    (dict(activation_aware=True), "activation_aware"),
    (dict(rank_ratio=0.5, svd_layers=("qkv", "conv")), "svd_layers"),
    (dict(rank_ratio=0.5, svd_layers=()), "svd_layers"),
    (dict(sparsity=1.0), "sparsity"),
    (dict(sparsity=0.5, iht_layers=()), "sparsity"),
    (dict(iht_interval=0), "iht_interval"),
    (dict(iht_ramp_frac=1.5), "iht_ramp_frac"),
    (dict(iht_scope="model"), "iht_scope"),
    (dict(calib_batches=0), "calib_batches"),
])
def test_validation_names_the_field(kwargs, field) -> None:
    with pytest.raises(ConfigError) as exc:
        PruneConfig(**kwargs).validate()
    assert exc.value.field == field
    assert field.split("[")[0] in str(exc.value)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        PruneConfig.from_dict({"head_ratio": 0.2, "heads": 3})
    assert exc.value.field == "heads"
