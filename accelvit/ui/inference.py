"""Inference for the dashboard: checked uploads, saved models, top-k predictions, latency.

A finished run records two model folders as artifacts (see :mod:`accelvit.experiment`):
``baseline`` (the cached baseline, or the checkpoint it started from) and ``model`` (the
pruned, finetuned model). Both load through :func:`accelvit.serialize.load`; images are
prepared with the normalisation the model was trained with (the saved data config, else the
model's own).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
from PIL import Image

from .. import images
from ..data import make_transforms
from ..errors import InputError
from ..images import IMAGE_FORMATS_TEXT, load_image
from ..uploads import UploadQuota, image_batch
from ..serialize import SPEC_FILE, WEIGHTS_FILE

MAX_IMAGE_BYTES = UploadQuota.max_image_bytes   # per uploaded image (ACCELVIT_UPLOAD_MAX_IMAGE_MB)
MAX_IMAGE_PIXELS = 25_000_000                    # 75 MB decoded; a 24 KB PNG can claim 25,000,000 x 1
MAX_ASPECT_RATIO = images.MAX_ASPECT_RATIO       # 500:1; a 1000x5 strip is still predicted
THUMB_SIDE = 320       # a thumbnail's long side at most (the page shows it 160 px wide)
THUMB_ASPECT = 4       # a thumbnail's long side : short side at most (padded), so the browser never gets 0 px
MODEL_LABELS = {"baseline": "baseline", "model": "pruned"}
# What the uploader offers (file name endings; the browser filters by them) and how messages name them.
IMAGE_TYPES = ("png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff")
IMAGE_MIME_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp", "image/tiff")


def read_upload(name: str, data: bytes, max_bytes: int = MAX_IMAGE_BYTES,
                max_pixels: int = MAX_IMAGE_PIXELS, max_aspect: float = MAX_ASPECT_RATIO) -> Image.Image:
    """The uploaded file as an upright 8-bit RGB image; InputError naming the file (its upload name) for anything
    else (:func:`accelvit.images.load_image` decodes it: allowed formats only, pixels and aspect ratio bounded
    from the header; the byte-size and empty checks are the upload's own)."""
    if not data:
        raise InputError(f"{name} is empty; upload a {IMAGE_FORMATS_TEXT} image.")
    if len(data) > max_bytes:
        raise InputError(f"{name} is {len(data) / 2**20:.1f} MB; images of at most {max_bytes / 2**20:.0f} MB are "
                         "accepted. Resize it and upload it again.")
    return load_image(data, max_pixels=max_pixels, name=name, max_aspect=max_aspect)


def read_uploads(files: Sequence[Any], quota: UploadQuota | None = None) -> tuple[list[tuple[str, Image.Image]],
                                                                                   list[str]]:
    """Streamlit ``UploadedFile``s (``name``, ``size``, ``getvalue()``) as ``([(name, image)], [error])``.

    The quota (:func:`accelvit.uploads.image_batch`: how many, how large) is checked before any file is
    read; each file then fails alone, with a message naming it, and the others are still read.
    """
    quota = quota or UploadQuota.from_env()
    keep, errors = image_batch([(f.name, int(f.size)) for f in files], quota)
    out = []
    for i in keep:
        f = files[i]
        try:
            out.append((f.name, read_upload(f.name, f.getvalue(), max_bytes=quota.max_image_bytes)))
        except InputError as exc:
            errors.append(str(exc))
        except Exception as exc:  # one odd file must not cost the others their predictions
            errors.append(f"{f.name} could not be read ({type(exc).__name__}); upload it as a {IMAGE_FORMATS_TEXT} "
                          "image.")
    return out, errors


def thumbnail(img: Image.Image, max_side: int = THUMB_SIDE, max_aspect: float = THUMB_ASPECT) -> Image.Image:
    """A small picture of ``img`` that any browser and ``st.image`` can show.

    Shrunk (never enlarged) to at most ``max_side`` on its long side, every side at least 1 px; an image
    more elongated than ``max_aspect``:1 is centred on a grey canvas of that shape (``st.image`` scales a
    1000x5 strip to 160x0 px and fails with "broken data stream").
    """
    w, h = img.size
    scale = min(1.0, max_side / max(w, h))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    small = img if (tw, th) == (w, h) else img.resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if tw > max_aspect * th:
        cw, ch = tw, max(th, round(tw / max_aspect))
    elif th > max_aspect * tw:
        cw, ch = max(tw, round(th / max_aspect)), th
    else:
        return small
    canvas = Image.new("RGB", (cw, ch), (200, 200, 200))
    canvas.paste(small.convert("RGB"), ((cw - tw) // 2, (ch - th) // 2))
    return canvas


def view_note(img: Image.Image) -> str | None:
    """What the model sees of an elongated picture (the centre square, as for its test images), or None."""
    w, h = img.size
    if max(w, h) <= 2 * min(w, h):
        return None
    m = min(w, h)
    return f"{w}x{h} px: the models see its centre {m}x{m} square, as they saw their test images"


@dataclass
class LoadedModel:
    label: str
    path: str
    model: torch.nn.Module
    doc: dict[str, Any]
    class_names: list[str]
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def params(self) -> int:
        """Number of parameters of the model (zeros included)."""
        return sum(p.numel() for p in self.model.parameters())


def load_model(path: str | Path, label: str = "model") -> LoadedModel:
    """Load a saved model folder for inference (CPU, eval mode)."""
    from ..serialize import load, normalisation

    model, doc = load(path, device="cpu")
    spec = doc.get("model") or {}
    n = int(spec.get("num_classes") or 0)
    names = doc.get("class_names") or [str(i) for i in range(n)]
    mean, std = normalisation(doc)
    mean, std = mean or (0.5, 0.5, 0.5), std or (0.5, 0.5, 0.5)
    size = int(spec.get("img_size") or (doc.get("input_size") or [3, 224, 224])[-1])
    return LoadedModel(label=label, path=str(path), model=model.eval(), doc=doc, class_names=list(names),
                       img_size=size, mean=mean, std=std)


def run_model_paths(run: dict[str, Any]) -> dict[str, str]:
    """``{"baseline": path, "pruned": path}`` of a run's saved models that exist on disk."""
    arts = (run or {}).get("artifacts") or {}
    out = {}
    for name, label in MODEL_LABELS.items():
        p = arts.get(name)
        if p and (Path(p) / SPEC_FILE).exists():
            out[label] = p
    return out


def weights_mtime(path: str | Path) -> float:
    """When a saved model folder's weights were written (a cache key that changes when they do)."""
    return (Path(path) / WEIGHTS_FILE).stat().st_mtime


def preprocess(image: Image.Image, lm: LoadedModel) -> torch.Tensor:
    """``[1, 3, S, S]`` tensor as the model saw its evaluation images."""
    tf = make_transforms(lm.img_size, lm.mean, lm.std, train=False)
    return tf(image).unsqueeze(0)


@torch.inference_mode()
def predict(lm: LoadedModel, image: Image.Image, k: int = 5) -> pd.DataFrame:
    """Top-``k`` classes: ``rank, class, probability`` (probabilities from a softmax)."""
    x = preprocess(image, lm)
    probs = torch.softmax(lm.model(x).float(), dim=1)[0]
    k = min(k, probs.numel())
    top = torch.topk(probs, k)
    names = lm.class_names
    return pd.DataFrame({
        "rank": list(range(1, k + 1)),
        "class": [names[i] if i < len(names) else str(i) for i in top.indices.tolist()],
        "probability": [float(p) for p in top.values.tolist()],
    })


def latency_ms(lm: LoadedModel, reps: int = 10, warmup: int = 2) -> float:
    """Median wall time of one forward pass at batch 1 on the CPU (accelvit.metrics.time_model)."""
    return time_alone(lm, reps=reps, warmup=warmup).median_ms


def time_alone(lm: LoadedModel, reps: int = 10, warmup: int = 2):
    """:class:`accelvit.metrics.LatencyStats` of one forward pass at batch 1 on the CPU."""
    from ..metrics import time_model

    return time_model(lm.model, (3, lm.img_size, lm.img_size), batch_size=1, device="cpu", warmup=warmup, reps=reps)


@dataclass
class Timing:
    """How the page's models were timed and what came out: one figure per model, the same for every image.

    ``ms`` is the median batch-1 latency per model label and ``spread`` its 25th-75th percentile
    range; ``speedup`` is the paired speedup baseline / pruned (None for a lone model). The
    remaining fields are facts about the models that explain a speedup below 1.
    """

    ms: dict[str, float]
    spread: dict[str, tuple[float, float]]
    speedup: float | None
    device: str                          # accelvit.utils.device_description, e.g. "cpu (4 threads, 8 cores)"
    reps: int
    warmup: int
    interleaved: bool
    batch_size: int = 1
    baseline_flops: int | None = None    # dense FLOPs per image (FlopCounterMode, 2 x MACs)
    flop_reduction: float | None = None      # baseline / pruned dense FLOPs
    lowrank_layers: int = 0              # LowRankLinear modules in the pruned model
    zero_fraction: float = 0.0           # share of zeros in the pruned model's linear weights

    def how(self) -> str:
        """One sentence: where and how the figures were measured."""
        if self.interleaved:
            method = (f"median of {self.reps} interleaved repetitions (baseline and pruned alternating, after "
                      f"{self.warmup} warm-up pairs)")
        else:
            method = f"median of {self.reps} repetitions after {self.warmup} warm-up passes"
        return (f"Timed on {self.device} at batch {self.batch_size}: {method}. One forward pass per model, "
                "measured once when this run's models were loaded; it is the same for every image below.")


def linear_facts(model: torch.nn.Module) -> tuple[int, float]:
    """``(LowRankLinear modules, share of zero weights over all nn.Linear layers)`` of a model."""
    from ..layers import LowRankLinear

    lowrank = sum(isinstance(m, LowRankLinear) for m in model.modules())
    total = zeros = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            w = m.weight.detach()
            total += w.numel()
            zeros += w.numel() - int(torch.count_nonzero(w))
    return lowrank, (zeros / total if total else 0.0)


def latencies(models: dict[str, LoadedModel], reps: int = 20, warmup: int = 3) -> Timing:
    """Median batch-1 CPU latency of each model, the paired speedup baseline / pruned, and how it was timed.

    With both a baseline and a pruned model they are timed interleaved by
    :func:`accelvit.metrics.compare`, so machine noise hits both alike; a lone model is timed alone.
    """
    from ..metrics import compare
    from ..utils import device_description

    b, p = models.get("baseline"), models.get("pruned")
    lowrank, zeros = linear_facts(p.model) if p is not None else (0, 0.0)
    if b is not None and p is not None and b.img_size == p.img_size:
        c = compare(b.model, p.model, (3, b.img_size, b.img_size), device="cpu", batch_sizes=(1,), warmup=warmup,
                    reps=reps)
        pt = c.point(1)
        stats = {"baseline": pt.baseline, "pruned": pt.pruned}
        return Timing(ms={k: v.median_ms for k, v in stats.items()},
                      spread={k: (v.p25_ms, v.p75_ms) for k, v in stats.items()}, speedup=pt.paired_speedup,
                      device=c.device_name, reps=reps, warmup=warmup, interleaved=True,
                      baseline_flops=c.baseline_flops, flop_reduction=c.flop_reduction, lowrank_layers=lowrank,
                      zero_fraction=zeros)
    stats = {k: time_alone(v, reps=reps, warmup=warmup) for k, v in models.items()}
    return Timing(ms={k: v.median_ms for k, v in stats.items()},
                  spread={k: (v.p25_ms, v.p75_ms) for k, v in stats.items()}, speedup=None,
                  device=device_description("cpu"), reps=reps, warmup=warmup, interleaved=False,
                  lowrank_layers=lowrank, zero_fraction=zeros)


def explain_speedup(t: Timing) -> str | None:
    """Why the pruned model is not faster here, from what is known about the models and the timing.

    None unless there is a paired speedup below 1. Each reason is stated only when it applies:
    overhead at batch 1, low-rank layers (two matmuls), IHT zeros (dense kernels multiply them),
    overlapping timing spreads (noise).
    """
    if t.speedup is None or t.speedup >= 1.0:
        return None
    on = "a CPU" if t.device.startswith("cpu") else "a GPU" if t.device.startswith(("cuda", "mps")) else t.device
    reasons = []
    small = t.baseline_flops is not None and t.baseline_flops < 1e9
    size = ""
    if t.baseline_flops and t.ms.get("baseline"):
        rate = t.baseline_flops / (t.ms["baseline"] / 1e3) / 1e9
        size = (f" ({t.baseline_flops / 1e6:,.1f} MFLOPs per image for the baseline, run at {rate:.1f} GFLOP/s"
                + (", a small fraction of what the hardware does on large matrices)" if small else ")"))
    work = ("calling each operator (Python, PyTorch dispatch, memory moves) rather than arithmetic" if on == "a CPU"
            else "launching each kernel rather than arithmetic; small kernels do not fill the device")
    if t.flop_reduction is not None and t.flop_reduction > 1.0:
        gain = f"so the pruned model's {t.flop_reduction:.2f}x fewer dense FLOPs barely show up as time"
    else:
        gain = "and the pruned model does not have fewer dense FLOPs to begin with"
    reasons.append(f"At batch {t.batch_size} on {on}, a model {'this small' if small else 'of this size'}{size} is "
                   f"{'mostly' if small else 'partly'} overhead-bound: the time goes to {work}, {gain}.")
    if t.lowrank_layers:
        reasons.append(f"{t.lowrank_layers} linear layer{'s are' if t.lowrank_layers != 1 else ' is'} low-rank: "
                       "two smaller matrices, so two matrix multiplications instead of one, an extra operator call "
                       "per layer that at this size can cost more time than the smaller matrices save.")
    if t.zero_fraction >= 0.01:
        reasons.append(f"{t.zero_fraction:.0%} of the pruned model's linear weights are zeros (IHT sparsity), but the "
                       "dense kernels used here multiply zeros like any other number; only sparse kernels or "
                       "hardware would skip them (the effective FLOPs on the Results page count what that could "
                       "save).")
    (b0, b1), (p0, p1) = t.spread.get("baseline", (0.0, 0.0)), t.spread.get("pruned", (0.0, 0.0))
    if b1 > 0 and p1 > 0 and p0 <= b1 and b0 <= p1:
        reasons.append(f"The middle halves of the timings overlap (baseline {b0:.2f}-{b1:.2f} ms, pruned "
                       f"{p0:.2f}-{p1:.2f} ms), so part of the gap is timing noise.")
    if t.flop_reduction is not None and t.flop_reduction > 1.0:
        reasons.append("The smaller FLOP count is still real; it is likelier to show as time at larger batches or "
                       "inputs, where arithmetic outweighs overhead.")
    return f"Why the speedup is below 1x ({t.speedup:.2f}x, the pruned model ran slower here): " + " ".join(reasons)


# ----------------------------------------------------------------------------- predictions and marks
def top1(top: pd.DataFrame) -> str:
    """The predicted class (rank 1) of a :func:`predict` table."""
    return str(top["class"].iloc[0])


def is_right(top: pd.DataFrame, true: str | None, class_names: list[str]) -> bool | None:
    """Whether the top-1 prediction is the true class; None when that cannot be judged (no true class,
    e.g. an upload, or a true class that is not one of the model's classes)."""
    if true is None or str(true) not in {str(c) for c in class_names}:
        return None
    return top1(top) == str(true)


def mark(right: bool | None) -> str:
    """A Markdown mark (Streamlit material icon in colour, no emoji): right, wrong, or nothing."""
    if right is None:
        return ""
    return ":green[:material/check_circle: right]" if right else ":red[:material/cancel: wrong]"


def tally(verdicts: list[dict[str, bool | None]], labels: list[str]) -> dict[str, tuple[int, int]]:
    """``{label: (right, judged)}`` over the images: how many each model got right out of those judged."""
    out = {}
    for label in labels:
        judged = [v[label] for v in verdicts if v.get(label) is not None]
        out[label] = (sum(bool(x) for x in judged), len(judged))
    return out


def dataset_examples(data_config: dict[str, Any], n: int = 8, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """``n`` random test images of a run's data set as ``(PIL image, true class)``.

    Loads the data set the run used (its ``data`` config section) and un-normalises the
    tensors of its test split, so the pictures are exactly what the models were evaluated on.
    """
    from ..data import DataConfig, load_data

    d = dict(data_config or {})
    d.update(num_workers=0, download=False, subset=d.get("subset") or 1)
    for k in ("mean", "std"):
        if d.get(k) is not None:
            d[k] = tuple(d[k])
    bundle = load_data(DataConfig.from_dict(d))
    ds = bundle.test.dataset if len(bundle.test.dataset) else bundle.val.dataset
    if len(ds) == 0:
        raise InputError("This run's data set has no test images.")
    idx = random.Random(seed).sample(range(len(ds)), min(n, len(ds)))
    mean = torch.tensor(bundle.mean).view(3, 1, 1)
    std = torch.tensor(bundle.std).view(3, 1, 1)
    out = []
    for i in idx:
        x, y = ds[i]
        arr = ((x * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        out.append((Image.fromarray(arr, "RGB"), bundle.class_names[int(y)]))
    return out


__all__ = ["IMAGE_MIME_TYPES", "IMAGE_TYPES", "MAX_IMAGE_BYTES", "InputError", "LoadedModel", "Timing",
           "dataset_examples", "explain_speedup", "is_right", "latencies", "latency_ms", "linear_facts", "load_model",
           "mark", "predict", "preprocess", "read_upload", "read_uploads", "run_model_paths", "tally", "thumbnail",
           "time_alone", "top1", "view_note", "weights_mtime"]
