"""bench.pareto end to end on a tiny synthetic image folder (1-epoch smoke profile).

The real numbers come from running the benchmark on CIFAR-10 (bench/RESULTS.md); this only
proves the script runs every method, writes the files, and records failures as rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside accelvit/, not in the package
from bench import pareto  # noqa: E402

REQUIRED = ["method", "target_flops", "top1", "dense_flops", "effective_flops", "params", "nonzero_params",
            "size_bytes", "speedup_b64", "status"]


def _folder(root, n_per_class):
    rng = np.random.default_rng(0)
    for c in range(2):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(n_per_class):
            img = (rng.random((16, 16, 3)) * 80 + (150 if c else 20)).astype("uint8")
            Image.fromarray(img).save(d / f"{i}.png")
    return root


def test_pareto_smoke_every_method_gives_a_row(tmp_path):
    train = _folder(tmp_path / "train", 12)
    test = _folder(tmp_path / "test", 4)
    results_md = tmp_path / "RESULTS.md"
    results_md.write_text("# Benchmark results\n\n## Latency (issue 4)\n\nsomeone else's numbers\n")
    common = ["--train-dir", str(train), "--test-dir", str(test), "--model", "swin_pico", "--profile", "smoke",
              "--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "results"),
              "--results-md", str(results_md), "--name", "smoke"]
    result = pareto.main(common)

    df = pd.read_csv(tmp_path / "results" / "smoke.csv")
    assert all(c in df.columns for c in REQUIRED)
    assert list(df.columns) == pareto.COLUMNS
    for method in pareto.DEFAULT_METHODS:
        rows = df[df["method"] == method]
        assert len(rows) >= 1, method
        for status in rows["status"]:
            assert status == "ok" or status.startswith("failed: "), (method, status)
    ok = df[df["status"] == "ok"]
    assert {"baseline", "baseline_ft", "accelvit", "accelvit_iht", "random"} <= set(ok["method"])
    # every pruned method that ran hit its FLOP target within 1%
    pruned = ok[ok["target_flops"] < 1]
    assert ((pruned["dense_flops"] / result["baseline_flops"] / pruned["target_flops"] - 1).abs() <= 0.01).all()
    assert pruned["top1"].between(0, 1).all() and (pruned["speedup_b64"] > 0).all()
    iht = ok[ok["method"] == "accelvit_iht"].iloc[0]
    structural = ok[ok["method"] == "accelvit"].iloc[0]
    assert iht["nonzero_params"] < structural["nonzero_params"] and iht["params"] == structural["params"]
    for suffix in ("md", "json", "html"):
        assert (tmp_path / "results" / f"smoke.{suffix}").stat().st_size > 0

    text = results_md.read_text()
    assert "someone else's numbers" in text and text.index("## Latency (issue 4)") < text.index(pareto.SECTION)
    assert "### smoke" in text and "| accelvit |" in text

    # the second run reuses the cached baseline and adds a second block to the same section
    again = pareto.main(common + ["--methods", "baseline"])
    assert again["baseline"]["reused"] and again["baseline"]["top1"] == result["baseline"]["top1"]
    text = results_md.read_text()
    assert text.count(pareto.SECTION) == 1 and text.count("### smoke") == 2
    assert "someone else's numbers" in text


def test_bad_arguments_are_explained(tmp_path):
    with pytest.raises(SystemExit):
        pareto.main(["--profile", "smoke"])  # no data
    with pytest.raises(SystemExit, match="unknown"):
        pareto.main(["--train-dir", str(_folder(tmp_path / "d", 3)), "--methods", "accelvit,nope",
                     "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "r"), "--no-write"])


def test_accelvit_rows_are_what_accelvit_run_gives(tmp_path, capsys):
    """One pipeline: a bench row's top-1 equals `accelvit run` of the config the row records."""
    from accelvit.cli import main as cli_main

    work = tmp_path / "work"
    result = pareto.main(["--dataset", "digits", "--model", "swin_pico", "--img-size", "16", "--profile", "smoke",
                          "--subset", "96", "--eval-subset", "48", "--batch-size", "16", "--methods", "accelvit",
                          "--seed", "3", "--work-dir", str(work), "--out-dir", str(tmp_path / "r"), "--no-write"])
    row = next(r for r in result["rows"] if r["method"] == "accelvit")
    assert row["status"] == "ok", row["status"]
    cfg = result["configs"]["accelvit@0.5"]
    assert cfg["seed"] == 3 and cfg["prune"]["target_flops"] == 0.5 and cfg["finetune"]["epochs"] == 1
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    capsys.readouterr()
    # the same work folder: `accelvit run` reuses the baseline the bench trained (one cache, one key)
    assert cli_main(["--home", str(work), "run", "--config", str(path), "--no-progress", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    run = run[0] if isinstance(run, list) else run
    assert run["stages"]["after"]["top1"] == row["top1"]
    assert run["stages"]["pruned"]["top1"] == row["top1_pruned"]
    assert run["stages"]["after"]["dense_flops"] == row["dense_flops"]


def _set_fused(model, fused: bool) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_tp_pruned_swin_fused_and_plain_attention_agree(importance, monkeypatch):
    """After Torch-Pruning removes head dims, attn.scale is the pruned head dim's d ** -0.5, the
    fused (SDPA) path gives what the plain path gives, and the plain path's logits are those of
    TP's model before the scale fold (the kept dims' q.k / sqrt(d0), as in the unpruned model)."""
    pytest.importorskip("torch_pruning")
    import torch
    from timm.models.swin_transformer import WindowAttention

    from accelvit.models import build_model
    from bench.peers import torch_pruning as tpa

    torch.manual_seed(0)
    size = (3, 16, 16)
    base = build_model("swin_pico", 3, img_size=16).eval()
    x = torch.randn(4, *size)
    grads = tpa.tp_gradients(base, [(x, torch.tensor([0, 1, 2, 0]))]) if importance == "taylor" else None
    model = tpa.tp_prune(base, "head_dim", importance, 0.5, None, grads, False, size)
    attns = [m for m in model.modules() if isinstance(m, WindowAttention)]
    dims = [a.qkv.out_features // (3 * a.num_heads) for a in attns]
    base_dims = [a.qkv.out_features // (3 * a.num_heads) for a in base.modules() if isinstance(a, WindowAttention)]
    assert all(d < d0 for d, d0 in zip(dims, base_dims)), (dims, base_dims)  # head dims were pruned
    for a, d in zip(attns, dims):
        assert a.scale == pytest.approx(d ** -0.5)
    with torch.no_grad():
        _set_fused(model, False)
        plain = model(x)
        _set_fused(model, True)
        fused = model(x)
    assert torch.allclose(plain, fused, atol=1e-5, rtol=1e-4), (plain - fused).abs().max()

    # the fold changes nothing on the plain path: TP's own model (original scale) gives the same logits
    monkeypatch.setattr(tpa, "_fold_attention_scale", lambda attns: None)
    unfolded = tpa.tp_prune(base, "head_dim", importance, 0.5, None, grads, False, size)
    assert [a.scale for a in unfolded.modules() if isinstance(a, WindowAttention)] == pytest.approx(
        [d0 ** -0.5 for d0 in base_dims])
    with torch.no_grad():
        _set_fused(unfolded, False)
        assert torch.allclose(unfolded(x), plain, atol=1e-5, rtol=1e-4)
