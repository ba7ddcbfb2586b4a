"""IHT: exact target density (per layer / global), masked weights stay zero with zero gradients
and zero optimizer moments, pruned weights regrow when the data favour them, loss still falls."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from accelvit.data import DataConfig, load_data
from accelvit.errors import ConfigError
from accelvit.models import build_model
from accelvit.prune import LowRankLinear, PruneConfig, make_iht_hook, prune
from accelvit.prune.sparse import GLOBAL_DENSITY_FLOOR, IHTHook, cubic_density, iht_targets
from accelvit.train import TrainConfig, TrainHook, fit


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(dataset="digits", img_size=16, batch_size=32, subset=512, seed=0, augment=False))


def _model():
    torch.manual_seed(0)
    return build_model("swin_pico", 10, drop_path_rate=0.0)


class _Probe(TrainHook):
    """Runs after the IHT hook: masked entries have zero gradient before clipping / stepping and
    zero AdamW moments after it, masked weights stay 0, frozen masks do not change."""

    def __init__(self, iht: IHTHook):
        self.iht = iht
        self.frozen_masks: dict[str, torch.Tensor] | None = None
        self.checked_steps = 0
        self.masked_grad_checks = 0
        self.optimizer: torch.optim.Optimizer | None = None

    def on_fit_start(self, model, optimizer, total_steps):
        self.optimizer = optimizer

    def on_before_step(self, model, optimizer, step):
        params = dict(model.named_parameters())
        for name, mask in self.iht.masks.items():
            assert torch.count_nonzero(params[name].grad[~mask]) == 0, name
            self.masked_grad_checks += 1

    def on_after_step(self, model, step):
        params = dict(model.named_parameters())
        for name, mask in self.iht.masks.items():
            assert torch.count_nonzero(params[name][~mask]) == 0
            state = self.optimizer.state[params[name]]
            assert torch.count_nonzero(state["exp_avg"][~mask]) == 0, name
            assert torch.count_nonzero(state["exp_avg_sq"][~mask]) == 0, name
        if self.iht.frozen:
            if self.frozen_masks is None:
                self.frozen_masks = {k: v.clone() for k, v in self.iht.masks.items()}
            else:
                assert all(torch.equal(self.frozen_masks[k], self.iht.masks[k]) for k in self.frozen_masks)
                self.checked_steps += 1


def _loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(batch[0]), batch[1]))


def test_cubic_schedule() -> None:
    assert cubic_density(0, 10, 0.2) == pytest.approx(1.0)
    assert cubic_density(5, 10, 0.2) == pytest.approx(0.2 + 0.8 * 0.125)
    assert cubic_density(10, 10, 0.2) == 0.2 and cubic_density(99, 10, 0.2) == 0.2
    assert cubic_density(3, 0, 0.3) == 0.3


def test_iht_per_layer_reaches_exact_density_and_loss_falls(data) -> None:
    model = _model()
    cfg = PruneConfig(sparsity=0.6, iht_interval=2, iht_ramp_frac=0.5)
    hook = make_iht_hook(model, cfg)
    probe = _Probe(hook)
    fixed = next(iter(data.val))
    start = _loss(model, fixed)
    res = fit(model, data.train, TrainConfig(epochs=4, lr=5e-3, device="cpu", amp=False), hooks=[hook, probe])
    assert res.steps == 64 and hook.ramp_steps == 32 and hook.updates == 16   # every 2nd step up to 32
    assert probe.checked_steps == res.steps - hook.ramp_steps   # frozen masks checked after every later step
    assert probe.masked_grad_checks == (res.steps - 2) * len(hook.param_names)   # masks exist from step 2 on
    assert hook.masks == {}                                     # finalised: masks dropped
    params = dict(model.named_parameters())
    for name in hook.param_names:
        p = params[name]
        assert int(torch.count_nonzero(p)) == round(0.4 * p.numel()), name
    assert _loss(model, fixed) < start


def test_iht_global_scope_on_lowrank_factors(data) -> None:
    model = _model()
    model, _ = prune(model, PruneConfig(rank_ratio=0.5, svd_layers=("fc1", "fc2")))
    cfg = PruneConfig(sparsity=0.5, iht_interval=3, iht_ramp_frac=0.6, iht_scope="global",
                      iht_layers=("fc1", "fc2", "qkv"))
    hook = make_iht_hook(model, cfg)
    assert sum(n.endswith(".down.weight") or n.endswith(".up.weight") for n in hook.param_names) == 16
    assert sum(isinstance(m, LowRankLinear) for m in model.modules()) == 8
    fixed = next(iter(data.val))
    start = _loss(model, fixed)
    fit(model, data.train, TrainConfig(epochs=3, lr=5e-3, device="cpu", amp=False), hooks=[hook, _Probe(hook)])
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in hook.param_names)
    nonzero = sum(int(torch.count_nonzero(params[n])) for n in hook.param_names)
    assert nonzero == round(0.5 * total)
    assert hook.densities()["__total__"] == pytest.approx(0.5, abs=1e-6)
    assert min(hook.densities().values()) >= GLOBAL_DENSITY_FLOOR * 0.5 - 1e-9   # per-tensor floor
    assert _loss(model, fixed) < start


def test_one_shot_when_there_is_no_finetuning() -> None:
    model = _model()
    hook = make_iht_hook(model, PruneConfig(sparsity=0.75, iht_layers=("proj",)))
    hook.finalize(model)
    for name, p in model.named_parameters():
        if name in hook.param_names:
            assert int(torch.count_nonzero(p)) == round(0.25 * p.numel())
    assert len(iht_targets(model, ("proj",))) == 4


def test_no_hook_without_sparsity_and_clear_errors() -> None:
    model = _model()
    assert make_iht_hook(model, PruneConfig()) is None
    with pytest.raises(ConfigError) as exc:
        make_iht_hook(model, PruneConfig(sparsity=0.5, iht_layers=()))
    assert exc.value.field == "sparsity"
    model.layers[1].downsample = torch.nn.Identity()   # no patch-merging layer left
    with pytest.raises(ConfigError) as exc:
        make_iht_hook(model, PruneConfig(sparsity=0.5, iht_layers=("reduction",)))
    assert exc.value.field == "sparsity"


class _NoShadow(IHTHook):
    """The old behaviour, for contrast: a pruned weight's shadow is its (zero) value."""

    def _sync_shadows(self):
        for n, s in self.shadows.items():
            s.copy_(self._params[n].detach())
        self._pruned_grads, self._lrs, self._kept_sq = {}, {}, None


class _FirstMask(TrainHook):
    def __init__(self, iht: IHTHook):
        self.iht, self.mask = iht, None

    def on_after_step(self, model, step):
        if self.mask is None and self.iht.masks:
            self.mask = self.iht.masks["weight"].clone()


def _regression_iht(hook_cls, grad_clip):
    """y = 3 * (x_0 + ... + x_7): the 8 useful weights start at 0.01, the 24 useless ones at 1,
    so the first masks prune useful weights; 75% sparsity keeps exactly 8."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g)
    y = 3 * x[:, :8].sum(1)
    model = nn.Linear(32, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.weight[0, :8] = 0.01
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    hook = hook_cls(["weight"], sparsity=0.75, interval=4, ramp_frac=0.5)
    first = _FirstMask(hook)
    cfg = TrainConfig(epochs=10, lr=0.05, weight_decay=0.0, warmup_frac=0.0, schedule="constant",
                      label_smoothing=0.0, grad_clip=grad_clip, device="cpu", amp=False)
    fit(model, loader, cfg, hooks=[hook, first], loss_fn=lambda out, target, _x: (out.squeeze(1) - target).square().mean())
    return hook, first.mask[0], model.weight.detach()[0]


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_iht_regrows_weights_the_data_favour(grad_clip) -> None:
    hook, first_mask, w = _regression_iht(IHTHook, grad_clip)
    assert not first_mask[:8].all()                         # the first masks pruned useful weights ...
    assert torch.equal(w != 0, torch.arange(32) < 8)        # ... which all came back, and only they are kept
    assert w[:8] == pytest.approx(torch.full((8,), 3.0), abs=0.05)
    assert hook.state()["regrown"] > 0 and hook.shadows == {} and hook.masks == {}


def test_without_shadows_pruned_weights_never_regrow() -> None:
    hook, first_mask, w = _regression_iht(_NoShadow, None)
    assert hook.state()["regrown"] == 0
    assert (w[:8][~first_mask[:8]] == 0).all()              # gradual magnitude pruning: once out, always out


def test_global_scope_normalises_scales_and_keeps_a_floor_per_tensor() -> None:
    """A low-rank layer whose factors are flat and 100x smaller than a dense layer: raw magnitudes
    would prune it entirely; per-tensor RMS normalisation makes the scale irrelevant, and as half
    the dense layer's entries still outscore every low-rank entry the floor is what keeps it alive."""
    torch.manual_seed(0)
    model = nn.Sequential(LowRankLinear(64, 64, rank=16), nn.Linear(64, 128))
    with torch.no_grad():
        for f in (model[0].down.weight, model[0].up.weight):   # |w| ~ 0.01: normalised score ~1
            f.copy_(0.01 * torch.sign(torch.randn_like(f)) * (1 + 0.01 * torch.rand_like(f)))
        d = model[1].weight                                     # half the entries score ~1.4, half ~0.3
        d.copy_(torch.sign(torch.randn_like(d)) * torch.where(torch.rand_like(d) < 0.5, 1.3, 0.3))
    names = ["0.down.weight", "0.up.weight", "1.weight"]
    hook = IHTHook(names, sparsity=0.7, interval=1, ramp_frac=0.5, scope="global")
    hook.finalize(model)
    dens = hook.densities()
    assert dens["__total__"] == pytest.approx(0.3, abs=1e-9)    # exact total: round(0.3 * 10240) = 3072
    floor = int(GLOBAL_DENSITY_FLOOR * 0.3 * 1024) / 1024
    assert dens["0.down.weight"] == pytest.approx(floor) and dens["0.up.weight"] == pytest.approx(floor)
    assert dens["1.weight"] == pytest.approx((3072 - 2 * 76) / 8192)
    assert hook.state()["density_floor"] == GLOBAL_DENSITY_FLOOR

    # the same selection whatever a tensor's scale
    masks = {n: p != 0 for n, p in model.named_parameters() if n in names}
    model2 = nn.Sequential(LowRankLinear(64, 64, rank=16), nn.Linear(64, 128))
    model2.load_state_dict(model.state_dict())
    with torch.no_grad():
        model2[0].up.weight.mul_(1000.0)
    hook2 = IHTHook(names, sparsity=0.7, interval=1, ramp_frac=0.5, scope="global")
    hook2.finalize(model2)
    assert all(torch.equal(masks[n], p != 0) for n, p in model2.named_parameters() if n in names)
