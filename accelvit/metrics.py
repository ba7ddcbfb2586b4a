"""Honest metrics: FLOPs that include attention, nonzero parameters, size on disk, latency.

Every number says how it was obtained:

* **Dense FLOPs** (``dense_flops``): ``torch.utils.flop_counter.FlopCounterMode`` over one
  forward pass at batch 1 and the model's input size. It counts the matrix products and
  convolutions (``mm``, ``addmm``, ``bmm``, ``convolution``, attention) as 2 x MACs; it
  does *not* count elementwise work (norms, softmax, GELU, bias and residual adds).
  torch 2.14 has no formula for the CPU kernel of ``scaled_dot_product_attention``
  (``_scaled_dot_product_flash_attention_for_cpu``) and counts it as 0, so this module
  registers the standard SDPA formula for it (``q@k^T`` + ``attn@v``); timm's fused and
  unfused attention paths therefore give the same count (a test pins this).
* **thop** (``thop_flops``): ``thop.profile`` x 2 on a deep copy, kept as the cross-check the
  design names. thop hooks modules, not operations: it misses the attention matmuls
  (``q@k^T``, ``attn@v``) and adds norm/activation ops. ``thop_missed_flops`` is the
  difference and ``thop_flops_by_type`` shows what thop did count.
* **Effective FLOPs** (``effective_flops``): dense FLOPs with every ``nn.Linear``'s share
  (each factor of a low-rank layer separately) multiplied by the density of its weight,
  i.e. what a sparse kernel could reach. Attention matmuls and convolutions are unchanged.
* **Parameters / nonzeros**: ``numel`` and ``count_nonzero`` of every parameter
  (``-0.0`` counts as zero; a ``torch.nn.utils.prune`` ``weight_orig`` is counted through
  its masked ``weight``).
* **Size on disk**: bytes of files really written: the state dict as fp32 safetensors, and
  the same tensors in :mod:`accelvit.sparse_io`'s bitmask + values form.
* **Latency**: wall time per batch under ``torch.inference_mode`` after warm-up, CUDA
  synchronised; median and spread over the repetitions, images/s, thread count.

``measure(model)`` returns a :class:`Measurement` (``to_dict()`` is JSON-ready);
``compare(baseline, pruned)`` times both models interleaved in one process.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import ConfigError
from .layers import LowRankLinear
from .utils import device_description, resolve_device

log = logging.getLogger(__name__)

DENSE_COUNTER = "torch.utils.flop_counter.FlopCounterMode"
THOP_COUNTER = "thop.profile"
SIZE_DENSE_FORMAT = "safetensors, every tensor of the state dict in fp32"
SIZE_SPARSE_FORMAT = "accelvit.sparse_io: safetensors, packed bitmask + nonzero values per sparse tensor (fp32)"

#: Columns of the per-layer table, in order.
LAYER_COLUMNS = ["block", "module", "kind", "heads_kept", "heads_total", "mlp_width", "mlp_width_total",
                 "in_features", "out_features", "rank", "full_rank", "density", "dense_flops",
                 "effective_flops", "params", "nonzero_params"]

InputSize = int | Sequence[int] | None


# ----------------------------------------------------------------------------- FLOP counting
def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """``q@k^T`` + ``attn@v`` of scaled-dot-product attention, as 2 x MACs (any leading dims)."""
    *lead, s_q, d_q = query_shape
    s_k = key_shape[-2]
    d_v = value_shape[-1]
    batch = math.prod(lead)
    return 2 * batch * s_q * s_k * d_q + 2 * batch * s_q * s_k * d_v


def _sdpa_mapping() -> dict[Any, Any]:
    aten = torch.ops.aten
    ops = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "scaled_dot_product_attention"):
        op = getattr(aten, name, None)
        if op is not None:
            ops[op] = _sdpa_flops
    return ops


@dataclass
class FlopCount:
    """One FlopCounterMode pass: the total, per aten op, and per module (children included).

    Module names are relative to the model (``"layers.0.blocks.1.attn.qkv"``; ``""`` is the
    model itself).
    """

    total: int
    by_op: dict[str, int]
    by_module: dict[str, int]

    def of(self, name: str) -> int:
        return self.by_module.get(name, 0)


def count_flops(model: nn.Module, input_size: InputSize = None, device: str | torch.device | None = None) -> FlopCount:
    """Dense FLOPs (2 x MACs) of one forward pass at batch 1 with FlopCounterMode.

    ``device`` defaults to the model's own; the model is switched to eval mode for the pass.
    """
    shape = resolve_input_size(model, input_size)
    dev = torch.device(device) if device is not None else _model_device(model)
    x = torch.randn(1, *shape, device=dev)
    counter = FlopCounterMode(display=False, custom_mapping=_sdpa_mapping())
    with _eval(model), torch.no_grad(), counter:
        model(x)
    raw = counter.get_flop_counts()
    by_op = {str(op).removeprefix("aten."): int(v) for op, v in raw.get("Global", {}).items()}
    by_module: dict[str, int] = {}
    for key, ops in raw.items():
        if key == "Global":
            continue
        # keys are "<RootClass>.<path>"; the root's own key has no dot.
        name = key.split(".", 1)[1] if "." in key else ""
        by_module[name] = by_module.get(name, 0) + int(sum(ops.values()))
    return FlopCount(total=int(counter.get_total_flops()), by_op=by_op, by_module=by_module)


def thop_flops(model: nn.Module, input_size: InputSize = None) -> tuple[int, dict[str, int]] | None:
    """thop's figure (MACs x 2) on a deep copy, and what it counted per module type.

    Returns None if thop is not installed. thop hooks known module types only (Linear,
    Conv, norms, softmax, ...): the attention matmuls inside timm's WindowAttention are not
    modules and are missed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import thop
    except ImportError:  # pragma: no cover - thop is a dependency
        log.warning("thop is not installed; thop_flops is left empty.")
        return None
    shape = resolve_input_size(model, input_size)
    clone = copy.deepcopy(model).eval()
    x = torch.randn(1, *shape, device=_model_device(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # thop uses distutils' LooseVersion
        macs, _params, tree = thop.profile(clone, inputs=(x,), verbose=False, ret_layer_info=True)
    by_type: dict[str, float] = {}

    def walk(module: nn.Module, info: dict) -> None:
        for name, child in module.named_children():
            ops, _p, sub = info.get(name, (0.0, 0.0, {}))
            if sub:
                walk(child, sub)
            elif ops:
                key = type(child).__name__
                by_type[key] = by_type.get(key, 0.0) + ops

    walk(clone, tree)
    return int(round(2 * macs)), {k: int(round(2 * v)) for k, v in sorted(by_type.items())}


# ----------------------------------------------------------------------------- parameters
def _effective_params(module: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    """``named_parameters`` with ``torch.nn.utils.prune``'s ``weight_orig`` replaced by the masked ``weight``."""
    for name, p in module.named_parameters():
        if name.endswith("_orig"):
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            masked = getattr(owner, attr[: -len("_orig")], None)
            if isinstance(masked, torch.Tensor):
                yield name[: -len("_orig")], masked
                continue
        yield name, p


def param_counts(module: nn.Module, recurse: bool = True) -> tuple[int, int]:
    """``(parameters, nonzero parameters)`` of ``module`` (only its own if ``recurse`` is False)."""
    total = nonzero = 0
    if recurse:
        items = _effective_params(module)
    else:
        items = ((n, p) for n, p in _effective_params(module) if "." not in n)
    for _, p in items:
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return total, nonzero


def _weight_stats(linear: nn.Linear) -> tuple[int, int]:
    w = linear.weight.detach()
    return w.numel(), int(torch.count_nonzero(w))


def _is_attention(module: nn.Module) -> bool:
    return hasattr(module, "num_heads") and hasattr(module, "qkv") and hasattr(module, "proj")


# ----------------------------------------------------------------------------- full-size reference
@functools.lru_cache(maxsize=8)
def _reference_shapes(spec_json: str) -> dict[str, dict[str, int]]:
    """Heads / MLP width of the *unpruned* architecture, built on the meta device (no memory)."""
    from .models import ModelSpec, build_from_spec

    spec = ModelSpec.from_dict(json.loads(spec_json))
    with torch.device("meta"):
        ref = build_from_spec(spec)
    out: dict[str, dict[str, int]] = {}
    for name, mod in ref.named_modules():
        if _is_attention(mod):
            out[name] = {"heads": int(mod.num_heads)}
        elif isinstance(getattr(mod, "fc1", None), nn.Linear) and hasattr(mod, "fc2"):
            out[name] = {"hidden": int(mod.fc1.out_features)}
    return out


def _reference(model: nn.Module) -> dict[str, dict[str, int]]:
    spec = getattr(model, "accelvit_spec", None)
    if spec is None:
        return {}
    try:
        return _reference_shapes(json.dumps(spec.to_dict(), sort_keys=True))
    except Exception as exc:  # a spec we cannot rebuild: fall back to attributes
        log.debug("No reference architecture for %s: %s", getattr(spec, "name", "?"), exc)
        return {}


# ----------------------------------------------------------------------------- per-layer table
def _block_of(name: str) -> str:
    parts = name.split(".")
    if "blocks" in parts:
        i = parts.index("blocks")
        return ".".join(parts[: i + 2])
    return ".".join(parts[:-1]) or name


def _kind_of(name: str, module: nn.Module) -> str:
    last = name.rpartition(".")[2]
    parent = name.rpartition(".")[0].rpartition(".")[2]
    if _is_attention(module):
        return "attn"
    if isinstance(module, nn.Conv2d):
        return "patch_embed" if "patch_embed" in name else "conv"
    if last in ("qkv", "proj", "fc1", "fc2", "reduction"):
        return last
    if parent == "head" or name == "head":
        return "head"
    return "linear"


def layer_table(model: nn.Module, flops: FlopCount) -> pd.DataFrame:
    """One row per attention (its matmuls), prunable linear / low-rank layer and convolution,
    plus an ``(other)`` row with what no row covers (norms), so columns sum to the totals.

    ``heads_total`` / ``mlp_width_total`` come from the unpruned architecture rebuilt from
    ``model.accelvit_spec`` on the meta device; without a spec, from the pruner's
    ``accelvit_orig_heads`` / ``accelvit_orig_hidden`` attributes, else the current value.
    ``rank`` is the factorisation rank of a low-rank layer and ``min(in, out)`` for a dense
    one; ``full_rank`` is ``min(in, out)``. ``density`` is nonzero / total weight entries
    (biases excluded); it scales a linear layer's ``effective_flops`` (a convolution's is
    shown but not applied; ``attn`` rows, the q@k^T and attn@v matmuls, have none). ``attn``
    rows hold the attention's own parameters (the relative position bias table).
    """
    ref = _reference(model)
    modules = dict(model.named_modules())
    rows: list[dict[str, Any]] = []
    inside_lowrank = {f"{n}.{c}" for n, m in modules.items() if isinstance(m, LowRankLinear) for c in ("down", "up")}

    def heads_of(attn_name: str) -> tuple[int, int]:
        attn = modules[attn_name]
        kept = int(attn.num_heads)
        total = ref.get(attn_name, {}).get("heads") or getattr(attn, "accelvit_orig_heads", None) or kept
        return kept, int(total)

    def mlp_of(mlp_name: str) -> tuple[int, int]:
        mlp = modules[mlp_name]
        width = int(mlp.fc1.out_features)  # nn.Linear or LowRankLinear
        total = ref.get(mlp_name, {}).get("hidden") or getattr(mlp, "accelvit_orig_hidden", None) or width
        return width, int(total)

    for name, mod in modules.items():
        if not name:
            continue
        row: dict[str, Any] = {c: None for c in LAYER_COLUMNS}
        row.update(block=_block_of(name), module=name, kind=_kind_of(name, mod))
        if _is_attention(mod):
            children = flops.of(f"{name}.qkv") + flops.of(f"{name}.proj")
            dense = flops.of(name) - children
            params, nnz = param_counts(mod, recurse=False)
            row.update(dense_flops=dense, effective_flops=float(dense), params=params, nonzero_params=nnz)
            row["heads_kept"], row["heads_total"] = heads_of(name)
        elif isinstance(mod, nn.Conv2d):
            params, nnz = param_counts(mod)
            dense = flops.of(name)
            row.update(dense_flops=dense, effective_flops=float(dense), params=params, nonzero_params=nnz,
                       density=_weight_density(mod.weight))
        elif (isinstance(mod, nn.Linear) and name not in inside_lowrank) or isinstance(mod, LowRankLinear):
            lowrank = isinstance(mod, LowRankLinear)
            factors = [(f"{name}.down", mod.down), (f"{name}.up", mod.up)] if lowrank else [(name, mod)]
            numel = nonzero = 0
            eff = 0.0
            for fname, lin in factors:
                n_w, nz_w = _weight_stats(lin)
                numel, nonzero = numel + n_w, nonzero + nz_w
                eff += flops.of(fname) * (nz_w / n_w if n_w else 0.0)
            params, nnz = param_counts(mod)
            fin, fout = int(mod.in_features), int(mod.out_features)
            row.update(in_features=fin, out_features=fout, full_rank=min(fin, fout),
                       rank=int(mod.rank) if lowrank else min(fin, fout),
                       density=nonzero / numel if numel else None, dense_flops=flops.of(name),
                       effective_flops=eff, params=params, nonzero_params=nnz)
            parent = name.rpartition(".")[0]
            if row["kind"] in ("qkv", "proj") and _is_attention(modules.get(parent, nn.Identity())):
                row["heads_kept"], row["heads_total"] = heads_of(parent)
            if row["kind"] in ("fc1", "fc2") and hasattr(modules.get(parent), "fc1"):
                row["mlp_width"], row["mlp_width_total"] = mlp_of(parent)
        else:
            continue
        rows.append(row)
    total_params, total_nnz = param_counts(model)
    covered_flops = sum(r["dense_flops"] for r in rows)
    other_flops = flops.total - covered_flops
    other = {c: None for c in LAYER_COLUMNS}
    other.update(block="", module="(other)", kind="other", dense_flops=other_flops, effective_flops=float(other_flops),
                 params=total_params - sum(r["params"] for r in rows),
                 nonzero_params=total_nnz - sum(r["nonzero_params"] for r in rows))
    rows.append(other)
    df = pd.DataFrame(rows, columns=LAYER_COLUMNS)
    for col in ("heads_kept", "heads_total", "mlp_width", "mlp_width_total", "in_features", "out_features",
                "rank", "full_rank", "dense_flops", "params", "nonzero_params"):
        df[col] = df[col].astype("Int64")
    df["density"] = df["density"].astype("float64")
    df["effective_flops"] = df["effective_flops"].astype("float64")
    return df


def _weight_density(w: torch.Tensor) -> float:
    return int(torch.count_nonzero(w.detach())) / w.numel() if w.numel() else 0.0


# ----------------------------------------------------------------------------- size on disk
def disk_sizes(model: nn.Module) -> tuple[int, int]:
    """Bytes of the state dict written as dense fp32 safetensors and in the sparse form (files really written)."""
    from safetensors.torch import save_file

    from .sparse_io import save_sparse

    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu")
        t = (t.float() if t.is_floating_point() else t).contiguous()
        if t.numel() and t.data_ptr() in seen:
            t = t.clone()
        if t.numel():
            seen.add(t.data_ptr())
        state[k] = t
    with tempfile.TemporaryDirectory(prefix="accelvit-size-") as tmp:
        dense_path = Path(tmp) / "dense.safetensors"
        save_file(state, str(dense_path))
        dense = dense_path.stat().st_size
        sparse = save_sparse(state, Path(tmp) / "sparse.safetensors")
    return dense, sparse


# ----------------------------------------------------------------------------- latency
@dataclass
class LatencyStats:
    """Wall time per batch over ``reps`` timed forward passes after ``warmup`` untimed ones."""

    batch_size: int
    median_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    reps: int
    warmup: int
    images_per_s: float

    @classmethod
    def from_times(cls, batch_size: int, seconds: Sequence[float], warmup: int) -> "LatencyStats":
        ms = sorted(s * 1000.0 for s in seconds)
        q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
        med = statistics.median(ms)
        return cls(batch_size=batch_size, median_ms=med, p25_ms=q[0], p75_ms=q[2], min_ms=ms[0], max_ms=ms[-1],
                   std_ms=statistics.pstdev(ms) if len(ms) > 1 else 0.0, reps=len(ms), warmup=warmup,
                   images_per_s=batch_size / (med / 1000.0) if med > 0 else float("inf"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - no MPS in CI
        torch.mps.synchronize()


def _time_once(model: Callable[[torch.Tensor], Any], x: torch.Tensor) -> float:
    """Seconds of one ``model(x)``. On CUDA: CUDA events around it after a synchronisation (the time the GPU
    spent, not when Python got control back); elsewhere the wall clock."""
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        model(x)
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1000.0
    _sync(x.device)
    start = time.perf_counter()
    model(x)
    _sync(x.device)
    return time.perf_counter() - start


def time_model(model: nn.Module, input_size: InputSize = None, batch_size: int = 1, device: str | torch.device = "cpu",
               warmup: int = 2, reps: int = 5) -> LatencyStats:
    """Latency of ``model`` at ``batch_size`` on ``device`` (the model is copied there if needed)."""
    _check_reps(warmup, reps)
    dev = resolve_device(device)
    shape = resolve_input_size(model, input_size)
    work = _on_device(model, dev)
    x = torch.randn(batch_size, *shape, device=dev)
    with _eval(work), torch.inference_mode():
        for _ in range(warmup):
            _time_once(work, x)
        times = [_time_once(work, x) for _ in range(reps)]
    return LatencyStats.from_times(batch_size, times, warmup)


def _check_reps(warmup: int, reps: int) -> None:
    if reps < 1:
        raise ConfigError("reps", f"at least one timed repetition is needed, got {reps}.")
    if warmup < 0:
        raise ConfigError("warmup", f"warm-up repetitions cannot be negative, got {warmup}.")


# ----------------------------------------------------------------------------- results
@dataclass
class Measurement:
    """Everything ``measure`` found. ``to_dict()`` is JSON-ready; ``layers`` is a DataFrame."""

    model: str | None
    input_size: tuple[int, ...]
    device: str
    device_name: str
    num_threads: int
    torch_version: str
    dense_flops: int
    effective_flops: float
    thop_flops: int | None
    thop_missed_flops: int | None
    attention_flops: int
    linear_flops: int
    flops_by_op: dict[str, int]
    thop_flops_by_type: dict[str, int] | None
    flops_counter: dict[str, str]
    params: int
    nonzero_params: int
    density: float
    size_dense_bytes: int | None
    size_sparse_bytes: int | None
    size_format: dict[str, str]
    batch_size: int
    latency_ms_b1: float | None = None
    latency_ms_batch: float | None = None
    images_per_s_b1: float | None = None
    images_per_s_batch: float | None = None
    latency_b1: LatencyStats | None = None
    latency_batch: LatencyStats | None = None
    layers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LAYER_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        d = self._plain()
        d["layers"] = _records(self.layers)
        return d

    def _plain(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name == "layers":
                continue
            value = getattr(self, name)
            if isinstance(value, LatencyStats):
                value = asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        kw = {k: d.get(k) for k in cls.__dataclass_fields__ if k in d}
        kw["input_size"] = tuple(d["input_size"])
        for key in ("latency_b1", "latency_batch"):
            if kw.get(key):
                kw[key] = LatencyStats(**kw[key])
        kw["layers"] = pd.DataFrame(d.get("layers") or [], columns=LAYER_COLUMNS)
        return cls(**kw)

    def summary(self) -> str:
        """A short human-readable report (the CLI's text output)."""
        lines = [
            f"model            {self.model or '?'} @ {'x'.join(map(str, self.input_size))}",
            f"dense FLOPs      {self.dense_flops:,}  ({self.flops_counter['dense_flops']})",
            f"  attention      {self.attention_flops:,}   linear {self.linear_flops:,}",
            f"effective FLOPs  {self.effective_flops:,.0f}  (linear FLOPs x weight density)",
        ]
        if self.thop_flops is not None:
            lines.append(f"thop FLOPs       {self.thop_flops:,}  (thop.profile x 2; misses "
                         f"{self.thop_missed_flops:,} vs the dense count)")
        lines += [
            f"params           {self.params:,}   nonzero {self.nonzero_params:,} ({self.density:.1%})",
        ]
        if self.size_dense_bytes is not None:
            lines.append(f"size on disk     dense fp32 {self.size_dense_bytes:,} B   sparse {self.size_sparse_bytes:,} B")
        if self.latency_b1 is not None and self.latency_batch is not None:
            for s in (self.latency_b1, self.latency_batch):
                lines.append(f"latency b={s.batch_size:<4d}  median {s.median_ms:.2f} ms (p25 {s.p25_ms:.2f}, p75 "
                             f"{s.p75_ms:.2f}, {s.reps} reps)  {s.images_per_s:,.1f} img/s")
        lines.append(f"device           {self.device_name}, {self.num_threads} threads")
        return "\n".join(lines)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in df.to_dict("records"):
        clean = {}
        for k, v in rec.items():
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                clean[k] = None
            elif hasattr(v, "item"):
                clean[k] = v.item()
            else:
                clean[k] = v
        out.append(clean)
    return out


# ----------------------------------------------------------------------------- measure
def measure(model: nn.Module, input_size: InputSize = None, device: str | torch.device = "cpu", latency: bool = True,
            batch_size: int = 64, warmup: int = 2, reps: int = 5, thop: bool = True, size: bool = True,
            num_threads: int | None = None) -> Measurement:
    """Measure ``model`` honestly; see the module docstring for how each number is obtained.

    Args:
        model: a Swin built by accelvit (pruned or not) or any module taking ``(B, *input_size)``.
        input_size: ``(C, H, W)``, ``(H, W)`` or ``H``; defaults to ``(3, img, img)`` from
            ``model.accelvit_spec``.
        device: where FLOPs are counted and latency timed (``auto``, ``cpu``, ``cuda``...). The
            model is deep-copied there if it lives elsewhere; it is never modified.
        latency: time the model (False skips it; the latency fields are then None).
        batch_size: the larger batch timed besides batch 1.
        warmup, reps: untimed and timed forward passes per batch size.
        thop: also run thop as a cross-check (on a deep copy).
        size: write the dense and sparse files to measure their sizes.
        num_threads: torch CPU threads while measuring (default: leave as is); recorded.
    """
    _check_reps(warmup, reps)
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be at least 1, got {batch_size}.")
    dev = resolve_device(device)
    shape = resolve_input_size(model, input_size)
    prev_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        work = _on_device(model, dev)
        flops = count_flops(work, shape, dev)
        table = layer_table(work, flops)
        lin_rows = table["kind"].isin(["qkv", "proj", "fc1", "fc2", "reduction", "head", "linear"])
        attention = int(table.loc[table["kind"] == "attn", "dense_flops"].sum())
        linear = int(table.loc[lin_rows, "dense_flops"].sum())
        effective = float(table["effective_flops"].sum())
        th = thop_flops(work, shape) if thop else None
        params, nonzero = param_counts(work)
        dense_bytes, sparse_bytes = disk_sizes(work) if size else (None, None)
        lat_b1 = lat_b = None
        if latency:
            lat_b1 = time_model(work, shape, 1, dev, warmup, reps)
            lat_b = time_model(work, shape, batch_size, dev, warmup, reps)
        spec = getattr(model, "accelvit_spec", None)
        return Measurement(
            model=getattr(spec, "name", None), input_size=tuple(shape), device=str(dev),
            device_name=device_description(dev), num_threads=torch.get_num_threads(), torch_version=torch.__version__,
            dense_flops=flops.total, effective_flops=effective, thop_flops=th[0] if th else None,
            thop_missed_flops=flops.total - th[0] if th else None, attention_flops=attention, linear_flops=linear,
            flops_by_op=flops.by_op, thop_flops_by_type=th[1] if th else None,
            flops_counter={"dense_flops": DENSE_COUNTER, "effective_flops": f"{DENSE_COUNTER} x linear weight density",
                           "thop_flops": THOP_COUNTER if th else "not run"},
            params=params, nonzero_params=nonzero, density=nonzero / params if params else 0.0,
            size_dense_bytes=dense_bytes, size_sparse_bytes=sparse_bytes,
            size_format={"dense": SIZE_DENSE_FORMAT, "sparse": SIZE_SPARSE_FORMAT},
            batch_size=batch_size,
            latency_ms_b1=lat_b1.median_ms if lat_b1 else None, latency_ms_batch=lat_b.median_ms if lat_b else None,
            images_per_s_b1=lat_b1.images_per_s if lat_b1 else None,
            images_per_s_batch=lat_b.images_per_s if lat_b else None,
            latency_b1=lat_b1, latency_batch=lat_b, layers=table)
    finally:
        torch.set_num_threads(prev_threads)


# ----------------------------------------------------------------------------- compare
@dataclass
class ComparePoint:
    """Baseline vs pruned at one batch size. ``speedup`` = baseline median / pruned median;
    ``paired_speedup`` = median over repetitions of the per-pair ratio."""

    batch_size: int
    baseline: LatencyStats
    pruned: LatencyStats
    speedup: float
    paired_speedup: float


@dataclass
class Comparison:
    """``compare``'s result: FLOP reduction and measured speedups, timed interleaved in one process.

    Naming, as everywhere in accelvit: a ``*_ratio`` is after / before (pruned / baseline, below 1
    when pruning shrank it: the run store's ``flops_ratio``, ``params_ratio``, ``size_ratio``); a
    ``*_reduction`` or speedup is before / after (baseline / pruned, above 1): ``flop_reduction``
    here is baseline / pruned dense FLOPs, comparable with ``speedup``.
    """

    input_size: tuple[int, ...]
    device: str
    device_name: str
    num_threads: int
    baseline_flops: int
    pruned_flops: int
    flop_reduction: float
    baseline_params: int
    pruned_params: int
    points: list[ComparePoint]
    warmup: int = 0
    budget_s: float | None = None
    method: str = "interleaved: baseline and pruned alternate (A,B then B,A) in one process"

    def point(self, batch_size: int) -> ComparePoint:
        for p in self.points:
            if p.batch_size == batch_size:
                return p
        raise KeyError(batch_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def compare(baseline: nn.Module, pruned: nn.Module, input_size: InputSize = None, device: str | torch.device = "cpu",
            batch_sizes: Sequence[int] = (1, 64), warmup: int = 3, reps: int | Mapping[int, int] = 10,
            num_threads: int | None = None, budget_s: float | None = None, max_reps: int = 200) -> Comparison:
    """Time ``baseline`` and ``pruned`` interleaved (A,B then B,A, alternating) in this process.

    Machine noise (other processes, frequency changes) then hits both models alike; the
    speedups are ratios of medians over the timed pairs after ``warmup`` pairs, per batch size.

    Args:
        reps: timed pairs per batch size: one number for all, or ``{batch_size: pairs}``
            (a batch size missing from the mapping gets its smallest value).
        num_threads: torch CPU threads while timing (default: leave as is); recorded.
        budget_s: when given, more pairs are timed while they fit in about this many seconds
            per batch size (estimated from the warm-up pairs), never fewer than ``reps`` and
            never more than ``max_reps``. Each point's ``reps`` says how many were timed.
    """
    per_batch = dict(reps) if isinstance(reps, Mapping) else {}
    default_reps = min(per_batch.values()) if per_batch else int(reps)  # type: ignore[arg-type]
    for n in [default_reps, *per_batch.values()]:
        _check_reps(warmup, n)
    dev = resolve_device(device)
    shape = resolve_input_size(baseline, input_size)
    prev_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        a, b = _on_device(baseline, dev), _on_device(pruned, dev)
        fa, fb = count_flops(a, shape, dev).total, count_flops(b, shape, dev).total
        points = []
        with _eval(a), _eval(b), torch.inference_mode():
            for bs in batch_sizes:
                x = torch.randn(bs, *shape, device=dev)
                points.append(interleaved(a, b, x, warmup, per_batch.get(bs, default_reps), budget_s, max_reps))
                log.info("compare b=%d: %.2f ms vs %.2f ms, speedup %.2fx (%d pairs)", bs,
                         points[-1].baseline.median_ms, points[-1].pruned.median_ms, points[-1].speedup,
                         points[-1].pruned.reps)
        return Comparison(input_size=tuple(shape), device=str(dev), device_name=device_description(dev),
                          num_threads=torch.get_num_threads(), baseline_flops=fa, pruned_flops=fb,
                          flop_reduction=fa / fb if fb else float("inf"), baseline_params=param_counts(a)[0],
                          pruned_params=param_counts(b)[0], points=points, warmup=warmup, budget_s=budget_s)
    finally:
        torch.set_num_threads(prev_threads)


def interleaved(a: Callable[[torch.Tensor], Any], b: Callable[[torch.Tensor], Any], x: torch.Tensor, warmup: int,
                reps: int, budget_s: float | None = None, max_reps: int = 200) -> ComparePoint:
    """Time ``a(x)`` and ``b(x)`` interleaved (A,B then B,A, alternating): ``warmup`` untimed pairs,
    then ``reps`` timed pairs, or as many more as fit in about ``budget_s`` (at most ``max_reps``).

    ``a`` and ``b`` are any callables (modules, an onnxruntime session's runner); the caller
    sets eval / inference mode. ``speedup`` is a's median over b's.
    """
    pair_s: list[float] = []
    for _ in range(warmup):
        pair_s.append(_time_once(a, x) + _time_once(b, x))
    n = reps
    if budget_s and pair_s:
        pair = min(pair_s)  # the first warm-up pairs are the slowest
        fits = int(budget_s / pair) if pair > 0 else max_reps
        n = max(n, min(max_reps, fits))
    ta: list[float] = []
    tb: list[float] = []
    for i in range(n):
        if i % 2 == 0:
            ta.append(_time_once(a, x))
            tb.append(_time_once(b, x))
        else:
            tb.append(_time_once(b, x))
            ta.append(_time_once(a, x))
    bs = int(x.shape[0])
    sa, sb = LatencyStats.from_times(bs, ta, warmup), LatencyStats.from_times(bs, tb, warmup)
    return ComparePoint(bs, sa, sb, speedup=sa.median_ms / sb.median_ms,
                        paired_speedup=statistics.median(x_ / y_ for x_, y_ in zip(ta, tb)))


# ----------------------------------------------------------------------------- helpers
def resolve_input_size(model: nn.Module, input_size: InputSize = None) -> tuple[int, int, int]:
    """``(C, H, W)`` from an explicit size or ``model.accelvit_spec.img_size`` (3 channels)."""
    if input_size is None:
        spec = getattr(model, "accelvit_spec", None)
        if spec is None:
            raise ConfigError("input_size", "this model carries no accelvit_spec, so its input size is unknown; "
                                            "pass input_size=(3, H, W).")
        return (3, int(spec.img_size), int(spec.img_size))
    if isinstance(input_size, int):
        return (3, input_size, input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) == 2:
        return (3, *size)
    if len(size) == 3:
        return size  # type: ignore[return-value]
    raise ConfigError("input_size", f"expected (C, H, W), (H, W) or an int, got {input_size!r}.")


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself if it already lives on ``device``, else a deep copy moved there."""
    current = _model_device(model)
    if current.type == device.type and (device.index is None or current.index == device.index):
        return model
    return copy.deepcopy(model).to(device)


class _eval:
    """Context manager: eval mode inside, the previous training flag restored after."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.was_training = model.training

    def __enter__(self) -> nn.Module:
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)
