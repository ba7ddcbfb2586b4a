"""Model zoo: scratch configs, local weights files (safe loading), timm names, clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from accelvit.errors import ModelError
from accelvit.models import SCRATCH_CONFIGS, build_model, list_models, spec_of


def _swin_params(embed: int, depths, heads, mlp_ratio: float, patch: int, window: int, classes: int) -> int:
    """Parameter count of a timm SwinTransformer, from its architecture."""
    n = 3 * patch * patch * embed + embed + 2 * embed  # patch conv + bias, patch norm
    dim = embed
    for i, (d, h) in enumerate(zip(depths, heads)):
        if i > 0:  # patch merging: LayerNorm(4C) + Linear(4C -> 2C, no bias)
            n += 2 * 4 * dim + 4 * dim * 2 * dim
            dim *= 2
        hid = int(dim * mlp_ratio)
        per_block = (2 * dim  # norm1
                     + dim * 3 * dim + 3 * dim  # qkv
                     + (2 * window - 1) ** 2 * h  # relative position bias table
                     + dim * dim + dim  # proj
                     + 2 * dim  # norm2
                     + dim * hid + hid + hid * dim + dim)  # mlp
        n += d * per_block
    return n + 2 * dim + dim * classes + classes  # final norm + head


@pytest.mark.parametrize("name", sorted(SCRATCH_CONFIGS))
def test_scratch_configs_build_run_and_match_analytic_param_count(name):
    cfg = SCRATCH_CONFIGS[name]
    m = build_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, cfg["img_size"], cfg["img_size"])
    assert m(x).shape == (2, 7)
    expected = _swin_params(cfg["embed_dim"], cfg["depths"], cfg["num_heads"], cfg["mlp_ratio"],
                            cfg["patch_size"], cfg["window_size"], 7)
    assert sum(p.numel() for p in m.parameters()) == expected
    assert spec_of(m).name == name and spec_of(m).num_classes == 7


def test_swin_micro_is_the_documented_size():
    m = build_model("swin_micro", 10)
    assert 1.25e6 < sum(p.numel() for p in m.parameters()) < 1.30e6  # ~1.27M per shared/data/README
    assert spec_of(m).img_size == 32


def test_img_size_override():
    m = build_model("swin_micro", 10, img_size=16).eval()
    assert m(torch.randn(1, 3, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_and_resets_classifier(tmp_path, suffix):
    torch.manual_seed(0)
    src = build_model("swin_pico", num_classes=5)
    path = tmp_path / f"w{suffix}"
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd}, path)
    same = build_model("swin_pico", num_classes=5, weights_path=path)
    for k, v in src.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    other = build_model("swin_pico", num_classes=3, weights_path=path)
    assert other.head.fc.out_features == 3
    assert torch.equal(other.state_dict()["layers.0.blocks.0.attn.qkv.weight"],
                       src.state_dict()["layers.0.blocks.0.attn.qkv.weight"])


def test_pickled_object_file_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save(build_model("swin_pico", 2), path)  # a whole pickled module, not a state dict
    with pytest.raises(ModelError, match="weights_only=True"):
        build_model("swin_pico", 2, weights_path=path)


def test_foreign_or_corrupt_weights_are_refused(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"conv.weight": torch.zeros(3, 3)}, str(foreign))
    with pytest.raises(ModelError, match="not for this model"):
        build_model("swin_pico", 2, weights_path=foreign)
    wrong = tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("swin_micro", 2).state_dict().items()}, str(wrong))
    with pytest.raises(ModelError, match="shape mismatch"):
        build_model("swin_pico", 2, weights_path=wrong)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 20)
    with pytest.raises(ModelError, match="Could not read weights"):
        build_model("swin_pico", 2, weights_path=corrupt)
    with pytest.raises(ModelError, match="does not exist"):
        build_model("swin_pico", 2, weights_path=tmp_path / "missing.safetensors")


def test_timm_name_with_local_weights(tmp_path):
    name = "swin_tiny_patch4_window7_224"
    assert name in list_models()
    torch.manual_seed(0)
    src = build_model(name, num_classes=1000)
    path = tmp_path / "swin_t.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    m = build_model(name, num_classes=4, weights_path=path)
    assert m.head.fc.out_features == 4
    key = "layers.2.blocks.3.attn.qkv.weight"
    assert torch.equal(m.state_dict()[key], src.state_dict()[key])
    assert spec_of(m).mean == (0.485, 0.456, 0.406)


def test_pretrained_without_network_fails_clearly():
    with pytest.raises(ModelError, match="local weights file"):
        build_model("swin_tiny_patch4_window7_224", 10, pretrained=True)
    with pytest.raises(ModelError, match="no pretrained weights"):
        build_model("swin_micro", 10, pretrained=True)


def test_unknown_model_lists_choices():
    with pytest.raises(ModelError, match="swin_micro"):
        build_model("resnet50", 10)


def test_unreachable_hub_fails_at_once_not_after_retries(monkeypatch):
    """Without HF_HUB_OFFLINE, a pretrained model whose hub cannot be reached fails in seconds, naming
    the host and the way out (a local weights file), instead of a minute of download retries."""
    import socket
    import time

    from accelvit.models import check_hub_reachable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(ModelError, match=rf"127\.0\.0\.1:{port} cannot be reached.*local weights file"):
        build_model("swin_tiny_patch4_window7_224", 10, pretrained=True)
    assert time.monotonic() - t0 < 10
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_hub_reachable("swin_tiny_patch4_window7_224")  # offline mode: the local cache decides, no check
