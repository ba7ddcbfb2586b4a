"""accelvit.sparse_io: bit-exact round trip, real size savings, damaged files rejected."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from accelvit.errors import CheckpointError, ConfigError
from accelvit.sparse_io import INDEX_KEY, encoded_nbytes, load_sparse, save_sparse


def _sparsify(t: torch.Tensor, frac: float, seed: int = 0) -> torch.Tensor:
    """Zero a random ``frac`` of ``t`` the way IHT does (``w * mask``: negative entries become -0.0)."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(t.shape, generator=g) >= frac
    return t * keep


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.view(width), b.view(width))
    return torch.equal(a, b)


def test_round_trip_is_bit_exact_for_every_dtype_and_edge_case(tmp_path):
    g = torch.Generator().manual_seed(1)
    special = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, 0.0, 0.0] * 8)
    sd = {
        "fp32_sparse": _sparsify(torch.randn(64, 48, generator=g), 0.5),
        "fp32_dense": torch.randn(33, generator=g),
        "fp16": _sparsify(torch.randn(40, 7, generator=g), 0.7).half(),
        "bf16": _sparsify(torch.randn(17, 19, generator=g), 0.9).bfloat16(),
        "fp64": _sparsify(torch.randn(5, 13, generator=g), 0.8).double(),
        "int64": torch.tensor([0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, -3, 0, 0, 0] * 4),
        "bool": torch.zeros(100, dtype=torch.bool).index_fill_(0, torch.tensor([3, 50]), True),
        "all_zero": torch.zeros(3, 5, 7),
        "special": special,  # -0.0 and NaN must survive as they are
        "scalar": torch.tensor(0.0),
        "empty": torch.zeros(0, 4),
        "noncontig": _sparsify(torch.randn(8, 16, generator=g), 0.6).t(),
    }
    path = tmp_path / "w.safetensors"
    n = save_sparse(sd, path, metadata={"note": "hello"})
    assert n == path.stat().st_size
    back, meta = load_sparse(path)
    assert meta == {"note": "hello"}
    assert list(back) == list(sd), "key order is preserved"
    for k, v in sd.items():
        assert _bits_equal(back[k], v.contiguous()), k
    assert torch.signbit(back["special"][1]) and torch.isnan(back["special"][2])
    index = json.loads(__import__("safetensors").safe_open(str(path), "pt").metadata()[INDEX_KEY])
    assert {"fp32_sparse", "bf16", "all_zero", "special", "bool", "int64"} <= set(index["sparse"])
    assert "fp32_dense" not in index["sparse"] and "scalar" not in index["sparse"]


def test_sparse_file_is_smaller_at_half_sparsity(tmp_path):
    g = torch.Generator().manual_seed(0)
    dense_sd = {f"l{i}.weight": torch.randn(128, 96, generator=g) for i in range(4)}
    dense_sd["l0.bias"] = torch.randn(128, generator=g)
    sparse_sd = {k: (_sparsify(v, 0.5, seed=i) if v.dim() == 2 else v) for i, (k, v) in enumerate(dense_sd.items())}
    save_file(sparse_sd, str(tmp_path / "dense.safetensors"))
    dense_bytes = (tmp_path / "dense.safetensors").stat().st_size
    sparse_bytes = save_sparse(sparse_sd, tmp_path / "sparse.safetensors")
    assert sparse_bytes < 0.6 * dense_bytes  # 0.5 values + 1/32 bitmask ~= 0.53
    back, _ = load_sparse(tmp_path / "sparse.safetensors")
    assert all(torch.equal(back[k], v) for k, v in sparse_sd.items())
    # a dense state dict costs no more than the plain file (only the small index header)
    plain_bytes = save_sparse(dense_sd, tmp_path / "plain.safetensors")
    assert plain_bytes - dense_bytes < 1024
    d, s = encoded_nbytes(sparse_sd["l0.weight"])
    assert d == 128 * 96 * 4 and s < d * 0.6
    # -0.0 zeros (left by w * mask) cost only one bit per zero more than +0.0 zeros
    w = sparse_sd["l0.weight"]
    assert bool(torch.signbit(w[w == 0]).any())
    _, s_pos = encoded_nbytes(w + 0.0)  # -0.0 + 0.0 == +0.0
    assert s_pos < s <= s_pos + (w == 0).sum().item() // 8 + 1


def test_plain_safetensors_file_loads_as_dense(tmp_path):
    sd = {"a": torch.zeros(10), "b": torch.arange(4)}
    save_file(sd, str(tmp_path / "p.safetensors"), metadata={"format": "x"})
    back, meta = load_sparse(tmp_path / "p.safetensors")
    assert meta == {"format": "x"} and torch.equal(back["a"], sd["a"]) and torch.equal(back["b"], sd["b"])


def test_bad_inputs_and_damaged_files_raise_our_errors(tmp_path):
    with pytest.raises(ConfigError):
        save_sparse({"a": torch.zeros(3)}, tmp_path / "x.safetensors", metadata={"accelvit_sparse_index": "{}"})
    with pytest.raises(ConfigError):
        save_sparse({"a": torch.zeros(3)}, tmp_path / "x.safetensors", metadata={"n": 3})  # type: ignore[dict-item]
    with pytest.raises(CheckpointError):
        load_sparse(tmp_path / "missing.safetensors")
    path = tmp_path / "t.safetensors"
    save_sparse({"w": _sparsify(torch.randn(64, 64), 0.5)}, path)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        load_sparse(tmp_path / "cut.safetensors")
    # values that do not match the bitmask
    save_file({"w.__bitmask__": torch.full((2,), 255, dtype=torch.uint8), "w.__values__": torch.ones(3)},
              str(tmp_path / "bad.safetensors"),
              metadata={INDEX_KEY: json.dumps({"order": ["w"], "sparse": {"w": {
                  "shape": [16], "dtype": "float32", "mask": "w.__bitmask__", "values": "w.__values__"}}}),
                  "accelvit_sparse_format": "bitmask-v1"})
    with pytest.raises(CheckpointError, match="16 set bits"):
        load_sparse(tmp_path / "bad.safetensors")
