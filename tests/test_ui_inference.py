"""Inference helpers: uploads are checked, saved models predict top-5 with probabilities."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from accelvit import serialize
from accelvit.errors import InputError
from accelvit.models import build_model
from accelvit.ui import inference


def png_bytes(size=(20, 20), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("swin_pico", 10, img_size=16)
    out = tmp_path_factory.mktemp("m") / "model"
    serialize.save(model, out, class_names=[f"digit {i}" for i in range(10)],
                   meta={"data": {"dataset": "digits", "mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3]}})
    return out


def test_read_upload_accepts_images_and_refuses_the_rest():
    img = inference.read_upload("a.png", png_bytes())
    assert img.mode == "RGB" and img.size == (20, 20)
    grey = io.BytesIO()
    Image.new("L", (8, 8), 128).save(grey, format="PNG")
    assert inference.read_upload("g.png", grey.getvalue()).mode == "RGB"
    with pytest.raises(InputError, match=r"notes\.txt: This file is not an image"):
        inference.read_upload("notes.txt", b"hello, I am text\n")
    with pytest.raises(InputError, match="empty"):
        inference.read_upload("e.png", b"")
    with pytest.raises(InputError, match="at most"):
        inference.read_upload("big.png", png_bytes(), max_bytes=10)
    with pytest.raises(InputError, match="pixels"):
        inference.read_upload("wide.png", png_bytes((300, 300)), max_pixels=10_000)


def test_load_model_uses_the_saved_normalisation_and_class_names(saved_model):
    lm = inference.load_model(saved_model, "pruned")
    assert lm.img_size == 16 and lm.mean == (0.4, 0.4, 0.4) and lm.std == (0.3, 0.3, 0.3)
    assert lm.class_names[3] == "digit 3" and not lm.model.training
    x = inference.preprocess(Image.new("RGB", (40, 30)), lm)
    assert tuple(x.shape) == (1, 3, 16, 16)


def test_predict_top5_and_latency(saved_model):
    lm = inference.load_model(saved_model)
    top = inference.predict(lm, inference.read_upload("a.png", png_bytes()))
    assert list(top.columns) == ["rank", "class", "probability"] and len(top) == 5
    assert top["probability"].is_monotonic_decreasing and 0 < top["probability"].sum() <= 1.0 + 1e-6
    assert all(c.startswith("digit ") for c in top["class"])
    assert inference.latency_ms(lm, reps=2, warmup=1) > 0
    both, speedup = inference.latencies({"baseline": lm, "pruned": lm}, reps=2, warmup=1)
    assert set(both) == {"baseline", "pruned"} and all(v > 0 for v in both.values()) and speedup > 0
    alone, none = inference.latencies({"pruned": lm}, reps=2, warmup=1)
    assert set(alone) == {"pruned"} and none is None


def test_run_model_paths_only_lists_saved_models(saved_model, tmp_path):
    run = {"artifacts": {"model": str(saved_model), "baseline": str(tmp_path / "gone"), "report": "r.json"}}
    assert inference.run_model_paths(run) == {"pruned": str(saved_model)}
    assert inference.run_model_paths({}) == {}


def test_dataset_examples_are_the_test_images():
    ex = inference.dataset_examples({"dataset": "digits", "img_size": 16}, n=3, seed=1)
    assert len(ex) == 3
    img, label = ex[0]
    assert img.size == (16, 16) and label in [str(i) for i in range(10)]
