"""save -> load rebuilds pruned models exactly; foreign, damaged or inconsistent files fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from accelvit.errors import CheckpointError
from accelvit.models import build_model
from accelvit.prune import (LowRankLinear, PruneConfig, count_nonzero, count_params, describe_structure,
                             make_iht_hook, prune)
from accelvit.prune.units import window_attentions
from accelvit.serialize import SPEC_FILE, WEIGHTS_FILE, load, read_spec, save

CLASSES = [f"c{i}" for i in range(10)]


def _x(n: int = 4, seed: int = 1):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _pruned_model():
    """Heads (taylor) + MLP width + activation-aware SVD + one-shot sparsity."""
    torch.manual_seed(0)
    model = build_model("swin_pico", 10).eval()
    loader = [(_x(8, s), torch.randint(0, 10, (8,))) for s in range(2)]
    cfg = PruneConfig(head_ratio=0.5, mlp_ratio=0.25, rank_ratio=0.5, activation_aware=True,
                      svd_layers=("qkv", "proj", "fc1", "fc2", "reduction"), sparsity=0.5, calib_batches=2)
    model, _ = prune(model, cfg, loader)
    make_iht_hook(model, cfg).finalize(model)
    return model.eval()


@pytest.fixture()
def saved(tmp_path: Path):
    model = _pruned_model()
    out = save(model, tmp_path / "m", class_names=CLASSES, meta={"note": "test"})
    return model, out


def test_round_trip_of_a_model_pruned_three_ways(saved) -> None:
    model, out = saved
    loaded, doc = load(out)
    x = _x()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert count_params(loaded) == count_params(model) == doc["params"]
    assert count_nonzero(loaded) == count_nonzero(model)
    assert describe_structure(loaded) == describe_structure(model) == doc["structure"]
    assert sum(isinstance(m, LowRankLinear) for m in loaded.modules()) > 0
    assert [a.num_heads for _, a in window_attentions(loaded)] == [a.num_heads for _, a in window_attentions(model)]
    assert doc["class_names"] == CLASSES and doc["input_size"] == [3, 16, 16]
    assert doc["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert loaded.accelvit_spec == model.accelvit_spec and not loaded.training
    # the spec is plain JSON and the weights are plain safetensors: no pickle anywhere
    assert json.loads((out / SPEC_FILE).read_text())["format"] == "accelvit-model"


def test_a_reloaded_model_can_be_pruned_again(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("swin_pico", 10).eval()
    prune(model, PruneConfig(head_ratio=0.25, head_criterion="l1"))
    loaded, _ = load(save(model, tmp_path / "a"))
    prune(loaded, PruneConfig(head_ratio=0.25, head_criterion="l1"))
    again, _ = load(save(loaded, tmp_path / "b"))
    with torch.no_grad():
        assert torch.equal(again(_x()), loaded(_x()))
    kept = describe_structure(again)["heads"]
    assert all(k["kept"] == sorted(k["kept"]) and max(k["kept"]) < k["num_heads_orig"] for k in kept.values())


def test_unpruned_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("swin_pico", 10).eval()
    loaded, doc = load(save(model, tmp_path / "u"))
    assert doc["structure"] == {"version": 1, "heads": {}, "mlp": {}, "lowrank": {}}
    with torch.no_grad():
        assert torch.equal(model(_x()), loaded(_x()))


def test_truncated_or_garbage_weights_fail_clearly(saved) -> None:
    _, out = saved
    w = out / WEIGHTS_FILE
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load(out)
    w.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load(out)


def test_foreign_safetensors_fail_clearly(saved, tmp_path: Path) -> None:
    _, out = saved
    foreign = {"blocks.0.weight": torch.zeros(3, 3)}
    save_file(foreign, str(out / WEIGHTS_FILE))       # someone else's file in our directory
    with pytest.raises(CheckpointError, match="not written by accelvit"):
        load(out)
    bare = tmp_path / "other.safetensors"
    save_file(foreign, str(bare))                      # a bare foreign file
    with pytest.raises(CheckpointError, match="bare safetensors file"):
        load(bare)
    with pytest.raises(CheckpointError, match="accelvit.json is missing"):
        load(tmp_path)


def test_inconsistent_spec_fails_clearly(saved) -> None:
    model, out = saved
    spec_path = out / SPEC_FILE
    good = json.loads(spec_path.read_text())

    def write(doc) -> None:
        spec_path.write_text(json.dumps(doc))

    doc = json.loads(json.dumps(good))
    name = next(iter(doc["structure"]["heads"]))
    doc["structure"]["heads"][name]["kept"] = [0, 99]
    write(doc)
    with pytest.raises(CheckpointError, match="not distinct indices"):
        load(out)

    doc = json.loads(json.dumps(good))
    doc["structure"]["lowrank"].pop(next(iter(doc["structure"]["lowrank"])))
    write(doc)
    with pytest.raises(CheckpointError, match="do not match the architecture"):
        load(out)

    doc = json.loads(json.dumps(good))
    doc["structure"]["mlp"]["layers.9.blocks.0.mlp"] = {"hidden": 3}
    write(doc)
    with pytest.raises(CheckpointError, match="does not have"):
        load(out)

    doc = json.loads(json.dumps(good))
    doc["model"]["name"] = "swin_nonexistent"
    write(doc)
    with pytest.raises(CheckpointError, match="cannot be built"):
        load(out)

    spec_path.write_text('{"format": "accelvit-model", "version": 1, "model": ')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_spec(out)
    write({"format": "something-else"})
    with pytest.raises(CheckpointError, match="not an accelvit model spec"):
        load(out)


def test_sparse_model_is_smaller_on_disk_and_reloads_bit_exact(tmp_path: Path) -> None:
    """The checkpoint stores IHT zeros as bitmask + values: the file shrinks, weights stay exact."""
    from safetensors.torch import save_file as dense_save

    torch.manual_seed(0)
    model = build_model("swin_micro", 10)
    cfg = PruneConfig(sparsity=0.5)
    make_iht_hook(model, cfg).finalize(model)  # one-shot magnitude projection to 50% density
    out = save(model, tmp_path / "m")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    dense_save(state, str(tmp_path / "dense.safetensors"))
    dense_bytes = (tmp_path / "dense.safetensors").stat().st_size
    zero_bytes = sum(4 * int((v == 0).sum()) for v in state.values() if v.dtype == torch.float32)
    assert zero_bytes > 0.4 * dense_bytes  # half of nearly every linear weight is zero
    # Each zero costs about one bit instead of 32 bits: the file shrinks by nearly all of zero_bytes.
    assert (out / WEIGHTS_FILE).stat().st_size < dense_bytes - 0.85 * zero_bytes
    loaded, _ = load(out)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]) and v.dtype == state[k].dtype, k
    assert oct((out / WEIGHTS_FILE).stat().st_mode & 0o777) == "0o644"
