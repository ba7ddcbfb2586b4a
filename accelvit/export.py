"""Export a saved model to ONNX and check the export in onnxruntime.

A saved model folder (baseline, pruned, low-rank, sparse) exports as it runs in PyTorch:

- window attention, the relative-position bias and the shifted-window masks are traced into
  ordinary ONNX ops (MatMul, Softmax, Gather, Add...);
- a removed head or MLP unit is simply absent: the exported weights have the pruned shapes;
- a low-rank layer (:class:`accelvit.layers.LowRankLinear`) is two MatMuls through the rank;
- IHT zeros are stored as **dense** weights: ONNX has no sparse weight format that onnxruntime's
  CPU kernels use, so the ``.onnx`` file is as large as the dense model and the zeros save no
  time there. The folder's ``model.safetensors`` (packed sparse) stays the small file.

Every export is verified: the onnxruntime CPU output is compared with PyTorch's on real images
of the model's data set (its ``meta.data`` config) where they load, else on random normal
inputs, and the export fails if the largest absolute difference of the logits is above the
tolerance (1e-4). What was checked is written next to the file (``onnx.json``) and into the
ONNX metadata (``metadata_props``: class names, input size, normalisation).

``onnx``, ``onnxruntime`` and ``onnxscript`` are an optional extra (``pip install accelvit[onnx]``).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from . import serialize
from .card import write_card
from .layout import ONNX_FILE, ONNX_REPORT
from .errors import AccelvitError, ConfigError
from .fileio import atomic_write_json

log = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
TOLERANCE = 1e-4
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "logits"
EXTRA = "pip install 'accelvit[onnx]' (onnx, onnxruntime, onnxscript)"


class ExportError(AccelvitError):
    """The model could not be exported, or the export does not reproduce PyTorch's output."""


def require_onnx(*modules: str) -> None:
    """ExportError naming what is missing when the optional ONNX packages are not installed."""
    missing = []
    for name in modules or ("onnx", "onnxruntime", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                          f"not installed; install the extra: {EXTRA}.")


@dataclass
class OnnxExport:
    """What :func:`export_folder` wrote and how the export was checked."""

    path: str
    file_bytes: int
    opset: int
    exporter: str
    dynamic_batch: bool
    input_name: str
    output_name: str
    input_shape: list[Any]
    max_abs_diff: float
    tolerance: float
    verify_inputs: str
    verify_batches: list[int]
    ops: dict[str, int]
    export_seconds: float
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"wrote            {self.path} ({self.file_bytes:,} B, opset {self.opset}, {self.exporter} exporter, "
            f"{'dynamic' if self.dynamic_batch else 'fixed'} batch)",
            f"input            {self.input_name} {self.input_shape}  ->  {self.output_name}",
            f"verified         onnxruntime vs PyTorch: max |diff| {self.max_abs_diff:.2e} <= {self.tolerance:g} on "
            f"{self.verify_inputs} (batches {', '.join(map(str, self.verify_batches))})",
            f"graph            {sum(self.ops.values())} nodes: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items(), key=lambda kv: -kv[1])[:8]),
        ]
        lines += [f"note             {n}" for n in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- export
_OP_PATTERN = re.compile(r"aten(?:::|\.)[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?")


def _failed_ops(exc: BaseException) -> list[str]:
    """The aten operators an exporter error names (both exporters name them in their messages)."""
    text = "".join(str(e) for e in _chain(exc))
    return sorted(set(_OP_PATTERN.findall(text)))


def _chain(exc: BaseException | None):
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def export_onnx(model: nn.Module, path: str | Path, input_size: Sequence[int], opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, exporter: str = "dynamo") -> Path:
    """Write ``model`` (eval mode, CPU, fp32) as ONNX to ``path``; ExportError names the failing ops."""
    if exporter not in EXPORTERS:
        raise ConfigError("exporter", f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}.")
    if not isinstance(opset, int) or not 11 <= opset <= 23:
        raise ConfigError("opset", f"must be a whole number from 11 to 23, got {opset!r}.")
    if exporter == "dynamo" and opset < 18:
        raise ConfigError("opset", f"the dynamo exporter writes opset 18 or newer, got {opset}; use "
                                   "--exporter torchscript for older opsets.")
    require_onnx("onnx", "onnxscript") if exporter == "dynamo" else require_onnx("onnx")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    model = model.to("cpu", torch.float32).eval()
    x = torch.randn(2, *input_size)
    kwargs: dict[str, Any] = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    if exporter == "dynamo":
        kwargs.update(dynamo=True, verbose=False, external_data=False,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None)
    else:
        kwargs.update(dynamo=False, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
                      if dynamic_batch else None)
    import warnings
    chatty = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in chatty]
    try:
        for lg in chatty:  # each optimisation pass logs at INFO; keep the CLI's output readable
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporters' deprecation and tracer chatter
            torch.onnx.export(model, (x,), str(tmp), **kwargs)
    except Exception as exc:  # noqa: BLE001 - any exporter failure becomes one named error
        tmp.unlink(missing_ok=True)
        ops = _failed_ops(exc)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = (f"the operator{'s' if len(ops) > 1 else ''} {', '.join(ops)} did not export" if ops
                else f"the exporter stopped: {first[:300]}")
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise ExportError(f"ONNX export ({exporter} exporter, opset {opset}) failed: {what}. Try a newer opset or "
                          f"--exporter {other}; the full error is in the log.") from exc
    finally:
        for lg, level in zip(chatty, levels):
            lg.setLevel(level)
    tmp.replace(out)
    return out


def _finish(path: Path, meta: dict[str, str]) -> dict[str, int]:
    """Drop the exporter's per-node debug records (stack traces and module paths: about two thirds
    of a small model's file) and write ``meta`` as the model's ``metadata_props``. Returns the node count
    per op type of the graph written (functions inlined by the exporter count as written)."""
    import onnx

    proto = onnx.load(str(path))
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for info in proto.graph.value_info:
        del info.metadata_props[:]
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return dict(Counter(n.op_type for n in proto.graph.node))


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session (``threads`` intra-op threads; default: torch's current count)."""
    require_onnx("onnxruntime")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"onnxruntime cannot load {path}: {str(exc).strip()[:300]}") from exc


def ort_runner(sess) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> logits`` through an onnxruntime session, as a tensor."""
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {name: x.detach().cpu().numpy()})[0])

    return run


def max_abs_diff(model: nn.Module, sess, batches: Sequence[torch.Tensor]) -> float:
    """Largest |onnxruntime - PyTorch| over the logits of ``batches``."""
    run = ort_runner(sess)
    worst = 0.0
    with torch.inference_mode():
        for x in batches:
            ref = model(x)
            got = run(x)
            if got.shape != ref.shape:
                raise ExportError(f"onnxruntime returned logits of shape {tuple(got.shape)} where PyTorch returns "
                                  f"{tuple(ref.shape)}.")
            worst = max(worst, float((got - ref).abs().max()))
    return worst


def verification_batches(doc: dict[str, Any], input_size: Sequence[int], n: int = 16,
                         dynamic_batch: bool = True) -> tuple[list[torch.Tensor], str]:
    """Inputs to check an export on, and what they are.

    Real test images of the model's data set (its saved ``meta.data`` config, normalised as in
    training) where they load without network, else random normal tensors of the input size.
    With a dynamic batch, they come as two batches of different sizes (n-1 and 1).
    """
    from .data import DataConfig, load_data

    data = (doc.get("meta") or {}).get("data")
    images: torch.Tensor | None = None
    what = "random normal inputs (the model's folder records no data set)"
    if isinstance(data, dict):
        try:
            cfg = DataConfig.from_dict({**data, "subset": 16, "eval_subset": n, "batch_size": n,
                                        "download": False, "num_workers": 0, "augment": False}).validate()
            images = next(iter(load_data(cfg).test))[0][:n]
            what = f"{len(images)} test images of {cfg.dataset}"
        except Exception as exc:  # noqa: BLE001 - any failure to get real data falls back, and says why
            what = f"random normal inputs ({data.get('dataset')} could not be loaded here: {str(exc)[:160]})"
    if images is None or tuple(images.shape[1:]) != tuple(input_size):
        if images is not None:
            what = f"random normal inputs (the data set's images are {tuple(images.shape[1:])}, the model takes " \
                   f"{tuple(input_size)})"
        gen = torch.Generator().manual_seed(0)
        images = torch.randn(n, *input_size, generator=gen)
    if not dynamic_batch:
        return [images[i:i + 2] for i in range(0, len(images) - 1, 2)], what
    return [images[:-1], images[-1:]], what


def _notes(model: nn.Module, doc: dict[str, Any]) -> list[str]:
    from .layers import LowRankLinear
    from .metrics import param_counts

    notes = []
    if any(isinstance(m, LowRankLinear) for m in model.modules()):
        notes.append("low-rank layers export as two MatMuls through the rank (both factors stored).")
    params, nonzero = param_counts(model)
    if params and nonzero < 0.99 * params:
        notes.append(f"IHT zeros are stored dense in ONNX ({nonzero / params:.0%} of {params:,} parameters are "
                     "nonzero): the .onnx file is dense-size and onnxruntime's CPU kernels do not skip the zeros; "
                     f"{serialize.WEIGHTS_FILE} keeps them packed.")
    structure = doc.get("structure") or {}
    if structure.get("heads") or structure.get("mlp"):
        notes.append("removed heads and MLP units are absent from the graph (the weights have the pruned shapes).")
    return notes


def export_folder(checkpoint: str | Path, out: str | Path | None = None, opset: int = DEFAULT_OPSET,
                  dynamic_batch: bool = True, exporter: str = "dynamo", tolerance: float = TOLERANCE,
                  progress: Callable[[str], None] | None = None) -> OnnxExport:
    """Export the model saved in ``checkpoint`` to ``out`` (default ``checkpoint/model.onnx``) and verify it.

    Raises CheckpointError for a folder that is not a saved model, ExportError when the export
    fails or onnxruntime's output differs from PyTorch's by more than ``tolerance``.
    """
    require_onnx()
    tell = progress or (lambda _msg: None)
    tell("loading the model")
    model, doc = serialize.load(checkpoint, device="cpu")
    folder = Path(checkpoint)
    if folder.is_file():
        folder = folder.parent
    target = Path(out) if out is not None else folder / ONNX_FILE
    if target.suffix != ".onnx":
        target = target / ONNX_FILE
    spec = model.accelvit_spec
    input_size = [3, spec.img_size, spec.img_size]
    tell(f"exporting ({exporter} exporter, opset {opset})")
    t0 = time.perf_counter()
    export_onnx(model, target, input_size, opset=opset, dynamic_batch=dynamic_batch, exporter=exporter)
    seconds = time.perf_counter() - t0
    mean, std = serialize.normalisation(doc)
    ops = _finish(target, {
        "producer": "accelvit", "model": spec.name, "input_size": json.dumps(input_size),
        "mean": json.dumps(list(mean) if mean else None), "std": json.dumps(list(std) if std else None),
        "class_names": json.dumps(doc.get("class_names")),
    })
    tell("checking onnxruntime against PyTorch")
    batches, what = verification_batches(doc, input_size, dynamic_batch=dynamic_batch)
    diff = max_abs_diff(model, session(target), batches)
    if not diff <= tolerance:  # also catches NaN
        bad = target.with_name(target.stem + ".unverified.onnx")
        target.replace(bad)
        raise ExportError(f"the ONNX export does not reproduce the PyTorch model: max |difference| of the logits "
                          f"{diff:.3g} > {tolerance:g} on {what}. The file was kept as {bad} for inspection.")
    import onnx
    import onnxruntime

    result = OnnxExport(
        path=str(target), file_bytes=target.stat().st_size, opset=opset, exporter=exporter,
        dynamic_batch=dynamic_batch, input_name=INPUT_NAME, output_name=OUTPUT_NAME,
        input_shape=["batch" if dynamic_batch else 2, *input_size], max_abs_diff=diff, tolerance=tolerance,
        verify_inputs=what, verify_batches=[int(b.shape[0]) for b in batches], ops=ops,
        export_seconds=round(seconds, 3), notes=_notes(model, doc),
        versions={"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__})
    if target.parent == folder:
        atomic_write_json(folder / ONNX_REPORT, result.to_dict())
        write_card(folder)  # the model card gains its verified onnxruntime section
    log.info("exported %s: max |diff| %.2e", target, diff)
    return result


# ----------------------------------------------------------------------------- latency
def onnx_latency(model: nn.Module, onnx_path: str | Path, batch_sizes: Sequence[int] = (1, 64), warmup: int = 2,
                 reps: int = 5, threads: int | None = None) -> dict[str, Any]:
    """PyTorch and onnxruntime (CPU) latency of the same model, timed interleaved in this process.

    Both use the same number of intra-op threads (``threads``, default torch's current count),
    so the ratio compares the runtimes, not the thread counts. ``speedup`` per batch size is
    PyTorch's median over onnxruntime's (above 1: onnxruntime is faster).
    """
    from .metrics import interleaved, resolve_input_size

    prev = torch.get_num_threads()
    n_threads = int(threads or prev)
    torch.set_num_threads(n_threads)
    try:
        sess = session(onnx_path, threads=n_threads)
        fixed = sess.get_inputs()[0].shape[0]
        shape = resolve_input_size(model, None)
        work = model.to("cpu").eval()
        run = ort_runner(sess)
        points = []
        with torch.inference_mode():
            for bs in batch_sizes:
                if isinstance(fixed, int) and fixed != bs:
                    continue  # a fixed-batch export only runs its own batch size
                x = torch.randn(bs, *shape)
                p = interleaved(work, run, x, warmup, reps)
                points.append({"batch_size": bs, "pytorch": asdict(p.baseline), "onnxruntime": asdict(p.pruned),
                               "speedup": p.speedup, "paired_speedup": p.paired_speedup})
        if not points:
            raise ExportError(f"{onnx_path} was exported with a fixed batch of {fixed}, none of the batch sizes "
                              f"{list(batch_sizes)}; re-export with --dynamic-batch.")
        import onnxruntime

        return {"path": str(onnx_path), "file_bytes": Path(onnx_path).stat().st_size, "threads": n_threads,
                "onnxruntime_version": onnxruntime.__version__, "provider": "CPUExecutionProvider",
                "method": "interleaved: PyTorch and onnxruntime alternate (A,B then B,A) in one process",
                "points": points}
    finally:
        torch.set_num_threads(prev)


def onnx_summary(lat: dict[str, Any]) -> str:
    """Text lines for :func:`onnx_latency`'s result (the ``measure`` CLI)."""
    lines = [f"onnxruntime      {lat['path']} ({lat['file_bytes']:,} B), {lat['provider']}, {lat['threads']} threads, "
             "timed interleaved with PyTorch"]
    for p in lat["points"]:
        t, o = p["pytorch"], p["onnxruntime"]
        lines.append(f"  b={p['batch_size']:<4d}        PyTorch {t['median_ms']:.2f} ms  onnxruntime {o['median_ms']:.2f} ms "
                     f"(p25-p75 {o['p25_ms']:.2f}-{o['p75_ms']:.2f}, {o['reps']} reps)  PyTorch/ORT {p['speedup']:.2f}x")
    return "\n".join(lines)
