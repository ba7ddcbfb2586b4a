"""The accuracy work of issue 11: the corrected Taylor score, allocation by sensitivity per FLOP,
distillation and gradual pruning, checked on a trained model where it matters."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from accelvit.distill import DistillConfig, DistillLoss, kd_loss
from accelvit.errors import ConfigError
from accelvit.metrics import count_flops
from accelvit.prune import PruneConfig, fixed_calibration, prune
from accelvit.prune.calibration import Calibration
from accelvit.prune.flop_target import solve_target_flops
from accelvit.prune.importance import UnitGroup, gate_units, head_groups, score
from accelvit.prune.sensitivity import SensitivityRanking, unit_costs
from accelvit.prune.units import window_attentions


# ----------------------------------------------------------------------------- distillation
def test_kd_loss_equals_hand_computed_kl():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([1, 2])
    alpha, temp = 0.6, 2.0
    # by hand: KL(p_t || p_s) = sum p_t (log p_t - log p_s), averaged over the batch, times T^2
    kl = 0.0
    for i in range(2):
        ps = torch.exp(s[i] / temp) / torch.exp(s[i] / temp).sum()
        pt = torch.exp(t[i] / temp) / torch.exp(t[i] / temp).sum()
        kl += float((pt * (pt.log() - ps.log())).sum())
    kl = kl / 2 * temp ** 2
    ce = -sum(float(torch.log_softmax(s[i], 0)[y[i]]) for i in range(2)) / 2
    want = (1 - alpha) * ce + alpha * kl
    assert float(kd_loss(s, t, y, alpha, temp)) == pytest.approx(want, rel=1e-6)
    assert float(kd_loss(s, t, y, 0.0, temp)) == pytest.approx(ce, rel=1e-6)  # alpha 0: labels only
    assert float(kd_loss(t, t, y, 1.0, temp)) == pytest.approx(0.0, abs=1e-6)  # a student equal to its teacher


def test_distill_loss_runs_the_teacher_without_gradients():
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    loss_fn = DistillLoss(teacher, DistillConfig(alpha=0.5, temperature=3.0))
    loss = loss_fn(student(x), y, x)
    loss.backward()
    assert teacher.weight.grad is None and student.weight.grad is not None
    assert teacher.weight.requires_grad  # the teacher is not changed (a control may still train it)
    with torch.no_grad():
        want = float(kd_loss(student(x), teacher(x), y, 0.5, 3.0))
    assert float(loss.detach()) == pytest.approx(want, rel=1e-6)
    loss_fn.close()
    with pytest.raises(RuntimeError, match="closed"):
        loss_fn(student(x), y, x)
    for bad in (dict(alpha=1.5), dict(alpha=-0.1), dict(temperature=0), dict(temperature=float("nan"))):
        with pytest.raises(ConfigError):
            DistillConfig(**bad).validate()


# ----------------------------------------------------------------------------- Taylor scores
def _calib(data, batches=4):
    return fixed_calibration(data.val, batches)


def _removal_loss(model, groups, group, unit, batches) -> float:
    """Measured loss increase when one unit is removed (its gate set to 0)."""
    gates = {group.name: torch.ones(group.units)}
    gates[group.name][unit] = 0.0
    with torch.no_grad(), gate_units(groups, gates):
        return sum(float(F.cross_entropy(model(x), y)) for x, y in batches) / len(batches)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def test_taylor_score_ranks_a_zeroed_head_last_and_tracks_the_removal_loss(digits_baseline):
    base, data, top1, _ = digits_baseline
    assert top1 > 0.85
    model = copy.deepcopy(base).eval()
    # make one head of the first attention useless: its q/k/v rows and proj columns are zero
    name, attn = window_attentions(model)[0]
    hd = attn.qkv.out_features // (3 * attn.num_heads)
    with torch.no_grad():
        for blk in range(3):
            attn.qkv.weight[blk * attn.num_heads * hd + hd: blk * attn.num_heads * hd + 2 * hd] = 0
            attn.qkv.bias[blk * attn.num_heads * hd + hd: blk * attn.num_heads * hd + 2 * hd] = 0
        attn.proj.weight[:, hd: 2 * hd] = 0
    batches = _calib(data)
    groups = head_groups(model)
    cal = Calibration(batches, len(batches), torch.device("cpu"))
    scores = score(model, groups, "taylor", cal)
    assert float(scores[name][1]) == 0.0
    flat = torch.cat([scores[g.name] for g in groups])
    assert float(flat.min()) == 0.0 and int((flat == 0).sum()) == 1  # the useless head, and only it, scores 0

    oracle = torch.tensor([_removal_loss(model, groups, g, u, batches) for g in groups for u in range(g.units)])
    base_loss = sum(float(F.cross_entropy(model(x), y)) for x, y in batches) / len(batches)
    oracle = oracle - base_loss
    rho = _spearman(flat, oracle)
    assert rho > 0.6, f"Spearman correlation of the taylor score with the measured removal loss: {rho:.3f}"


# ----------------------------------------------------------------------------- sensitivity allocation
def _groups(spec):
    lin = torch.nn.Linear(1, 1)
    return [UnitGroup(name, "heads", n, 1, lin, ()) for name, n in spec]


def test_sensitivity_cuts_the_least_sensitive_per_flop_first():
    groups = _groups([("layers.0.a", 4), ("layers.1.b", 4)])
    scores = {"layers.0.a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "layers.1.b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    # equal scores, layer a's units cost 10x: a's units are 10x cheaper to lose per FLOP
    ranking = SensitivityRanking(groups, scores, {"layers.0.a": 10.0, "layers.1.b": 1.0})
    alloc = ranking.allocation(0.5)  # 22 of 44 FLOPs: a's two weakest units (20 FLOPs), then b's weakest two
    assert alloc.heads == {"layers.0.a": 2, "layers.1.b": 2} and alloc.removed_cost == 22.0
    assert ranking.allocation(1.0).heads == {"layers.0.a": 1, "layers.1.b": 1}  # never a layer's last unit
    assert ranking.allocation(0.0).heads == {"layers.0.a": 4, "layers.1.b": 4}
    rows = ranking.table(alloc)
    assert [r["module"] for r in rows] == ["layers.0.a", "layers.1.b"]
    assert rows[0]["score_per_mflop"] == pytest.approx(2.5 / 10e-6) and rows[0]["kept"] == alloc.heads["layers.0.a"]


def test_unit_costs_are_the_measured_module_flops_per_unit(digits_baseline):
    model = copy.deepcopy(digits_baseline[0])
    groups = head_groups(model)
    costs = unit_costs(model, groups)
    by_module = count_flops(model).by_module
    for g in groups:
        assert costs[g.name] * g.units == pytest.approx(by_module[g.name])
    # a stage-0 head sees 4x the tokens of a stage-1 head at half the width: it costs more
    assert costs[groups[0].name] > costs[groups[-1].name]


def test_sensitivity_rule_meets_the_target_and_cuts_an_insensitive_layer_first(digits_baseline):
    base, data, _, _ = digits_baseline
    model = copy.deepcopy(base).eval()
    # make the last attention useless (all its heads contribute nothing): the rule must empty it first
    name, attn = window_attentions(model)[-1]
    with torch.no_grad():
        attn.proj.weight.zero_()
    batches = _calib(data)
    before = count_flops(model).total
    cfg = PruneConfig(target_flops=0.6, calib_batches=len(batches))
    assert cfg.target_rule == "sensitivity"  # the default
    solved, info = solve_target_flops(model, cfg, 0.6, calib_loader=batches)
    assert info["rule"] == "sensitivity" and info["within_tolerance"]
    assert info["allocation"]["heads"][name] == 1  # every head but the last one is gone
    pruned, report = prune(copy.deepcopy(model), cfg, batches)
    flops = count_flops(pruned).total
    assert abs(flops / (0.6 * before) - 1) <= 0.01
    rows = report.to_dict()["sensitivity"]
    assert {r["kind"] for r in rows} == {"heads", "mlp"} and len(rows) == 2 * len(window_attentions(model))
    assert next(r for r in rows if r["module"] == name)["kept"] == 1
    assert dict(window_attentions(pruned))[name].num_heads == 1


def test_old_signed_score_is_kept_as_an_ablation():
    assert PruneConfig(head_criterion="taylor_signed").validate().criteria_need_calibration
    with pytest.raises(ConfigError, match="target_rule"):
        PruneConfig(target_rule="global").validate()
    with pytest.raises(ConfigError, match="prune_steps"):
        PruneConfig(prune_steps=0).validate()
