"""``python -m accelvit measure``: a saved (pruned) model measured from the command line."""

from __future__ import annotations

import json

import torch

from accelvit import serialize
from accelvit.cli import main
from accelvit.metrics import measure
from accelvit.models import build_model
from accelvit.prune import PruneConfig, make_iht_hook, prune

REQUIRED = ("dense_flops", "effective_flops", "thop_flops", "params", "nonzero_params", "size_dense_bytes",
            "size_sparse_bytes", "latency_ms_b1", "latency_ms_batch", "device")


def _pruned_pico():
    torch.manual_seed(0)
    model = build_model("swin_pico", 3)
    cfg = PruneConfig(head_ratio=0.5, head_criterion="l1", mlp_ratio=0.25, mlp_criterion="l1", rank_ratio=0.5,
                      sparsity=0.5)
    prune(model, cfg)
    make_iht_hook(model, cfg).finalize(model)
    return model.eval()


def test_measure_json_of_a_saved_pruned_model(tmp_path, capsys):
    model = _pruned_pico()
    serialize.save(model, tmp_path / "m")
    direct = measure(model, latency=False)
    assert main(["measure", "--checkpoint", str(tmp_path / "m"), "--json", "--no-latency", "--device", "cpu"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert all(k in d for k in REQUIRED)
    assert d["latency_ms_b1"] is None and d["device"] == "cpu"
    for k in ("dense_flops", "params", "nonzero_params", "size_dense_bytes", "size_sparse_bytes", "thop_flops"):
        assert d[k] == getattr(direct, k), k
    assert d["effective_flops"] < d["dense_flops"] and d["size_sparse_bytes"] < d["size_dense_bytes"]
    assert d["flops_counter"]["dense_flops"] == "torch.utils.flop_counter.FlopCounterMode"
    kinds = {r["kind"] for r in d["layers"]}
    assert {"attn", "qkv", "proj", "fc1", "fc2", "reduction", "head", "patch_embed"} <= kinds
    lowrank = [r for r in d["layers"] if r["rank"] is not None and r["rank"] < r["full_rank"]]
    assert lowrank, "rank_ratio=0.5 factorised some linears"
    heads = [r for r in d["layers"] if r["kind"] == "attn"]
    assert sum(r["heads_kept"] for r in heads) < sum(r["heads_total"] for r in heads)


def test_measure_text_output_with_latency(tmp_path, capsys):
    torch.manual_seed(0)
    serialize.save(build_model("swin_pico", 3), tmp_path / "m")
    rc = main(["measure", "--checkpoint", str(tmp_path / "m"), "--batch-size", "2", "--warmup", "0", "--reps", "1",
               "--threads", "1", "--no-thop", "--layers", "--device", "cpu"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "dense FLOPs" in out and "latency b=2" in out and "layers.0.blocks.0.attn" in out


def test_measure_bad_checkpoint_is_a_user_error(tmp_path, capsys):
    assert main(["measure", "--checkpoint", str(tmp_path / "nothing"), "--json"]) == 2
    assert "error:" in capsys.readouterr().err
