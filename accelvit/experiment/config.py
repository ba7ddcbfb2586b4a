"""What one experiment is: :class:`ExperimentConfig` (a validated dataclass with a JSON round trip),
:class:`SweepConfig` (a base config and the settings to vary), and the one finetune default.

``default_finetune()`` is THE finetune recipe of accelvit: the Experiment form, ``accelvit run``,
``accelvit prune`` and ``bench.pareto`` all start from it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import distributed, serialize
from ..data import DATASETS, DataConfig
from ..distill import DistillConfig
from ..errors import CheckpointError, ConfigError, reject_unknown
from ..models import SCRATCH_CONFIGS, is_known_model
from ..prune.config import PruneConfig
from ..train import TrainConfig
from ..utils import resolve_device

BASELINE_KEY_VERSION = 1

#: The largest input size a config may ask for, unless ``ACCELVIT_MAX_IMG_SIZE`` says otherwise. Every timm
#: Swin is 224, 256 or 384 px; the embedded digits set is resized in memory (3 bytes a pixel per image, and
#: four times that while resizing), so 4096 px would need over 100 GB before anything is trained.
MAX_IMG_SIZE = 512
#: The most runs one sweep may expand to, unless ``ACCELVIT_MAX_SWEEP_RUNS`` says otherwise: each point is a
#: finetune at least (minutes on a CPU), so a larger grid is almost always a typo (a value list pasted twice,
#: one axis too many) that would queue days of work and fill the run store.
MAX_SWEEP_RUNS = 300
#: The largest seed: numpy seeds are 32-bit.
MAX_SEED = 2**32 - 1
#: The most processes one run may train in (``processes``): a torchrun group on one machine.
MAX_PROCESSES = 64
#: Sub-config fields the experiment sets from its own ``seed`` / ``device`` (see ``ExperimentConfig.effective``):
#: naming them in ``--set`` or a sweep would be overwritten, so that is refused with a pointer to the real one.
DERIVED_FIELDS = {f"{sub}.seed": "seed" for sub in ("data", "train", "finetune", "prune")} | {
    f"{sub}.device": "device" for sub in ("train", "finetune")}

#: The finetune recipe after pruning (epochs, peak lr, warm-up share); everything else is TrainConfig's.
#: A short warm-up keeps the first AdamW steps from undoing what the pruned weights still know.
FINETUNE_DEFAULTS: dict[str, Any] = {"epochs": 3, "lr": 1e-3, "warmup_frac": 0.05}


def default_finetune(**overrides: Any) -> TrainConfig:
    """The one finetune default (``FINETUNE_DEFAULTS``), with ``overrides`` applied."""
    return TrainConfig(**{**FINETUNE_DEFAULTS, **overrides})


def _prefixed(prefix: str, exc: ConfigError) -> ConfigError:
    msg = str(exc)
    head = f"{exc.field}: "
    if msg.startswith(head):
        msg = msg[len(head):]
    field_name = exc.field if exc.field.startswith(prefix + ".") else f"{prefix}.{exc.field}"
    err = ConfigError(field_name, msg)
    err.__cause__ = exc
    return err


def _from_fields(cls: type, d: Any, prefix: str) -> Any:
    if d is None:
        return cls()
    if isinstance(d, cls):
        return d
    if not isinstance(d, dict):
        raise ConfigError(prefix, f"expected a mapping of settings, got {type(d).__name__}.")
    reject_unknown(d, cls, f"{prefix}.")
    try:
        return cls(**d)
    except (TypeError, ValueError) as exc:
        raise ConfigError(prefix, f"invalid settings: {exc}") from exc


def env_limit(name: str, default: int) -> int:
    """A whole-number limit from the environment variable ``name`` (``default`` when unset)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"the environment variable must be a whole number, got {raw!r}.") from None
    if value < 1:
        raise ConfigError(name, f"the environment variable must be >= 1, got {value}.")
    return value


def check_img_size(value: Any, field_name: str = "data.img_size") -> int:
    """``value`` as an input size in [8, ACCELVIT_MAX_IMG_SIZE (default MAX_IMG_SIZE)]; ConfigError otherwise."""
    limit = env_limit("ACCELVIT_MAX_IMG_SIZE", MAX_IMG_SIZE)
    if not isinstance(value, int) or isinstance(value, bool) or value < 8:
        raise ConfigError(field_name, f"must be a whole number of pixels >= 8, got {_short(value)}.")
    if value > limit:
        raise ConfigError(field_name, f"{value} px is larger than the limit of {limit} px (timm's Swins use 224, 256 "
                                      f"or 384; larger inputs need memory growing with the square of the size). "
                                      f"Set ACCELVIT_MAX_IMG_SIZE to allow more.")
    return value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(tp: Any) -> str:
    """A type annotation in words, for messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if tp is type(None):
        return "empty (null)"
    if origin in (list, tuple):
        plural = {bool: "true/false values", int: "whole numbers", float: "finite numbers", str: "names"}
        what = plural.get(args[0], "values") if args else "values"
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {what}"
        return f"a list of {what}"
    return {bool: "true or false", int: "a whole number", float: "a finite number", str: "text"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _matches(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # an annotation this check does not know: the config's own validate judges


def check_types(obj: Any, prefix: str = "") -> None:
    """ConfigError naming the first field of the dataclass ``obj`` whose value does not fit its annotation
    (a text where a number belongs, one number where three do, a NaN...), before any range check compares it."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp = hints.get(f.name, Any)
        if not _matches(value, tp):
            raise ConfigError(f"{prefix}{f.name}", f"must be {_describe(tp)}, got {_short(value)}.")


@dataclass
class ExperimentConfig:
    """Everything one experiment needs; JSON round trip with ``to_dict`` / ``from_dict``.

    Args:
        name: a label for the run (default: made from model, data set and pruning settings).
        data: data set, split, image size and batching (``accelvit.data.DataConfig``).
        model: scratch config (``swin_pico``, ``swin_micro``, ...) or a timm Swin name.
        pretrained: start the baseline from timm's pretrained weights (needs the hub).
        weights_path: start the baseline from a local weights file instead.
        baseline_checkpoint: a saved model directory (``accelvit train --out`` or a previous
            run's baseline) used as the baseline as it is; no baseline training.
        train: how the baseline is trained (``epochs=0`` keeps the initial weights).
        finetune: how the pruned model is finetuned (IHT runs here); also the control's.
        distill: distillation from the unpruned baseline in every finetune after pruning
            (``accelvit.distill.DistillConfig``; ``alpha=0`` switches it off). The control
            (the baseline finetuned alike) distils from the baseline too, so the recipe is shared.
        prune: what to prune (``accelvit.prune.PruneConfig``).
        device: ``auto``, ``cpu``, ``cuda``...; the device of every stage (the sub-configs' ``device``
            fields are copies written for the record; ``--set train.device`` is refused).
        seed: THE experiment seed (0 to 2**32-1): it seeds the data split, the training subset and the
            shuffling and augmentation (``data.seed``), the baseline's initial weights and training
            (``train.seed``), pruning's calibration batches and random scores (``prune.seed``) and the
            finetune (``finetune.seed``). Those sub-config fields are copies written for the record and
            ignored on reading; ``--set prune.seed=...`` is refused, ``--set seed=...`` and a sweep over
            ``seed`` change them all. Runs with different seeds therefore have their own baseline and
            split: a seed sweep repeats the whole experiment.
        measure_latency: time the model in before / pruned / after (slow for big models on a CPU).
        control: also finetune the unpruned baseline for the same epochs (a fair reference).
        processes: how many processes train it together with distributed data parallel (1 to
            ``MAX_PROCESSES``; default 1, one process). Above 1 the run must be started by torchrun
            (``torchrun --nproc_per_node N -m accelvit run ...``; the dashboard's job manager does that
            itself): each process reads its shard of the training data and ``data.batch_size`` is the
            *global* batch, split evenly over the processes (so it must be a multiple of them), so the
            learning-rate schedule counts the same steps as in one process. gloo on the CPU, NCCL on
            CUDA (one GPU per process: at most as many as the machine has). Under torchrun, 1 means
            "as many as torchrun started"; any other value must equal torchrun's world size. Not part
            of :meth:`baseline_key`: the recipe (global batch, steps) is the same in any number of processes.
    """

    name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: str = "swin_micro"
    pretrained: bool = False
    weights_path: str | None = None
    baseline_checkpoint: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=default_finetune)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    device: str = "auto"
    seed: int = 0
    measure_latency: bool = True
    control: bool = False
    processes: int = 1

    # ------------------------------------------------------------------ effective sub-configs
    def effective(self) -> "ExperimentConfig":
        """A copy whose sub-configs carry the experiment's device and seed."""
        c = copy.deepcopy(self)
        c.data = dataclasses.replace(c.data, seed=self.seed)
        c.train = dataclasses.replace(c.train, device=self.device, seed=self.seed)
        c.finetune = dataclasses.replace(c.finetune, device=self.device, seed=self.seed)
        c.prune = dataclasses.replace(c.prune, seed=self.seed)
        return c

    @property
    def baseline_source(self) -> str:
        """``checkpoint``, ``weights`` (local file), ``pretrained`` (hub) or ``scratch``."""
        if self.baseline_checkpoint:
            return "checkpoint"
        if self.weights_path:
            return "weights"
        return "pretrained" if self.pretrained else "scratch"

    def display_name(self) -> str:
        if self.name:
            return self.name
        p = self.prune
        parts = []
        for label, value, off in (("heads", p.head_ratio, 0), ("mlp", p.mlp_ratio, 0),
                                  ("rank", p.rank_ratio, None), ("energy", p.energy, None),
                                  ("sparsity", p.sparsity, 0)):
            if value is not None and value != off:
                parts.append(f"{label}={value:g}")
        for extra in ("target_flops",):  # later pruning fields show up in names too
            v = getattr(p, extra, None)
            if v is not None:
                parts.append(f"{extra}={v:g}")
        return f"{self.model} {self.data.dataset} " + (" ".join(parts) if parts else "no pruning")

    # ------------------------------------------------------------------ validation
    def check_types(self) -> "ExperimentConfig":
        """Every field (sub-configs' too) of the type it is annotated with; ConfigError names the first that is not.
        The cheap half of :meth:`validate`, enough for ``to_dict`` to work."""
        if not isinstance(self.name, str):
            raise ConfigError("name", f"must be text, got {_short(self.name)}.")
        for prefix, cls in (("data", DataConfig), ("train", TrainConfig), ("finetune", TrainConfig),
                            ("distill", DistillConfig), ("prune", PruneConfig)):
            sub = getattr(self, prefix)
            if not isinstance(sub, cls):
                raise ConfigError(prefix, f"must be a {cls.__name__} (or a mapping in from_dict).")
            check_types(sub, f"{prefix}.")
        check_types(self)
        return self

    def validate(self) -> "ExperimentConfig":
        """Check everything that can be checked without running; ConfigError names the field."""
        self.check_types()
        if self.data.dataset not in DATASETS:
            raise ConfigError("data.dataset", f"unknown data set {self.data.dataset!r}; choose one of "
                                              f"{', '.join(DATASETS)}.")
        try:
            self.data.validate()
        except ConfigError as exc:
            raise _prefixed("data", exc) from None
        check_img_size(self.data.img_size)
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("model", "give a model name, e.g. swin_micro or swin_tiny_patch4_window7_224.")
        if not self.baseline_checkpoint and not is_known_model(self.model):
            raise ConfigError("model", f"unknown model {self.model!r}; use a scratch config "
                                       f"({', '.join(SCRATCH_CONFIGS)}) or a timm Swin name "
                                       "(timm.list_models('swin*')).")
        for name in ("pretrained", "measure_latency", "control"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"must be true or false, got {getattr(self, name)!r}.")
        if self.weights_path is not None and not Path(self.weights_path).expanduser().is_file():
            raise ConfigError("weights_path", f"{self.weights_path} is not a file; give a .safetensors or .pth file.")
        if self.baseline_checkpoint:
            try:
                doc = serialize.read_spec(Path(self.baseline_checkpoint).expanduser())
            except CheckpointError as exc:
                raise ConfigError("baseline_checkpoint", str(exc)) from None
            size = (doc.get("model") or {}).get("img_size")
            if size is not None and int(size) != self.data.img_size:
                raise ConfigError("data.img_size", f"the baseline checkpoint expects {size} px inputs, but "
                                                   f"data.img_size is {self.data.img_size}; set it to {size}.")
        for prefix in ("train", "finetune"):
            sub = getattr(self, prefix)
            if not isinstance(sub, TrainConfig):
                raise ConfigError(prefix, "must be a TrainConfig (or a mapping in from_dict).")
            try:
                dataclasses.replace(sub, device="cpu").validate()
            except ConfigError as exc:
                raise _prefixed(prefix, exc) from None
        if not isinstance(self.distill, DistillConfig):
            raise ConfigError("distill", "must be a DistillConfig (or a mapping in from_dict).")
        try:
            self.distill.validate()
        except ConfigError as exc:
            raise _prefixed("distill", exc) from None
        if not isinstance(self.prune, PruneConfig):
            raise ConfigError("prune", "must be a PruneConfig (or a mapping in from_dict).")
        try:
            self.prune.validate()
        except ConfigError as exc:
            raise _prefixed("prune", exc) from None
        resolve_device(self.device)  # ConfigError("device", ...)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError("seed", f"must be a whole number from 0 to {MAX_SEED}, got {_short(self.seed)}.")
        self._check_processes()
        return self

    def _check_processes(self) -> None:
        n = self.processes
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_PROCESSES:
            raise ConfigError("processes", f"must be a whole number from 1 to {MAX_PROCESSES}, got {_short(n)}.")
        if n == 1:
            return
        if self.data.batch_size % n:
            raise ConfigError("processes", f"the batch size {self.data.batch_size} is the global batch, split evenly "
                                           f"over the processes; {n} processes need a batch size that is a multiple "
                                           f"of {n} (e.g. {self.data.batch_size - self.data.batch_size % n or n}).")
        if distributed.launched():  # a rank's own config: its device is cuda:LOCAL_RANK (or the CPU), set by setup
            return
        dev = resolve_device(self.device)
        if dev.type == "cuda":
            import torch

            count = torch.cuda.device_count()
            if dev.index is not None:
                raise ConfigError("processes", f"device {self.device!r} names one GPU, but {n} processes need one "
                                               "GPU each; set the device to auto or cuda (process i uses cuda:i).")
            if n > count:
                raise ConfigError("processes", f"{n} processes need one GPU each, but this machine has {count}; "
                                               f"use at most {count} processes, or the CPU (device cpu).")
        elif dev.type != "cpu":
            raise ConfigError("processes", f"distributed training runs on CUDA GPUs (NCCL) or the CPU (gloo), not "
                                           f"on {dev.type}; set processes to 1 or the device to cpu.")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        e = self.effective()
        return {
            "name": self.name, "data": e.data.to_dict(), "model": self.model, "pretrained": self.pretrained,
            "weights_path": self.weights_path, "baseline_checkpoint": self.baseline_checkpoint,
            "train": e.train.to_dict(), "finetune": e.finetune.to_dict(), "distill": self.distill.to_dict(),
            "prune": e.prune.to_dict(),
            "device": self.device, "seed": self.seed, "measure_latency": self.measure_latency,
            "control": self.control, "processes": self.processes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """Build from a (JSON) mapping. Unknown keys raise ConfigError naming them. Not validated."""
        if not isinstance(d, dict):
            raise ConfigError("config", f"expected a mapping, got {type(d).__name__}.")
        reject_unknown(d, cls)
        kw = {k: v for k, v in d.items() if k not in ("data", "train", "finetune", "distill", "prune")}
        data = d.get("data")
        if isinstance(data, dict):
            data = dict(data)
            for k in ("mean", "std"):
                if isinstance(data.get(k), list):  # JSON has no tuples; anything else is judged by validate
                    data[k] = tuple(data[k])
        kw["data"] = _from_fields(DataConfig, data, "data")
        kw["train"] = _from_fields(TrainConfig, d.get("train"), "train")
        kw["finetune"] = _from_fields(TrainConfig, d.get("finetune"), "finetune") if d.get("finetune") is not None \
            else default_finetune()
        kw["distill"] = _from_fields(DistillConfig, d.get("distill"), "distill")
        kw["prune"] = _from_fields(PruneConfig, d.get("prune"), "prune")
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # ------------------------------------------------------------------ baseline reuse
    def baseline_key(self) -> str:
        """A hash of what determines the baseline: data, model, init and baseline training.

        Runs (and sweep points) with equal keys share one trained baseline. Device, worker
        count and the evaluation subset do not change the trained weights and are left out.
        """
        e = self.effective()
        if self.baseline_checkpoint:
            p = Path(self.baseline_checkpoint).expanduser().resolve()
            stamp = ""
            w = p / serialize.WEIGHTS_FILE
            if w.exists():
                st = w.stat()
                stamp = f"{st.st_size}:{int(st.st_mtime)}"
            payload: dict[str, Any] = {"checkpoint": str(p), "stamp": stamp}
        else:
            data = e.data.to_dict()
            for k in ("num_workers", "download", "eval_subset"):
                data.pop(k, None)
            train = e.train.to_dict()
            train.pop("device", None)
            weights = None
            if self.weights_path:
                wp = Path(self.weights_path).expanduser().resolve()
                weights = {"path": str(wp), "size": wp.stat().st_size if wp.exists() else None}
            payload = {"model": self.model, "pretrained": self.pretrained, "weights": weights,
                       "data": data, "train": train}
        payload["v"] = BASELINE_KEY_VERSION
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _set_path(d: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = d
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def _resolve_key(key: Any, where: str = "grid") -> str:
    """A sweep or ``--set`` key as a dotted path: an experiment field (``seed``, ``device``: the experiment's
    own, never a sub-config's copy), a PruneConfig field (``head_ratio`` -> ``prune.head_ratio``), or a
    dotted path (``finetune.epochs``). A ConfigError's field is ``<where>.<key>`` (``grid.head_raito``), or
    the key alone when ``where`` is empty (``--set``)."""
    if not isinstance(key, str) or not key.strip() or any(not p for p in key.strip().split(".")):
        raise ConfigError(where or "--set", f"{_short(key)} is not a setting name; use e.g. head_ratio or "
                                            "finetune.epochs.")
    key = key.strip()
    top = {f.name for f in dataclasses.fields(ExperimentConfig)}
    prune_fields = {f.name for f in dataclasses.fields(PruneConfig)}
    if "." in key:
        path = key
    elif key in top:
        path = key
    elif key in prune_fields:
        path = f"prune.{key}"
    else:
        raise ConfigError(f"{where}.{key}" if where else key,
                          f"unknown setting {key!r}; use a pruning setting ({', '.join(sorted(prune_fields))}), an "
                          "experiment setting or a dotted path such as finetune.epochs.")
    if path in DERIVED_FIELDS:
        real = DERIVED_FIELDS[path]
        what = "the data split, training, pruning and finetuning" if real == "seed" else "every stage"
        raise ConfigError(f"{where}.{key}" if where else key,
                          f"{path} is a copy of the experiment's {real}, which overwrites it; set {real} instead "
                          f"(it applies to {what} alike).")
    return path


def max_sweep_runs() -> int:
    """The most runs a sweep may expand to: ``ACCELVIT_MAX_SWEEP_RUNS``, else ``MAX_SWEEP_RUNS``."""
    return env_limit("ACCELVIT_MAX_SWEEP_RUNS", MAX_SWEEP_RUNS)


def _drop_derived(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` (a ``to_dict`` form) without the sub-configs' copies of seed and device, so that setting the
    experiment's own afterwards is what counts (``effective`` writes the copies again)."""
    for path in DERIVED_FIELDS:
        sub, name = path.split(".")
        if isinstance(d.get(sub), dict):
            d[sub].pop(name, None)
    return d


@dataclass
class SweepConfig:
    """A base experiment and the settings to vary; every point shares the base's baseline.

    Args:
        base: the experiment every point starts from.
        grid: ``{setting: [values]}``; the cross product is run. Keys are PruneConfig field
            names (``head_ratio``, ``rank_ratio``, ``sparsity``, ...), experiment fields, or
            dotted paths (``finetune.epochs``).
        variants: a list of ``{setting: value}`` override dicts (combined with every grid point).
        name: a label; run names become ``"<name> head_ratio=0.5 ..."``.

    JSON form (``accelvit sweep --config sweep.json``)::

        {"name": "heads x rank", "base": {...ExperimentConfig...},
         "grid": {"head_ratio": [0.25, 0.5], "rank_ratio": [null, 0.5]}}
    """

    base: ExperimentConfig = field(default_factory=ExperimentConfig)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    variants: list[dict[str, Any]] = field(default_factory=list)
    name: str = ""

    def points(self) -> list[dict[str, Any]]:
        """The override dict of every point, in order (keys as given). ConfigError for a grid that is not a
        mapping of lists, variants that are not a list of mappings, or more points than :func:`max_sweep_runs`
        (counted before any point is built)."""
        if not isinstance(self.grid, dict):
            raise ConfigError("grid", f"must be a mapping of setting -> list of values, e.g. "
                                      f'{{"head_ratio": [0.25, 0.5]}}; got {type(self.grid).__name__}.')
        if not isinstance(self.variants, list) or not all(isinstance(v, dict) for v in self.variants):
            raise ConfigError("variants", "must be a list of mappings of setting -> value, e.g. "
                                          '[{"finetune.epochs": 1}, {"sparsity": 0.5}].')
        keys = list(self.grid)
        for k in keys:
            vals = self.grid[k]
            if not isinstance(vals, (list, tuple)) or len(vals) == 0:
                raise ConfigError(f"grid.{k}", f"must be a non-empty list of values, got {_short(vals)}.")
        for k in [*keys, *(k for v in self.variants for k in v)]:
            _resolve_key(k, "grid" if k in self.grid else "variants")
        count = math.prod(len(self.grid[k]) for k in keys) * max(1, len(self.variants))
        limit = max_sweep_runs()
        if count > limit:
            sizes = " x ".join([f"{len(self.grid[k])} {k}" for k in keys]
                               + ([f"{len(self.variants)} variants"] if self.variants else []))
            raise ConfigError("grid", f"the sweep has {count:,} points ({sizes}), more than the limit of {limit}; "
                                      "make the grid smaller or split it into several sweeps, or set "
                                      "ACCELVIT_MAX_SWEEP_RUNS to allow more.")
        combos = [dict(zip(keys, vals)) for vals in itertools.product(*(self.grid[k] for k in keys))] or [{}]
        variants = self.variants or [{}]
        return [{**c, **v} for c in combos for v in variants]

    def expand(self) -> list[ExperimentConfig]:
        """One validated ExperimentConfig per point; ConfigError names the point and field."""
        if not isinstance(self.name, str):
            raise ConfigError("name", f"must be text, got {_short(self.name)}.")
        try:
            self.base.check_types()
        except ConfigError as exc:
            raise _prefixed("base", exc) from None
        base = _drop_derived(self.base.to_dict())
        out = []
        for i, point in enumerate(self.points()):
            d = copy.deepcopy(base)
            label = []
            for key, value in point.items():
                _set_path(d, _resolve_key(key), value)
                label.append(f"{key}={value}")
            prefix = (self.name or self.base.name or "sweep").strip()
            d["name"] = f"{prefix} {' '.join(label)}".strip() if label else prefix
            try:
                cfg = ExperimentConfig.from_dict(copy.deepcopy(d)).validate()
            except ConfigError as exc:
                raise ConfigError(exc.field, f"{str(exc)[len(exc.field) + 2:]} (sweep point {i + 1}: "
                                             f"{' '.join(label) or 'base'})") from None
            out.append(cfg)
        if not out:
            raise ConfigError("grid", "the sweep has no points.")
        return out

    def validate(self) -> "SweepConfig":
        self.base.validate()
        self.expand()
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base.to_dict(), "grid": dict(self.grid),
                "variants": list(self.variants)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepConfig":
        if not isinstance(d, dict):
            raise ConfigError("sweep", f"expected a mapping, got {type(d).__name__}.")
        unknown = sorted(set(d) - {"name", "base", "grid", "variants"})
        if unknown:
            raise ConfigError(unknown[0], "unknown sweep setting; use name, base, grid and variants.")
        base, grid = d.get("base") or {}, d.get("grid") or {}
        variants, name = d.get("variants") or [], d.get("name") or ""
        if not isinstance(base, dict):
            raise ConfigError("base", f"must be a mapping (an experiment config), got {type(base).__name__}.")
        if not isinstance(name, str):
            raise ConfigError("name", f"must be text, got {_short(name)}.")
        try:
            base_cfg = ExperimentConfig.from_dict(base)
        except ConfigError as exc:
            raise _prefixed("base", exc) from None
        sweep = cls(base=base_cfg, grid=grid, variants=variants, name=name)
        sweep.points()  # grid and variants: their shapes and the size cap, before anything is built
        sweep.grid, sweep.variants = dict(grid), list(variants)
        return sweep
