"""The Experiment form without Streamlit: defaults, config building, validation by field (data
files checked by :func:`accelvit.data.missing_data_files`), uploaded weights, the quick demo,
and the cost estimate before launching.

The page keeps its widget values in a flat dict keyed by the config field each one sets
(``"data.img_size"``, ``"train.lr"``, ``"prune.head_ratio"``...). :func:`validate_form`
turns that dict into an :class:`~accelvit.experiment.ExperimentConfig` (or a
:class:`~accelvit.experiment.SweepConfig`) plus ``{field: message}`` errors, where ``field`` is
the :class:`~accelvit.errors.ConfigError` field, so the page shows each message under the
widget that set it (:func:`slot_of`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import DataConfig, missing_data_files
from ..distill import DistillConfig
from ..errors import AccelvitError, ConfigError, InputError
from ..experiment.config import FINETUNE_DEFAULTS, default_finetune
from ..fileio import atomic_write_bytes
from ..paths import uploads_dir
from ..prune.config import PruneConfig
from ..serialize import SPEC_FILE, WEIGHTS_FILE
from ..train import TrainConfig

# ----------------------------------------------------------------------------- choices
DATASET_LABELS = {
    "digits": "digits (embedded, offline)",
    "cifar10": "CIFAR-10",
    "caltech101": "Caltech-101",
    "folder": "image folder",
}
MODEL_SOURCES = {
    "scratch": "scratch config (trained here)",
    "timm": "timm Swin (pretrained or your weights)",
    "checkpoint": "saved model folder (no training)",
}
TIMM_WEIGHTS = {
    "pretrained": "pretrained from the Hugging Face hub (needs network)",
    "upload": "upload a weights file (.safetensors / .pth)",
    "random": "random initialisation",
}
SVD_MODES = {"off": "off", "rank": "rank ratio", "energy": "energy"}
SWEEP_KEYS = ("head_ratio", "mlp_ratio", "rank_ratio", "sparsity", "target_flops")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
MAX_WEIGHTS_BYTES = 2 * 1024**3

#: The Experiment page's defaults: swin_micro at 32 px, 20 epochs on digits without random-crop
#: augmentation (96.7% baseline test top-1 measured; with augmentation only ~89% after 20
#: epochs), pruned by half the heads, SVD keeping half the weights and 50% IHT sparsity.
DEFAULTS: dict[str, Any] = {
    "name": "",
    "data.dataset": "digits",
    "data.root": "",
    "data.download": False,
    "data.img_size": 32,
    "data.batch_size": 64,
    "data.subset": 0,
    "data.augment": False,
    "model_source": "scratch",
    "model": "swin_micro",
    "timm_model": "swin_tiny_patch4_window7_224",
    "timm_weights": "pretrained",
    "weights_path": None,
    "baseline_checkpoint": "",
    "train.epochs": 20,
    "train.lr": 2e-3,
    "finetune.epochs": FINETUNE_DEFAULTS["epochs"],
    "finetune.lr": FINETUNE_DEFAULTS["lr"],
    "device": "auto",
    "prune.head_ratio": 0.5,
    "prune.head_criterion": "taylor",
    "prune.mlp_ratio": 0.0,
    "prune.mlp_criterion": "taylor",
    "svd_mode": "rank",
    "prune.rank_ratio": 0.5,
    "prune.energy": 0.9,
    "prune.activation_aware": False,
    "prune.sparsity": 0.5,
    "prune.target_flops": 0.0,
    "prune.iht_interval": 16,
    "prune.iht_ramp_frac": PruneConfig.iht_ramp_frac,
    "prune.target_rule": PruneConfig.target_rule,
    "prune.prune_steps": PruneConfig.prune_steps,
    "distill.alpha": DistillConfig.alpha,
    "distill.temperature": DistillConfig.temperature,
    "control": False,
    "measure_latency": True,
    "seed": 0,
    "sweep": False,
    **{f"sweep.{k}": "" for k in SWEEP_KEYS},
}

#: The one-click demo: the same recipe at a tiny scale (swin_micro at 16 px, 6 + 2 epochs),
#: about half a minute on two CPU cores.
QUICK_DEMO: dict[str, Any] = {
    "name": "quick demo",
    "data": {"dataset": "digits", "img_size": 16, "batch_size": 32, "augment": False},
    "model": "swin_micro",
    "train": {"epochs": 6, "lr": 2e-3},
    "finetune": {"epochs": 2},  # lr and warm-up: the one finetune default
    "prune": {"head_ratio": 0.5, "rank_ratio": 0.5, "sparsity": 0.5},
    "device": "auto",
}


def quick_demo_config() -> Any:
    from ..experiment import ExperimentConfig

    return ExperimentConfig.from_dict(copy.deepcopy(QUICK_DEMO)).validate()


# ----------------------------------------------------------------------------- building
@dataclass
class FormResult:
    """What the form describes: a config or a sweep (None when invalid) and errors by field."""

    config: Any = None
    sweep: Any = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors and self.config is not None


def _int_or_none(v: Any) -> int | None:
    if v in (None, "", 0):
        return None
    return int(v)


def model_name(values: dict[str, Any]) -> str:
    src = values.get("model_source", "scratch")
    return values.get("timm_model") if src == "timm" else values.get("model")


def build_config(values: dict[str, Any]) -> Any:
    """The ExperimentConfig the widget values describe (not validated)."""
    from ..experiment import ExperimentConfig

    v = {**DEFAULTS, **values}
    src = v["model_source"]
    dataset = v["data.dataset"]
    data = DataConfig(
        dataset=dataset, root=(str(v["data.root"]).strip() or None) if dataset != "digits" else None,
        img_size=int(v["data.img_size"]), batch_size=int(v["data.batch_size"]),
        subset=_int_or_none(v["data.subset"]), augment=bool(v["data.augment"]),
        download=bool(v["data.download"]) and dataset in ("cifar10", "caltech101"))
    mode = v["svd_mode"]
    prune = PruneConfig(
        head_ratio=float(v["prune.head_ratio"]), head_criterion=v["prune.head_criterion"],
        mlp_ratio=float(v["prune.mlp_ratio"]), mlp_criterion=v["prune.mlp_criterion"],
        rank_ratio=float(v["prune.rank_ratio"]) if mode == "rank" else None,
        energy=float(v["prune.energy"]) if mode == "energy" else None,
        activation_aware=bool(v["prune.activation_aware"]),
        sparsity=float(v["prune.sparsity"]), iht_interval=int(v["prune.iht_interval"]),
        iht_ramp_frac=float(v["prune.iht_ramp_frac"]),
        target_flops=float(v["prune.target_flops"]) or None,  # 0 = off: use the ratios as given
        target_rule=str(v["prune.target_rule"]), prune_steps=int(v["prune.prune_steps"]))
    train = TrainConfig(epochs=int(v["train.epochs"]), lr=float(v["train.lr"]))
    finetune = default_finetune(epochs=int(v["finetune.epochs"]), lr=float(v["finetune.lr"]))
    cfg = ExperimentConfig(
        name=str(v["name"] or "").strip(), data=data, model=str(model_name(v) or ""), train=train,
        finetune=finetune, prune=prune, device=str(v["device"]), seed=int(v["seed"]),
        distill=DistillConfig(alpha=float(v["distill.alpha"]), temperature=float(v["distill.temperature"])),
        measure_latency=bool(v["measure_latency"]), control=bool(v["control"]))
    if src == "timm":
        cfg.pretrained = v["timm_weights"] == "pretrained"
        cfg.weights_path = v["weights_path"] if v["timm_weights"] == "upload" else None
    elif src == "checkpoint":
        cfg.baseline_checkpoint = str(v["baseline_checkpoint"] or "").strip() or None
    return cfg


def parse_values(text: str, key: str) -> list[float | None]:
    """``"0.25, 0.5 0.75"`` -> ``[0.25, 0.5, 0.75]``; ``none``/``off`` allowed for rank_ratio."""
    items = [t for t in re.split(r"[,;\s]+", str(text or "").strip()) if t]
    out: list[float | None] = []
    for t in items:
        if t.lower() in ("none", "off", "null") and key == "rank_ratio":
            out.append(None)
            continue
        try:
            out.append(float(t))
        except ValueError:
            raise ConfigError(f"sweep.{key}", f"{t!r} is not a number; give values separated by commas, "
                                              "e.g. 0.25, 0.5, 0.75.") from None
    return out


def _collect(errors: dict[str, str], prefix: str, fn: Any) -> None:
    try:
        fn()
    except ConfigError as exc:
        f = exc.field if exc.field.startswith(prefix) or not prefix else f"{prefix}{exc.field}"
        errors.setdefault(f, _message(exc))
    except AccelvitError as exc:
        errors.setdefault(prefix.rstrip(".") or "config", str(exc))


def _message(exc: ConfigError) -> str:
    msg = str(exc)
    head = f"{exc.field}: "
    return msg[len(head):] if msg.startswith(head) else msg


def validate_form(values: dict[str, Any]) -> FormResult:
    """Build and validate. Collects one message per field from every section it can check."""
    from ..experiment import SweepConfig

    v = {**DEFAULTS, **values}
    res = FormResult()
    try:
        cfg = build_config(v)
    except (TypeError, ValueError) as exc:
        res.errors["config"] = f"A value could not be read: {exc}"
        return res
    errors: dict[str, str] = {}
    if v["model_source"] == "timm" and v["timm_weights"] == "upload" and not v.get("weights_path"):
        errors["weights_path"] = "Upload a weights file (.safetensors or .pth), or choose another weights option."
    if v["model_source"] == "checkpoint" and not cfg.baseline_checkpoint:
        errors["baseline_checkpoint"] = f"Give the path of a saved model folder ({WEIGHTS_FILE} + {SPEC_FILE})."
    _collect(errors, "data.", cfg.data.validate)
    if "data.root" not in errors and "data.dataset" not in errors:
        missing = missing_data_files(cfg.data.dataset, cfg.data.root, cfg.data.download)
        if missing:
            errors["data.root"] = missing
    _collect(errors, "train.", lambda: dataclasses.replace(cfg.train, device="cpu").validate())
    _collect(errors, "finetune.", lambda: dataclasses.replace(cfg.finetune, device="cpu").validate())
    _collect(errors, "prune.", cfg.prune.validate)
    if not errors:
        _collect(errors, "", cfg.validate)
    sweep = None
    if v["sweep"]:
        grid: dict[str, list[Any]] = {}
        for key in SWEEP_KEYS:
            try:
                vals = parse_values(v.get(f"sweep.{key}", ""), key)
            except ConfigError as exc:
                errors[exc.field] = _message(exc)
                continue
            for val in vals:
                try:
                    trial = dataclasses.replace(cfg.prune, **{key: val})
                    if key == "rank_ratio" and val is not None:
                        trial = dataclasses.replace(trial, energy=None)
                    trial.validate()
                except ConfigError as exc:
                    errors.setdefault(f"sweep.{key}", f"{val!r}: {_message(exc)}")
                    break
            if vals:
                grid[key] = vals
        if not grid and not any(k.startswith("sweep.") for k in errors):
            errors["sweep"] = "Give the values of at least one ratio to sweep over (e.g. head ratio: 0.25, 0.5, 0.75)."
        if grid and not errors:
            if "rank_ratio" in grid:
                cfg.prune.energy = None
            sweep = SweepConfig(base=cfg, grid=grid, name=cfg.name or "sweep")
            _collect(errors, "", sweep.expand)
    res.errors = errors
    if not errors:
        res.config = cfg
        res.sweep = sweep
    return res


#: Where a ConfigError field is shown on the page (widget slot); the rest go to ``general``.
SLOTS = ("name", "data.dataset", "data.root", "data.img_size", "data.batch_size", "data.subset", "model",
         "weights_path", "baseline_checkpoint", "train.epochs", "train.lr", "finetune.epochs", "finetune.lr",
         "device", "prune.head_ratio", "prune.head_criterion", "prune.mlp_ratio", "prune.mlp_criterion",
         "prune.rank_ratio", "prune.energy", "prune.activation_aware", "prune.sparsity", "prune.iht_interval",
         "prune.iht_ramp_frac", "prune.target_flops", "prune.target_rule", "prune.prune_steps", "distill.alpha",
         "distill.temperature", "seed", "sweep", *(f"sweep.{k}" for k in SWEEP_KEYS))


def slot_of(field_name: str) -> str:
    """The widget slot a ConfigError field is shown under (``general`` when none fits)."""
    if field_name in SLOTS:
        return field_name
    aliases = {"pretrained": "model", "data.download": "data.root", "data.eval_subset": "data.subset",
               "prune.svd_layers": "prune.rank_ratio", "prune.iht_layers": "prune.sparsity",
               "prune.iht_scope": "prune.sparsity", "prune.calib_batches": "prune.head_criterion",
               "prune.stage_head_ratios": "prune.head_ratio"}
    if field_name in aliases:
        return aliases[field_name]
    if field_name.startswith("grid.") or field_name.startswith("variants"):
        return "sweep"
    for prefix in ("train.", "finetune."):
        if field_name.startswith(prefix):
            return prefix + "lr"
    return "general"


# ----------------------------------------------------------------------------- data files
# ----------------------------------------------------------------------------- uploads
def save_weights_upload(name: str, data: bytes, home: str | Path, max_bytes: int = MAX_WEIGHTS_BYTES) -> Path:
    """Store an uploaded weights file under ``<home>/uploads/`` (content-addressed); its path.

    Raises InputError for a wrong suffix, an empty or oversized file.
    """
    suffix = Path(name).suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise InputError(f"{name} is not a weights file: expected one of {', '.join(WEIGHT_SUFFIXES)}.")
    if not data:
        raise InputError(f"{name} is empty.")
    if len(data) > max_bytes:
        raise InputError(f"{name} is {len(data) / 1e6:.0f} MB; at most {max_bytes / 1e6:.0f} MB is accepted.")
    digest = hashlib.sha256(data).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name)
    out = uploads_dir(home) / f"{digest}-{safe}"
    if not out.exists():
        atomic_write_bytes(out, data)
    return out


