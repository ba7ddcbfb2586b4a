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


# ============================================================================ issue 11: the standard profile
def test_standard_profile_is_the_issue_11_benchmark():
    prof = pareto.PROFILES["standard"]
    assert prof.subset is None and prof.eval_subset is None  # every training image; every unseen test image
    assert prof.targets == (0.5, 0.3) and prof.finetune_epochs >= 1 and prof.speed_reps >= 10
    assert list(prof.methods) == ["baseline", "baseline_ft", "accelvit", "accelvit_nokd", "accelvit_oldscore",
                                  "accelvit_uniform", "accelvit_iht", "tp_magnitude", "tp_taylor", "random"]
    assert prof.section == pareto.SECTION_STANDARD != pareto.SECTION
    assert all(m in pareto.METHODS for m in prof.methods)


def test_method_configs_share_one_recipe_and_change_one_thing_each():
    from accelvit.prune import LINEAR_KINDS

    prof = pareto.PROFILES["standard"]
    base = pareto.experiment_config(pareto.build_parser().parse_args(["--dataset", "digits", "--profile", "standard"]),
                                    prof, pareto.DataConfig(dataset="digits"))
    direction = pareto.parse_direction("heads=0.5,mlp=0.9,svd=0.3")

    def cfg(method, seed=0):
        return pareto.method_config(base, method, direction, prof, seed, 0.5, 0.5)

    av = cfg("accelvit")
    assert av.distill.alpha == 0.7 and av.distill.temperature == 2.0  # KD on, the runner's default
    assert av.finetune == base.finetune and av.finetune.epochs == prof.finetune_epochs
    assert av.finetune.max_steps == prof.finetune_steps == 150  # the budget the profile's wall time is for
    p = av.prune
    assert (p.head_criterion, p.mlp_criterion, p.target_rule, p.target_flops) == ("taylor", "taylor", "sensitivity", 0.5)
    assert p.activation_aware and p.rank_ratio == pytest.approx(0.7) and p.sparsity == 0
    assert p.calib_batches == prof.calib_batches

    def changed(method):
        c = cfg(method)
        out = {f"prune.{k}" for k, v in c.prune.to_dict().items() if v != p.to_dict()[k]}
        out |= {f"distill.{k}" for k, v in c.distill.to_dict().items() if v != av.distill.to_dict()[k]}
        assert c.finetune == av.finetune and c.seed == av.seed and c.data == av.data
        return c, out

    c, diff = changed("accelvit_nokd")
    assert diff == {"distill.alpha"} and c.distill.alpha == 0
    c, diff = changed("accelvit_oldscore")
    assert diff == {"prune.head_criterion", "prune.mlp_criterion"} and c.prune.head_criterion == "taylor_signed"
    assert c.prune.mlp_criterion == "taylor_signed"
    c, diff = changed("accelvit_uniform")
    assert diff == {"prune.target_rule"} and c.prune.target_rule == "uniform"
    c, diff = changed("accelvit_iht")
    assert diff == {"prune.sparsity", "prune.iht_layers"} and c.prune.sparsity == 0.5
    assert tuple(c.prune.iht_layers) == LINEAR_KINDS and c.distill.alpha == 0.7
    c, diff = changed("random")  # random units, uniform rule: accelvit_uniform vs random isolates the criterion
    assert diff == {"prune.head_criterion", "prune.mlp_criterion", "prune.target_rule"}
    assert (c.prune.head_criterion, c.prune.target_rule) == ("random", "uniform")
    for peer in ("tp_magnitude", "tp_taylor", "baseline_ft"):  # same finetune and KD; pruning is not the runner's
        c = cfg(peer)
        assert c.prune.is_noop() and c.distill == av.distill and c.finetune == av.finetune
    assert cfg("baseline_ft").control and not cfg("tp_taylor").control
    assert cfg("accelvit", seed=4).seed == 4 and cfg("accelvit", seed=4).prune.seed == 4


def test_heldout_root_tests_on_the_images_the_baseline_never_saw(tmp_path):
    """--baseline with a train folder: the test split is every image the baseline's recorded split kept out."""
    from accelvit.data import DataConfig, load_data, stratified_split

    train = _folder(tmp_path / "cifar" / "train", 10)
    base = tmp_path / "baseline"
    base.mkdir()
    record = {"data": {"dataset": "folder", "val_fraction": 0.2, "test_fraction": 0.2, "subset": None, "seed": 0},
              "split": {"seed": 0, "method": "test/ folder split; stratified val from train", "val_fraction": 0.2,
                        "train": 16, "val": 4, "test": 10}}
    (base / "baseline.json").write_text(json.dumps(record))
    root, info = pareto.heldout_root(train, base, tmp_path / "work")
    assert info["baseline_train"] == 16 and info["unseen_test"] == 4

    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(train))
    val_i, train_i = stratified_split(folder.targets, [0.2], 0)
    def files(part):  # the images a part links to, and the class folder each link sits in
        return {(str(f.resolve()), f.parent.name) for f in (root / part).rglob("*.png")}

    def expected(idx):
        return {(str(Path(folder.samples[i][0]).resolve()), folder.classes[folder.targets[i]]) for i in idx}

    assert files("test") == expected(val_i) and files("train") == expected(train_i)
    # the runner's loader reads it as train/ + test/: the test split is those 4 images, all of them
    bundle = load_data(DataConfig(dataset="folder", root=str(root), img_size=16, val_fraction=0.25))
    assert bundle.split["test"] == 4 and bundle.split["train"] + bundle.split["val"] == 16
    # built once, then reused
    assert pareto.heldout_root(train, base, tmp_path / "work")[0] == root

    # a record that does not fit the folder is refused, not silently re-split
    record["split"]["train"] = 15
    (base / "baseline.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="not the folder"):
        pareto.heldout_root(train, base, tmp_path / "work")
    (base / "baseline.json").unlink()
    assert pareto.heldout_root(train, base, tmp_path / "work") is None


def test_standard_profile_on_digits_seeds_and_kd_for_every_finetune(tmp_path, monkeypatch):
    """The standard profile end to end (tiny): every finetune per seed, mean / SE / per-seed values, KD on
    for accelvit, Torch-Pruning and baseline_ft alike, off only for accelvit_nokd; all test images."""
    import plotly.graph_objects as go

    def no_png(*args, **kwargs):  # kaleido starts a browser (seconds); the HTML figure is still written
        raise RuntimeError("no PNG in this test")

    monkeypatch.setattr(go.Figure, "write_image", no_png)
    results_md = tmp_path / "RESULTS.md"
    methods = "baseline,baseline_ft,accelvit,accelvit_nokd,tp_magnitude"
    result = pareto.main(["--dataset", "digits", "--model", "swin_pico", "--img-size", "16", "--profile", "standard",
                          "--epochs", "1", "--subset", "64", "--eval-subset", "0", "--batch-size", "16",
                          "--calib-batches", "1", "--speed-reps", "1", "--targets", "0.5", "--seeds", "2",
                          "--methods", methods, "--work-dir", str(tmp_path / "w"), "--out-dir", str(tmp_path / "r"),
                          "--results-md", str(results_md), "--name", "std"])
    assert result["profile"] == "standard" and result["seeds"] == [0, 1]
    assert result["split"]["test"] == 359  # --eval-subset 0: every test image of digits (20% of 1797)
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == set(methods.split(",")) and all(r["status"] == "ok" for r in rows.values())
    per_seed = result["seed_rows"]
    for m in ("baseline_ft", "accelvit", "accelvit_nokd", "tp_magnitude"):
        seeds = [r for r in per_seed if r["method"] == m]
        assert [r["seed"] for r in seeds] == [0, 1], m
        top1 = [r["top1"] for r in seeds]
        row = rows[m]
        assert row["n_seeds"] == 2 and json.loads(row["top1_seeds"]) == pytest.approx(top1, abs=1e-6)
        assert row["top1"] == row["top1_mean"] == pytest.approx(np.mean(top1))
        assert row["top1_se"] == pytest.approx(np.std(top1, ddof=1) / np.sqrt(2))
        assert row["speedup_b64"] > 0 and seeds[0]["speedup_b64"] == row["speedup_b64"]
    assert rows["baseline"]["n_seeds"] == 1 and "baseline" not in {r["method"] for r in per_seed}
    # one finetune recipe: KD from the baseline for every finetune but the no-KD ablation
    kd = {m: r["distill"] for m, r in rows.items()}
    assert kd["accelvit"] == kd["tp_magnitude"] == kd["baseline_ft"] == "alpha=0.7 T=2"
    assert kd["accelvit_nokd"] == "off"
    assert result["configs"]["accelvit@0.5"]["seed"] == 0 and result["configs"]["accelvit@0.5@seed1"]["seed"] == 1
    assert result["configs"]["accelvit_nokd@0.5"]["distill"]["alpha"] == 0

    assert (tmp_path / "r" / "std.html").stat().st_size > 0  # with error bars over the seeds
    df = pd.read_csv(tmp_path / "r" / "std.csv")
    assert {"top1_mean", "top1_se", "n_seeds", "top1_seeds", "distill"} <= set(df.columns)
    text = results_md.read_text()
    assert pareto.SECTION_STANDARD in text and pareto.SECTION not in text
    assert "| accelvit_nokd | 0.50 |" in text and " ± " in text and "seeds 0, 1" in text
