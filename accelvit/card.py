"""Model cards: a ``README.md`` in every saved model folder, written from what was measured.

The card follows the Hugging Face model-card conventions (YAML front matter with
``library_name``, ``tags``, ``datasets`` and a ``model-index`` holding the measured test
accuracy; then what the model is, its data, how it was pruned, the metrics table, how to load
it with accelvit and with onnxruntime, and its limits). Every number in it is read from the
folder: ``accelvit.json`` (spec, structure, and ``meta.metrics`` of a run), ``metrics.json``
(``accelvit train``) and ``onnx.json`` (a verified export). Nothing is typed in; a number that
was not measured is left out or shown as "–".
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .fileio import atomic_write_bytes
from .layout import CARD_FILE, ONNX_FILE, ONNX_REPORT, SPEC_FILE, TRAIN_METRICS_FILE

log = logging.getLogger(__name__)

MISSING = "–"
STAGES = (("before", "baseline"), ("pruned", "pruned, before finetuning"), ("after", "pruned + finetuned"))

#: (label, key in a stage's metrics, formatter name); the order of the metrics table.
ROWS = (
    ("top-1 accuracy (test)", "top1", "pct"),
    ("top-5 accuracy (test)", "top5", "pct"),
    ("dense FLOPs (attention included)", "dense_flops", "si"),
    ("effective FLOPs (x weight density)", "effective_flops", "si"),
    ("parameters", "params", "int"),
    ("nonzero parameters", "nonzero_params", "int"),
    ("size on disk, sparse format", "size_sparse_bytes", "bytes"),
    ("size on disk, dense fp32", "size_dense_bytes", "bytes"),
    ("latency, batch 1 (median)", "latency_ms_b1", "ms"),
    ("speedup vs baseline, batch 1", "speedup_b1", "x"),
)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return None if v != v or v in (float("inf"), float("-inf")) else float(v)


def fmt(value: Any, kind: str) -> str:
    """One metric as the card writes it ("–" when missing)."""
    v = _num(value)
    if v is None:
        return MISSING
    if kind == "pct":
        return f"{v:.2%}"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "ms":
        return f"{v:.2f} ms"
    if kind == "x":
        return f"{v:.2f}x"
    if kind == "sci":
        return f"{v:.1e}"
    if kind == "bytes":
        for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if v >= size:
                return f"{v / size:.2f} {unit}"
        return f"{int(v)} B"
    if kind == "si":
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(v) >= size:
                return f"{v / size:.2f} {unit}"
        return f"{v:.0f}"
    return str(value)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _stage_metrics(doc: dict[str, Any], train: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{stage: metrics}`` from the spec's ``meta.metrics`` (a run) or ``metrics.json`` (a trained model)."""
    metrics = (doc.get("meta") or {}).get("metrics")
    if isinstance(metrics, dict) and metrics:
        return {k: v for k, v in metrics.items() if isinstance(v, dict)}
    if train:
        return {"trained": {k: train.get(k) for k in ("top1", "top5", "loss")} | {"params": doc.get("params")}}
    return {}


def _structure_lines(structure: dict[str, Any]) -> list[str]:
    heads = structure.get("heads") or {}
    mlp = structure.get("mlp") or {}
    low = structure.get("lowrank") or {}
    lines = []
    if heads:
        kept = sum(len(v.get("kept") or []) for v in heads.values())
        orig = sum(int(v.get("num_heads_orig") or 0) for v in heads.values())
        lines.append(f"- attention heads: {kept} of {orig} kept in the {len(heads)} window-attention layers that lost "
                     "heads (removed from the weights, not masked)")
    if mlp:
        kept = sum(int(v.get("hidden") or 0) for v in mlp.values())
        orig = sum(int(v.get("hidden_orig") or 0) for v in mlp.values())
        lines.append(f"- MLP hidden units: {kept:,} of {orig:,} kept in {len(mlp)} MLPs")
    if low:
        ranks = sorted(int(v.get("rank") or 0) for v in low.values())
        lines.append(f"- low-rank (SVD) layers: {len(low)} linear layers factorised into two smaller ones "
                     f"(ranks {ranks[0]}–{ranks[-1]})")
    return lines


def _prune_lines(config: dict[str, Any]) -> list[str]:
    pc = config.get("prune") or {}
    ft = config.get("finetune") or {}
    out = []
    named = (("head_ratio", "head ratio"), ("head_criterion", "head criterion"), ("mlp_ratio", "MLP ratio"),
             ("rank_ratio", "SVD rank ratio"), ("energy", "SVD energy"), ("sparsity", "IHT sparsity"),
             ("target_flops", "FLOP target (fraction of dense FLOPs)"), ("target_rule", "FLOP target rule"))
    for key, label in named:
        v = pc.get(key)
        if v not in (None, 0, 0.0, "") and not (key == "target_rule" and pc.get("target_flops") is None):
            out.append(f"- {label}: `{v}`")
    if ft:
        parts = [f"{ft.get('epochs')} epochs" if ft.get("epochs") is not None else None,
                 f"peak lr {ft.get('lr')}" if ft.get("lr") is not None else None]
        kd = config.get("distill") or ft.get("distill")
        if isinstance(kd, dict) and kd.get("alpha"):
            parts.append(f"distilled from the baseline (alpha {kd.get('alpha')}, T {kd.get('temperature')})")
        out.append("- finetune: " + ", ".join(p for p in parts if p))
    return out


def render(doc: dict[str, Any], train: dict[str, Any] | None = None, onnx: dict[str, Any] | None = None,
           folder_name: str = "model") -> str:
    """The card's Markdown for a model folder's spec document (and its optional side files)."""
    spec = doc.get("model") or {}
    meta = doc.get("meta") or {}
    data = meta.get("data") or {}
    split = meta.get("split") or (train or {}).get("split") or {}
    config = meta.get("config") or {}
    structure = doc.get("structure") or {}
    stages = _stage_metrics(doc, train)
    final = stages.get("after") or stages.get("trained") or next(iter(stages.values()), {})
    name = spec.get("name") or "model"
    dataset = data.get("dataset") or (train or {}).get("dataset")
    classes = doc.get("class_names") or []
    pruned = bool(structure.get("heads") or structure.get("mlp") or structure.get("lowrank")) or "after" in stages

    front = ["---", "library_name: accelvit", "pipeline_tag: image-classification", "tags:", "- image-classification",
             "- swin", "- accelvit"] + (["- pruned"] if pruned else [])
    if dataset:
        front += ["datasets:", f"- {dataset}"]
    top1 = _num(final.get("top1"))
    if top1 is not None:
        front += ["model-index:", f"- name: {folder_name}", "  results:", "  - task:", "      type: image-classification",
                  "    dataset:", f"      name: {dataset or 'unknown'}", f"      type: {dataset or 'unknown'}",
                  "    metrics:", "    - type: accuracy", f"      value: {top1:.6g}", "      name: top-1 (test split)"]
    front.append("---")

    kind = "pruned " if pruned else ""
    lines = [*front, "", f"# {folder_name}: {kind}{name}", "",
             f"A {kind}Swin vision transformer (`{name}`) saved by accelvit: "
             f"`model.safetensors` (weights; sparse tensors packed) and `accelvit.json` (the architecture spec). "
             "Nothing in this folder is a pickle. This card was written by accelvit from the measured results; "
             "every number below was measured, not typed in.", "",
             "## What it is", "",
             f"- architecture: `{name}`, input {spec.get('img_size', '?')}x{spec.get('img_size', '?')} RGB, "
             f"{spec.get('num_classes', len(classes) or '?')} classes",
             f"- parameters: {fmt(doc.get('params'), 'int')}"]
    if classes:
        shown = ", ".join(map(str, classes[:20])) + (f", … ({len(classes)} in all)" if len(classes) > 20 else "")
        lines.append(f"- classes: {shown}")
    if meta.get("run_id"):
        lines.append(f"- accelvit run: `{meta['run_id']}`")
    lines += ["", "## Data", ""]
    if dataset:
        lines.append(f"- data set: `{dataset}`" + (f" (from `{data.get('root')}`)" if data.get("root") else ""))
        if split:
            lines.append("- split: " + ", ".join(f"{k} {v:,}" for k, v in split.items() if isinstance(v, int)) +
                         " images")
        lines.append(f"- preprocessing: resize to {data.get('img_size') or spec.get('img_size')} px, normalise with "
                     f"mean {_vec(data.get('mean') or spec.get('mean'))} and std {_vec(data.get('std') or spec.get('std'))}")
    else:
        lines.append("No data set is recorded with this model.")
    lines += ["", "## How it was pruned", ""]
    if pruned:
        lines += _prune_lines(config) + _structure_lines(structure)
        density = _num(final.get("density"))
        if density is not None:
            lines.append(f"- weight density after IHT: {density:.1%} of the parameters are nonzero")
    else:
        lines.append("Not pruned: this is a baseline.")
    lines += ["", "## Measured metrics", ""]
    lines += _metrics_table(stages)
    where = final.get("device_name") or final.get("device")
    if where:
        lines += ["", f"Measured on {where} ({final.get('num_threads', '?')} threads) with torch "
                      f"{final.get('torch_version', '?')}; accuracy on the test split "
                      f"({fmt(final.get('n'), 'int')} images). FLOPs count attention (torch's FlopCounterMode); "
                      "speedups time the baseline and this model interleaved in one process."]
    lines += ["", "## How to load it", "", "With accelvit installed:", "", "```python",
              "import accelvit", "", f'model, spec = accelvit.load("{folder_name}")  # rebuilt exactly, eval mode',
              "logits = model(images)  # images: (B, 3, H, W), normalised as above", "```", ""]
    if onnx:
        lines += [f"With onnxruntime (`model.onnx`, opset {onnx.get('opset')}, verified: max |difference| to "
                  f"PyTorch {fmt(onnx.get('max_abs_diff'), 'sci')} on {onnx.get('verify_inputs')}):"]
    else:
        lines += ["With onnxruntime: export first (`accelvit export --checkpoint FOLDER`, needs "
                  "`pip install 'accelvit[onnx]'`), then:"]
    lines += ["", "```python", "import onnxruntime as ort", "",
              f'session = ort.InferenceSession("{folder_name}/model.onnx", providers=["CPUExecutionProvider"])',
              'logits = session.run(None, {"pixel_values": images})[0]  # images: float32 numpy (B, 3, H, W)', "```"]
    if onnx:
        lines += ["", f"The ONNX file is {fmt(onnx.get('file_bytes'), 'bytes')}."] + \
                 [f"- {n}" for n in onnx.get("notes") or []]
    lines += ["", "## Limitations", "",
              "- The accuracy is measured on the held-out test split named above, on this data set only.",
              "- Latency and speedups depend on the machine; the ones above were timed where this model was made."]
    if _num(final.get("density")) is not None and _num(final.get("density")) < 0.99:
        lines.append("- IHT zeros shrink the sparse file and the effective FLOPs; dense kernels (PyTorch, "
                     "onnxruntime) do not skip them, so they do not make inference faster by themselves.")
    return "\n".join(lines) + "\n"


def _vec(v: Any) -> str:
    if isinstance(v, (list, tuple)) and all(_num(x) is not None for x in v):
        return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"
    return MISSING


def _metrics_table(stages: dict[str, dict[str, Any]]) -> list[str]:
    if not stages:
        return ["No measured metrics are recorded with this model."]
    cols = [(k, label) for k, label in STAGES if k in stages] or [(k, k) for k in stages]
    rows = [r for r in ROWS if any(_num(stages[k].get(r[1])) is not None for k, _ in cols)]
    out = ["| metric | " + " | ".join(label for _, label in cols) + " |",
           "|---|" + "---|" * len(cols)]
    for label, key, kind in rows:
        out.append(f"| {label} | " + " | ".join(fmt(stages[k].get(key), kind) for k, _ in cols) + " |")
    return out


def write_card(folder: str | Path) -> Path | None:
    """(Re)write ``folder/README.md`` from the folder's files. Returns its path, or None (logged) when the
    folder holds no readable spec; a card is documentation, so failing to write one never fails a save."""
    folder = Path(folder)
    doc = _read_json(folder / SPEC_FILE)
    if doc is None:
        log.warning("no model card written: %s has no readable %s", folder, SPEC_FILE)
        return None
    try:
        text = render(doc, train=_read_json(folder / TRAIN_METRICS_FILE), onnx=read_export(folder),
                      folder_name=folder.name)
        atomic_write_bytes(folder / CARD_FILE, text.encode())
    except (OSError, TypeError, ValueError, AttributeError) as exc:
        log.warning("no model card written in %s: %s", folder, exc)
        return None
    return folder / CARD_FILE


def read_export(folder: str | Path) -> dict[str, Any] | None:
    """The ``onnx.json`` written beside a verified export, if the folder has a current one (same file size)."""
    folder = Path(folder)
    report, onnx_file = folder / ONNX_REPORT, folder / ONNX_FILE
    if not (report.is_file() and onnx_file.is_file()):
        return None
    doc = _read_json(report)
    return doc if doc is not None and doc.get("file_bytes") == onnx_file.stat().st_size else None
