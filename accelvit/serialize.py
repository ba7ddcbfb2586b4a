"""Save and load models: safetensors weights plus a JSON spec; never a pickle.

A saved model is a directory::

    DIR/model.safetensors   every tensor of the state dict, in accelvit.sparse_io's form: tensors
                            with enough exact zeros as packed bitmask + nonzero values, the
                            rest as plain safetensors tensors
    DIR/accelvit.json       {"format": "accelvit-model", "version": 1, "model": ModelSpec,
                             "structure": what pruning changed, "class_names": [...], "meta": {...}}
    DIR/README.md           the model card (accelvit.card), written from the two files above

``load`` rebuilds the unpruned architecture from the spec, re-applies the structure
(heads kept, MLP widths, low-rank factors) so every shape matches, then loads the weights
strictly. Anything that is not ours, truncated or inconsistent raises CheckpointError.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors import safe_open

from .card import write_card
from .layout import ONNX_FILE, ONNX_REPORT, SPEC_FILE, WEIGHTS_FILE
from .errors import CheckpointError, ConfigError, ModelError
from .fileio import atomic_write_bytes, atomic_write_json  # noqa: F401  (re-exported)
from . import spec as spec_check
from .models import ModelSpec, architecture_args, build_from_spec, is_swin_v1, spec_of
from .prune.structure import apply_structure, describe_structure
from .sparse_io import load_sparse, read_declared, save_sparse
from .spec import FORMAT, VERSION

log = logging.getLogger(__name__)


def save(model: torch.nn.Module, path: str | Path, class_names: list[str] | None = None,
         meta: dict[str, Any] | None = None) -> Path:
    """Save ``model`` (built by accelvit, pruned or not) to directory ``path``."""
    out = Path(path)
    spec = spec_of(model)
    if class_names is not None and len(class_names) != spec.num_classes:
        raise ConfigError("class_names", f"{len(class_names)} names were given for a model with "
                                         f"{spec.num_classes} classes; pass one name per class.")
    structure = describe_structure(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "model": spec.to_dict(),
        "input_size": [3, spec.img_size, spec.img_size],
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        "structure": structure,
        "params": sum(int(v.numel()) for v in model.parameters()),
        "class_names": [str(c) for c in class_names] if class_names is not None else None,
        "meta": meta or {},
    }
    # Tensors with enough exact zeros (IHT) are stored as bitmask + values, the rest as they
    # are, so a sparsified model really is smaller on disk; the round trip is bit-exact.
    save_sparse(state, out / WEIGHTS_FILE, metadata={"format": FORMAT, "version": str(VERSION)})
    atomic_write_json(out / SPEC_FILE, doc)
    for stale in (out / ONNX_FILE, out / ONNX_REPORT):  # an export of the weights this save replaced
        stale.unlink(missing_ok=True)
    write_card(out)  # README.md, from the spec and the metrics in ``meta`` (accelvit.card)
    return out


def read_spec(path: str | Path) -> dict[str, Any]:
    """Read and validate ``accelvit.json`` of a saved model directory (``accelvit.spec``: schema + cost bound)."""
    return _read_checked(path)[0]


def _read_checked(path: str | Path) -> tuple[dict[str, Any], spec_check.Checked]:
    spec_path = _spec_path(Path(path))
    p = spec_path.parent
    if not spec_path.is_file():
        raise CheckpointError(
            f"{p} is not an accelvit model: {SPEC_FILE} is missing. Expected a directory written by "
            "accelvit.save (model.safetensors + accelvit.json).")
    doc = spec_check.read_doc(spec_path)
    checked = spec_check.check_doc(doc, str(spec_path), architecture_args)
    return doc, checked


def _spec_path(p: Path) -> Path:
    """``DIR/accelvit.json`` for a model directory, or for a file inside one."""
    if p.is_dir():
        return p / SPEC_FILE
    if p.name == SPEC_FILE:
        return p
    if p.suffix == ".safetensors":
        if (p.parent / SPEC_FILE).exists() and p.name == WEIGHTS_FILE:
            return p.parent / SPEC_FILE
        raise CheckpointError(
            f"{p} is a bare safetensors file, not an accelvit model: expected a directory written by accelvit.save "
            f"holding {WEIGHTS_FILE} and {SPEC_FILE}. To use foreign weights, build the model with "
            "build_model(..., weights_path=...).")
    return p / SPEC_FILE


def _check_weights_file(weights: Path) -> None:
    """Refuse safetensors files that accelvit.save did not write (checked on the header metadata)."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc}); it is truncated or "
                              "damaged. Save the model again.") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{weights} is a safetensors file but was not written by accelvit.save (its header "
                              f"has no format={FORMAT!r} entry); it belongs to another tool. Save the model with "
                              "accelvit, or build it with build_model(..., weights_path=...).")


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a saved model exactly. Returns ``(model in eval mode, spec document)``.

    Nothing is allocated before the folder has passed :mod:`accelvit.spec`: the spec's schema
    and cost bound, the sparse index against the weights' header, the spec against the
    weights' shapes. Every failure is a :class:`CheckpointError`.
    """
    doc, checked = _read_checked(path)
    p = _spec_path(Path(path)).parent
    weights = p / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{p} has a spec but no {WEIGHTS_FILE}; the save was incomplete.")
    _check_weights_file(weights)
    declared, _ = read_declared(weights)  # header only: shapes the file promises, index checked
    spec_check.check_weights(checked, declared, str(p), swin_v1=is_swin_v1(checked.name))
    state, _ = load_sparse(weights)  # raises CheckpointError for damaged files
    try:
        spec = ModelSpec.from_dict(doc["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"The model section of {p / SPEC_FILE} is incomplete ({exc}).") from exc
    try:
        model = build_from_spec(spec)
    except ModelError as exc:
        raise CheckpointError(f"{p / SPEC_FILE} describes a model that cannot be built: {exc}") from exc
    apply_structure(model, doc.get("structure") or {})
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(x for x in (
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:3]]}" if wrong else "",
        ) if x)
        raise CheckpointError(f"The weights in {weights} do not match the architecture in {SPEC_FILE}: {detail}.")
    model.load_state_dict(state, strict=True)
    expected = doc.get("params")
    got = sum(int(v.numel()) for v in model.parameters())
    if isinstance(expected, int) and expected != got:
        raise CheckpointError(f"{p / SPEC_FILE} records {expected} parameters but the rebuilt model has {got}; the "
                              "spec and weights are inconsistent.")
    return model.to(device).eval(), doc


def normalisation(doc: dict[str, Any]) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``(mean, std)`` a saved model was fed: its training data config's, else the spec's (or None).

    The one lookup used by the runner (a checkpoint baseline), the CLI and the Inference page.
    """
    data = (doc.get("meta") or {}).get("data") or {}
    norm = doc.get("normalization") or {}
    spec = doc.get("model") or {}
    mean = data.get("mean") or norm.get("mean") or spec.get("mean")
    std = data.get("std") or norm.get("std") or spec.get("std")
    return (tuple(mean) if mean else None), (tuple(std) if std else None)
