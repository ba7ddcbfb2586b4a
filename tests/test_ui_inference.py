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
    with pytest.raises(InputError, match=r"notes\.txt is not an image Pillow can read \(PNG, JPEG"):
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
    both = inference.latencies({"baseline": lm, "pruned": lm}, reps=2, warmup=1)
    assert set(both.ms) == {"baseline", "pruned"} and all(v > 0 for v in both.ms.values()) and both.speedup > 0
    assert both.interleaved and both.reps == 2 and both.device.startswith("cpu")
    assert both.flop_reduction == pytest.approx(1.0) and both.baseline_flops > 0
    assert "batch 1" in both.how() and "median of 2 interleaved" in both.how() and both.device in both.how()
    alone = inference.latencies({"pruned": lm}, reps=2, warmup=1)
    assert set(alone.ms) == {"pruned"} and alone.speedup is None and not alone.interleaved
    assert "interleaved" not in alone.how()


def test_run_model_paths_only_lists_saved_models(saved_model, tmp_path):
    run = {"artifacts": {"model": str(saved_model), "baseline": str(tmp_path / "gone"), "report": "r.json"}}
    assert inference.run_model_paths(run) == {"pruned": str(saved_model)}
    assert inference.run_model_paths({}) == {}


def test_dataset_examples_are_the_test_images():
    ex = inference.dataset_examples({"dataset": "digits", "img_size": 16}, n=3, seed=1)
    assert len(ex) == 3
    img, label = ex[0]
    assert img.size == (16, 16) and label in [str(i) for i in range(10)]


def test_upload_errors_name_the_file_and_never_a_buffer_repr():
    png = png_bytes((30, 30))
    cases = {
        "x.txt": b"hello, I am text\n",            # not an image at all
        "holiday photo.png": b"%PDF-1.4 not a png",   # wrong content under an image name
        "cut.png": png[: len(png) // 2],            # a real PNG cut short
        "cut header.jpg": b"\xff\xd8\xff\xe0" + b"\0" * 10,  # a JPEG signature and nothing else
    }
    for name, data in cases.items():
        with pytest.raises(InputError) as info:
            inference.read_upload(name, data)
        msg = str(info.value)
        assert msg.startswith(name), msg
        assert "BytesIO" not in msg and " object at 0x" not in msg, msg
    with pytest.raises(InputError, match=r"^x\.txt is not an image Pillow can read \(PNG, JPEG, BMP, GIF, WebP"):
        inference.read_upload("x.txt", cases["x.txt"])
    with pytest.raises(InputError, match=r"^cut\.png looks like a PNG image but cannot be decoded"):
        inference.read_upload("cut.png", cases["cut.png"])


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("GIF", "gif"),
                                     ("WEBP", "webp"), ("TIFF", "tif")])
def test_every_type_the_uploader_offers_loads(fmt, ext):
    assert ext in inference.IMAGE_TYPES
    buf = io.BytesIO()
    Image.new("RGBA" if fmt in ("PNG", "WEBP") else "RGB", (12, 9), (10, 200, 30, 255)).save(buf, format=fmt)
    img = inference.read_upload(f"a.{ext}", buf.getvalue())
    assert img.mode == "RGB" and img.size == (12, 9)


def _timing(speedup, **kw):
    base = dict(ms={"baseline": 1.0, "pruned": 1.0 / speedup}, spread={"baseline": (0.9, 1.1), "pruned": (1.2, 1.3)},
                speedup=speedup, device="cpu (2 threads, 2 cores)", reps=20, warmup=3, interleaved=True,
                baseline_flops=5_000_000, flop_reduction=1.8)
    return inference.Timing(**{**base, **kw})


def test_a_speedup_below_one_is_explained_by_what_applies():
    assert inference.explain_speedup(_timing(1.2)) is None
    assert inference.explain_speedup(_timing(1.0)) is None
    plain = inference.explain_speedup(_timing(0.93))
    assert "0.93x" in plain and "overhead-bound" in plain and "5.0 MFLOPs" in plain and "1.80x fewer" in plain
    assert "low-rank" not in plain and "zeros" not in plain and "noise" not in plain  # spreads apart here
    both = inference.explain_speedup(_timing(0.9, lowrank_layers=6, zero_fraction=0.5,
                                             spread={"baseline": (0.9, 1.1), "pruned": (1.0, 1.2)}))
    assert "6 linear layers are low-rank" in both and "two matrix multiplications" in both
    assert "50% of the pruned model's linear weights are zeros" in both and "dense kernels" in both
    assert "timing noise" in both
    assert "larger batches" in plain and "GFLOP/s" in plain
    same = inference.explain_speedup(_timing(0.95, flop_reduction=1.0))
    assert "fewer dense FLOPs to begin with" in same and "still real" not in same
    lone = _timing(0.5)
    lone.speedup = None
    assert inference.explain_speedup(lone) is None  # a lone model has no speedup to explain


def test_linear_facts_count_lowrank_layers_and_zeros():
    from accelvit.prune import PruneConfig, prune

    torch.manual_seed(0)
    model = build_model("swin_pico", 10, img_size=16)
    assert inference.linear_facts(model) == (0, 0.0)
    pruned, _ = prune(model, PruneConfig(rank_ratio=0.5), None)
    n, zeros = inference.linear_facts(pruned)
    from accelvit.layers import LowRankLinear
    assert n == sum(isinstance(m, LowRankLinear) for m in pruned.modules()) > 0
    lin = next(m for m in pruned.modules() if isinstance(m, torch.nn.Linear))
    lin.weight.data.zero_()
    assert inference.linear_facts(pruned)[1] > zeros


def test_marks_and_tally_judge_top1_against_the_true_class(saved_model):
    lm = inference.load_model(saved_model)
    top = inference.predict(lm, inference.read_upload("a.png", png_bytes()))
    guess = inference.top1(top)
    other = next(c for c in lm.class_names if c != guess)
    assert inference.is_right(top, guess, lm.class_names) is True
    assert inference.is_right(top, other, lm.class_names) is False
    assert inference.is_right(top, None, lm.class_names) is None          # an upload: no true class
    assert inference.is_right(top, "a cat", lm.class_names) is None       # not one of the model's classes
    assert "check_circle" in inference.mark(True) and "cancel" in inference.mark(False) and inference.mark(None) == ""
    verdicts = [{"baseline": True, "pruned": True}, {"baseline": True, "pruned": False},
                {"baseline": None, "pruned": None}]
    assert inference.tally(verdicts, ["baseline", "pruned"]) == {"baseline": (2, 2), "pruned": (1, 2)}
