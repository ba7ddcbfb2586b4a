"""The one image decoder: an allow-list of formats, bounds checked on the header, honest 8-bit RGB.

Every image accelvit reads from a file it did not write (an upload on the Inference page, an
image of a ``folder`` data set) goes through :func:`load_image`:

- **Formats**: only PNG, JPEG, WebP, BMP, GIF and TIFF (and PPM/PGM in data set folders, the
  endings ``ImageFolder`` lists) are even identified; Pillow is told so with
  ``Image.open(formats=...)``, so an EPS or PDF never reaches Ghostscript, whatever its name.
- **Bounds, before any pixel is decoded**: at most ``max_pixels`` pixels and an aspect ratio of
  at most ``max_aspect`` to 1, read from the header. A 24 KB PNG of 25,000,000 x 1 pixels is
  refused here instead of costing gigabytes later.
- **Upright and 8-bit**: EXIF orientation is applied; 16-bit images are scaled by their
  format's range (0-65535) and floating-point images by theirs (0-1 when they lie in it, else
  their own minimum-maximum), instead of Pillow's clipping to 0-255 (16-bit went white,
  float black).

:class:`SquareResize` is the bounded form of ``Resize(size)`` + ``CenterCrop(size)``: the centre
square resized straight to ``size`` x ``size``, so no intermediate larger than the input exists
(the old pair scaled the short side up first: a 25,000,000 x 1 strip became 5.6 billion pixels).

:func:`check_image_file` is the cheap pre-training scan of one data set file (header, bounds,
``verify()``, and a reduced-size decode for JPEG, whose truncation only shows when decoding).
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

log = logging.getLogger(__name__)

#: Pillow format names an upload may have (``Image.open(formats=...)``).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
#: Formats of a data set folder's images: the upload formats and PPM/PGM (``ImageFolder``'s endings).
FOLDER_IMAGE_FORMATS = (*IMAGE_FORMATS, "PPM")
#: The formats an image upload may have, as messages name them.
IMAGE_FORMATS_TEXT = "PNG, JPEG, BMP, GIF, WebP or TIFF"
#: At most this many pixels per image (a 40-megapixel photo decodes to 120 MB of RGB).
MAX_IMAGE_PIXELS = 40_000_000
#: At most this long side : short side. Photos, panoramas and scanned receipts stay below 50:1;
#: a 500:1 strip is still an image (1000x2), a 25,000,000:1 "image" is data.
MAX_ASPECT_RATIO = 500

_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, ZeroDivisionError)


def _reason(exc: BaseException) -> str:
    """Pillow's own words for a damaged file, without the ``<_io.BytesIO object at 0x...>`` it may name."""
    return _OBJECT_REPR.sub("", str(exc)).strip(" :") or type(exc).__name__


def bounds_problem(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS,
                   max_aspect: float = MAX_ASPECT_RATIO) -> str | None:
    """What is wrong with an image of this size ("is 25000000x1 pixels, ..."), or None when it is accepted."""
    w, h = width, height
    if w < 1 or h < 1:
        return f"is {w}x{h} pixels: it has no pixels to look at"
    if w * h > max_pixels:
        return f"is {w}x{h} pixels ({w * h:,}); at most {max_pixels:,} pixels are accepted"
    if max(w, h) > max_aspect * min(w, h):
        return (f"is {w}x{h} pixels: its long side is {max(w, h) / min(w, h):,.0f} times its short side, and at "
                f"most {max_aspect:,.0f}:1 is accepted")
    return None


def _check_bounds(img: Image.Image, name: str, max_pixels: int, max_aspect: float) -> None:
    problem = bounds_problem(img.width, img.height, max_pixels, max_aspect)
    if problem:
        raise InputError(f"{name} {problem}. Crop or resize it and upload it again.")


def _open(source, name: str, formats: Sequence[str]) -> Image.Image:
    try:
        return Image.open(source, formats=list(formats))
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image Pillow can read ({IMAGE_FORMATS_TEXT}); upload one of those "
                         "instead.") from None


def load_image(data: bytes | str | Path, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None,
               max_aspect: float = MAX_ASPECT_RATIO, formats: Sequence[str] = IMAGE_FORMATS,
               verify: bool = True) -> Image.Image:
    """Open an image from bytes or a path: checked, decoded, upright, as 8-bit RGB.

    Raises InputError naming the file (``name``, e.g. an upload's name; else the path, or "The
    file" for bytes) and what is wrong: not an allowed format, too many pixels, too elongated,
    or damaged. Format and bounds come from the header, before any pixel is decoded; ``verify``
    adds Pillow's structural check first (a data set's loader skips it: its files were checked
    before training, see :func:`check_image_file`). Pillow
    names an in-memory file by its repr (``<_io.BytesIO object at 0x...>``); that never reaches
    a message.
    """
    in_memory = isinstance(data, (bytes, bytearray))
    name = name or ("The file" if in_memory else str(data))

    def source():
        return io.BytesIO(data) if in_memory else str(data)

    fmt = None
    try:
        img = _open(source(), name, formats)  # reads the header only
        fmt = img.format
        _check_bounds(img, name, max_pixels, max_aspect)
        if verify:
            img.verify()  # leaves the image unusable: open it again to decode
            img.close()
            img = _open(source(), name, formats)
        img.load()
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"{name} has more than {max_pixels:,} pixels, the most accepted here; resize it and "
                         "upload it again.") from None
    except _DECODE_ERRORS as exc:
        what = f"{name} looks like a {fmt} image but cannot be decoded" if fmt else f"{name} cannot be decoded"
        raise InputError(f"{what} ({_reason(exc)}); it may be damaged or cut short. Export it again and "
                         "upload the new file.") from None
    return to_rgb8(upright(img))


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (a damaged EXIF block leaves it as it is)."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception as exc:  # EXIF is optional metadata: a broken block must not refuse the picture
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
    return img


def _to_uint8(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    a = np.nan_to_num(a.astype(np.float32, copy=False), nan=lo, posinf=hi, neginf=lo)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((a - lo) * scale + 0.5, 0, 255).astype(np.uint8)


def to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB by the image's real range (Pillow's own ``convert`` clips 16-bit and float to 0-255).

    16-bit integer modes are scaled by 0-65535; 32-bit integer ``I`` by 0-255 or 0-65535 when its
    values fit, else its min-max; float ``F`` by 0-1 when its finite values lie in it, else its
    finite min-max. Anything else goes through Pillow's ``convert("RGB")``.
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        a = np.asarray(img)
        grey = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode in ("I", "F"):
        a = np.asarray(img)
        finite = a[np.isfinite(a)] if img.mode == "F" else a
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0
        elif img.mode == "I" and lo >= 0 and hi <= 255:
            lo, hi = 0.0, 255.0
        elif img.mode == "I" and lo >= 0 and hi <= 65535:
            lo, hi = 0.0, 65535.0
        return Image.fromarray(_to_uint8(a, lo, hi), "L").convert("RGB")
    return img.convert("RGB")


class SquareResize:
    """The centre square of a PIL image resized to ``size`` x ``size`` in one step.

    What ``Resize(size)`` + ``CenterCrop(size)`` give (the short side scaled to ``size``, the
    middle kept), computed from the crop box so nothing larger than the input is ever made.
    """

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        m = min(w, h)
        box = ((w - m) / 2, (h - m) / 2, (w + m) / 2, (h + m) / 2)
        return img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)

    def __repr__(self) -> str:
        return f"SquareResize(size={self.size})"


def check_image_file(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, max_aspect: float = MAX_ASPECT_RATIO,
                     formats: Sequence[str] = FOLDER_IMAGE_FORMATS) -> str | None:
    """Why a data set image cannot be used (a sentence without the path), or None when it can.

    Cheap: the header (format, bounds), Pillow's ``verify()`` (PNG: every chunk's CRC through
    IEND), and for JPEG a decode at 1/8 scale (``draft``), since a JPEG cut short has a good
    header and only fails when decoded. Other formats (rare in data sets) are decoded in full.
    """
    try:
        with Image.open(str(path), formats=list(formats)) as img:  # reads the header only
            problem = bounds_problem(img.width, img.height, max_pixels, max_aspect)
            if problem:
                return problem
            if img.format == "PNG":
                img.verify()
            else:
                if img.format == "JPEG":
                    img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
    except UnidentifiedImageError:
        return f"is not an image in an accepted format ({', '.join(formats)})"
    except Image.DecompressionBombError:
        return f"has more than {max_pixels:,} pixels"
    except _DECODE_ERRORS as exc:
        return f"cannot be decoded ({_reason(exc)}); it may be damaged or cut short"
    return None


def find_bad_images(paths: Iterable[str | Path], progress: Callable[[int, int], None] | None = None,
                    total: int | None = None, **limits) -> dict[str, str]:
    """``{path: why}`` for every file of ``paths`` that :func:`check_image_file` refuses.

    ``progress(done, total)`` is told every 1,000 files.
    """
    bad: dict[str, str] = {}
    for i, p in enumerate(paths):
        why = check_image_file(p, **limits)
        if why:
            bad[str(p)] = why
        if progress is not None and (i + 1) % 1000 == 0:
            progress(i + 1, total or 0)
    return bad
