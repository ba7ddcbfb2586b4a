"""One experiment, headless: data -> baseline -> prune -> finetune -> evaluate, emitting events.

``Experiment(config).run()`` runs these named stages in order (``STAGES``)::

    data      load the data set (train / val / test loaders)
    baseline  train from scratch, finetune a pretrained model, or load a saved checkpoint;
              trained baselines are cached under $ACCELVIT_HOME/baselines/<baseline_key>/
              (``accelvit.experiment.baselines``) and reused by every run with the same key
    before    evaluate + measure the baseline                      -> Metrics("before")
    prune     heads / MLP width / SVD (accelvit.prune.prune)
    pruned    evaluate + measure, no finetune                      -> Metrics("pruned")
    finetune  finetune with the IHT sparsity hook
    after     evaluate + measure                                   -> Metrics("after")
    control   (config.control only) the baseline finetuned for the same extra epochs,
              evaluated + measured                                 -> Metrics("control")
    save      the pruned model (accelvit.serialize) + report.json  -> Artifact events

This one runner is what the dashboard's jobs, ``accelvit run``, ``accelvit sweep``,
``accelvit prune`` (a run whose baseline is a given checkpoint) and ``bench.pareto``'s
accelvit rows execute. Its seams, for callers and tests (no private methods to patch):

- ``stages``: run only these stages (in the order of ``STAGES``), e.g. ``("data",
  "baseline", "before")`` for a measured baseline;
- ``overrides``: ``{stage: fn(experiment) -> info dict}`` replaces a stage; the default of
  each is the public method ``Experiment.stage_<name>``, so a wrapper can call through;
- ``measure_cost``: ``fn(model, device) -> dict`` replaces the FLOP / size / latency
  measurement (``accelvit.metrics.measure``) of the measured stages; by default the ``pruned``
  and ``after`` models are timed interleaved with the baseline (``accelvit.metrics.compare``,
  see ``Experiment.latency_comparison`` and ``LatencyPlan``), so their ``speedup_b1`` /
  ``speedup_batch`` come from one comparison, never from two timings minutes apart;
- ``model_dir``: where ``save`` writes the model (default ``<artifact_dir>/model``).

Everything it does is told through ``on_event(event)`` (``accelvit.experiment.events``);
the cancel token is checked between stages and inside every training step, and
:class:`~accelvit.errors.Cancelled` propagates out of ``run``. On any other error an
:class:`ErrorEvent` is emitted and the exception re-raised.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils.data import DataLoader

from .. import distributed as D
from .. import serialize
from ..data import load_data
from ..distill import DistillLoss
from ..errors import Cancelled, ConfigError, ModelError
from ..fileio import to_jsonable
from ..metrics import compare, measure
from ..models import build_model, model_spec
from ..prune import make_iht_hook, prune
from ..prune.structure import broadcast_pruned, is_pruned
from ..train import TrainProgress, check_finite, evaluate, fit
from ..utils import CancelToken, check_cancel, resolve_device, seed_everything
from .baselines import cache_path, load_cached, save_cached
from .config import ExperimentConfig
from .events import (STAGES, Artifact, ErrorEvent, Event, EventCallback, Metrics, Progress, StageFinished,
                     StageStarted, WarningEvent, describe_error)

log = logging.getLogger(__name__)

StageFn = Callable[["Experiment"], "dict[str, Any] | None"]
MeasureCost = Callable[[torch.nn.Module, torch.device], "dict[str, Any]"]


#: Stages whose model is timed interleaved with the baseline (when ``measure_latency`` is on).
INTERLEAVED_STAGES = ("pruned", "after")


@dataclass(frozen=True)
class LatencyPlan:
    """How a run times latency: ``warmup`` untimed pairs, then at least ``reps_b1`` timed pairs at
    batch 1 and ``reps_batch`` at ``batch_size`` (models timed alone: ``warmup`` + ``reps_batch``
    passes per batch size); with ``budget_s``, more pairs while they fit in about that many
    seconds per batch size, up to ``max_reps`` (cheap models get tighter medians for free)."""

    warmup: int = 3
    reps_b1: int = 20
    reps_batch: int = 5
    batch_size: int = 64
    budget_s: float | None = 1.0
    max_reps: int = 100


@dataclass
class ExperimentResult:
    config: dict[str, Any]
    metrics: dict[str, dict[str, Any]]          # stage -> metrics
    prune_report: dict[str, Any] | None
    artifacts: dict[str, str]                   # name -> path
    baseline: dict[str, Any]                    # source, key, path, fit summary
    timings: dict[str, float]                   # stage -> seconds
    model: torch.nn.Module | None = None        # the pruned, finetuned model
    baseline_model: torch.nn.Module | None = None  # the baseline, when a stage after prune still holds it


class Experiment:
    """Runs one :class:`ExperimentConfig` (see the module docstring).

    Args:
        config: validated here again before anything runs.
        on_event: called with every event, in the calling thread.
        cancel: checked between stages and every training step.
        home: the workspace holding the baseline cache (default ``$ACCELVIT_HOME``).
        artifact_dir: where ``save`` writes report.json and the per-layer tables; None skips saving.
        run_id: recorded in the saved model's meta and report.
        stages: the stages to run (default: all of ``STAGES``, ``control`` when the config asks).
        overrides: replacement stage functions ``{stage: fn(experiment)}``.
        measure_cost: replacement for the cost measurement of the measured stages.
        model_dir: where ``save`` writes the pruned model (default ``artifact_dir / "model"``).
    """

    def __init__(self, config: ExperimentConfig, *, on_event: EventCallback | None = None,
                 cancel: CancelToken | None = None, home: str | os.PathLike | None = None,
                 artifact_dir: str | os.PathLike | None = None, run_id: str | None = None,
                 stages: Sequence[str] | None = None, overrides: Mapping[str, StageFn] | None = None,
                 measure_cost: MeasureCost | None = None, model_dir: str | os.PathLike | None = None):
        self.config = config
        self.on_event = on_event
        self.cancel = cancel
        self.home = home
        self.artifact_dir = Path(artifact_dir) if artifact_dir is not None else None
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.run_id = run_id
        wanted = set(STAGES if stages is None else stages)
        unknown = sorted(wanted - set(STAGES)) + sorted(set(overrides or {}) - set(STAGES))
        if unknown:
            raise ConfigError("stages", f"unknown stage {unknown[0]!r}; the stages are {', '.join(STAGES)}.")
        self.stages = [s for s in STAGES if s in wanted and (s != "control" or config.control or stages is not None)]
        self.overrides = dict(overrides or {})
        self._measure_cost_fn = measure_cost
        self.metrics: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, float] = {}
        self.artifacts: dict[str, str] = {}
        self.baseline_info: dict[str, Any] = {}
        self.prune_report: dict[str, Any] | None = None
        self.data = None
        self.data_cfg = None
        self.baseline_model: torch.nn.Module | None = None
        self.model: torch.nn.Module | None = None
        #: The distillation teacher (the unpruned baseline) while a finetune after pruning needs it.
        self.teacher: torch.nn.Module | None = None
        self._recovery_steps = 0
        self._stage: str | None = None
        self._weights = self._stage_weights()
        self._done_weight = 0.0

    # ------------------------------------------------------------------ plumbing
    def emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        self.emit(WarningEvent(message=message, stage=self._stage))

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

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config.device)

    def fit_progress(self, stage: str) -> Callable[[TrainProgress], None]:
        def cb(p: TrainProgress) -> None:
            f = p.fraction
            eta = p.elapsed_s * (1 - f) / f if f > 0 else None
            self.emit(Progress(
                stage=stage, fraction=f, overall=self._overall(f), epoch=p.epoch, epochs=p.epochs, step=p.step,
                steps=p.steps_per_epoch, global_step=p.global_step, total_steps=p.total_steps, loss=p.loss,
                accuracy=p.accuracy, val_top1=p.val_top1, lr=p.lr, images_per_s=p.images_per_s, eta_s=eta))
        return cb

    def generic_progress(self, stage: str) -> Callable[[Any], None]:
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
            self.emit(Progress(stage=stage, fraction=f, overall=self._overall(f),
                               message=None if msg is None else str(msg)))
        return cb

    # ------------------------------------------------------------------ run
    def run(self) -> ExperimentResult:
        """Run every stage. Raises Cancelled when cancelled, or the stage's error."""
        self.config.validate()
        D.check_world(self.config.processes)  # processes > 1 only in a torchrun group of that size
        self.cfg = self.config.effective()
        try:
            for i, stage in enumerate(self.stages):
                D.check_cancel_all(self.cancel, f"before the {stage} stage")  # every rank alike under torchrun
                self._stage = stage
                self.emit(StageStarted(stage=stage, index=i, total=len(self.stages), overall=self._overall()))
                t0 = time.perf_counter()
                fn = self.overrides.get(stage) or getattr(type(self), f"stage_{stage}")
                info = fn(self) or {}
                secs = time.perf_counter() - t0
                self.timings[stage] = secs
                self._done_weight += self._weights[stage]
                self.emit(StageFinished(stage=stage, seconds=secs, info=info, overall=self._overall()))
        except Cancelled:
            raise
        except Exception as exc:
            self.emit(ErrorEvent(message=describe_error(exc), stage=self._stage, error_type=type(exc).__name__,
                                 traceback=traceback.format_exc()))
            raise
        finally:
            self._stage = None
        if self.model is not None:  # under torchrun: equal on every rank, DDP keeps the weights in step
            D.log_digest(self.model)
        return ExperimentResult(config=self.config.to_dict(), metrics=self.metrics, prune_report=self.prune_report,
                                artifacts=self.artifacts, baseline=self.baseline_info, timings=self.timings,
                                model=self.model, baseline_model=self.baseline_model)

    # ------------------------------------------------------------------ data
    def stage_data(self) -> dict[str, Any]:
        data_cfg = self.cfg.data
        if data_cfg.mean is None or data_cfg.std is None:
            mean, std = self._model_normalisation()
            if mean is not None and std is not None:
                data_cfg = dataclasses.replace(data_cfg, mean=tuple(mean), std=tuple(std))
        report = self.generic_progress("data")
        return self.use_data(load_data(data_cfg, progress=lambda f, msg: report({"fraction": f, "message": msg})))

    def use_data(self, data: Any) -> dict[str, Any]:
        """Take a loaded data bundle (``accelvit.data.load_data``); the data stage's info."""
        self.data = data
        self.data_cfg = dataclasses.replace(self.cfg.data, mean=tuple(data.mean), std=tuple(data.std))
        if len(data.test.dataset) == 0:
            self.warn("The test split is empty; the validation split is used for the reported metrics.")
        return {"split": data.split, "classes": data.num_classes, "input_size": list(data.input_size),
                "mean": list(data.mean), "std": list(data.std)}

    def _model_normalisation(self) -> tuple[Any, Any]:
        """The normalisation the model expects, so saved models record what they were fed."""
        cfg = self.cfg
        if cfg.baseline_source == "checkpoint":
            return serialize.normalisation(serialize.read_spec(Path(cfg.baseline_checkpoint).expanduser()))
        spec = model_spec(cfg.model, 2, cfg.data.img_size, pretrained=cfg.baseline_source != "scratch")
        return spec.mean, spec.std

    @property
    def eval_loader(self):
        return self.data.test if len(self.data.test.dataset) > 0 else self.data.val

    @property
    def val_loader(self):
        return self.data.val if len(self.data.val.dataset) > 0 else None

    # ------------------------------------------------------------------ baseline
    def stage_baseline(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.baseline_source == "checkpoint":
            path = Path(cfg.baseline_checkpoint).expanduser()
            model, doc = serialize.load(path, device="cpu")
            self._check_classes(model, f"the baseline checkpoint {path}")
            check_finite(model, f"The baseline checkpoint {path}", "its numbers would be meaningless. Use a "
                                                                   "checkpoint whose training did not diverge.")
            if is_pruned(doc.get("structure")):
                self.warn(f"The baseline checkpoint {path} is already pruned; pruning it again compounds.")
            self.baseline_info = {"source": "checkpoint", "path": str(path), "baseline_key": cfg.baseline_key()}
        else:
            key = cfg.baseline_key()
            cached = load_cached(key, self.home, check=self._check_classes, warn=self.warn)
            if cached is not None:
                model, self.baseline_info = cached
            else:
                model, info = self._train_baseline()
                meta = {"baseline_key": key, "data": self.data_cfg.to_dict(), "split": self.data.split,
                        "config": self.config.to_dict()}
                if D.is_main():  # under torchrun every rank trained the same weights; rank 0 caches them
                    path = save_cached(model, key, info, class_names=self.data.class_names, meta=meta,
                                       home=self.home, warn=self.warn)
                else:
                    path = cache_path(key, self.home)
                self.baseline_info = {**info, "path": str(path), "baseline_key": key}
        self.emit(Artifact(name="baseline", path=self.baseline_info["path"], type="model", stage="baseline"))
        self.baseline_model = model.to(self.device).eval()
        return dict(self.baseline_info)

    def _check_classes(self, model: torch.nn.Module, what: str) -> None:
        n = getattr(getattr(model, "accelvit_spec", None), "num_classes", None)
        if n is not None and n != self.data.num_classes:
            raise ModelError(f"{what} has {n} classes but the {self.cfg.data.dataset} data set has "
                             f"{self.data.num_classes}; use a checkpoint trained on this data set.")

    def _train_baseline(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        cfg = self.cfg
        seed_everything(cfg.seed)
        model = build_model(cfg.model, self.data.num_classes, pretrained=cfg.pretrained,
                            weights_path=cfg.weights_path, img_size=cfg.data.img_size)
        source = cfg.baseline_source
        info: dict[str, Any] = {"source": source, "model": cfg.model, "epochs": cfg.train.epochs}
        if cfg.train.epochs > 0:
            res = fit(model, self.data.train, cfg.train, val_loader=self.val_loader,
                      progress=self.fit_progress("baseline"), cancel=self.cancel,
                      progress_every=_progress_every(self.data.train))
            info.update(source="trained" if source == "scratch" else f"finetuned-{source}", steps=res.steps,
                        train_seconds=res.train_seconds, train_images_per_s=res.images_per_s, history=res.history)
        model.eval()
        return model, info

    # ------------------------------------------------------------------ measuring
    #: How latency is timed (``config.measure_latency``); a test or a caller may replace it.
    latency_plan: LatencyPlan = LatencyPlan()
    #: torch CPU threads every timing of this run uses: the count when the first stage was measured.
    latency_threads: int | None = None

    def measure_stage(self, stage: str, model: torch.nn.Module) -> dict[str, Any]:
        """Evaluate + measure ``model``; records ``metrics[stage]`` and emits a Metrics event."""
        dev = self.device
        ev = evaluate(model, self.eval_loader, device=dev, num_classes=self.data.num_classes,
                      amp=self.cfg.finetune.amp, cancel=self.cancel)
        D.check_cancel_all(self.cancel, f"the {stage} stage")
        metrics: dict[str, Any] = {"top1": ev.top1, "top5": ev.top5, "loss": ev.loss, "n": ev.n}
        cost = self._measure_cost_fn or self.measure_cost
        if D.is_main():  # FLOPs, bytes and latency once, on rank 0 (the other ranks wait at the next collective)
            metrics.update(cost(model, dev))
        model.to(dev).eval()
        metrics["per_class"] = ev.per_class
        self.metrics[stage] = metrics
        self.emit(Metrics(stage=stage, metrics=metrics))
        return {k: v for k, v in metrics.items() if k != "per_class"}

    def measure_cost(self, model: torch.nn.Module, dev: torch.device) -> dict[str, Any]:
        """FLOPs, parameters, nonzeros, bytes on disk and (optionally) latency; the per-layer table as a CSV.

        With ``config.measure_latency``, the pruned model of the ``pruned`` and ``after`` stages is
        timed interleaved with the baseline (:meth:`latency_comparison`): its latencies are that
        comparison's medians and ``speedup_b1`` / ``speedup_batch`` its ratios. Other stages (and
        a run whose baseline cannot be had again) time the model alone.
        """
        if self.latency_threads is None:
            self.latency_threads = torch.get_num_threads()
        plan = self.latency_plan
        timed = self.cfg.measure_latency
        interleave = timed and self._stage in INTERLEAVED_STAGES
        m = measure(model, input_size=tuple(self.data.input_size), device=str(dev), latency=timed and not interleave,
                    batch_size=plan.batch_size, warmup=plan.warmup, reps=plan.reps_batch,
                    num_threads=self.latency_threads)
        d = m.to_dict()
        d.pop("layers", None)  # per-layer table: an artifact (layers_<stage>.csv), not a metric
        if interleave:
            d.update(self.latency_comparison(model, dev))
        layers = getattr(m, "layers", None)
        if layers is not None and self.artifact_dir is not None and self._stage is not None:
            path = self.artifact_dir / f"layers_{self._stage}.csv"
            serialize.atomic_write_bytes(path, layers.to_csv(index=False).encode())
            self.artifacts[f"layers_{self._stage}"] = str(path)
            self.emit(Artifact(name=f"layers_{self._stage}", path=str(path), type="csv", stage=self._stage))
        return d

    def timing_baseline(self) -> tuple[torch.nn.Module | None, str]:
        """The unpruned baseline to time against: the one still held (a run with a control stage),
        the distillation teacher's copy, else reloaded from ``baseline_info["path"]`` (the cache
        entry or the given checkpoint). ``(None, why)`` when none can be had."""
        if self.baseline_model is not None:
            return self.baseline_model, "held"
        if self.teacher is not None:
            return self.teacher, "teacher"
        path = (self.baseline_info or {}).get("path")
        if not path:
            return None, "the baseline was not saved anywhere it could be reloaded from"
        try:
            model, _ = serialize.load(path, device="cpu")
        except Exception as exc:  # any failure: fall back to timing the pruned model alone
            return None, f"the baseline could not be reloaded from {path} ({describe_error(exc)})"
        return model, "reloaded"

    def latency_comparison(self, model: torch.nn.Module, dev: torch.device) -> dict[str, Any]:
        """Time the baseline and ``model`` interleaved (:func:`accelvit.metrics.compare`) with
        :attr:`latency_plan`, threads pinned to :attr:`latency_threads`; the stage's latency and
        speedup metrics. Falls back to timing ``model`` alone (``speedup_method: "separate"``)."""
        plan = self.latency_plan
        baseline, source = self.timing_baseline()
        if baseline is None:
            self.warn(f"The {self._stage} latency is timed alone, not interleaved with the baseline: {source}. "
                      "Its speedup is the ratio of two separate timings.")
            m = measure(model, input_size=tuple(self.data.input_size), device=str(dev), batch_size=plan.batch_size,
                        warmup=plan.warmup, reps=plan.reps_batch, thop=False, size=False,
                        num_threads=self.latency_threads)
            d = {k: v for k, v in m.to_dict().items() if k.startswith(("latency_", "images_per_s_"))}
            return {**d, "speedup_method": "separate", "speedup_note": source}
        c = compare(baseline, model, input_size=tuple(self.data.input_size), device=str(dev),
                    batch_sizes=tuple(dict.fromkeys((1, plan.batch_size))), warmup=plan.warmup,
                    reps={plan.batch_size: plan.reps_batch, 1: plan.reps_b1}, num_threads=self.latency_threads,
                    budget_s=plan.budget_s, max_reps=plan.max_reps)
        del baseline  # a reloaded copy is freed here
        b1, bb = c.point(1), c.point(plan.batch_size)
        out: dict[str, Any] = {"speedup_method": "interleaved", "baseline_for_timing": source,
                               "latency_compare": c.to_dict(), "device": c.device, "device_name": c.device_name,
                               "num_threads": c.num_threads}
        for label, p in (("b1", b1), ("batch", bb)):
            out.update({f"latency_ms_{label}": p.pruned.median_ms, f"latency_{label}": dataclasses.asdict(p.pruned),
                        f"images_per_s_{label}": p.pruned.images_per_s, f"speedup_{label}": p.speedup,
                        f"paired_speedup_{label}": p.paired_speedup,
                        f"baseline_latency_ms_{label}": p.baseline.median_ms})
        return out

    def stage_before(self) -> dict[str, Any]:
        return self.measure_stage("before", self.baseline_model)

    # ------------------------------------------------------------------ prune + finetune
    def stage_prune(self) -> dict[str, Any]:
        # the control stage (or a caller) needs the baseline again: prune a copy; otherwise in place.
        # The distillation teacher is the unpruned baseline: kept (a copy when pruning in place)
        # until the finetune is over.
        if "control" in self.stages:
            model = copy.deepcopy(self.baseline_model)
            self.teacher = self.baseline_model if self.distills else None
        else:
            self.teacher = copy.deepcopy(self.baseline_model).eval() if self.distills else None
            model, self.baseline_model = self.baseline_model, None
        pc = self.cfg.prune
        if D.active() and pc.prune_steps > 1:
            raise ConfigError("prune.prune_steps", "gradual pruning (prune_steps > 1) interleaves pruning on one "
                                                   "process with finetunes on all of them and is not supported under "
                                                   "torchrun yet; use prune_steps 1 or run in one process.")
        if pc.prune_steps > 1:  # validation: only with target_flops
            model, self.prune_report = self._prune_gradually(model)
        elif D.is_main():  # under torchrun: scoring, surgery and the FLOP search on rank 0 only
            try:
                model, report = prune(model, pc, self.calibration_loader(),
                                      progress=self.generic_progress("prune"), cancel=self.cancel)
            except Cancelled:
                if not D.active():
                    raise  # under torchrun the other ranks wait for the structure: all stop together below
            else:
                self.prune_report = report.to_dict()
        if D.active():  # every rank gets rank 0's pruned structure and weights before the finetune
            D.check_cancel_all(self.cancel, "the prune stage")
            model = broadcast_pruned(model.to(self.device))
            self.prune_report = D.broadcast_object(self.prune_report)
        self.model = model.to(self.device).eval()
        return self.prune_report

    @property
    def distills(self) -> bool:
        """Whether finetunes after pruning distil from the unpruned baseline."""
        return self.cfg.distill.enabled and (self.cfg.finetune.epochs > 0 or self.cfg.prune.prune_steps > 1)

    def _prune_gradually(self, model: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, Any]]:
        """``prune_steps`` prunes toward ``target_flops`` (FLOP fractions ``1 - (1 - target) i / k`` of
        the baseline), each but the last followed by a recovery finetune of ``1 / k`` of the
        finetune's steps (distilled); the finetune stage spends the rest. SVD (if configured) is
        applied in the last step only: heads and MLP units cannot be cut out of factorised layers."""
        pc, ft = self.cfg.prune, self.cfg.finetune
        k = pc.prune_steps
        per_step = self.finetune_steps() // k
        steps: list[dict[str, Any]] = []
        first: dict[str, Any] | None = None
        report: dict[str, Any] = {}
        base_flops = now_flops = None  # measured by each step's FLOP-target search (report["target"])
        for i in range(1, k + 1):
            check_cancel(self.cancel, f"prune step {i} of {k}")
            goal = 1 - (1 - pc.target_flops) * i / k
            now = 1.0 if base_flops is None else now_flops / base_flops
            cfg_i = dataclasses.replace(pc, target_flops=min(goal / now, 0.999), prune_steps=1)
            if i < k:  # heads and MLP units cannot be removed from a factorised layer: SVD in the last step only
                cfg_i = dataclasses.replace(cfg_i, rank_ratio=None, energy=None, activation_aware=False)
            model, rep = prune(model, cfg_i, self.calibration_loader(), progress=self.generic_progress("prune"),
                               cancel=self.cancel)
            report = rep.to_dict()
            first = first or report
            base_flops = base_flops or report["target"]["baseline_flops"]
            now_flops = report["target"]["final_flops"]
            entry = {"step": i, "goal_of_baseline_flops": goal, "achieved_of_baseline_flops": now_flops / base_flops,
                     "params_after": report.get("params_after")}
            if i < k and per_step > 0:
                model.to(self.device)
                rec = dataclasses.replace(ft, max_steps=per_step, seed=ft.seed + i)
                res = fit(model, self.data.train, rec, hooks=[], progress=self.fit_progress("prune"),
                          cancel=self.cancel, progress_every=_progress_every(self.data.train),
                          loss_fn=self.loss_fn(rec))
                entry.update(recovery_steps=res.steps, recovery_seconds=res.train_seconds)
                self._recovery_steps += res.steps
            for layer in report.get("layers", []):
                layer["step"] = i
            steps.append(entry)
        assert first is not None
        merged = dict(report)
        for key in ("params_before", "nonzero_before", "heads_before", "mlp_hidden_before"):
            merged[key] = first.get(key)
        if merged.get("params_before"):
            merged["param_reduction"] = 1 - merged["params_after"] / merged["params_before"]
        merged["steps"] = steps
        merged["config"] = {**report.get("config", {}), "target_flops": pc.target_flops, "prune_steps": k}
        return model, merged

    def finetune_steps(self) -> int:
        """The finetune's step budget: epochs x batches, capped by ``finetune.max_steps``."""
        ft = self.cfg.finetune
        total = len(self.data.train) * ft.epochs
        return min(total, ft.max_steps) if ft.max_steps is not None else total

    def loss_fn(self, train_cfg) -> Any:
        """The finetune loss: distillation from :attr:`teacher` when on, else None (fit's cross-entropy)."""
        if self.teacher is None or not self.cfg.distill.enabled:
            return None
        return DistillLoss(self.teacher, self.cfg.distill, label_smoothing=train_cfg.label_smoothing)

    def calibration_loader(self) -> DataLoader:
        """The batches pruning scores on: the validation split without augmentation (else the
        training images), shuffled by a generator seeded with the run's seed. Seeded, so a run
        gives the same selection whether its baseline was just trained or came from the cache;
        shuffled, because split indices are sorted and an image folder lists its images class by
        class (the first batches in file order would hold one or two classes)."""
        seed_everything(self.cfg.seed)
        src = self.data.val if len(self.data.val.dataset) > 0 else self.data.train
        return DataLoader(src.dataset, batch_size=self.data.train.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.cfg.seed))

    def stage_pruned(self) -> dict[str, Any]:
        return self.measure_stage("pruned", self.model)

    def finetune(self, model: torch.nn.Module, stage: str, hooks: list) -> dict[str, Any]:
        """Finetune ``model`` with the config's recipe, distilled from :attr:`teacher` when it is set
        and ``distill.alpha > 0``; the steps gradual pruning already spent are taken off."""
        ft = self.cfg.finetune
        if ft.epochs == 0:
            return {"skipped": True, "reason": "finetune.epochs is 0"}
        if stage == "finetune" and self._recovery_steps:
            budget = self.finetune_steps() - self._recovery_steps
            ft = dataclasses.replace(ft, max_steps=max(1, budget))
        loss_fn = self.loss_fn(ft)
        res = fit(model, self.data.train, ft, val_loader=self.val_loader, hooks=hooks,
                  progress=self.fit_progress(stage), cancel=self.cancel,
                  progress_every=_progress_every(self.data.train), loss_fn=loss_fn)
        model.eval()
        return {"epochs": res.epochs, "steps": res.steps, "train_seconds": res.train_seconds,
                "train_images_per_s": res.images_per_s, "history": res.history,
                "distill": self.cfg.distill.to_dict() if loss_fn is not None else None}

    def stage_finetune(self) -> dict[str, Any]:
        pc = self.cfg.prune
        hook = make_iht_hook(self.model, pc)
        if hook is not None and self.cfg.finetune.epochs == 0:
            self.warn(f"sparsity {pc.sparsity} is reached by IHT during finetuning, but finetune.epochs is 0; "
                      "it is applied one-shot by magnitude.")
            hook.finalize(self.model)
        try:
            info = self.finetune(self.model, "finetune", [hook] if hook is not None else [])
        finally:
            if "control" not in self.stages:
                self.teacher = None  # the copy kept for distillation is not needed any more
        info["iht"] = hook is not None
        if hook is not None:
            info["iht_state"] = hook.state()
        return info

    def stage_after(self) -> dict[str, Any]:
        return self.measure_stage("after", self.model)

    def stage_control(self) -> dict[str, Any]:
        model = copy.deepcopy(self.baseline_model)
        if self.distills:  # the same recipe as the pruned model's: distilled from the baseline
            self.teacher = self.baseline_model
        info = self.finetune(model, "control", [])
        self.teacher = None
        info.update(self.measure_stage("control", model))
        del model
        return info

    # ------------------------------------------------------------------ save
    def report(self) -> dict[str, Any]:
        """The run's report.json (one format for the dashboard, ``accelvit run`` and ``accelvit prune``)."""
        return to_jsonable({
            "run_id": self.run_id, "name": self.config.display_name(), "config": self.config.to_dict(),
            "metrics": self.metrics, "prune_report": self.prune_report, "baseline": self.baseline_info,
            "split": self.data.split if self.data is not None else None,
            "class_names": self.data.class_names if self.data is not None else None, "timings": self.timings})

    def stage_save(self) -> dict[str, Any]:
        if self.artifact_dir is None:
            return {"skipped": True, "reason": "no artifact folder given"}
        if not D.is_main():
            return {"skipped": True, "reason": f"rank {D.rank()}: only rank 0 saves"}
        out = self.artifact_dir
        out.mkdir(parents=True, exist_ok=True)
        summary = {s: {k: v for k, v in m.items() if k != "per_class"} for s, m in self.metrics.items()}
        meta = {"run_id": self.run_id, "config": self.config.to_dict(), "data": self.data_cfg.to_dict(),
                "split": self.data.split, "metrics": summary, "baseline": to_jsonable(self.baseline_info)}
        model_dir = self.model_dir or out / "model"
        check_finite(self.model, "The pruned model")  # a NaN model is never saved as if it were a result
        serialize.save(self.model, model_dir, class_names=self.data.class_names, meta=meta)
        self.artifacts["model"] = str(model_dir)
        self.emit(Artifact(name="model", path=str(model_dir), type="model", stage="save"))
        report_path = out / "report.json"
        self.artifacts["report"] = str(report_path)
        serialize.atomic_write_json(report_path, self.report())
        self.emit(Artifact(name="report", path=str(report_path), type="json", stage="save"))
        return {"dir": str(out), "artifacts": dict(self.artifacts)}


def _progress_every(loader: Any) -> int:
    try:
        n = len(loader)
    except TypeError:
        return 10
    return max(1, n // 50)
