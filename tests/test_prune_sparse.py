"""IHT: exact target density (per layer / global), masked weights stay zero, loss still falls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from accelvit.data import DataConfig, load_data
from accelvit.errors import ConfigError
from accelvit.models import build_model
from accelvit.prune import LowRankLinear, PruneConfig, make_iht_hook, prune
from accelvit.prune.sparse import IHTHook, cubic_density, iht_targets
from accelvit.train import TrainConfig, TrainHook, fit


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(dataset="digits", img_size=16, batch_size=32, subset=512, seed=0, augment=False))


def _model():
    torch.manual_seed(0)
    return build_model("swin_pico", 10, drop_path_rate=0.0)


class _Probe(TrainHook):
    """Runs after the IHT hook: once masks are frozen they must not change and masked weights stay 0."""

    def __init__(self, iht: IHTHook):
        self.iht = iht
        self.frozen_masks: dict[str, torch.Tensor] | None = None
        self.checked_steps = 0

    def on_after_step(self, model, step):
        params = dict(model.named_parameters())
        for name, mask in self.iht.masks.items():
            assert torch.count_nonzero(params[name][~mask]) == 0
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
