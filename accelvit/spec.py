"""Validate a saved model folder before anything is built: the one check at the boundary.

A model folder (``accelvit.json`` + ``model.safetensors``) may come from anywhere: a run of
this tool, a colleague, a download. Nothing in it is trusted until it has passed here:

* :func:`read_doc`: ``accelvit.json`` is read only up to a size limit, parsed without a
  ``RecursionError`` escaping, and refused when nested deeper than any file accelvit writes;
* :func:`check_doc`: the declared schema of the document: types, ranges, allow-listed
  constructor kwargs (spec kwargs reach timm, so ``checkpoint_path`` and friends never may),
  consistent lengths (``depths`` / ``num_heads``, ``class_names`` / ``num_classes``), the
  normalisation (3 finite numbers, std > 0), the structure section's shape; then the
  **cost bound**: parameters and memory (buffers + batch-1 activations) estimated from the
  architecture, checked against :class:`Limits` (environment variables);
* :func:`check_sparse_index`: the sparse index in the weights file's header against the
  tensors that header declares, so decoding allocates no more than the file can describe;
* :func:`check_weights`: the spec against the weights' declared shapes (embedding width,
  patch size, blocks per stage, classes) and size, so a 24 KB file cannot make the loader
  build a 24 GB model.

Every violation is a :class:`~accelvit.errors.CheckpointError` naming the field, the value
and what was expected. All of this runs on plain JSON and header shapes: no tensor is
allocated. The module needs the standard library only (it sits below ``models``,
``sparse_io`` and ``serialize`` in the import graph; the architecture of a name comes in
as a callable).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError

FORMAT = "accelvit-model"
VERSION = 1

#: Keyword arguments a spec may pass to the Swin constructor. Everything else (``checkpoint_path``,
#: ``pretrained_cfg*``, ``embed_layer``, ``norm_layer``, ``in_chans``, ``device``...) is refused.
ALLOWED_KWARGS = ("patch_size", "window_size", "embed_dim", "depths", "num_heads", "head_dim", "mlp_ratio",
                  "qkv_bias", "drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")
MODEL_KEYS = ("name", "num_classes", "img_size", "kwargs", "mean", "std")
#: Swin constructor defaults, for the keys a name's own arguments leave out.
SWIN_DEFAULTS: dict[str, Any] = {"patch_size": 4, "window_size": 7, "embed_dim": 96, "depths": (2, 2, 6, 2),
                                 "num_heads": (3, 6, 12, 24), "head_dim": None, "mlp_ratio": 4.0}

MAX_JSON_DEPTH = 32          # accelvit writes at most ~6 levels (meta.config.prune...)
MAX_INDEX_DEPTH = 8          # the sparse index: {"order": [...], "sparse": {name: {"shape": [...]}}}
MAX_NAME_CHARS = 1024        # a class name, a module path, a tensor name
MAX_STRUCTURE_ENTRIES = 100_000
MAX_NDIM = 8
#: Per-field sanity ranges; the cost bound below is what really limits a model.
RANGES = {"num_classes": (1, 1_000_000), "img_size": (1, 16_384), "patch_size": (1, 256), "window_size": (1, 512),
          "embed_dim": (1, 65_536), "depth": (1, 256), "stages": (1, 8), "num_heads": (1, 4096),
          "head_dim": (1, 4096)}
#: Pruning (fewer heads, narrower MLPs, low rank) keeps far more than 1/1000 of a Swin's parameters.
MAX_PRUNED_RATIO = 1000

ENV_MAX_PARAMS = "ACCELVIT_MAX_MODEL_PARAMS"
ENV_MAX_ACTIVATION = "ACCELVIT_MAX_ACTIVATION_BYTES"
ENV_MAX_SPEC = "ACCELVIT_MAX_SPEC_BYTES"


@dataclass(frozen=True)
class Limits:
    """What a model folder may ask for. Defaults admit Swin-L at 384 px (197M parameters).

    ``max_params``: parameters of the unpruned architecture (built before the structure is
    applied); ``max_activation_bytes``: the attention buffers plus the activations of one
    image; ``max_spec_bytes``: the size of ``accelvit.json``.
    """

    max_params: int = 350_000_000
    max_activation_bytes: int = 4 * 1024**3
    max_spec_bytes: int = 4 * 1024**2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Limits":
        env = os.environ if env is None else env
        base = cls()
        vals = {}
        for field, var in (("max_params", ENV_MAX_PARAMS), ("max_activation_bytes", ENV_MAX_ACTIVATION),
                           ("max_spec_bytes", ENV_MAX_SPEC)):
            raw = env.get(var, "").strip()
            if not raw:
                vals[field] = getattr(base, field)
                continue
            try:
                vals[field] = int(float(raw))
            except ValueError:
                raise ConfigError(var, f"must be a whole number, got {raw!r}.") from None
            if vals[field] < 1:
                raise ConfigError(var, f"must be at least 1, got {raw!r}.")
        return cls(**vals)


@dataclass(frozen=True)
class Cost:
    """What building and running the unpruned architecture takes (estimated, float32)."""

    params: int
    buffer_bytes: int
    activation_bytes: int

    @property
    def param_bytes(self) -> int:
        return 4 * self.params


def _fail(where: str, field: str, value: Any, expected: str) -> CheckpointError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return CheckpointError(f"{where}: {field} is {shown}; expected {expected}.")


# ----------------------------------------------------------------------------------- reading
def read_doc(path: Path, limits: Limits | None = None) -> Any:
    """The parsed JSON of ``path``, read within the size limit and the nesting limit."""
    limits = limits or Limits.from_env()
    try:
        size = path.stat().st_size
        if size > limits.max_spec_bytes:
            raise CheckpointError(
                f"{path} is {size:,} bytes; a model spec is at most {limits.max_spec_bytes:,} bytes "
                f"(accelvit writes a few KB). Set {ENV_MAX_SPEC} to admit a larger one.")
        with open(path, "rb") as f:
            raw = f.read(limits.max_spec_bytes + 1)
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}).") from exc
    if len(raw) > limits.max_spec_bytes:
        raise CheckpointError(f"{path} is larger than {limits.max_spec_bytes:,} bytes; set {ENV_MAX_SPEC} to "
                              "admit a larger model spec.")
    return parse_json(raw, str(path), MAX_JSON_DEPTH)


def parse_json(raw: bytes | str, where: str, max_depth: int) -> Any:
    """``json.loads`` whose every failure is a CheckpointError (nesting deeper than ``max_depth`` too)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        doc = json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{where} is nested too deeply to be read; the file is damaged "
                              f"(accelvit nests at most {max_depth} levels).") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, over-long integers
        raise CheckpointError(f"{where} is not valid JSON ({exc}); the file is damaged.") from exc
    depth = json_depth(doc)
    if depth > max_depth:
        raise CheckpointError(f"{where} is nested {depth} levels deep; expected at most {max_depth}. "
                              "The file is damaged or not written by accelvit.")
    return doc


def json_depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, iteratively (no recursion to exhaust)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in o)
    return deepest


# ------------------------------------------------------------------------------ primitives
def _int(where: str, field: str, v: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(where, field, v, f"a whole number{'' if hi is None else f' from {lo} to {hi:,}'}")
    if v < lo or (hi is not None and v > hi):
        raise _fail(where, field, v, f"a whole number from {lo} to {hi:,}" if hi is not None else f"at least {lo}")
    return v


def _num(where: str, field: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _fail(where, field, v, "a finite number")
    return float(v)


def _int_list(where: str, field: str, v: Any, lo: int, hi: int, n: int | None = None) -> list[int]:
    if not isinstance(v, list) or not v or len(v) > RANGES["stages"][1] * 64:
        raise _fail(where, field, v, "a non-empty list of whole numbers" + (f" of length {n}" if n else ""))
    out = [_int(where, f"{field}[{i}]", x, lo, hi) for i, x in enumerate(v)]
    if n is not None and len(out) != n:
        raise _fail(where, field, v, f"{n} entries (one per stage), got {len(out)}")
    return out


def check_norm(where: str, field: str, value: Any, required: bool = True) -> tuple[float, float, float] | None:
    """A mean or std: 3 finite numbers (one per RGB channel); a std's must be positive."""
    if value is None and not required:
        return None
    if not isinstance(value, list) or len(value) != 3:
        raise _fail(where, field, value, "a list of 3 numbers (one per RGB channel)")
    nums = tuple(_num(where, f"{field}[{i}]", x) for i, x in enumerate(value))
    if field.endswith("std") and min(nums) <= 0:
        raise _fail(where, field, value, "3 positive numbers (a std of 0 would divide by zero)")
    return nums  # type: ignore[return-value]


def _name(where: str, field: str, v: Any) -> str:
    if not isinstance(v, str) or len(v) > MAX_NAME_CHARS:
        raise _fail(where, field, v, f"a text of at most {MAX_NAME_CHARS} characters")
    return v


# ---------------------------------------------------------------------------- architecture
def check_kwargs(kwargs: Any, where: str = "the model spec") -> dict[str, Any]:
    """The constructor kwargs, checked key by key (allow-list, types, ranges); lists stay lists."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise _fail(where, "model.kwargs", kwargs, "an object of Swin constructor arguments")
    unknown = sorted(k for k in kwargs if k not in ALLOWED_KWARGS)
    if unknown:
        raise _fail(where, f"model.kwargs.{unknown[0]}", kwargs[unknown[0]],
                    f"no such argument: a spec may set only {', '.join(ALLOWED_KWARGS)}")
    f = "model.kwargs."
    out: dict[str, Any] = {}
    for key, v in kwargs.items():
        if key in ("patch_size", "embed_dim", "head_dim"):
            if key == "head_dim" and v is None:
                out[key] = None
                continue
            out[key] = _int(where, f + key, v, *RANGES[key])
        elif key == "window_size":
            v = list(v) if isinstance(v, tuple) else v
            out[key] = (_int_list(where, f + key, v, *RANGES[key]) if isinstance(v, list)
                        else _int(where, f + key, v, *RANGES[key]))
        elif key in ("depths", "num_heads"):
            v = list(v) if isinstance(v, tuple) else v
            rng = RANGES["depth"] if key == "depths" else RANGES["num_heads"]
            out[key] = _int_list(where, f + key, v, *rng)
            if len(out[key]) > RANGES["stages"][1]:
                raise _fail(where, f + key, v, f"at most {RANGES['stages'][1]} stages")
        elif key == "mlp_ratio":
            r = _num(where, f + key, v)
            if not 0 < r <= 64:
                raise _fail(where, f + key, v, "a number above 0 and at most 64")
            out[key] = v
        elif key == "qkv_bias":
            if not isinstance(v, bool):
                raise _fail(where, f + key, v, "true or false")
            out[key] = v
        else:  # drop rates
            r = _num(where, f + key, v)
            if not 0 <= r < 1:
                raise _fail(where, f + key, v, "a probability from 0 up to (not including) 1")
            out[key] = v
    return out


def architecture(base: Mapping[str, Any], kwargs: Mapping[str, Any], img_size: int,
                 where: str = "the model spec") -> dict[str, Any]:
    """The full Swin arguments (``base``: the name's own, then the spec's kwargs), checked for consistency."""
    arch = {**SWIN_DEFAULTS, **{k: v for k, v in base.items() if k in SWIN_DEFAULTS}, **kwargs}
    depths = [int(d) for d in arch["depths"]]
    heads = [int(h) for h in arch["num_heads"]]
    f = "model.kwargs."
    if len(heads) != len(depths):
        raise _fail(where, f + "num_heads", heads, f"one head count per stage ({len(depths)} stages in depths)")
    window = arch["window_size"]
    windows = [int(w) for w in window] if isinstance(window, (list, tuple)) else [int(window)] * len(depths)
    if len(windows) != len(depths):
        raise _fail(where, f + "window_size", window, f"one window size, or one per stage ({len(depths)})")
    patch, embed = int(arch["patch_size"]), int(arch["embed_dim"])
    if patch > img_size:
        raise _fail(where, f + "patch_size", patch, f"at most img_size ({img_size})")
    dims = [embed * 2**i for i in range(len(depths))]
    for i, (d, h) in enumerate(zip(dims, heads)):
        if arch["head_dim"] is None and h > d:
            raise _fail(where, f"{f}num_heads[{i}]", h, f"at most the stage width {d} (each head needs a channel)")
    return {**arch, "depths": depths, "num_heads": heads, "window_size": windows, "patch_size": patch,
            "embed_dim": embed}


def estimate_cost(arch: Mapping[str, Any], img_size: int, num_classes: int) -> Cost:
    """Parameters, buffer bytes and batch-1 activation bytes of the unpruned Swin ``arch`` (float32).

    Exact parameters for timm's ``SwinTransformer`` (v1); within a few percent for the v2
    families. Buffers: relative position indices (int64) and shifted-window masks. Activations:
    the largest stage's live tensors (q, k, v, attention scores, MLP hidden) for one image.
    """
    depths, heads, windows = arch["depths"], arch["num_heads"], arch["window_size"]
    patch, embed, ratio, head_dim = arch["patch_size"], arch["embed_dim"], float(arch["mlp_ratio"]), arch["head_dim"]
    res = img_size // patch
    params = 3 * patch * patch * embed + embed + 2 * embed  # patch conv + bias + its norm
    buffers = 0
    act = 4 * 3 * img_size * img_size
    d_prev = embed
    for i, (depth, h, w) in enumerate(zip(depths, heads, windows)):
        d = embed * 2**i
        if i > 0:
            params += 2 * 4 * d_prev + 4 * d_prev * d  # patch merging: norm + reduction (no bias)
            res = (res + 1) // 2  # patch merging pads odd sizes
        w = min(w, res)
        tokens = res * res
        a = (head_dim or max(1, d // h)) * h
        m = int(d * ratio)
        block = 4 * d + (d * 3 * a + 3 * a) + (2 * w - 1) ** 2 * h + (a * d + d) + (d * m + m) + (m * d + d)
        params += depth * block
        buffers += depth * 8 * w**4 + (depth // 2) * 4 * tokens * w * w  # rel. index; masks of shifted blocks
        act = max(act, 4 * tokens * (4 * a + 2 * d + m + 2 * h * w * w))
        d_prev = d
    params += 2 * d_prev + d_prev * num_classes + num_classes
    return Cost(params=params, buffer_bytes=buffers, activation_bytes=act)


def check_cost(cost: Cost, limits: Limits, where: str, name: str) -> None:
    if cost.params > limits.max_params:
        raise CheckpointError(
            f"{where}: the architecture ({name}, model.kwargs, model.img_size, model.num_classes) has "
            f"{cost.params:,} parameters ({cost.param_bytes / 2**30:.1f} GiB); expected at most "
            f"{limits.max_params:,}. Set {ENV_MAX_PARAMS} to admit a larger model.")
    mem = cost.buffer_bytes + cost.activation_bytes
    if mem > limits.max_activation_bytes:
        raise CheckpointError(
            f"{where}: one image through this architecture ({name} at model.img_size) needs about "
            f"{mem / 2**30:.1f} GiB of attention buffers and activations; expected at most "
            f"{limits.max_activation_bytes / 2**30:.1f} GiB. Set {ENV_MAX_ACTIVATION} to admit it.")


# ----------------------------------------------------------------------------- the document
@dataclass(frozen=True)
class Checked:
    """What :func:`check_doc` established about a spec document."""

    name: str
    num_classes: int
    img_size: int
    arch: dict[str, Any]
    cost: Cost


def check_doc(doc: Any, where: str, arch_of: Callable[[str], Mapping[str, Any] | None],
              limits: Limits | None = None) -> Checked:
    """Check a parsed ``accelvit.json`` against the schema and the cost bound.

    ``arch_of(name)`` gives a model name's own Swin arguments (None: not a model accelvit knows).
    """
    limits = limits or Limits.from_env()
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not an accelvit model spec (format field is not {FORMAT!r}).")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(where, "version", version, f"a whole number from 1 to {VERSION}; the file is damaged")
    if version > VERSION:
        raise CheckpointError(f"{where} was written by a newer accelvit (version {version}); "
                              f"this one reads version {VERSION}. Upgrade accelvit.")
    model = doc.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{where} has no model section; the file is incomplete.")
    for key in MODEL_KEYS:
        if key not in model and key != "kwargs":
            raise _fail(where, f"model.{key}", None, "a value (the field is missing; the file is incomplete)")
    extra = sorted(k for k in model if k not in MODEL_KEYS)
    if extra:
        raise _fail(where, f"model.{extra[0]}", model[extra[0]], f"no such field; the model section holds {MODEL_KEYS}")
    name = _name(where, "model.name", model["name"])
    base = arch_of(name)
    if base is None:
        raise _fail(where, "model.name", name, ("a scratch config or a timm Swin name this accelvit knows "
                                                    "(timm.list_models('swin*')); any other model cannot be built"))
    num_classes = _int(where, "model.num_classes", model["num_classes"], *RANGES["num_classes"])
    img_size = _int(where, "model.img_size", model["img_size"], *RANGES["img_size"])
    check_norm(where, "model.mean", model["mean"])
    check_norm(where, "model.std", model["std"])
    kwargs = check_kwargs(model.get("kwargs"), where)
    arch = architecture(base, kwargs, img_size, where)
    cost = estimate_cost(arch, img_size, num_classes)
    check_cost(cost, limits, where, name)
    _check_extras(doc, where, num_classes, img_size)
    check_structure(doc.get("structure"), where)
    return Checked(name=name, num_classes=num_classes, img_size=img_size, arch=arch, cost=cost)


def _check_extras(doc: dict[str, Any], where: str, num_classes: int, img_size: int) -> None:
    names = doc.get("class_names")
    if names is not None:
        if not isinstance(names, list):
            raise _fail(where, "class_names", names, f"a list of {num_classes} names (one per class) or null")
        if len(names) != num_classes:
            raise CheckpointError(f"{where}: class_names has {len(names)} names; expected {num_classes} (one per "
                                  "class of model.num_classes), or null.")
        for i, n in enumerate(names):
            _name(where, f"class_names[{i}]", n)
    size = doc.get("input_size")
    if size is not None and size != [3, img_size, img_size]:
        raise _fail(where, "input_size", size, f"[3, {img_size}, {img_size}] (from model.img_size)")
    norm = doc.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict):
            raise _fail(where, "normalization", norm, "an object with mean and std")
        check_norm(where, "normalization.mean", norm.get("mean"), required=False)
        check_norm(where, "normalization.std", norm.get("std"), required=False)
    if doc.get("params") is not None:
        _int(where, "params", doc["params"], 0)
    meta = doc.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise _fail(where, "meta", meta, "an object or null")
    data = (meta or {}).get("data")
    if data is not None:
        if not isinstance(data, dict):
            raise _fail(where, "meta.data", data, "the data config's object or null")
        check_norm(where, "meta.data.mean", data.get("mean"), required=False)
        check_norm(where, "meta.data.std", data.get("std"), required=False)


def check_structure(structure: Any, where: str) -> None:
    """Types of the structure section (``apply_structure`` checks it against the built model)."""
    if structure is None:
        return
    if not isinstance(structure, dict):
        raise _fail(where, "structure", structure, "an object (heads, mlp, lowrank) or null")
    if "version" in structure:
        _int(where, "structure.version", structure["version"], 1)
    fields = {"heads": {"kept": list, "num_heads_orig": int}, "mlp": {"hidden": int, "hidden_orig": int},
              "lowrank": {"rank": int, "in_features": int, "out_features": int, "bias": bool}}
    required = {"heads": "kept", "mlp": "hidden", "lowrank": "rank"}
    for section, spec in fields.items():
        entries = structure.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict) or len(entries) > MAX_STRUCTURE_ENTRIES:
            raise _fail(where, f"structure.{section}", entries, "an object of module path -> entry")
        for mod, entry in entries.items():
            _name(where, f"structure.{section} key", mod)
            at = f"structure.{section}[{mod!r}]"
            if not isinstance(entry, dict):
                raise _fail(where, at, entry, f"an object with {required[section]!r}")
            if required[section] not in entry:
                raise _fail(where, f"{at}.{required[section]}", None, "a value (the field is missing)")
            for key, typ in spec.items():
                if key not in entry:
                    continue
                v = entry[key]
                if typ is bool and not isinstance(v, bool):
                    raise _fail(where, f"{at}.{key}", v, "true or false")
                if typ is int:
                    _int(where, f"{at}.{key}", v, 1)
                if typ is list:
                    if not isinstance(v, list) or len(v) > RANGES["num_heads"][1]:
                        raise _fail(where, f"{at}.{key}", v, "a list of head indices")
                    for i, x in enumerate(v):
                        _int(where, f"{at}.{key}[{i}]", x, 0)


# ------------------------------------------------------------------------------ the weights
#: safetensors dtype names -> the torch names the sparse index uses.
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                      "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
                      "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
            "int8": 1, "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1}

Header = Mapping[str, tuple[str, tuple[int, ...]]]  # tensor name -> (safetensors dtype, shape)


def check_sparse_index(raw: Any, header: Header, where: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The state dict a sparse file declares, ``{name: (torch dtype name, shape)}`` in saved order.

    ``raw`` is the index's JSON text from the header; ``header`` the file's own tensors. Every
    encoded entry must point at tensors the file holds, with the bitmask exactly ``ceil(n / 8)``
    bytes for its ``n`` entries and no more values than set bits could hold, so decoding never
    allocates more than 64 bytes per byte of the file.
    """
    if not isinstance(raw, str) or len(raw) > 64 * 1024**2:
        raise _fail(where, "the sparse index", type(raw).__name__, "a JSON text of at most 64 MiB")
    doc = parse_json(raw, f"The sparse index of {where}", MAX_INDEX_DEPTH)
    if not isinstance(doc, dict):
        raise _fail(where, "the sparse index", doc, "an object with 'order' and 'sparse'")
    order, index = doc.get("order"), doc.get("sparse")
    if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
        raise _fail(where, "sparse index field 'order'", order, "a list of tensor names")
    if len(set(order)) != len(order):
        raise _fail(where, "sparse index field 'order'", f"{len(order)} names", "each tensor listed once")
    if not isinstance(index, dict):
        raise _fail(where, "sparse index field 'sparse'", index, "an object of tensor name -> encoded entry")
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name in order:
        entry = index.get(name)
        if entry is None:
            if name not in header:
                raise CheckpointError(f"{where} lists tensor {name!r} but does not contain it; the file is damaged.")
            dtype, shape = header[name]
            out[name] = (SAFETENSORS_DTYPES.get(dtype, dtype), tuple(shape))
            continue
        at = f"sparse entry {name!r}"
        if not isinstance(entry, dict):
            raise _fail(where, at, entry, "an object with shape, dtype, mask and values")
        shape = entry.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_NDIM:
            raise _fail(where, f"{at}.shape", shape, f"a list of at most {MAX_NDIM} sizes")
        shape_t = tuple(_int(where, f"{at}.shape[{i}]", s, 0) for i, s in enumerate(shape))
        dtype = entry.get("dtype")
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            raise _fail(where, f"{at}.dtype", dtype, f"one of {sorted(ITEMSIZE)}")
        n = math.prod(shape_t)
        refs = {"mask": ("U8", math.ceil(n / 8)), "values": (None, None)}
        if entry.get("negzero"):
            refs["negzero"] = ("U8", None)
        found = {}
        for ref, (want_dtype, want_len) in refs.items():
            tname = entry.get(ref)
            if not isinstance(tname, str) or tname not in header:
                raise _fail(where, f"{at}.{ref}", tname, "the name of a tensor in this file")
            t_dtype, t_shape = header[tname]
            numel = math.prod(t_shape)
            if len(t_shape) != 1 or (want_dtype and t_dtype != want_dtype) or (want_len is not None and numel != want_len):
                raise _fail(where, f"{at}.{ref}", f"{tname} ({t_dtype}, shape {list(t_shape)})",
                            f"a 1-D {want_dtype or dtype} tensor" + (f" of {want_len} entries" if want_len is not None else ""))
            found[ref] = (t_dtype, numel)
        if SAFETENSORS_DTYPES.get(found["values"][0]) != dtype or found["values"][1] > n:
            raise _fail(where, f"{at}.values", found["values"], f"at most {n} values of dtype {dtype}")
        if "negzero" in found and found["negzero"][1] > math.ceil((n - found["values"][1]) / 8):
            raise _fail(where, f"{at}.negzero", found["negzero"], "one bit per zero entry")
        out[name] = (dtype, shape_t)
    return out


_BLOCK_NORM = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.norm1\.weight$")


def check_weights(checked: Checked, state: Mapping[str, tuple[str, tuple[int, ...]]], where: str,
                  swin_v1: bool) -> None:
    """The spec against the weights' declared shapes, before the architecture is built.

    ``state`` is :func:`check_sparse_index`'s result (or a dense file's header). For timm's
    ``SwinTransformer`` (scratch configs and ``swin_*`` names) the tensors no pruning changes
    must agree with the spec: ``patch_embed.proj.weight`` (embed_dim, patch_size), the
    blocks per stage (depths) and their widths, the classifier's bias (num_classes). For
    every family the file must hold at least 1/1000 of the parameters the spec describes.
    """
    values = sum(math.prod(shape) for _, shape in state.values())
    if checked.cost.params > MAX_PRUNED_RATIO * max(values, 1):
        raise CheckpointError(
            f"{where}: the spec describes a model of {checked.cost.params:,} parameters but the weights file holds "
            f"{values:,} values; pruning keeps far more than 1/{MAX_PRUNED_RATIO} of a model, so the spec "
            "(model.kwargs, model.num_classes) does not belong to these weights.")
    if not swin_v1:
        return
    arch = checked.arch
    patch, embed, depths = arch["patch_size"], arch["embed_dim"], arch["depths"]
    _, shape = state.get("patch_embed.proj.weight", ("", None))
    if shape != (embed, 3, patch, patch):
        raise CheckpointError(
            f"{where}: model.kwargs embed_dim={embed}, patch_size={patch} expect patch_embed.proj.weight of shape "
            f"{[embed, 3, patch, patch]}, but the weights hold {list(shape) if shape else 'no such tensor'}.")
    blocks: dict[int, list[int]] = {}
    for key, (_, shape) in state.items():
        m = _BLOCK_NORM.match(key)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            blocks.setdefault(i, []).append(j)
            if shape != (embed * 2**i,):
                raise CheckpointError(f"{where}: stage {i} is {embed * 2**i} wide by model.kwargs.embed_dim, but {key} "
                                      f"has shape {list(shape)}.")
    held = [len(blocks.get(i, [])) for i in range(max([len(depths) - 1, *blocks]) + 1)]
    if held != list(depths) or any(sorted(v) != list(range(len(v))) for v in blocks.values()):
        raise CheckpointError(f"{where}: model.kwargs.depths is {list(depths)} but the weights hold {held} "
                              "blocks per stage.")
    _, bias = state.get("head.fc.bias") or state.get("head.fc.up.bias") or ("", None)
    if bias != (checked.num_classes,):
        raise CheckpointError(f"{where}: model.num_classes is {checked.num_classes} but the classifier in the weights "
                              f"has {'no bias' if bias is None else list(bias)} outputs.")
