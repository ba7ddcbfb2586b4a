"""Issue 13, images: every finding about uploads, decoding and image-folder data sets, reproduced as a test.

- a 24 KB PNG of 25,000,000 x 1 pixels is refused from its header, before any pixel is decoded;
- a 1000x5 strip predicts, and its thumbnail is safe for ``st.image``; nothing larger than the
  input is made on the way to the model (the old transform scaled the short side up first);
- EPS never reaches Ghostscript, whatever the file is called;
- 16-bit PNGs (went white) and float TIFFs (went black) keep their content; EXIF orientation applies;
- upload quotas refuse with a clear message and clean up the oldest / aged files;
- a one-class folder, a 2-image folder and a truncated JPEG are found before training; the
  truncated JPEG is named, or skipped and counted when asked.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from accelvit import serialize
from accelvit.cli import main
from accelvit.data import DataConfig, load_data
from accelvit.errors import ConfigError, DataError, InputError
from accelvit.images import SquareResize, check_image_file, load_image, to_rgb8
from accelvit.models import build_model
from accelvit.ui import inference
from accelvit.uploads import UploadQuota, clean_uploads, image_batch, store_upload


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def strip_png(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of ``width`` x ``height`` black pixels, written row by row without Pillow."""
    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def no_decoding(monkeypatch):
    """Any pixel decoding fails the test: refusals must come from the header."""
    def refuse(self, *a, **k):
        raise AssertionError(f"decoded a {self.size} {self.format} image")
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("m") / "model"
    serialize.save(build_model("swin_pico", 10, img_size=16), out, class_names=[f"c{i}" for i in range(10)],
                   meta={"data": {"dataset": "digits", "mean": [0.5] * 3, "std": [0.5] * 3}})
    return inference.load_model(out, "pruned")


# ----------------------------------------------------------------------------- bounds
def test_a_25_megapixel_strip_is_refused_from_its_header(no_decoding):
    data = strip_png(25_000_000, 1)
    assert len(data) < 60_000  # tiny on the wire; the old path needed ~19 GB to predict it
    with pytest.raises(InputError, match=r"^strip\.png is 25000000x1 pixels: its long side is 25,000,000 times its "
                                         r"short side, and at most 500:1 is accepted"):
        inference.read_upload("strip.png", data)
    # the same file in a data set folder: the scan names the problem without decoding
    with pytest.raises(InputError, match="25000000x1"):
        load_image(data, name="x.png")


def test_pixels_are_bounded_before_decoding(no_decoding):
    with pytest.raises(InputError, match=r"^big\.png is 6000x5000 pixels \(30,000,000\); at most 25,000,000"):
        inference.read_upload("big.png", strip_png(6000, 5000))


def test_a_1000x5_strip_predicts_with_bounded_memory_and_a_safe_thumbnail(saved_model, monkeypatch):
    rgb = np.zeros((5, 1000, 3), dtype=np.uint8)
    rgb[:, :500] = (255, 0, 0)
    img = inference.read_upload("strip.png", encode(Image.fromarray(rgb), "PNG"))
    assert img.size == (1000, 5)
    made = []
    real_resize = Image.Image.resize

    def resize(self, size, *a, **k):
        made.append(size)
        return real_resize(self, size, *a, **k)

    monkeypatch.setattr(Image.Image, "resize", resize)
    top = inference.predict(saved_model, img)
    assert len(top) == 5 and top["probability"].between(0, 1).all() and top["probability"].is_monotonic_decreasing
    # the only image made on the way to the model is the 16x16 input (the old Resize(16) made 3200x16)
    assert made and max(w * h for w, h in made) <= 16 * 16
    thumb = inference.thumbnail(img)
    assert thumb.size == (320, 80) and thumb.mode == "RGB"
    # st.image(width=160) scales it to 160 x 40: never to 0 px high (the "broken data stream" crash)
    assert int(thumb.height * 160 / thumb.width) >= 1
    assert "centre 5x5 square" in inference.view_note(img)
    tall = inference.thumbnail(Image.new("RGB", (3, 1400)))
    assert max(tall.size) <= inference.THUMB_SIDE and tall.height <= 4 * tall.width
    assert inference.thumbnail(Image.new("RGB", (40, 30))).size == (40, 30)  # small and square-ish: as it is


def test_square_resize_is_resize_then_centre_crop():
    from torchvision import transforms as T

    rng = np.random.default_rng(0)
    for w, h in ((64, 48), (48, 64), (32, 32), (30, 90)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        old = np.asarray(T.CenterCrop(24)(T.Resize(24)(img)), dtype=np.float32)
        new = np.asarray(SquareResize(24)(img), dtype=np.float32)
        assert new.shape == old.shape == (24, 24, 3)
        if w == h:
            assert np.array_equal(new, old)
        else:  # the same picture; at most sub-pixel differences at the crop's edges
            assert np.abs(new - old).mean() < 12, (w, h, np.abs(new - old).mean())


# ----------------------------------------------------------------------------- formats
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")


@pytest.mark.parametrize("data", [EPS, b"\xc5\xd0\xd3\xc6" + struct.pack("<6I", 30, len(EPS), 0, 0, 0, 0) + EPS,
                                  b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"],
                         ids=["eps", "dos-eps", "pdf"])
def test_postscript_and_pdf_are_refused_by_format(data, monkeypatch, tmp_path):
    from PIL import EpsImagePlugin

    def ghostscript(*a, **k):
        raise AssertionError("Ghostscript was reached")
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    if data.startswith(b"%!"):
        assert Image.open(io.BytesIO(data)).format == "EPS"  # what Pillow alone would have opened
    with pytest.raises(InputError, match=r"^photo\.png is not an image Pillow can read \(PNG, JPEG"):
        inference.read_upload("photo.png", data)
    (tmp_path / "a.jpg").write_bytes(data)
    assert "not an image in an accepted format" in check_image_file(tmp_path / "a.jpg")


# ----------------------------------------------------------------------------- colour depth and orientation
def test_16_bit_png_keeps_its_gradient():
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)[None, :].repeat(4, 0)
    img = load_image(encode(Image.fromarray(ramp), "PNG"))
    grey = np.asarray(img)[0, :, 0].astype(int)
    assert img.mode == "RGB" and grey[0] == 0 and grey[-1] == 255
    assert np.all(np.diff(grey) >= 0) and np.abs(grey - np.arange(256)).max() <= 1  # a ramp, not all white
    assert (grey == 255).sum() <= 2


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-3.0, 12.0)])
def test_float_tiff_keeps_its_gradient(lo, hi):
    ramp = np.linspace(lo, hi, 256, dtype=np.float32)[None, :].repeat(4, 0)
    data = encode(Image.fromarray(ramp, "F"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    grey = np.asarray(load_image(data))[0, :, 0].astype(int)
    assert grey[0] == 0 and grey[-1] == 255 and np.all(np.diff(grey) >= 0)  # a ramp, not all black
    assert len(set(grey.tolist())) > 200


def test_to_rgb8_handles_nan_and_flat_images():
    a = np.array([[np.nan, 0.5, np.inf]], dtype=np.float32)
    assert np.asarray(to_rgb8(Image.fromarray(a, "F")))[0, :, 0].tolist() == [0, 128, 255]
    assert np.asarray(to_rgb8(Image.fromarray(np.full((2, 2), 7.0, np.float32), "F"))).max() <= 255


def test_exif_rotated_jpeg_arrives_upright():
    rgb = np.zeros((20, 40, 3), dtype=np.uint8)  # stored 40 wide, 20 high: left red, right blue
    rgb[:, :20] = (255, 0, 0)
    rgb[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img = inference.read_upload("phone.jpg", encode(Image.fromarray(rgb), "JPEG", exif=exif, quality=95))
    assert img.size == (20, 40)  # upright: taller than wide
    top, bottom = np.asarray(img)[2, 10], np.asarray(img)[-3, 10]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # red above blue


# ----------------------------------------------------------------------------- upload quota
def test_stored_uploads_are_capped_cleaned_oldest_first_and_refused_clearly(tmp_path):
    q = UploadQuota(max_bytes=1000, max_files=3, max_age_s=86_400, min_age_s=300)
    t0 = 1_000_000.0
    a = store_upload("a.safetensors", b"a" * 300, tmp_path, q, now=t0)
    b = store_upload("b.safetensors", b"b" * 300, tmp_path, q, now=t0 + 100)
    assert a.stat().st_mtime == t0 and b.name.endswith("-b.safetensors")
    # the same upload again is one file, its age started over
    assert store_upload("a.safetensors", b"a" * 300, tmp_path, q, now=t0 + 200) == a
    assert a.stat().st_mtime == t0 + 200
    # 300 + 300 + 500 > 1000: the oldest (b, now that a was renewed; 300 s old) makes room
    c = store_upload("c.safetensors", b"c" * 500, tmp_path, q, now=t0 + 400)
    assert a.exists() and c.exists() and not b.exists()
    # the oldest left (a) is 210 s old, younger than min_age: refused, nothing deleted, the message says what to do
    with pytest.raises(InputError) as info:
        store_upload("d.safetensors", b"d" * 400, tmp_path, q, now=t0 + 410)
    msg = str(info.value)
    assert msg.startswith("d.safetensors was not stored") and "at most 3 files" in msg and "ACCELVIT_UPLOADS_MAX_MB" \
        in msg and "queued runs may still need them" in msg
    assert a.exists() and c.exists()
    with pytest.raises(InputError, match=r"^huge\.bin is 0\.0 MB; the uploads folder keeps at most 0\.0 MB in all"):
        store_upload("huge.bin", b"x" * 1001, tmp_path, q, now=t0 + 420)
    # a day later both are gone by age, and a new upload fits
    assert sorted(p.name for p in clean_uploads(tmp_path, q, now=t0 + 200 + 86_401)) == [a.name]
    assert store_upload("d.safetensors", b"d" * 400, tmp_path, q, now=t0 + 400 + 86_401).exists()
    assert not c.exists()


def test_weights_uploads_from_the_form_go_through_the_quota(tmp_path, monkeypatch):
    from accelvit.ui import forms

    monkeypatch.setenv("ACCELVIT_UPLOADS_MAX_FILES", "1")
    forms.save_weights_upload("one.safetensors", b"1", tmp_path)
    with pytest.raises(InputError, match="at most 1 files"):
        forms.save_weights_upload("two.safetensors", b"2", tmp_path)


def test_quota_from_env_and_image_batches():
    q = UploadQuota.from_env({"ACCELVIT_UPLOADS_MAX_MB": "10", "ACCELVIT_UPLOAD_MAX_IMAGES": "2",
                              "ACCELVIT_UPLOADS_MAX_AGE_DAYS": "0.5"})
    assert q.max_bytes == 10 * 2**20 and q.max_images == 2 and q.max_age_s == 43_200
    for bad in ("ten", "-1", "0", "nan"):
        with pytest.raises(ConfigError, match="ACCELVIT_UPLOAD_MAX_IMAGES"):
            UploadQuota.from_env({"ACCELVIT_UPLOAD_MAX_IMAGES": bad})
    keep, errors = image_batch([("a.png", 10), ("b.png", 30 * 2**20), ("c.png", 10), ("d.png", 10)], q)
    assert keep == [0, 2]
    assert errors[0].startswith("b.png is 30 MB; images of at most 20 MB are accepted")
    assert errors[1] == ("At most 2 images are predicted at a time; 1 more were left out: d.png. Remove some and add "
                         "these in another batch.")


# ----------------------------------------------------------------------------- image-folder data sets
def _folder(root: Path, classes=("cat", "dog"), n=6, fmt="jpg") -> None:
    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / c / f"{i}.{fmt}")


def test_one_class_folder_is_refused_before_training(tmp_path, capsys):
    _folder(tmp_path, classes=("cat",), n=10)
    with pytest.raises(DataError, match=r"has 1 class \(cat\); a classifier needs at least 2"):
        load_data(DataConfig(dataset="folder", root=str(tmp_path), img_size=16))
    rc = main(["train", "--dataset", "folder", "--data-dir", str(tmp_path), "--model", "swin_pico", "--epochs", "1",
               "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert rc != 0 and "needs at least 2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_two_image_folder_is_refused_before_training(tmp_path, capsys):
    _folder(tmp_path, n=1)
    with pytest.raises(DataError, match=r"too small to split: the val and test splits are empty \(2 train, 0 val, "
                                        r"0 test images\)"):
        load_data(DataConfig(dataset="folder", root=str(tmp_path), img_size=16))
    rc = main(["train", "--dataset", "folder", "--data-dir", str(tmp_path), "--model", "swin_pico", "--epochs", "1",
               "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert rc != 0 and "too small to split" in capsys.readouterr().err  # was: NaN metrics and exit 0


def test_truncated_jpeg_is_named_before_training_or_skipped_and_counted(tmp_path):
    _folder(tmp_path, n=10)
    cut = tmp_path / "dog" / "3.jpg"
    cut.write_bytes(cut.read_bytes()[:-200])
    (tmp_path / "cat" / "9.jpg").write_bytes(EPS)  # an EPS under a JPEG name
    Image.open(cut).close()  # its header is fine: only decoding finds it
    cfg = DataConfig(dataset="folder", root=str(tmp_path), img_size=16, batch_size=4)
    with pytest.raises(DataError) as info:
        load_data(cfg)
    msg = str(info.value)
    assert msg.startswith(f"2 of the 20 images in {tmp_path} cannot be used: ")
    assert "dog/3.jpg cannot be decoded (image file is truncated" in msg
    assert "cat/9.jpg is not an image in an accepted format" in msg and "--on-bad-image skip" in msg

    b = load_data(DataConfig(dataset="folder", root=str(tmp_path), img_size=16, batch_size=4, on_bad_image="skip"))
    assert b.split["bad_images"]["skipped"] == 2 and b.split["bad_images"]["checked"] == 20
    assert any(f.startswith("dog/3.jpg cannot be decoded") for f in b.split["bad_images"]["files"])
    assert b.split["train"] + b.split["val"] + b.split["test"] == 18
    for loader in (b.train, b.val, b.test):  # every remaining image loads
        for x, _ in loader:
            assert torch.isfinite(x).all()


def test_on_bad_image_is_validated_and_kept_out_of_old_configs():
    with pytest.raises(ConfigError, match="on_bad_image: must be one of error, skip"):
        DataConfig(on_bad_image="ignore").validate()
    assert "on_bad_image" not in DataConfig().to_dict()  # baseline cache keys of earlier runs stay valid
    d = DataConfig(on_bad_image="skip").to_dict()
    assert d["on_bad_image"] == "skip" and DataConfig.from_dict(d).on_bad_image == "skip"


def test_a_bad_image_that_slips_past_the_scan_is_named_while_loading(tmp_path):
    _folder(tmp_path, n=10, fmt="png")
    b = load_data(DataConfig(dataset="folder", root=str(tmp_path), img_size=16, batch_size=4, augment=False))
    victim = Path(b.test.dataset.base.samples[b.test.dataset.indices[0]][0])
    victim.write_bytes(victim.read_bytes()[:40])  # damaged after the check
    with pytest.raises(DataError) as info:
        next(iter(b.test))
    assert str(info.value).startswith(f"{victim} ") and "--on-bad-image skip" in str(info.value)
