"""One experiment, headless: data -> baseline -> prune -> finetune -> evaluate, emitting events.

``Experiment(config).run()`` runs these named stages in order (``STAGES``)::

    data      load the data set (train / val / test loaders)
    baseline  train from scratch, finetune a pretrained model, or load a saved checkpoint;
              trained baselines are cached under $ACCELVIT_HOME/baselines/<baseline_key>/
              and reused by every run with the same data, model and training config
    before    evaluate + measure the baseline                      -> Metrics("before")
    prune     heads / MLP width / SVD (accelvit.prune.prune)
    pruned    evaluate + measure, no finetune                      -> Metrics("pruned")
    finetune  finetune with the IHT sparsity hook
    after     evaluate + measure                                   -> Metrics("after")
    control   (config.control only) the baseline finetuned for the same extra epochs,
              evaluated + measured                                 -> Metrics("control")
    save      the pruned model (accelvit.serialize) + report.json  -> Artifact events

Everything it does is told through ``on_event(event)`` with the dataclasses below (each
has ``kind`` and ``to_dict()``); the cancel token is checked between stages and inside
every training step, and :class:`~accelvit.errors.Cancelled` propagates out of ``run``.
On any other error an :class:`ErrorEvent` is emitted and the exception re-raised.

Event kinds: ``stage_started`` (StageStarted), ``stage_finished`` (StageFinished),
``progress`` (Progress), ``metrics`` (Metrics), ``warning`` (WarningEvent), ``error``
(ErrorEvent), ``artifact`` (Artifact).

:class:`SweepConfig` expands a base config and a grid / list of overrides into many
configs that share one baseline.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import secrets
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from . import serialize
from .data import DATASETS, DataConfig
from .errors import AccelvitError, Cancelled, CheckpointError, ConfigError, ModelError
from .models import is_known_model, model_spec
from .prune.config import PruneConfig
from .train import TrainConfig, TrainProgress
from .utils import CancelToken, check_cancel, resolve_device, seed_everything

log = logging.getLogger(__name__)

STAGES = ("data", "baseline", "before", "prune", "pruned", "finetune", "after", "control", "save")
MEASURED_STAGES = ("before", "pruned", "after", "control")
BASELINE_KEY_VERSION = 1


# ============================================================================ events
@dataclass
class Event:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind
        return d


@dataclass
class StageStarted(Event):
    kind: ClassVar[str] = "stage_started"
    stage: str
    index: int            # 0-based position among the stages this run executes
    total: int            # number of stages this run executes
    overall: float = 0.0  # overall fraction of the run done when the stage starts
    ts: float = field(default_factory=time.time)


@dataclass
class StageFinished(Event):
    kind: ClassVar[str] = "stage_finished"
    stage: str
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)  # e.g. baseline source, fit summary, prune report
    overall: float = 0.0
    ts: float = field(default_factory=time.time)


@dataclass
class Progress(Event):
    kind: ClassVar[str] = "progress"
    stage: str
    fraction: float                 # of this stage, in [0, 1]
    overall: float                  # of the whole run, in [0, 1]
    epoch: int | None = None        # 1-based
    epochs: int | None = None
    step: int | None = None         # 1-based step within the epoch
    steps: int | None = None        # steps per epoch
    global_step: int | None = None
    total_steps: int | None = None
    loss: float | None = None       # running mean training loss of the epoch
    accuracy: float | None = None   # running training top-1 of the epoch, in [0, 1]
    val_top1: float | None = None   # at epoch ends when a validation split exists
    lr: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None      # of this stage
    message: str | None = None
    ts: float = field(default_factory=time.time)


@dataclass
class Metrics(Event):
    kind: ClassVar[str] = "metrics"
    stage: str
    metrics: dict[str, Any]  # top1, top5, loss, n, per_class + everything accelvit.metrics.measure reports
    ts: float = field(default_factory=time.time)


@dataclass
class WarningEvent(Event):
    kind: ClassVar[str] = "warning"
    message: str
    stage: str | None = None
    ts: float = field(default_factory=time.time)


@dataclass
class ErrorEvent(Event):
    kind: ClassVar[str] = "error"
    message: str
    stage: str | None = None
    error_type: str = ""
    traceback: str = ""
    ts: float = field(default_factory=time.time)


@dataclass
class Artifact(Event):
    kind: ClassVar[str] = "artifact"
    name: str            # "model", "report", "baseline", ...
    path: str
    type: str = "file"   # "model" (a serialize.save directory), "json", "csv", "file"
    stage: str | None = None
    ts: float = field(default_factory=time.time)


EventCallback = Callable[[Event], None]


def describe_error(exc: BaseException) -> str:
    """The message shown to the user: ours as they are, anything else with its type."""
    if isinstance(exc, AccelvitError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# ============================================================================ configs
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
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}", f"unknown setting; known settings are {sorted(known)}.")
    try:
        return cls(**d)
    except (TypeError, ValueError) as exc:
        raise ConfigError(prefix, f"invalid settings: {exc}") from exc


def _default_finetune() -> TrainConfig:
    # the same defaults as ``accelvit prune``'s finetune
    return TrainConfig(epochs=3, lr=1e-3, warmup_frac=0.0)


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
        prune: what to prune (``accelvit.prune.PruneConfig``).
        device: ``auto``, ``cpu``, ``cuda``...; overrides the sub-configs' devices.
        seed: overrides the seeds of data, train, finetune and prune.
        measure_latency: time the model in before / pruned / after (slow for big models on a CPU).
        control: also finetune the unpruned baseline for the same epochs (a fair reference).
    """

    name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: str = "swin_micro"
    pretrained: bool = False
    weights_path: str | None = None
    baseline_checkpoint: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=_default_finetune)
    prune: PruneConfig = field(default_factory=PruneConfig)
    device: str = "auto"
    seed: int = 0
    measure_latency: bool = True
    control: bool = False

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
    def validate(self) -> "ExperimentConfig":
        """Check everything that can be checked without running; ConfigError names the field."""
        if not isinstance(self.name, str):
            raise ConfigError("name", f"must be text, got {self.name!r}.")
        if not isinstance(self.data, DataConfig):
            raise ConfigError("data", "must be a DataConfig (or a mapping in from_dict).")
        if self.data.dataset not in DATASETS:
            raise ConfigError("data.dataset", f"unknown data set {self.data.dataset!r}; choose one of "
                                              f"{', '.join(DATASETS)}.")
        try:
            self.data.validate()
        except ConfigError as exc:
            raise _prefixed("data", exc) from None
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("model", "give a model name, e.g. swin_micro or swin_tiny_patch4_window7_224.")
        if not self.baseline_checkpoint and not is_known_model(self.model):
            from .models import SCRATCH_CONFIGS
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
        if not isinstance(self.prune, PruneConfig):
            raise ConfigError("prune", "must be a PruneConfig (or a mapping in from_dict).")
        try:
            self.prune.validate()
        except ConfigError as exc:
            raise _prefixed("prune", exc) from None
        resolve_device(self.device)  # ConfigError("device", ...)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError("seed", f"must be a whole number >= 0, got {self.seed!r}.")
        return self

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        e = self.effective()
        return {
            "name": self.name, "data": e.data.to_dict(), "model": self.model, "pretrained": self.pretrained,
            "weights_path": self.weights_path, "baseline_checkpoint": self.baseline_checkpoint,
            "train": e.train.to_dict(), "finetune": e.finetune.to_dict(), "prune": e.prune.to_dict(),
            "device": self.device, "seed": self.seed, "measure_latency": self.measure_latency,
            "control": self.control,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """Build from a (JSON) mapping. Unknown keys raise ConfigError naming them. Not validated."""
        if not isinstance(d, dict):
            raise ConfigError("config", f"expected a mapping, got {type(d).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting; known settings are {sorted(known)}.")
        kw = {k: v for k, v in d.items() if k not in ("data", "train", "finetune", "prune")}
        data = d.get("data")
        if isinstance(data, dict):
            data = dict(data)
            for k in ("mean", "std"):
                if data.get(k) is not None:
                    data[k] = tuple(data[k])
        kw["data"] = _from_fields(DataConfig, data, "data")
        kw["train"] = _from_fields(TrainConfig, d.get("train"), "train")
        kw["finetune"] = _from_fields(TrainConfig, d.get("finetune"), "finetune") if d.get("finetune") is not None \
            else _default_finetune()
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


def _resolve_key(key: str) -> str:
    """A sweep key: a PruneConfig field (``head_ratio``), a top-level field, or a dotted path."""
    if "." in key:
        return key
    prune_fields = {f.name for f in dataclasses.fields(PruneConfig)}
    if key in prune_fields:
        return f"prune.{key}"
    top = {f.name for f in dataclasses.fields(ExperimentConfig)}
    if key in top:
        return key
    raise ConfigError(f"grid.{key}", f"unknown setting {key!r}; use a pruning setting "
                                     f"({', '.join(sorted(prune_fields))}), an experiment setting or a dotted "
                                     "path such as finetune.epochs.")


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
        """The override dict of every point, in order (dotted keys)."""
        if not isinstance(self.grid, dict):
            raise ConfigError("grid", "must be a mapping of setting -> list of values.")
        if not isinstance(self.variants, list) or not all(isinstance(v, dict) for v in self.variants):
            raise ConfigError("variants", "must be a list of mappings of setting -> value.")
        keys = list(self.grid)
        for k in keys:
            vals = self.grid[k]
            if not isinstance(vals, (list, tuple)) or len(vals) == 0:
                raise ConfigError(f"grid.{k}", "must be a non-empty list of values.")
        combos = [dict(zip(keys, vals)) for vals in itertools.product(*(self.grid[k] for k in keys))] or [{}]
        variants = self.variants or [{}]
        return [{**c, **v} for c in combos for v in variants]

    def expand(self) -> list[ExperimentConfig]:
        """One validated ExperimentConfig per point; ConfigError names the point and field."""
        base = self.base.to_dict()
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
                cfg = ExperimentConfig.from_dict(d).validate()
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
        return cls(base=ExperimentConfig.from_dict(d.get("base") or {}), grid=dict(d.get("grid") or {}),
                   variants=list(d.get("variants") or []), name=str(d.get("name") or ""))


# ============================================================================ the experiment
@dataclass
class ExperimentResult:
    config: dict[str, Any]
    metrics: dict[str, dict[str, Any]]          # stage -> metrics
    prune_report: dict[str, Any] | None
    artifacts: dict[str, str]                   # name -> path
    baseline: dict[str, Any]                    # source, key, path, fit summary
    timings: dict[str, float]                   # stage -> seconds
    model: torch.nn.Module | None = None        # the pruned, finetuned model


def baselines_dir(home: str | os.PathLike | None = None) -> Path:
    from .store import home_dir

    return home_dir(home) / "baselines"


class Experiment:
    """Runs one :class:`ExperimentConfig` (see the module docstring).

    Args:
        config: validated here again before anything runs.
        on_event: called with every event, in the calling thread.
        cancel: checked between stages and every training step.
        home: the store folder holding the baseline cache (default ``$ACCELVIT_HOME``).
        artifact_dir: where ``save`` writes the pruned model and report.json; None skips saving.
        run_id: recorded in the saved model's meta and report.
    """

    def __init__(self, config: ExperimentConfig, *, on_event: EventCallback | None = None,
                 cancel: CancelToken | None = None, home: str | os.PathLike | None = None,
                 artifact_dir: str | os.PathLike | None = None, run_id: str | None = None):
        self.config = config
        self.on_event = on_event
        self.cancel = cancel
        self.home = home
        self.artifact_dir = Path(artifact_dir) if artifact_dir is not None else None
        self.run_id = run_id
        self.stages = [s for s in STAGES if s != "control" or config.control]
        self.metrics: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, float] = {}
        self.artifacts: dict[str, str] = {}
        self.baseline_info: dict[str, Any] = {}
        self.prune_report: dict[str, Any] | None = None
        self.data = None
        self.baseline_model: torch.nn.Module | None = None
        self.model: torch.nn.Module | None = None
        self._stage: str | None = None
        self._weights = self._stage_weights()
        self._done_weight = 0.0

    # ------------------------------------------------------------------ plumbing
    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        self._emit(WarningEvent(message=message, stage=self._stage))

    def _stage_weights(self) -> dict[str, float]:
        c = self.config
        trains = c.baseline_source in ("scratch", "pretrained", "weights")
        w = {"data": 1.0, "baseline": 1.0 + (10.0 * c.train.epochs if trains else 0.0), "before": 2.0,
             "prune": 2.0, "pruned": 2.0, "finetune": 0.5 + 10.0 * c.finetune.epochs, "after": 2.0,
             "control": 2.0 + 10.0 * c.finetune.epochs, "save": 1.0}
        return {s: w[s] for s in self.stages}

    def _overall(self, stage_fraction: float = 0.0) -> float:
        total = sum(self._weights.values()) or 1.0
        cur = self._weights.get(self._stage or "", 0.0) * min(max(stage_fraction, 0.0), 1.0)
        return min(1.0, (self._done_weight + cur) / total)

    def _device(self) -> torch.device:
        return resolve_device(self.config.device)

    def _fit_progress(self, stage: str) -> Callable[[TrainProgress], None]:
        def cb(p: TrainProgress) -> None:
            f = p.fraction
            eta = p.elapsed_s * (1 - f) / f if f > 0 else None
            self._emit(Progress(
                stage=stage, fraction=f, overall=self._overall(f), epoch=p.epoch, epochs=p.epochs, step=p.step,
                steps=p.steps_per_epoch, global_step=p.global_step, total_steps=p.total_steps, loss=p.loss,
                accuracy=p.accuracy, val_top1=p.val_top1, lr=p.lr, images_per_s=p.images_per_s, eta_s=eta))
        return cb

    def _generic_progress(self, stage: str) -> Callable[[Any], None]:
        """Adapter for progress reports of other long calls (prune, measure): floats or objects."""
        def cb(p: Any) -> None:
            if isinstance(p, (int, float)):
                f, msg = float(p), None
            else:
                f = getattr(p, "fraction", None)
                if f is None and isinstance(p, dict):
                    f = p.get("fraction")
                msg = getattr(p, "message", None) or (p.get("message") if isinstance(p, dict) else None)
                f = float(f) if isinstance(f, (int, float)) else 0.0
            self._emit(Progress(stage=stage, fraction=f, overall=self._overall(f),
                                message=None if msg is None else str(msg)))
        return cb

    # ------------------------------------------------------------------ run
    def run(self) -> ExperimentResult:
        """Run every stage. Raises Cancelled when cancelled, or the stage's error."""
        self.config.validate()
        self.cfg = self.config.effective()
        try:
            for i, stage in enumerate(self.stages):
                check_cancel(self.cancel, f"before the {stage} stage")
                self._stage = stage
                self._emit(StageStarted(stage=stage, index=i, total=len(self.stages), overall=self._overall()))
                t0 = time.perf_counter()
                info = getattr(self, f"_stage_{stage}")() or {}
                secs = time.perf_counter() - t0
                self.timings[stage] = secs
                self._done_weight += self._weights[stage]
                self._emit(StageFinished(stage=stage, seconds=secs, info=info, overall=self._overall()))
        except Cancelled:
            raise
        except Exception as exc:
            self._emit(ErrorEvent(message=describe_error(exc), stage=self._stage, error_type=type(exc).__name__,
                                  traceback=traceback.format_exc()))
            raise
        finally:
            self._stage = None
        return ExperimentResult(config=self.config.to_dict(), metrics=self.metrics, prune_report=self.prune_report,
                                artifacts=self.artifacts, baseline=self.baseline_info, timings=self.timings,
                                model=self.model)

    # ------------------------------------------------------------------ stages
    def _stage_data(self) -> dict[str, Any]:
        from .data import load_data

        cfg = self.cfg
        data_cfg = cfg.data
        if data_cfg.mean is None or data_cfg.std is None:
            mean, std = self._model_normalisation()
            if mean is not None and std is not None:
                data_cfg = dataclasses.replace(data_cfg, mean=tuple(mean), std=tuple(std))
        self.data = load_data(data_cfg)
        self.data_cfg = dataclasses.replace(data_cfg, mean=tuple(self.data.mean), std=tuple(self.data.std))
        if len(self.data.test.dataset) == 0:
            self.warn("The test split is empty; the validation split is used for the reported metrics.")
        return {"split": self.data.split, "classes": self.data.num_classes,
                "input_size": list(self.data.input_size), "mean": list(self.data.mean), "std": list(self.data.std)}

    def _model_normalisation(self) -> tuple[Any, Any]:
        """The normalisation the model expects, so saved models record what they were fed.

        Scratch and pretrained models: their spec's (``accelvit.models``). A checkpoint: the
        data config it was trained with when its meta records one (None there means the data
        set's default), else the normalisation its spec records.
        """
        cfg = self.cfg
        if cfg.baseline_source == "checkpoint":
            doc = serialize.read_spec(Path(cfg.baseline_checkpoint).expanduser())
            data_meta = (doc.get("meta") or {}).get("data")
            if isinstance(data_meta, dict) and "dataset" in data_meta:
                return data_meta.get("mean"), data_meta.get("std")
            norm = doc.get("normalization") or doc.get("model") or {}
            return norm.get("mean"), norm.get("std")
        spec = model_spec(cfg.model, 2, cfg.data.img_size, pretrained=cfg.baseline_source != "scratch")
        return spec.mean, spec.std

    @property
    def _eval_loader(self):
        return self.data.test if len(self.data.test.dataset) > 0 else self.data.val

    @property
    def _val_loader(self):
        return self.data.val if len(self.data.val.dataset) > 0 else None

    def _stage_baseline(self) -> dict[str, Any]:
        cfg = self.cfg
        dev = self._device()
        if cfg.baseline_source == "checkpoint":
            path = Path(cfg.baseline_checkpoint).expanduser()
            model, doc = serialize.load(path, device="cpu")
            self._check_classes(model, f"the baseline checkpoint {path}")
            if doc.get("structure"):
                self.warn(f"The baseline checkpoint {path} is already pruned; pruning it again compounds.")
            self.baseline_info = {"source": "checkpoint", "path": str(path), "baseline_key": cfg.baseline_key()}
            self._emit(Artifact(name="baseline", path=str(path), type="model", stage="baseline"))
            self.baseline_model = model.to(dev).eval()
            return dict(self.baseline_info)

        key = cfg.baseline_key()
        cache = baselines_dir(self.home) / key
        model = None
        if (cache / serialize.SPEC_FILE).exists() and (cache / "baseline.json").exists():
            try:
                model, _ = serialize.load(cache, device="cpu")
                self._check_classes(model, f"the cached baseline {cache}")
                info = json.loads((cache / "baseline.json").read_text())
                self.baseline_info = {**info, "source": "cache", "trained_as": info.get("source"),
                                      "path": str(cache), "baseline_key": key}
            except (AccelvitError, OSError, ValueError) as exc:
                self.warn(f"The cached baseline in {cache} could not be used ({exc}); training a new one.")
                model = None
        if model is None:
            model, info = self._train_baseline(key)
            self.baseline_info = {**info, "path": str(self._cache_baseline(model, key, info)), "baseline_key": key}
        self._emit(Artifact(name="baseline", path=self.baseline_info["path"], type="model", stage="baseline"))
        self.baseline_model = model.to(dev).eval()
        return dict(self.baseline_info)

    def _check_classes(self, model: torch.nn.Module, what: str) -> None:
        n = getattr(getattr(model, "accelvit_spec", None), "num_classes", None)
        if n is not None and n != self.data.num_classes:
            raise ModelError(f"{what} has {n} classes but the {self.cfg.data.dataset} data set has "
                             f"{self.data.num_classes}; use a checkpoint trained on this data set.")

    def _train_baseline(self, key: str) -> tuple[torch.nn.Module, dict[str, Any]]:
        from .models import build_model
        from .train import fit

        cfg = self.cfg
        seed_everything(cfg.seed)
        model = build_model(cfg.model, self.data.num_classes, pretrained=cfg.pretrained,
                            weights_path=cfg.weights_path, img_size=cfg.data.img_size)
        source = cfg.baseline_source
        info: dict[str, Any] = {"source": source, "model": cfg.model, "epochs": cfg.train.epochs}
        if cfg.train.epochs > 0:
            res = fit(model, self.data.train, cfg.train, val_loader=self._val_loader,
                      progress=self._fit_progress("baseline"), cancel=self.cancel,
                      progress_every=_progress_every(self.data.train))
            info.update(source="trained" if source == "scratch" else f"finetuned-{source}", steps=res.steps,
                        train_seconds=res.train_seconds, train_images_per_s=res.images_per_s, history=res.history)
        model.eval()
        return model, info

    def _cache_baseline(self, model: torch.nn.Module, key: str, info: dict[str, Any]) -> Path:
        """Save into baselines/<key>/ atomically (a temp folder renamed into place)."""
        root = baselines_dir(self.home)
        final = root / key
        tmp = root / f".tmp-{key}-{secrets.token_hex(4)}"
        meta = {"baseline_key": key, "data": self.data_cfg.to_dict(), "split": self.data.split,
                "config": self.config.to_dict()}
        try:
            serialize.save(model, tmp, class_names=self.data.class_names, meta=meta)
            serialize.atomic_write_json(tmp / "baseline.json", {**info, "baseline_key": key, "created": time.time()})
            if (final / "baseline.json").exists():  # another run cached the same baseline meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            if final.exists():  # a damaged cache entry (it failed to load above)
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if (final / "baseline.json").exists():  # another process cached the same baseline first
                return final
            self.warn(f"Could not cache the baseline in {final} ({exc}); it will be retrained next time.")
            return final
        return final

    def _measure(self, stage: str, model: torch.nn.Module) -> dict[str, Any]:
        from .train import evaluate

        dev = self._device()
        ev = evaluate(model, self._eval_loader, device=dev, num_classes=self.data.num_classes,
                      amp=self.cfg.finetune.amp, cancel=self.cancel)
        check_cancel(self.cancel, f"the {stage} stage")
        metrics: dict[str, Any] = {"top1": ev.top1, "top5": ev.top5, "loss": ev.loss, "n": ev.n}
        metrics.update(self._measure_cost(model, dev))
        metrics["per_class"] = ev.per_class
        self.metrics[stage] = metrics
        self._emit(Metrics(stage=stage, metrics=metrics))
        return {k: v for k, v in metrics.items() if k != "per_class"}

    def _measure_cost(self, model: torch.nn.Module, dev: torch.device) -> dict[str, Any]:
        from .metrics import measure

        m = measure(model, input_size=tuple(self.data.input_size), device=str(dev),
                    latency=self.cfg.measure_latency)
        d = m.to_dict()
        d.pop("layers", None)  # per-layer table: an artifact (layers_<stage>.csv), not a metric
        layers = getattr(m, "layers", None)
        if layers is not None and self.artifact_dir is not None and self._stage is not None:
            path = self.artifact_dir / f"layers_{self._stage}.csv"
            serialize.atomic_write_bytes(path, layers.to_csv(index=False).encode())
            self.artifacts[f"layers_{self._stage}"] = str(path)
            self._emit(Artifact(name=f"layers_{self._stage}", path=str(path), type="csv", stage=self._stage))
        model.to(dev).eval()
        return d

    def _stage_before(self) -> dict[str, Any]:
        return self._measure("before", self.baseline_model)

    def _stage_prune(self) -> dict[str, Any]:
        from .prune import prune

        # the control stage needs the baseline again; otherwise prune it in place (half the memory)
        if self.config.control:
            model = copy.deepcopy(self.baseline_model)
        else:
            model, self.baseline_model = self.baseline_model, None
        model, report = prune(model, self.cfg.prune, self.data.train, progress=self._generic_progress("prune"),
                              cancel=self.cancel)
        self.model = model.to(self._device()).eval()
        self.prune_report = report.to_dict() if hasattr(report, "to_dict") else dict(report or {})
        return self.prune_report

    def _stage_pruned(self) -> dict[str, Any]:
        return self._measure("pruned", self.model)

    def _finetune(self, model: torch.nn.Module, stage: str, hooks: list) -> dict[str, Any]:
        from .train import fit

        ft = self.cfg.finetune
        if ft.epochs == 0:
            return {"skipped": True, "reason": "finetune.epochs is 0"}
        res = fit(model, self.data.train, ft, val_loader=self._val_loader, hooks=hooks,
                  progress=self._fit_progress(stage), cancel=self.cancel,
                  progress_every=_progress_every(self.data.train))
        model.eval()
        return {"epochs": res.epochs, "steps": res.steps, "train_seconds": res.train_seconds,
                "train_images_per_s": res.images_per_s, "history": res.history}

    def _stage_finetune(self) -> dict[str, Any]:
        from .prune import make_iht_hook

        pc = self.cfg.prune
        if pc.sparsity > 0 and self.cfg.finetune.epochs == 0:
            self.warn(f"sparsity {pc.sparsity} is reached by IHT during finetuning, but finetune.epochs is 0.")
        hook = make_iht_hook(self.model, pc)
        info = self._finetune(self.model, "finetune", [hook] if hook is not None else [])
        info["iht"] = hook is not None
        return info

    def _stage_after(self) -> dict[str, Any]:
        return self._measure("after", self.model)

    def _stage_control(self) -> dict[str, Any]:
        model = copy.deepcopy(self.baseline_model)
        info = self._finetune(model, "control", [])
        info.update(self._measure("control", model))
        del model
        return info

    def _stage_save(self) -> dict[str, Any]:
        if self.artifact_dir is None:
            return {"skipped": True, "reason": "no artifact folder given"}
        out = self.artifact_dir
        out.mkdir(parents=True, exist_ok=True)
        summary = {s: {k: v for k, v in m.items() if k != "per_class"} for s, m in self.metrics.items()}
        meta = {"run_id": self.run_id, "config": self.config.to_dict(), "data": self.data_cfg.to_dict(),
                "split": self.data.split, "metrics": summary, "baseline": _jsonable(self.baseline_info)}
        model_dir = out / "model"
        serialize.save(self.model, model_dir, class_names=self.data.class_names, meta=meta)
        self.artifacts["model"] = str(model_dir)
        self._emit(Artifact(name="model", path=str(model_dir), type="model", stage="save"))
        report = {"run_id": self.run_id, "name": self.config.display_name(), "config": self.config.to_dict(),
                  "metrics": self.metrics, "prune_report": self.prune_report,
                  "baseline": _jsonable(self.baseline_info), "split": self.data.split,
                  "class_names": self.data.class_names, "timings": self.timings}
        report_path = out / "report.json"
        serialize.atomic_write_json(report_path, _jsonable(report))
        self.artifacts["report"] = str(report_path)
        self._emit(Artifact(name="report", path=str(report_path), type="json", stage="save"))
        return {"dir": str(out), "artifacts": dict(self.artifacts)}


def _progress_every(loader: Any) -> int:
    try:
        n = len(loader)
    except TypeError:
        return 10
    return max(1, n // 50)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (NaN kept as float, tensors as numbers/lists, paths as text)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        try:
            return obj.item()
        except Exception:
            pass
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return obj
    return str(obj)


def run_experiment(config: ExperimentConfig, **kwargs: Any) -> ExperimentResult:
    """Shorthand for ``Experiment(config, **kwargs).run()``."""
    return Experiment(config, **kwargs).run()
