"""MLP width pruning: removal equals gating the removed hidden units to zero; criteria."""

from __future__ import annotations

import pytest
import torch

from accelvit.errors import ModelError
from accelvit.models import build_model
from accelvit.prune import PruneConfig, count_params, prune, prune_mlp
from accelvit.prune.calibration import Calibration
from accelvit.prune.importance import gate_units, mlp_groups, score
from accelvit.prune.mlp import hidden_width
from accelvit.prune.units import mlps


def _model():
    torch.manual_seed(0)
    return build_model("swin_pico", 10).eval()


def _x(n: int = 4, seed: int = 1):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_prune_mlp_equals_gating_removed_units() -> None:
    model = _model()
    x = _x()
    gen = torch.Generator().manual_seed(0)
    keep = {name: sorted(torch.randperm(hidden_width(m), generator=gen)[: hidden_width(m) // 3].tolist())
            for name, m in mlps(model)}
    gates = {name: torch.zeros(hidden_width(m)).index_fill_(0, torch.tensor(keep[name]), 1.0)
             for name, m in mlps(model)}
    with torch.no_grad(), gate_units(mlp_groups(model), gates):
        ref = model(x)
    before = count_params(model)
    expected = 0
    for name, m in mlps(model):
        removed = hidden_width(m) - len(keep[name])
        expected += removed * (m.fc1.in_features + 1 + m.fc2.out_features)  # fc1 row + bias, fc2 column
        prune_mlp(m, keep[name])
        assert hidden_width(m) == len(keep[name]) and m.fc2.in_features == len(keep[name])
    with torch.no_grad():
        out = model(x)
    assert (out - ref).abs().max().item() < 1e-5
    assert before - count_params(model) == expected


def test_prune_mlp_rejects_bad_indices() -> None:
    m = mlps(_model())[0][1]
    with pytest.raises(ModelError):
        prune_mlp(m, [])
    with pytest.raises(ModelError):
        prune_mlp(m, [hidden_width(m)])


def test_mlp_criteria() -> None:
    model = _model()
    name, m = mlps(model)[1]
    with torch.no_grad():
        m.fc1.weight[7] *= 1e-3
        m.fc1.bias[7] = 0
        m.fc2.weight[:, 7] *= 1e-3
        m.fc2.weight[:, 11] = 0  # unit 11 never reaches the output
    calib = Calibration([(_x(8), torch.randint(0, 10, (8,)))], 1, torch.device("cpu"))
    assert int(score(model, mlp_groups(model), "l1", calib)[name].argmin()) == 7
    taylor = score(model, mlp_groups(model), "taylor", calib)[name]
    assert taylor[11].item() == 0.0 and int((taylor > 0).sum()) == hidden_width(m) - 1


@pytest.mark.parametrize("ranking", ["uniform", "global"])
def test_prune_mlp_ratio(ranking: str) -> None:
    model = _model()
    loader = [(_x(8), torch.randint(0, 10, (8,)))]
    _, rep = prune(model, PruneConfig(mlp_ratio=0.25, mlp_ranking=ranking, calib_batches=1), loader)
    assert rep.mlp_hidden_after == rep.mlp_hidden_before - round(0.25 * rep.mlp_hidden_before)
    if ranking == "uniform":
        assert [hidden_width(m) for _, m in mlps(model)] == [48, 48, 96, 96]
    assert all(e["kind"] == "mlp" for e in rep.layers)
    assert model(_x()).shape == (4, 10)
