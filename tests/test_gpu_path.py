"""The GPU path: 2:4 semi-structured IHT (its projection tested on the CPU), mixed precision, CUDA timing.

Tests that need CUDA skip with the reason on a machine without it; the mechanisms that do not need a
GPU (the 2:4 mask projection, the autocast choice, pinned-memory loaders) are tested here on the CPU.
"""

from __future__ import annotations

import pytest
import torch

from accelvit.errors import ConfigError
from accelvit.models import build_model
from accelvit.prune import PruneConfig, make_iht_hook
from accelvit.prune.sparse import is_2_4, nm_mask, to_semi_structured
from accelvit.train import TrainConfig, amp_dtype, fit

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (none here: this path is unverified on this machine)")


def test_2_4_mask_keeps_exactly_the_two_largest_of_every_four():
    torch.manual_seed(0)
    w = torch.randn(6, 16)
    mask = nm_mask(w, 2, 4)
    groups = mask.reshape(-1, 4)
    assert (groups.sum(1) == 2).all()
    a = w.abs().reshape(-1, 4)
    kept_min = torch.where(groups, a, torch.full_like(a, float("inf"))).min(1).values
    dropped_max = torch.where(groups, torch.full_like(a, -1.0), a).max(1).values
    assert (kept_min >= dropped_max).all()  # the two largest magnitudes of each group
    assert is_2_4(w * mask) and not is_2_4(w)
    with pytest.raises(ConfigError, match="multiple of 4"):
        nm_mask(torch.randn(3, 6))


def test_iht_with_the_2_4_pattern_ends_2_4_in_every_target():
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = build_model("swin_pico", 4, drop_path_rate=0.0)
    cfg = PruneConfig(sparsity=0.5, iht_pattern="2:4", iht_interval=2, iht_ramp_frac=0.5)
    hook = make_iht_hook(model, cfg)
    data = TensorDataset(torch.randn(32, 3, 16, 16), torch.randint(0, 4, (32,)))
    fit(model, DataLoader(data, batch_size=8), TrainConfig(epochs=2, device="cpu", warmup_frac=0.0), hooks=[hook])
    params = dict(model.named_parameters())
    assert hook.state()["pattern"] == "2:4"
    for name in hook.param_names:
        w = params[name]
        if w.shape[-1] % 4 == 0:
            assert is_2_4(w), name
            assert 0.45 * w.numel() <= int(torch.count_nonzero(w)) <= w.numel() // 2, name


def test_2_4_config_is_checked():
    with pytest.raises(ConfigError, match="sparsity must be 0.5"):
        PruneConfig(sparsity=0.7, iht_pattern="2:4").validate()
    with pytest.raises(ConfigError, match="iht_scope 'layer'"):
        PruneConfig(sparsity=0.5, iht_pattern="2:4", iht_scope="global").validate()
    with pytest.raises(ConfigError, match="iht_pattern"):
        PruneConfig(sparsity=0.5, iht_pattern="4:8").validate()


def test_autocast_choice():
    assert amp_dtype(torch.device("cpu"), True) is None
    if CUDA:
        want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        assert amp_dtype(torch.device("cuda"), True) == want
        assert amp_dtype(torch.device("cuda"), False) is None


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_semi_structured_conversion_is_refused_without_cuda():
    with pytest.raises(ConfigError, match="need an NVIDIA GPU"):
        to_semi_structured(torch.nn.Linear(64, 64))


@needs_cuda
def test_bf16_or_fp16_training_on_cuda():
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = build_model("swin_pico", 4, drop_path_rate=0.0)
    data = TensorDataset(torch.randn(64, 3, 16, 16), torch.randint(0, 4, (64,)))
    res = fit(model, DataLoader(data, batch_size=16, pin_memory=True),
              TrainConfig(epochs=2, device="cuda", amp=True, warmup_frac=0.0))
    assert res.steps == 8 and next(model.parameters()).device.type == "cuda"
    assert all(torch.isfinite(p).all() for p in model.parameters())


@needs_cuda
def test_cuda_latency_is_timed_with_events():
    from accelvit.metrics import time_model

    model = build_model("swin_pico", 4)
    stats = time_model(model, batch_size=8, device="cuda", warmup=2, reps=5)
    assert stats.reps == 5 and stats.median_ms > 0


@needs_cuda
def test_2_4_weights_convert_to_semi_structured_and_match():
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("2:4 kernels need compute capability 8.0+")
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 128).cuda().half()
    with torch.no_grad():
        lin.weight.mul_(nm_mask(lin.weight, 2, 4))
    x = torch.randn(64, 128, device="cuda", dtype=torch.float16)
    ref = lin(x)
    model = torch.nn.Sequential(lin)
    assert to_semi_structured(model) == ["0.weight"]
    assert torch.allclose(model(x), ref, atol=1e-2, rtol=1e-2)
