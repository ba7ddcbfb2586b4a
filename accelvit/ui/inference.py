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
from typing import Any

import pandas as pd
import torch
from PIL import Image

from ..data import load_image, make_transforms
from ..errors import InputError
from ..serialize import SPEC_FILE, WEIGHTS_FILE

MAX_IMAGE_BYTES = 20 * 1024 * 1024   # per uploaded image
MAX_IMAGE_PIXELS = 25_000_000
MODEL_LABELS = {"baseline": "baseline", "model": "pruned"}


def read_upload(name: str, data: bytes, max_bytes: int = MAX_IMAGE_BYTES,
                max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """The uploaded file as an RGB image; InputError (naming the file) for anything else."""
    if not data:
        raise InputError(f"{name} is empty; upload a PNG, JPEG, BMP or WebP image.")
    if len(data) > max_bytes:
        raise InputError(f"{name} is {len(data) / 1e6:.1f} MB; images of at most {max_bytes / 1e6:.0f} MB are "
                         "accepted. Resize it and upload it again.")
    try:
        return load_image(bytes(data), max_pixels=max_pixels)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None


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
    from ..metrics import time_model

    return float(time_model(lm.model, (3, lm.img_size, lm.img_size), batch_size=1, device="cpu",
                            warmup=warmup, reps=reps).median_ms)


def latencies(models: dict[str, LoadedModel], reps: int = 20, warmup: int = 3) -> tuple[dict[str, float], float | None]:
    """Median batch-1 CPU latency (ms) of each model and the paired speedup baseline / pruned.

    With both a baseline and a pruned model they are timed interleaved by
    :func:`accelvit.metrics.compare`, so machine noise hits both alike; a lone model is timed alone.
    """
    from ..metrics import compare

    b, p = models.get("baseline"), models.get("pruned")
    if b is not None and p is not None and b.img_size == p.img_size:
        c = compare(b.model, p.model, (3, b.img_size, b.img_size), device="cpu", batch_sizes=(1,), warmup=warmup,
                    reps=reps)
        pt = c.point(1)
        return {"baseline": pt.baseline.median_ms, "pruned": pt.pruned.median_ms}, pt.paired_speedup
    return {k: latency_ms(v, reps=reps, warmup=warmup) for k, v in models.items()}, None


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


__all__ = ["MAX_IMAGE_BYTES", "InputError", "LoadedModel", "dataset_examples", "latencies", "latency_ms",
           "load_model", "predict", "preprocess", "read_upload", "run_model_paths", "weights_mtime"]
