"""``accelvit run`` / ``accelvit sweep`` / ``accelvit runs``: experiments through the run store.

* ``run``: one experiment in the foreground (same pipeline and store as the dashboard), with
  a progress bar; prints the run id and a before / pruned / after summary.
* ``sweep --config sweep.json``: every point of a sweep (one shared baseline), one after
  the other, through the job runner; prints the trade-off table.
* ``runs``: the runs in the store as a table, or ``--json`` (a list of runs with ``id,
  status, config, error, stages``...). ``--cancel ID`` stops a run, even one running in
  another process (the dashboard's, say).

``--home DIR`` (before or after the subcommand) or ``ACCELVIT_HOME`` picks the store.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from ..data import DATASETS
from ..errors import ConfigError
from ..prune.config import CRITERIA, IHT_PATTERNS, TARGET_RULES
from ..text import terminal_safe
from .. import distributed
from .common import RunProgressBar, check_img_size_arg, default_augment, follow_rank_0

log = logging.getLogger(__name__)

EXIT = {"finished": 0, "failed": 1, "cancelled": 130, "interrupted": 1}


# ============================================================================ parsers
def register(sub: argparse._SubParsersAction) -> None:
    _register_run(sub)
    _register_sweep(sub)
    _register_runs(sub)


def _register_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run one experiment (baseline -> prune -> finetune -> measure) into the run store",
        description="Train or load a baseline, prune it, finetune it, and measure before / pruned / after. "
                    "The run is recorded in the run store (see --home), so it shows in the dashboard. "
                    "Settings come from --config (an experiment JSON) and the flags, flags winning.")
    p.add_argument("--config", default=None, help="experiment config JSON (ExperimentConfig.to_dict form)")
    p.add_argument("--name", default=None, help="a label for the run")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None, help="data set (default: digits, embedded)")
    g.add_argument("--data-dir", default=None, help="data set folder (cifar10, caltech101, folder)")
    g.add_argument("--download", action="store_true", default=None, help="let torchvision download the data")
    g.add_argument("--img-size", type=check_img_size_arg, default=None, help="input size (default: the model's)")
    g.add_argument("--batch-size", type=int, default=None, help="batch size (default 64)")
    g.add_argument("--subset", type=int, default=None, help="use at most N training images")
    g.add_argument("--eval-subset", type=int, default=None, help="use at most N images in val and test")
    aug = g.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None,
                     help="random crop/flip on the training split (default: on, except for digits)")
    aug.add_argument("--no-augment", dest="augment", action="store_false", help="no random crop/flip in training")
    g.add_argument("--num-workers", type=int, default=None, help="data loader worker processes")
    g.add_argument("--on-bad-image", choices=("error", "skip"), default=None,
                   help="folder data sets: stop and name damaged images (error, default) or leave them out (skip)")
    g = p.add_argument_group("model and baseline")
    g.add_argument("--model", default=None, help="scratch config (swin_pico, swin_micro, swin_small32) or a timm "
                                                 "Swin name (default swin_micro)")
    g.add_argument("--pretrained", action="store_true", default=None, help="start from timm's pretrained weights")
    g.add_argument("--weights", default=None, help="start from a local weights file (.safetensors / .pth)")
    g.add_argument("--baseline", default=None, metavar="DIR",
                   help="use a saved model directory (accelvit train --out) as the baseline; no training")
    g.add_argument("--epochs", type=int, default=None, help="baseline training epochs (default 10)")
    g.add_argument("--lr", type=float, default=None, help="baseline peak learning rate")
    g = p.add_argument_group("pruning")
    g.add_argument("--head-ratio", type=float, default=None, help="fraction of attention heads to remove")
    g.add_argument("--head-criterion", choices=CRITERIA, default=None, help="head importance (default taylor)")
    g.add_argument("--mlp-ratio", type=float, default=None, help="fraction of MLP hidden units to remove")
    g.add_argument("--mlp-criterion", choices=CRITERIA, default=None, help="MLP unit importance (default taylor)")
    g.add_argument("--rank-ratio", type=float, default=None, help="SVD: fraction of each layer's weights kept")
    g.add_argument("--energy", type=float, default=None, help="SVD: fraction of spectral energy kept")
    g.add_argument("--activation-aware", action="store_true", default=None, help="activation-aware SVD")
    g.add_argument("--sparsity", type=float, default=None, help="IHT: final fraction of zero weights")
    g.add_argument("--iht-pattern", choices=IHT_PATTERNS, default=None,
                   help="2:4: exactly 2 nonzeros in every 4 consecutive weights (needs --sparsity 0.5)")
    g.add_argument("--target-flops", type=float, default=None,
                   help="reach this fraction of the dense FLOPs (e.g. 0.5) by searching the ratios; ratios "
                        "given set the direction of the search")
    g.add_argument("--target-rule", choices=TARGET_RULES, default=None,
                   help="allocation of --target-flops: sensitivity (default: loss score per FLOP across layers) "
                        "or uniform")
    g.add_argument("--prune-steps", type=int, default=None,
                   help="reach --target-flops in this many steps, with distilled recovery between them (default 1)")
    g.add_argument("--kd-alpha", type=float, default=None,
                   help="weight of distillation from the unpruned baseline in the finetune (default 0.7; 0: off)")
    g.add_argument("--kd-temperature", type=float, default=None, help="distillation temperature (default 2)")
    g.add_argument("--finetune-epochs", type=int, default=None, help="finetune epochs after pruning (default 3)")
    g.add_argument("--finetune-lr", type=float, default=None, help="finetune peak learning rate")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting, as a dotted path and a JSON value, e.g. prune.iht_interval=8 or "
                        "finetune.warmup_frac=0.0 (repeatable)")
    g = p.add_argument_group("run")
    g.add_argument("--device", default=None, help="auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--no-latency", action="store_true", default=None, help="skip latency timing")
    g.add_argument("--control", action="store_true", default=None,
                   help="also finetune the unpruned baseline for the same epochs (a fair reference)")
    g.add_argument("--json", action="store_true", help="print the finished run as JSON")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)


def _register_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="run a sweep of pruning settings sharing one baseline",
        description='Run every point of a sweep config: {"name": ..., "base": {experiment config}, '
                    '"grid": {"head_ratio": [0.25, 0.5], "rank_ratio": [null, 0.5]}, "variants": [{...}]}. '
                    "Grid keys are pruning settings, experiment settings or dotted paths. The baseline is "
                    "trained once and reused.")
    p.add_argument("--config", required=True, help="sweep config JSON")
    p.add_argument("--dry-run", action="store_true", help="validate and list the points, run nothing")
    p.add_argument("--json", action="store_true", help="print the runs as JSON at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("where the trials run")
    g.add_argument("--backend", choices=("queue", "ray"), default="queue",
                   help="queue (default): one after the other in this process; ray: one Ray task per trial, "
                        "in parallel (pip install 'accelvit[ray]'); this process alone writes the run store")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="ray: an existing cluster (auto, ray://HOST:10001, HOST:6379); default: start a local one")
    g.add_argument("--ray-num-cpus", type=int, default=None, metavar="N",
                   help="ray: cores of the local cluster (default: all)")
    g.add_argument("--ray-cpus-per-trial", type=float, default=1.0, metavar="N",
                   help="ray: cores reserved per trial (default 1)")
    g.add_argument("--ray-gpus-per-trial", type=float, default=0.0, metavar="N",
                   help="ray: GPUs reserved per trial (default 0; set the config's device to cuda too)")
    p.set_defaults(func=cmd_sweep)


def _register_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list the runs in the run store",
                       description="List runs (newest first) with their before/after accuracy and cost.")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of runs (id, name, status, config, error, stages, artifacts...)")
    p.add_argument("--status", default=None, help="only runs with this status (queued, running, finished, "
                                                  "failed, cancelled, interrupted)")
    p.add_argument("--sweep", default=None, help="only the runs of this sweep id")
    p.add_argument("--limit", type=int, default=None, help="at most N runs (newest first; N >= 1)")
    p.add_argument("--cancel", default=None, metavar="RUN_ID", help="cancel a queued or running run")
    p.set_defaults(func=cmd_runs)


# ============================================================================ config from flags
def _read_json(path: str, what: str) -> Any:
    p = Path(path).expanduser()
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(what, f"{p} does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(what, f"{p} is not a readable JSON file ({exc}).") from None


def _parse_set(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as ``(dotted path, value)``: VALUE is JSON (``0.5``, ``null``, ``[1, 2]``, ``"x"``), else
    plain text. ``seed`` is the experiment's seed; ``prune.seed`` and the other copies are refused."""
    from ..experiment.config import _resolve_key

    if "=" not in item:
        raise ConfigError("--set", f"{item!r} is not KEY=VALUE (e.g. prune.iht_interval=8).")
    key, raw = item.split("=", 1)
    try:
        value = json.loads(raw)
    except ValueError:  # JSONDecodeError, or a number too long to convert
        value = raw  # plain text, e.g. a device or a path
    return _resolve_key(key, ""), value


def config_from_args(args: argparse.Namespace):
    """The ExperimentConfig that ``accelvit run`` args describe (validated)."""
    from ..models import is_known_model, model_spec
    from ..experiment.config import ExperimentConfig, _drop_derived, _set_path

    raw: Any = _read_json(args.config, "--config") if args.config else {}
    if not isinstance(raw, dict):
        raise ConfigError("--config", "the file must hold one JSON object (an experiment config).")
    sets = [_parse_set(item) for item in args.set]
    d = _drop_derived(ExperimentConfig.from_dict(raw).check_types().to_dict())  # seed, device: the experiment's
    raw_data = raw.get("data") or {}
    img_given = (args.img_size is not None or "img_size" in raw_data or any(k == "data.img_size" for k, _ in sets))
    aug_given = (args.augment is not None or "augment" in raw_data or any(k == "data.augment" for k, _ in sets))
    flags = {
        "data.dataset": args.dataset, "data.root": args.data_dir, "data.download": args.download,
        "data.img_size": args.img_size, "data.batch_size": args.batch_size, "data.subset": args.subset,
        "data.eval_subset": args.eval_subset, "data.augment": args.augment,
        "data.num_workers": args.num_workers, "data.on_bad_image": args.on_bad_image,
        "model": args.model, "pretrained": args.pretrained,
        "weights_path": args.weights, "baseline_checkpoint": args.baseline, "train.epochs": args.epochs,
        "train.lr": args.lr, "prune.head_ratio": args.head_ratio, "prune.head_criterion": args.head_criterion,
        "prune.mlp_ratio": args.mlp_ratio, "prune.mlp_criterion": args.mlp_criterion, "prune.rank_ratio": args.rank_ratio, "prune.energy": args.energy,
        "prune.activation_aware": args.activation_aware, "prune.sparsity": args.sparsity,
        "prune.iht_pattern": args.iht_pattern,
        "prune.target_flops": args.target_flops, "prune.target_rule": args.target_rule,
        "prune.prune_steps": args.prune_steps, "distill.alpha": args.kd_alpha,
        "distill.temperature": args.kd_temperature,
        "finetune.epochs": args.finetune_epochs, "finetune.lr": args.finetune_lr, "device": args.device,
        "seed": args.seed, "measure_latency": (False if args.no_latency else None), "control": args.control,
        "name": args.name,
    }
    for path, value in flags.items():
        if value is not None:
            _set_path(d, path, value)
    for key, value in sets:
        _set_path(d, key, value)
    if not isinstance(d.get("data"), dict):  # --set data=5: from_dict names it
        return ExperimentConfig.from_dict(d).validate()
    if not aug_given:  # digits: no augmentation unless asked, as in the dashboard
        d["data"]["augment"] = default_augment(d["data"].get("dataset"))
    doc = None
    if args.baseline:
        from ..errors import CheckpointError
        from ..serialize import read_spec
        try:
            doc = read_spec(args.baseline)
        except CheckpointError:
            pass  # validate names the problem (baseline_checkpoint)
    if not img_given:
        # default input size: the model's own (16 for swin_pico, 224 for most timm Swins)
        if doc is not None:
            try:
                d["data"]["img_size"] = int(doc["model"]["img_size"])
            except (KeyError, TypeError, ValueError):
                pass
        elif isinstance(d.get("model"), str) and is_known_model(d["model"]):
            d["data"]["img_size"] = model_spec(d["model"], 2).img_size
    if doc is not None:
        seed_given = args.seed is not None or "seed" in raw or any(k == "seed" for k, _ in sets)
        _checkpoint_seed(d, doc, seed_given)
    return ExperimentConfig.from_dict(d).validate()


def _checkpoint_seed(d: dict[str, Any], doc: dict[str, Any], seed_given: bool) -> None:
    """A saved baseline was trained on one seeded split of its data set: the run splits the same data set
    with that seed (unless told), and refuses another one, which would put images the baseline trained on
    into this run's test split."""
    trained = (doc.get("meta") or {}).get("data") if isinstance(doc.get("meta"), dict) else None
    if not isinstance(trained, dict) or trained.get("dataset") != d["data"].get("dataset"):
        return
    seed = trained.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or trained.get("dataset") not in ("digits", "caltech101"):
        return  # cifar10 keeps its official test split; a folder's may be its own test/ sub-folder
    if not seed_given:
        d["seed"] = seed
    elif d.get("seed") != seed:
        raise ConfigError("seed", f"the baseline checkpoint was trained on the {trained['dataset']} split of seed "
                                  f"{seed}; seed {d.get('seed')!r} splits the data otherwise, so images it trained on "
                                  f"would be in this run's test split. Leave --seed out (the checkpoint's is used) "
                                  f"or give --seed {seed}.")


# ============================================================================ output
def _fmt_num(v: Any, scale: float = 1.0, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v / scale:,.{digits}f}"


def summary_table(run: dict[str, Any]):
    """Before / pruned / after (/ control) as a pandas DataFrame for printing."""
    import pandas as pd

    rows = []
    for stage, m in (run.get("stages") or {}).items():
        rows.append({
            "stage": stage,
            "top1 %": _fmt_num(None if m.get("top1") is None else 100 * m["top1"], digits=1),
            "top5 %": _fmt_num(None if m.get("top5") is None else 100 * m["top5"], digits=1),
            "dense MFLOPs": _fmt_num(m.get("dense_flops"), 1e6, 1),
            "eff. MFLOPs": _fmt_num(m.get("effective_flops"), 1e6, 1),
            "params": _fmt_num(m.get("params"), 1, 0),
            "nonzero": _fmt_num(m.get("nonzero_params"), 1, 0),
            "size dense KB": _fmt_num(m.get("size_dense_bytes"), 1024, 0),
            "size sparse KB": _fmt_num(m.get("size_sparse_bytes"), 1024, 0),
            "latency b1 ms": _fmt_num(m.get("latency_ms_b1")),
        })
    return pd.DataFrame(rows)


def _plain_json(obj: Any) -> Any:
    """JSON that strict parsers accept: NaN / inf become null."""
    if isinstance(obj, dict):
        return {k: _plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _dump(obj: Any) -> str:
    return json.dumps(_plain_json(obj), indent=2, default=str, allow_nan=False)


def _print_run_summary(run: dict[str, Any]) -> None:
    print(terminal_safe(f"run {run['id']}  {run['name']}  [{run['status']}]"))
    table = summary_table(run)
    if len(table):
        print(_safe_table(table))
    if run.get("error"):
        print(f"error: {terminal_safe(run['error'])}")
    model = (run.get("artifacts") or {}).get("model")
    if model:
        print(f"pruned model: {terminal_safe(model)}")


def _safe_table(df) -> str:
    """``df.to_string`` with every text cell through :func:`terminal_safe` (run names are anyone's text)."""
    return df.map(lambda v: terminal_safe(v) if isinstance(v, str) else v).to_string(index=False)


# ============================================================================ commands
def cmd_run(args: argparse.Namespace) -> int:
    from ..runs import RUNNING, RunStore, new_owner, release_owner
    from ..runs.execute import execute

    cfg = config_from_args(args)  # ConfigError -> exit 2 before anything runs
    distributed.check_world(cfg.processes)  # --set processes=2 without torchrun: say how to start it
    if not distributed.is_main():  # under torchrun: rank 0 records the run; the others train their shards
        return follow_rank_0(cfg)
    store = RunStore()
    owner = new_owner("cli")
    run_id, _ = store.create_run(cfg.to_dict(), name=cfg.display_name(), status=RUNNING,
                                 baseline_key=cfg.baseline_key(), owner=owner)
    print(f"run {run_id} ({store.home})", file=sys.stderr)
    bar = RunProgressBar(not args.no_progress and sys.stderr.isatty())
    try:
        status = execute(store, run_id, cfg, on_event=bar)
    except KeyboardInterrupt:
        bar.close()
        print(f"run {run_id} cancelled", file=sys.stderr)
        return 130
    finally:
        bar.close()
        release_owner(owner)
    run = store.get_run(run_id)
    if args.json:
        print(_dump(run))
    else:
        _print_run_summary(run)
    return EXIT.get(status, 1)


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..runs.jobs import JobManager
    from ..experiment import SweepConfig

    d = _read_json(args.config, "--config")
    sweep = SweepConfig.from_dict(d)
    configs = sweep.expand()  # validates every point
    if args.dry_run:
        for c in configs:
            print(terminal_safe(f"{c.display_name()}  (baseline {c.baseline_key()})"))
        return 0
    if getattr(args, "backend", "queue") == "ray":
        return _sweep_on_ray(args, sweep)
    mgr = JobManager(start=False)
    bar = RunProgressBar(not args.no_progress and sys.stderr.isatty())
    mgr.add_listener(lambda rid, ev: bar(ev))
    ids = mgr.submit_sweep(sweep)
    print(f"sweep of {len(ids)} runs ({mgr.store.home})", file=sys.stderr)
    statuses = []
    try:
        for i, rid in enumerate(ids, 1):
            bar.close()
            bar.desc = f"[{i}/{len(ids)}]"
            statuses.append(mgr.wait(rid))
    except KeyboardInterrupt:
        bar.close()
        mgr.shutdown(cancel_running=True)
        print("sweep interrupted", file=sys.stderr)
        return 130
    finally:
        bar.close()
    mgr.shutdown()
    runs = [mgr.store.get_run(r) for r in ids]
    if args.json:
        print(_dump(runs))
    else:
        print(_safe_table(_runs_table(mgr.store, ids)))
    return 0 if all(s == "finished" for s in statuses) else 1


def _sweep_on_ray(args: argparse.Namespace, sweep) -> int:
    """``sweep --backend ray``: the trials as Ray tasks (``accelvit.runs.ray_sweep``); one line per stage
    change on stderr instead of a bar (trials run at once)."""
    import threading

    from ..runs import RunStore
    from ..runs.ray_sweep import require_ray, run_sweep_ray

    if args.ray_cpus_per_trial <= 0 or args.ray_gpus_per_trial < 0:
        raise ConfigError("--ray-cpus-per-trial", "cores per trial must be > 0 and GPUs per trial >= 0.")
    require_ray()  # ConfigError (exit 2) before anything is queued
    store = RunStore()
    lock = threading.Lock()

    def tell(run_id: str, event: Any) -> None:
        kind = getattr(event, "kind", "")
        if args.no_progress or kind not in ("stage_started", "warning"):
            return
        text = event.stage if kind == "stage_started" else f"warning: {event.message}"
        with lock:
            print(terminal_safe(f"run {run_id}: {text}"), file=sys.stderr)

    def created(ids: list[str]) -> None:
        where = args.ray_address or "a local Ray cluster"
        print(f"sweep of {len(ids)} runs on {where} ({store.home})", file=sys.stderr)

    try:
        ids = run_sweep_ray(sweep, store, address=args.ray_address, num_cpus=args.ray_num_cpus,
                            cpus_per_trial=args.ray_cpus_per_trial, gpus_per_trial=args.ray_gpus_per_trial,
                            listeners=[tell], on_created=created)
    except KeyboardInterrupt:
        print("sweep interrupted", file=sys.stderr)
        return 130
    runs = [store.get_run(r) for r in ids]
    if args.json:
        print(_dump(runs))
    else:
        print(_safe_table(_runs_table(store, ids)))
    return 0 if all(r and r["status"] == "finished" for r in runs) else 1


def _runs_table(store, ids: list[str] | None = None, status: str | None = None, sweep: str | None = None,
                limit: int | None = None):
    """The ``runs`` table: one line per run with its before -> after numbers."""
    import pandas as pd

    runs = store.runs_df(status=status, sweep_id=sweep)
    if ids is not None:
        runs = runs[runs["id"].isin(ids)]
    if limit is not None:
        runs = runs.head(limit)
    metrics = store.metrics_df(list(runs["id"])) if len(runs) else store.metrics_df([])
    rows = []
    for r in runs.itertuples():
        m = metrics[metrics["run_id"] == r.id].set_index("stage")

        def get(stage: str, col: str) -> Any:
            return m.at[stage, col] if stage in m.index and col in m.columns else None

        b1, a1 = get("before", "top1"), get("after", "top1")
        done = r.progress if pd.notna(r.progress) else 0  # NaN: a damaged row
        progress = f"{r.stage or '-'} {100 * done:.0f}%" if r.status == "running" else ""
        rows.append({
            "id": r.id, "name": r.name, "status": r.status + (f" ({progress})" if progress else ""),
            "top1 before": _fmt_num(None if b1 is None else 100 * b1, digits=1),
            "top1 after": _fmt_num(None if a1 is None else 100 * a1, digits=1),
            "eff. FLOPs after/before": _fmt_num(get("after", "flops_ratio"), digits=3),
            "nonzero after/before": _fmt_num(get("after", "params_ratio"), digits=3),
            "created": r.created.strftime("%Y-%m-%d %H:%M") if pd.notna(r.created) else "",
            "error": (r.error or "")[:60],
        })
    return pd.DataFrame(rows, columns=["id", "name", "status", "top1 before", "top1 after",
                                       "eff. FLOPs after/before", "nonzero after/before", "created", "error"])


def _cancel_note(store, run_id: str, status: str) -> str:
    """What ``runs --cancel`` adds to the status: running -> it stops soon; ended -> nothing to stop (and why
    it ended, for a run whose process was found gone)."""
    if status == "running":
        return " (cancel requested; it stops within one training step)"
    if status in ("finished", "failed", "interrupted"):
        error = (store.get_run(run_id) or {}).get("error") if status == "interrupted" else None
        return " (not running any more; nothing to cancel)" + (f"\n{terminal_safe(error)}" if error else "")
    return ""


def cmd_runs(args: argparse.Namespace) -> int:
    from ..runs import STATUSES, RunStore

    store = RunStore()
    if args.status is not None and args.status not in STATUSES:
        raise ConfigError("--status", f"unknown status {terminal_safe(repr(args.status))}; use one of "
                                      f"{', '.join(STATUSES)}.")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit", f"must be a whole number >= 1 (leave it out to list every run), got {args.limit}.")
    if args.cancel:
        st = store.request_cancel(args.cancel)
        if st is None:
            print(f"error: no run {args.cancel!r} in {store.home}", file=sys.stderr)
            return 2
        print(f"run {args.cancel}: {st}" + _cancel_note(store, args.cancel, st))
        return 0
    if args.json:
        runs = store.list_runs(status=args.status, sweep_id=args.sweep, limit=args.limit)
        print(_dump(runs))
        return 0
    table = _runs_table(store, status=args.status, sweep=args.sweep, limit=args.limit)
    if not len(table):
        print(f"no runs in {store.home}")
        return 0
    print(_safe_table(table))
    return 0
