"""Model cards: README.md in every saved model folder, written from the measured numbers."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from accelvit import card, serialize
from accelvit.metrics import measure
from accelvit.models import build_model
from accelvit.prune import PruneConfig, make_iht_hook, prune


def _front_matter(text: str) -> dict:
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert m, "the card starts with YAML front matter"
    return yaml.safe_load(m.group(1))


def _table(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| metric"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_card_of_a_pruned_model_holds_its_measured_numbers(tmp_path):
    torch.manual_seed(0)
    model = build_model("swin_pico", 3, drop_path_rate=0.0)
    before = measure(model, latency=False, thop=False).to_dict()
    cfg = PruneConfig(head_ratio=0.5, head_criterion="l1", rank_ratio=0.5, sparsity=0.5)
    prune(model, cfg)
    make_iht_hook(model, cfg).finalize(model)
    after = measure(model, latency=False, thop=False).to_dict()
    before.update(top1=0.8125, top5=1.0, n=64)
    after.update(top1=0.796875, top5=1.0, n=64)
    for d in (before, after):
        d.pop("layers")
    meta = {"run_id": "r123", "data": {"dataset": "digits", "img_size": 16, "mean": [0.5] * 3, "std": [0.5] * 3},
            "split": {"train": 1293, "val": 145, "test": 359},
            "config": {"prune": cfg.to_dict(), "finetune": {"epochs": 3, "lr": 0.001},
                       "distill": {"alpha": 0.7, "temperature": 2.0}},
            "metrics": {"before": before, "after": after}}
    folder = serialize.save(model, tmp_path / "pruned", class_names=["a", "b", "c"], meta=meta)
    text = (folder / card.CARD_FILE).read_text()

    front = _front_matter(text)
    assert front["library_name"] == "accelvit" and front["datasets"] == ["digits"] and "pruned" in front["tags"]
    result = front["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == pytest.approx(0.796875)

    rows = _table(text)
    assert rows["top-1 accuracy (test)"] == ["81.25%", "79.69%"]
    assert rows["parameters"] == [f"{before['params']:,}", f"{after['params']:,}"]
    assert rows["nonzero parameters"] == [f"{before['nonzero_params']:,}", f"{after['nonzero_params']:,}"]
    assert rows["dense FLOPs (attention included)"] == [card.fmt(before["dense_flops"], "si"),
                                                         card.fmt(after["dense_flops"], "si")]
    assert rows["size on disk, sparse format"] == [card.fmt(before["size_sparse_bytes"], "bytes"),
                                                   card.fmt(after["size_sparse_bytes"], "bytes")]
    assert "latency, batch 1 (median)" not in rows  # never measured: left out, not invented
    assert "- IHT sparsity: `0.5`" in text and "- head ratio: `0.5`" in text
    assert "distilled from the baseline (alpha 0.7, T 2.0)" in text
    heads = serialize.read_spec(folder)["structure"]["heads"]
    kept = sum(len(v["kept"]) for v in heads.values())
    assert f"- attention heads: {kept} of " in text
    assert "split: train 1,293, val 145, test 359 images" in text
    assert f"weight density after IHT: {after['density']:.1%}" in text
    assert 'accelvit.load("pruned")' in text and "accelvit export --checkpoint" in text


def test_card_of_a_baseline_without_metrics_says_so():
    doc = {"model": {"name": "swin_micro", "img_size": 32, "num_classes": 10}, "params": 1234,
           "structure": {"heads": {}, "mlp": {}, "lowrank": {}}, "meta": {}}
    text = card.render(doc, folder_name="base")
    assert "Not pruned: this is a baseline." in text and "No measured metrics are recorded" in text
    assert "model-index" not in _front_matter(text) and "No data set is recorded" in text


def test_card_of_a_trained_model_reads_metrics_json():
    doc = {"model": {"name": "swin_micro", "img_size": 16, "num_classes": 10}, "params": 5000,
           "structure": {}, "meta": {"data": {"dataset": "digits"}}}
    text = card.render(doc, train={"top1": 0.9637, "top5": 0.9972, "dataset": "digits"}, folder_name="base")
    assert _table(text)["top-1 accuracy (test)"] == ["96.37%"]
    assert _front_matter(text)["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(0.9637)


def test_saving_again_drops_a_stale_onnx_export(tmp_path):
    model = build_model("swin_pico", 3)
    folder = serialize.save(model, tmp_path / "m")
    (folder / "model.onnx").write_bytes(b"old")
    (folder / "onnx.json").write_text(json.dumps({"file_bytes": 3}))
    serialize.save(model, folder)
    assert not (folder / "model.onnx").exists() and not (folder / "onnx.json").exists()
    assert "With onnxruntime: export first" in (folder / card.CARD_FILE).read_text()


@pytest.mark.parametrize("value,kind,text", [(0.5, "pct", "50.00%"), (None, "int", "–"), (float("nan"), "ms", "–"),
                                             (1_500_000, "bytes", "1.50 MB"), (2.5e9, "si", "2.50 G"),
                                             (True, "int", "–"), (3.456, "x", "3.46x")])
def test_formats(value, kind, text):
    assert card.fmt(value, kind) == text
