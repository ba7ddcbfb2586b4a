"""Low-rank factorisation: exact at full rank, Eckart-Young at reduced rank, activation-aware
SVD beats plain SVD on the output error, rank rules, and prune()'s SVD stage."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from accelvit.data import DataConfig, load_data
from accelvit.errors import ConfigError, ModelError
from accelvit.models import build_model
from accelvit.prune import LowRankLinear, PruneConfig, count_params, factorize, prune
from accelvit.prune.calibration import Calibration
from accelvit.prune.lowrank import (choose_rank, collect_input_moments, rank_for_energy, rank_for_ratio, svd_of)
from accelvit.prune.units import linear_layers


def _linear(m: int = 24, n: int = 40, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n, m)


def test_full_rank_reproduces_the_layer() -> None:
    lin = _linear()
    low = factorize(lin, min(lin.in_features, lin.out_features))
    assert isinstance(low, LowRankLinear)
    assert (low.in_features, low.out_features, low.rank) == (40, 24, 24)
    assert low.down.bias is None and torch.equal(low.up.bias, lin.bias)
    x = torch.randn(16, 40)
    assert (low(x) - lin(x)).abs().max().item() < 1e-5


def test_reduced_rank_weight_error_is_the_discarded_singular_values() -> None:
    lin = _linear()
    s = torch.linalg.svdvals(lin.weight.detach().double())
    for r in (1, 5, 12):
        low = factorize(lin, r)
        err2 = float(((lin.weight.double() - low.dense_weight().double()) ** 2).sum().detach())
        assert err2 == pytest.approx(float((s[r:] ** 2).sum()), rel=1e-5)
        assert low.down.weight.shape == (r, 40) and low.up.weight.shape == (24, r)
    with pytest.raises(ModelError):
        factorize(lin, 25)


@pytest.fixture(scope="module")
def digits_model_and_batches():
    b = load_data(DataConfig(dataset="digits", img_size=16, batch_size=64, seed=0, augment=False))
    torch.manual_seed(0)
    model = build_model("swin_pico", b.num_classes).eval()
    batches = [batch for _, batch in zip(range(3), b.train)]
    return model, batches


def test_activation_aware_svd_has_lower_output_error(digits_model_and_batches) -> None:
    model, batches = digits_model_and_batches
    names = ["layers.0.blocks.0.attn.qkv", "layers.1.blocks.1.mlp.fc2"]
    calib = Calibration(batches[:2], 2, torch.device("cpu"))
    moments = collect_input_moments(model, names, calib)
    held_out = collect_input_moments(model, names, Calibration(batches[2:], 1, torch.device("cpu")))
    for name in names:
        lin = model.get_submodule(name)
        r = max(1, min(lin.in_features, lin.out_features) // 4)
        plain = factorize(lin, r)
        aware = factorize(lin, r, moment=moments[name], damping=0.01)
        for c in (moments[name], held_out[name]):
            def out_err(low: LowRankLinear) -> float:  # E||(W - W') x||^2 = tr(D C D^T)
                d = (lin.weight - low.dense_weight()).detach().double()
                return float(torch.trace(d @ c @ d.T))
            assert out_err(aware) < out_err(plain)


def test_rank_rules() -> None:
    assert rank_for_ratio(96, 32, 0.5) == 12          # 12 * (96 + 32) = 1536 = 0.5 * 96 * 32
    assert choose_rank(96, 32, torch.ones(32), 0.5, None) == 12
    assert choose_rank(96, 32, torch.ones(32), 1.0, None) is None   # would not cut FLOPs: stays dense
    s = torch.tensor([3.0, 2.0, 1.0, 0.5])
    assert rank_for_energy(s, 0.9) == 2                 # (9 + 4) / 14.25 = 0.91
    assert rank_for_energy(s, 1.0) == 4
    assert choose_rank(4, 4, s, None, 0.6) == 1
    assert choose_rank(4, 4, s, None, 0.99) is None      # 3 * 8 >= 16


def test_prune_svd_stage_replaces_eligible_layers(digits_model_and_batches) -> None:
    model, batches = digits_model_and_batches
    import copy
    model = copy.deepcopy(model)
    before = count_params(model)
    cfg = PruneConfig(rank_ratio=0.5, activation_aware=True, svd_layers=("qkv", "fc1", "reduction"), calib_batches=2)
    _, rep = prune(model, cfg, batches)
    low = [n for n, m in linear_layers(model, ("qkv", "fc1", "reduction")) if isinstance(m, LowRankLinear)]
    assert len(low) == rep.lowrank_layers == 9      # 4 qkv + 4 fc1 + 1 reduction
    assert isinstance(model.head.fc, nn.Linear) and type(model.layers[0].blocks[0].attn.proj) is nn.Linear
    saved = sum(e["params_before"] - e["params_after"] for e in rep.layers if e["kind"] == "lowrank")
    assert before - count_params(model) == saved
    assert all(e["activation_aware"] for e in rep.layers)
    assert model(batches[0][0][:2]).shape == (2, 10)


def test_energy_mode_and_classifier_opt_in() -> None:
    torch.manual_seed(0)
    model = build_model("swin_pico", 10).eval()
    _, rep = prune(model, PruneConfig(energy=0.5, svd_layers=("head",)))
    assert isinstance(model.head.fc, LowRankLinear) and rep.lowrank_layers == 1
    fac = svd_of(torch.randn(3, 3))
    assert fac.u.shape == (3, 3)
    with pytest.raises(ConfigError) as exc:
        prune(model, PruneConfig(rank_ratio=0.5, activation_aware=True))   # needs calibration data
    assert exc.value.field == "calib_loader"
