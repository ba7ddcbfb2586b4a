"""The Inference page through ``streamlit.testing.v1.AppTest``: right/wrong marks on test images,
latency shown once with how it was timed, a slowdown explained where it is shown, clean upload errors.

The saved models have a classifier that always answers one class (zero weights, one large
bias), so which test images each model gets right follows from the images' true classes: the
expected marks are computed from the same test images the page loads, not written down.
"""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import element_tree

from accelvit import serialize
from accelvit.data import DataConfig, load_data
from accelvit.models import build_model
from accelvit.prune import PruneConfig, prune
from accelvit.runs import RunStore
from accelvit.ui import inference
from test_app_pages import add_finished, m, no_exception, page, texts

DATA = {"dataset": "digits", "img_size": 16}
N_IMAGES = 4  # the page's default "How many"


@pytest.fixture(autouse=True)
def home(app_home):
    return app_home


def always_predict(model: torch.nn.Module, index: int) -> torch.nn.Module:
    """Make the classifier answer class ``index`` for every image (it may be low-rank after pruning)."""
    head = model.get_classifier()
    with torch.no_grad():
        (head.down.weight if hasattr(head, "down") else head.weight).zero_()
        bias = (head.up if hasattr(head, "up") else head).bias
        bias.zero_()
        bias[index] = 10.0
    return model


@pytest.fixture(scope="module")
def test_images():
    """What the page shows by default: the run's first ``N_IMAGES`` test images (seed 0) and the class names."""
    names = load_data(DataConfig(dataset="digits", img_size=16, num_workers=0)).class_names
    return inference.dataset_examples(DATA, n=N_IMAGES, seed=0), names


def save_run(store: RunStore, root: Path, baseline: torch.nn.Module, pruned: torch.nn.Module, names) -> str:
    meta = {"data": {**DATA, "mean": [0.5] * 3, "std": [0.5] * 3}}
    serialize.save(baseline, root / "baseline", class_names=names, meta=meta)
    serialize.save(pruned, root / "model", class_names=names, meta=meta)
    rid = add_finished(store, "run a", m(0.95, 4.9e6, 4.9e6, 90_000, 400_000, 2.0),
                       m(0.93, 2.3e6, 1.4e6, 24_000, 200_000, 1.5), head_ratio=0.5, rank_ratio=0.5)
    store.add_artifact(rid, "baseline", root / "baseline", kind="model")
    store.add_artifact(rid, "model", root / "model", kind="model")
    return rid


def all_text(at) -> str:
    """The page's words and figures, but for a slowdown explanation (it may quote the timings' spread)."""
    return "\n".join([texts(at.markdown), texts(at.caption), texts(at.error),
                      "\n".join(f"{x.label}: {x.value}" for x in at.metric)])


def flat(block):
    """The elements under a block, depth first, in page order."""
    for child in block.children.values():
        if isinstance(child, element_tree.Block):
            yield from flat(child)
        else:
            yield child


def card_lines(at, label: str) -> list[str]:
    """The per-image header of ``label``'s column, one per image card, in page order."""
    return [str(x.value) for x in at.markdown if str(x.value).startswith(f"**{label}** · predicted")]


def test_test_images_are_marked_right_or_wrong_and_latency_is_shown_once(home, tmp_path, test_images):
    examples, names = test_images
    truths = [true for _, true in examples]
    right_class = truths[0]                                   # the baseline answers the first image's class
    wrong_class = next(c for c in names if c != right_class)  # the pruned model another one
    torch.manual_seed(0)
    base = build_model("swin_pico", len(names), img_size=16)
    pruned, _ = prune(copy.deepcopy(base), PruneConfig(head_ratio=0.5, head_criterion="l1", rank_ratio=0.5), None)
    always_predict(base, names.index(right_class))
    always_predict(pruned, names.index(wrong_class))
    save_run(RunStore(home), tmp_path, base, pruned, names)

    at = page("inference")
    no_exception(at)
    at.radio(key="inf_source").set_value("test").run()
    no_exception(at)
    assert [i.captions[0] for i in at.image] == [f"test image {i + 1} · true class: {t}" for i, t in enumerate(truths)]

    # each model's top-1 is marked against the true class, image by image
    for label, answer in (("baseline", right_class), ("pruned", wrong_class)):
        lines = card_lines(at, label)
        assert len(lines) == len(truths)
        for line, true in zip(lines, truths):
            assert f"predicted **{answer}**" in line
            if answer == true:
                assert ":material/check_circle: right" in line and "cancel" not in line
            else:
                assert ":material/cancel: wrong" in line and "check_circle" not in line
    assert ":material/cancel: wrong" in card_lines(at, "pruned")[0]  # the pruned model gets image 1 wrong
    n_base, n_pruned = truths.count(right_class), truths.count(wrong_class)
    assert f"**baseline** {n_base}/{len(truths)} right, **pruned** {n_pruned}/{len(truths)} right" in texts(at.markdown)

    # latency: once per model in the metrics, never on an image card, with where and how it was timed
    metrics = {x.label: x.value for x in at.metric}
    assert set(metrics) == {"baseline latency (batch 1, CPU)", "pruned latency (batch 1, CPU)", "speedup (paired)"}
    page_text = all_text(at)
    for label in ("baseline", "pruned"):
        value = metrics[f"{label} latency (batch 1, CPU)"]
        assert re.fullmatch(r"\d+\.\d\d ms", value) and page_text.count(value) == 1
    assert not any(" ms" in line for label in ("baseline", "pruned") for line in card_lines(at, label))
    how = texts(at.caption)
    assert "Timed on cpu (" in how and "at batch 1" in how and "median of 20 interleaved repetitions" in how
    # a speedup below 1 is explained right there; above 1 there is nothing to explain
    speedup = float(metrics["speedup (paired)"].rstrip("x"))
    assert ("Why the speedup is below 1x" in texts(at.info)) == (speedup < 1)


def test_a_slower_pruned_model_is_explained_where_the_speedup_is(home, tmp_path, test_images):
    """A 'pruned' folder holding a model with twice the blocks and twice the width: it is really slower,
    and the page says why under the speedup instead of leaving a bare 0.5x."""
    _, names = test_images
    torch.manual_seed(0)
    base = build_model("swin_pico", len(names), img_size=16)
    bigger = build_model("swin_small32", len(names), img_size=16)
    save_run(RunStore(home), tmp_path, base, bigger, names)
    at = page("inference")
    no_exception(at)
    speedup = float({x.label: x.value for x in at.metric}["speedup (paired)"].rstrip("x"))
    assert speedup < 1
    why = texts(at.info)
    assert f"below 1x ({speedup:.2f}x" in why and "overhead-bound" in why
    assert "does not have fewer dense FLOPs" in why  # true here: the "pruned" model is the bigger one
    assert "low-rank" not in why and "zeros" not in why and "still real" not in why  # none applies here
    # the explanation sits with the latency figures: after the speedup and how it was timed, before the images
    order = [el.type for el in flat(at.main)]
    assert order.index("metric") < order.index("caption") < order.index("info") < order.index("radio")
    assert sum(o == "info" for o in order[:order.index("radio")]) == 1


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), (255, 255, 255)).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_errors_name_the_file_and_the_uploader_offers_image_types(home, tmp_path, test_images):
    _, names = test_images
    torch.manual_seed(0)
    base = build_model("swin_pico", len(names), img_size=16)
    save_run(RunStore(home), tmp_path, base, base, names)
    at = page("inference")
    up = at.file_uploader(key="inf_files")
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"} <= set(up.allowed_type)
    assert not any(t in up.allowed_type for t in (".txt", "text/plain", "*/*"))
    up.set_value([("notes.txt", b"not an image at all", "text/plain"),
                  ("scan.png", b"%PDF-1.4 this is a pdf", "image/png"), ("ok.png", _png(), "image/png")]).run()
    no_exception(at)
    errors = texts(at.error)
    assert "notes.txt is not an image Pillow can read (PNG, JPEG" in errors
    assert "scan.png is not an image Pillow can read" in errors
    assert "BytesIO" not in errors and "object at 0x" not in errors
    assert [i.captions for i in at.image] == [["ok.png"]] and len(at.dataframe) == 2  # the good one still predicts
    assert not card_lines(at, "baseline")[0].count(":material/")  # an upload has no true class: no mark
    assert "Top-1 on these test images" not in texts(at.markdown)


def _strip_png(width: int, height: int) -> bytes:
    from test_images_hardening import strip_png

    return strip_png(width, height)


def test_one_bad_and_one_good_upload_show_one_error_and_one_prediction(home, tmp_path, test_images, monkeypatch):
    """Issue 13: a 25,000,000 x 1 PNG is refused by name; a 1000x5 strip beside it still predicts, and its
    thumbnail renders (st.image used to fail on anything wider than 160:1 with "broken data stream")."""
    _, names = test_images
    torch.manual_seed(0)
    base = build_model("swin_pico", len(names), img_size=16)
    save_run(RunStore(home), tmp_path, base, base, names)
    at = page("inference")
    buf = io.BytesIO()
    Image.new("RGB", (1000, 5), (255, 0, 0)).save(buf, format="PNG")
    at.file_uploader(key="inf_files").set_value([("strip.png", _strip_png(25_000_000, 1), "image/png"),
                                                 ("wide.png", buf.getvalue(), "image/png")]).run()
    no_exception(at)
    assert len(at.error) == 1
    assert texts(at.error).startswith("strip.png is 25000000x1 pixels: its long side is 25,000,000 times")
    assert [i.captions for i in at.image] == [["wide.png · 1000x5 px: the models see its centre 5x5 square, as they "
                                               "saw their test images"]]
    assert len(card_lines(at, "baseline")) == 1 and len(at.dataframe) == 2  # one image, both models predicted


def test_the_upload_count_quota_names_what_was_left_out(home, tmp_path, test_images, monkeypatch):
    _, names = test_images
    monkeypatch.setenv("ACCELVIT_UPLOAD_MAX_IMAGES", "1")
    torch.manual_seed(0)
    base = build_model("swin_pico", len(names), img_size=16)
    save_run(RunStore(home), tmp_path, base, base, names)
    at = page("inference")
    at.file_uploader(key="inf_files").set_value([("a.png", _png(), "image/png"), ("b.png", _png(), "image/png")]).run()
    no_exception(at)
    assert "At most 1 images are predicted at a time; 1 more were left out: b.png." in texts(at.error)
    assert [i.captions for i in at.image] == [["a.png"]]
