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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import DataConfig, missing_data_files
from ..distill import DistillConfig
from ..errors import AccelvitError, ConfigError, InputError
from ..experiment.config import FINETUNE_DEFAULTS, default_finetune
from ..paths import DATA_ROOTS_ENV, check_allowed, describe_roots
from ..prune.config import PruneConfig
from ..serialize import SPEC_FILE, WEIGHTS_FILE
from ..train import TrainConfig
from ..uploads import store_upload

# ----------------------------------------------------------------------------- choices
DATASET_LABELS = {
    "digits": "digits (embedded, offline)",
    "cifar10": "CIFAR-10",
    "caltech101": "Caltech-101",
    "folder": "image folder",
}
MODEL_SOURCES = {
    "scratch": "scratch config (trained here)",
    "timm": "timm Swin (your weights, random init or the hub)",
    "checkpoint": "saved model folder (no training)",
}
#: Where a timm model's starting weights come from. The first (the default) and the next two work
#: offline; the hub is used only when chosen.
TIMM_WEIGHTS = {
    "random": "random initialisation (offline)",
    "upload": "upload a weights file (.safetensors / .pth)",
    "path": "a weights file on this machine",
    "pretrained": "pretrained from the Hugging Face hub (needs network)",
}
SVD_MODES = {"off": "off", "rank": "rank ratio", "energy": "energy"}
SWEEP_KEYS = ("head_ratio", "mlp_ratio", "rank_ratio", "sparsity", "target_flops")
#: The sweep fields' labels on the page (messages start with them) and their short names in summaries.
SWEEP_LABELS = {"head_ratio": "Head ratios", "mlp_ratio": "MLP width ratios", "rank_ratio": "Rank ratios",
                "sparsity": "Sparsities", "target_flops": "FLOP targets"}
SWEEP_NAMES = {"head_ratio": "head ratio", "mlp_ratio": "MLP width ratio", "rank_ratio": "rank ratio",
               "sparsity": "sparsity", "target_flops": "FLOP target"}
#: The allowed values of each sweep field, as said in messages (PruneConfig.validate decides).
SWEEP_RANGES = {"head_ratio": "[0, 1)", "mlp_ratio": "[0, 1)", "rank_ratio": "(0, 1], or none (no SVD)",
                "sparsity": "[0, 1)", "target_flops": "(0, 1), or 0 / none (off)"}
#: The number fields of the form and their labels: an emptied one is an error on its field.
NUMBER_FIELDS = {
    "data.img_size": "Image size", "data.batch_size": "Batch size", "data.subset": "Training subset",
    "train.epochs": "Baseline epochs", "train.lr": "Baseline learning rate", "finetune.epochs": "Finetune epochs",
    "finetune.lr": "Finetune learning rate", "prune.iht_interval": "IHT interval",
    "prune.target_flops": "Target dense FLOPs", "prune.prune_steps": "Prune steps",
    "distill.temperature": "Distillation temperature", "seed": "Seed", "processes": "Processes",
}

#: The Experiment form's help for its Processes field (shown only with several GPUs or CPU cores).
PROCESSES_HELP = ("Train and finetune this run in N processes together (distributed data parallel, started "
                  "with torchrun): each process reads its share of the training images, and the batch size "
                  "above is the global batch, split evenly across the processes (so it must be a multiple of N); "
                  "the learning-rate schedule is the same as in one process. On GPUs each process uses its own "
                  "GPU and they talk over NCCL; on the CPU they use gloo (then each process gets a share of the "
                  "cores). Pruning itself runs once, in the first process. 1 = one process, as usual.")
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
    "timm_weights": "random",  # offline; the hub only when chosen
    "timm_weights_path": "",
    "weights_path": None,
    "baseline_checkpoint": "",
    "train.epochs": 20,
    "train.lr": 2e-3,
    "finetune.epochs": FINETUNE_DEFAULTS["epochs"],
    "finetune.lr": FINETUNE_DEFAULTS["lr"],
    "device": "auto",
    "processes": 1,
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
#: about 45 s on two CPU cores (bench.live_watch).
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


def _path_or_none(text: Any) -> str | None:
    text = str(text or "").strip()
    return str(Path(text).expanduser()) if text else None


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
        measure_latency=bool(v["measure_latency"]), control=bool(v["control"]), processes=int(v["processes"]))
    if src == "timm":
        cfg.pretrained = v["timm_weights"] == "pretrained"
        cfg.weights_path = {"upload": v["weights_path"],
                            "path": _path_or_none(v["timm_weights_path"])}.get(v["timm_weights"])
    elif src == "checkpoint":
        cfg.baseline_checkpoint = str(v["baseline_checkpoint"] or "").strip() or None
    return cfg


_SWEEP_HINT = " (give values separated by commas, e.g. 0.25, 0.5, 0.75)."
_OFF_WORDS = ("none", "off", "null")


def _parse_items(text: str, key: str) -> list[tuple[str, float | None, str | None]]:
    """``(item, value, problem)`` for each item of a sweep field, in order."""
    out = []
    for t in (t for t in re.split(r"[,;\s]+", str(text or "").strip()) if t):
        if t.lower() in _OFF_WORDS and key in ("rank_ratio", "target_flops"):
            out.append((t, None, None))
            continue
        try:
            x = float(t)
        except ValueError:
            out.append((t, None, f"{t!r} is not a number"))
            continue
        out.append((t, None if key == "target_flops" and x == 0 else x, None))
    return out


def parse_values(text: str, key: str) -> list[float | None]:
    """``"0.25, 0.5 0.75"`` -> ``[0.25, 0.5, 0.75]``; ``none``/``off`` allowed for rank_ratio and
    target_flops (where ``0`` also means off, as in its number field).

    Raises ConfigError(``sweep.<key>``) naming every item that is not a number.
    """
    items = _parse_items(text, key)
    bad = [p for _, _, p in items if p]
    if bad:
        raise ConfigError(f"sweep.{key}", "; ".join(bad) + _SWEEP_HINT)
    return [x for _, x, _ in items]


def _check_sweep_field(base: PruneConfig, key: str, text: str) -> tuple[list[float | None], str | None]:
    """The values of one sweep field and one message naming every bad value, in order (None when all are fine)."""
    values: list[float | None] = []
    bad: list[str] = []
    for t, val, problem in _parse_items(text, key):
        if problem is None:
            try:
                trial = dataclasses.replace(base, **{key: val})
                if key == "rank_ratio" and val is not None:
                    trial = dataclasses.replace(trial, energy=None)
                trial.validate()
            except ConfigError as exc:
                problem = f"{t!r} is outside {SWEEP_RANGES[key]}" if exc.field == key else f"{t!r}: {_message(exc)}"
        if problem:
            bad.append(problem)
        else:
            values.append(val)
    if not bad:
        return values, None
    return values, f"{SWEEP_LABELS[key]}: " + "; ".join(bad) + _SWEEP_HINT


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


_PRUNE_FIELDS = {f.name for f in dataclasses.fields(PruneConfig)}


def estimate_error(exc: Exception) -> tuple[str | None, str]:
    """``(field, message)`` of an error raised by the cost preview; field None when it names none.

    The preview prunes with a PruneConfig, whose fields become the form's ``prune.<field>``.
    """
    if isinstance(exc, ConfigError):
        f = exc.field
        return (f"prune.{f}" if f in _PRUNE_FIELDS else f), _message(exc)
    if isinstance(exc, AccelvitError):
        return getattr(exc, "field", None), str(exc)
    return None, f"The model cannot be built: {exc}"


def validate_form(values: dict[str, Any]) -> FormResult:
    """Build and validate. Collects one message per field from every section it can check.

    An emptied number field (None) is an error on that field; the other fields are still checked.
    """
    from ..experiment import SweepConfig

    v = {**DEFAULTS, **values}
    res = FormResult()
    errors: dict[str, str] = {}
    for f, label in NUMBER_FIELDS.items():
        if v.get(f) is None:
            errors[f] = f"{label} is empty: enter a number."
            v[f] = DEFAULTS[f]  # so that the rest of the form can still be checked
    try:
        cfg = build_config(v)
    except (TypeError, ValueError) as exc:
        res.errors = {**errors, "config": f"A value could not be read: {exc}"}
        return res
    if v["model_source"] == "timm" and v["timm_weights"] == "upload" and not v.get("weights_path"):
        errors["weights_path"] = "Upload a weights file (.safetensors or .pth), or choose another weights option."
    if v["model_source"] == "timm" and v["timm_weights"] == "path" and not cfg.weights_path:
        errors["weights_path"] = ("Give the path of a weights file (.safetensors or .pth) on this machine, "
                                  "or choose another weights option.")
    if v["model_source"] == "checkpoint" and not cfg.baseline_checkpoint:
        errors["baseline_checkpoint"] = f"Give the path of a saved model folder ({WEIGHTS_FILE} + {SPEC_FILE})."
    confine_paths(cfg, errors)
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
            vals, msg = _check_sweep_field(cfg.prune, key, v.get(f"sweep.{key}", ""))
            if msg:
                errors[f"sweep.{key}"] = msg
            elif vals:
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


#: The paths a browser user types, by form field: (config attribute path, what it is in messages).
PATH_FIELDS = {"data.root": (("data", "root"), "data folder"),
               "weights_path": (("weights_path",), "weights file"),
               "baseline_checkpoint": (("baseline_checkpoint",), "saved model folder")}


def roots_help() -> str:
    """The help text of every path field: the folders it may name."""
    return (f"Only folders of this server's allowed roots can be used: {describe_roots()}. "
            f"More are added with {DATA_ROOTS_ENV} when the dashboard starts.")


def confine_paths(cfg: Any, errors: dict[str, str]) -> None:
    """Every path of ``cfg`` a browser user typed must lie inside the allowed roots
    (:func:`accelvit.paths.check_allowed`: ``$ACCELVIT_HOME``, ``./data``, ``$ACCELVIT_DATA_ROOTS``).

    A path inside is replaced by its resolved form (what was checked is what the run reads); a
    path outside is an error on its field and is not looked at further (nothing says whether it
    exists). Paths left empty (the defaults) are not checked.
    """
    for fld, (attrs, what) in PATH_FIELDS.items():
        owner = cfg
        for a in attrs[:-1]:
            owner = getattr(owner, a)
        value = getattr(owner, attrs[-1], None)
        if not value or fld in errors:
            continue
        try:
            setattr(owner, attrs[-1], str(check_allowed(value, what)))
        except InputError as exc:
            errors[fld] = str(exc)


# ----------------------------------------------------------------------------- estimate and sweep summary
def estimate_key(config: Any) -> dict[str, Any]:
    """What the cost preview depends on, and nothing else (:func:`accelvit.experiment.estimate.estimate_key`):
    the model (scratch / timm name or saved folder), image size, number of classes and the data-free
    prune settings. Epochs, learning rates, seed, name, device, weights, distillation do not change it."""
    from ..experiment.estimate import estimate_key as key_of

    return key_of(config)


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:g}"


def _span(values: list[float | None]) -> str:
    nums = [x for x in values if x is not None]
    parts = ["none"] if len(nums) < len(values) else []
    if nums:
        lo, hi = min(nums), max(nums)
        parts.append(_fmt(lo) if lo == hi else f"{_fmt(lo)}-{_fmt(hi)}")
    return ", ".join(parts)


def sweep_summary(sweep: Any) -> str:
    """``"12 runs: head ratio 0.25-0.75 (3 values) x FLOP target 0.3-0.5 (4 values)"``."""
    n = len(sweep.points())
    parts = []
    for key, vals in sweep.grid.items():
        name = SWEEP_NAMES.get(key, key)
        k = len(set(vals))
        parts.append(f"{name} {_span(vals)}" + (f" ({k} values)" if k > 2 else ""))
    return f"{n} run{'s' if n != 1 else ''}: " + " x ".join(parts)


#: How each sweep field prunes more: a larger ratio or sparsity, a smaller rank ratio or FLOP
#: target (None, i.e. off, prunes least).
_MORE_IS_HEAVIER = {"head_ratio": True, "mlp_ratio": True, "sparsity": True, "rank_ratio": False,
                    "target_flops": False}


def sweep_extremes(sweep: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The sweep's least and most pruned points: ``{"lightest": (config, point), "heaviest": (...)}``.

    Each field takes its lightest (heaviest) value; the grid is a full product, so both are runs of
    the sweep. The other settings are the base's (the sliders').
    """
    light: dict[str, Any] = {}
    heavy: dict[str, Any] = {}
    for key, vals in sweep.grid.items():
        nums = sorted(x for x in vals if x is not None)
        if _MORE_IS_HEAVIER.get(key, True):
            light[key], heavy[key] = (nums[0] if nums else None), (nums[-1] if nums else None)
        else:  # None (off) prunes least, then the largest value
            light[key] = None if None in vals else nums[-1]
            heavy[key] = nums[0] if nums else None
    out = {}
    for label, point in (("lightest", light), ("heaviest", heavy)):
        cfg = copy.deepcopy(sweep.base)
        cfg.prune = dataclasses.replace(cfg.prune, **point)
        if point.get("rank_ratio") is not None:
            cfg.prune.energy = None
        out[label] = (cfg, point)
    return out


def describe_point(point: dict[str, Any]) -> str:
    return ", ".join(f"{SWEEP_NAMES.get(k, k)} {_fmt(x)}" for k, x in point.items())


#: Where a ConfigError field is shown on the page (widget slot); the rest go to ``general``.
SLOTS = ("name", "data.dataset", "data.root", "data.img_size", "data.batch_size", "data.subset", "model",
         "weights_path", "baseline_checkpoint", "train.epochs", "train.lr", "finetune.epochs", "finetune.lr",
         "device", "processes", "prune.head_ratio", "prune.head_criterion", "prune.mlp_ratio", "prune.mlp_criterion",
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
    return store_upload(name, data, home)  # accelvit.uploads: the folder's quota, oldest/aged files cleaned up


