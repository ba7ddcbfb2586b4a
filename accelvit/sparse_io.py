"""The sparse on-disk form of a state dict: a safetensors file that stores only nonzeros.

A tensor with enough zeros is stored as two safetensors entries:

* ``{name}.__bitmask__``: ``uint8``, ``np.packbits`` of the flattened nonzero pattern
  (big bit order, ``ceil(numel / 8)`` bytes);
* ``{name}.__values__``: a 1-D tensor of the original dtype holding the nonzero entries
  in row-major order;
* ``{name}.__negzero__`` (only if the tensor holds ``-0.0``, as ``w * mask`` leaves):
  packed bits over the zero positions, in order, set where the zero is ``-0.0``.

Every other tensor is stored as it is. The JSON index in the safetensors header
(``accelvit_sparse_index``) records, for every encoded tensor, its shape, dtype and the
two entry names, plus the original key order. Nothing is pickled.

"Nonzero" means ``x != 0`` (so NaN is a value and ``-0.0`` a zero, as ``torch.count_nonzero``
counts them); the sign of zeros is kept by the ``negzero`` bits and values are rebuilt
through an integer view of the same width, so the round trip is bit-exact for every dtype.
A tensor is encoded only when the encoded bytes are strictly fewer than the dense bytes,
i.e. roughly when more than ``1/(8 * itemsize)`` of it is zero (3.1% for fp32); at 50%
sparsity an fp32 tensor takes 53% of its dense size (55% if its zeros are ``-0.0``).

API::

    nbytes = save_sparse(state_dict, path, metadata={"key": "value"})
    state_dict, metadata = load_sparse(path)

``load_sparse`` also reads a plain safetensors file (no index): every tensor is dense then.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError, ConfigError
from .spec import SAFETENSORS_DTYPES, check_sparse_index

log = logging.getLogger(__name__)

#: Header key of the JSON index; metadata keys starting with this prefix are reserved.
INDEX_KEY = "accelvit_sparse_index"
FORMAT_KEY = "accelvit_sparse_format"
FORMAT = "bitmask-v1"
RESERVED_PREFIX = "accelvit_sparse"
MASK_SUFFIX = ".__bitmask__"
VALUES_SUFFIX = ".__values__"
NEGZERO_SUFFIX = ".__negzero__"

_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits_view(t: torch.Tensor) -> torch.Tensor | None:
    """An integer view of ``t`` of the same width (None: unsupported dtype)."""
    if t.dtype == torch.bool:
        return t.view(torch.uint8)
    if t.is_complex():
        return None
    if t.is_floating_point():
        int_dtype = _INT_VIEW.get(t.element_size())
        return t.view(int_dtype) if int_dtype is not None else None
    return t  # integer dtypes


def _supported(t: torch.Tensor) -> bool:
    return not t.is_complex() and (t.dtype == torch.bool or not t.is_floating_point()
                                   or t.element_size() in _INT_VIEW)


def _nonzero_mask(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1) != 0


def encoded_nbytes(t: torch.Tensor) -> tuple[int, int]:
    """``(dense bytes, bytes of the sparse encoding)`` of one tensor's data, without writing."""
    n = t.numel()
    dense = n * t.element_size()
    enc = _encode(t.detach().to("cpu").contiguous())
    if enc is None:
        return dense, dense
    return dense, sum(x.numel() * x.element_size() for x in enc if x is not None)


def _encode(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """``(packed bitmask, nonzero values, packed negzero bits or None)`` if that is smaller
    than ``t`` itself, else None."""
    n = t.numel()
    if n == 0 or t.dim() == 0 or not _supported(t):
        return None
    mask = _nonzero_mask(t)
    nnz = int(mask.sum())
    size = math.ceil(n / 8) + nnz * t.element_size()
    if size >= n * t.element_size():
        return None
    negzero = None
    if t.is_floating_point():
        neg = torch.signbit(t.reshape(-1)[~mask])
        if bool(neg.any()):
            size += math.ceil((n - nnz) / 8)
            if size >= n * t.element_size():
                return None
            negzero = torch.from_numpy(np.packbits(neg.numpy(), bitorder="big"))
    packed = torch.from_numpy(np.packbits(mask.numpy(), bitorder="big"))
    values = t.reshape(-1)[mask].clone()
    return packed, values, negzero


def _dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"The sparse index names an unknown dtype {name!r}; the file is damaged "
                              "or was written by a newer torch.")
    return dtype


def save_sparse(state_dict: Mapping[str, torch.Tensor], path: str | Path,
                metadata: Mapping[str, str] | None = None) -> int:
    """Write ``state_dict`` to ``path`` in the sparse form; return the bytes written.

    Args:
        state_dict: name -> tensor (any device; moved to the CPU). Tensors that are not
            worth encoding (too few zeros, 0-dim, complex) are stored dense.
        path: the file to write (conventionally ``*.safetensors``); written atomically
            (temporary file + rename).
        metadata: extra string -> string pairs for the safetensors header, returned by
            :func:`load_sparse`. Keys starting with ``accelvit_sparse`` are reserved.
    """
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigError("metadata", f"safetensors metadata must map strings to strings; got "
                              f"{key!r}: {type(value).__name__}. Convert values with json.dumps or str.")
        if key.startswith(RESERVED_PREFIX):
            raise ConfigError("metadata", f"the key {key!r} is reserved for the sparse index; use another name.")
    names = list(state_dict)
    taken = set(names)
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, dict[str, object]] = {}
    seen_ptrs: set[int] = set()
    dense_total = stored_total = 0
    for name in names:
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            raise ConfigError("state_dict", f"{name!r} is a {type(t).__name__}, not a tensor.")
        t = t.detach().to("cpu").contiguous()
        dense_total += t.numel() * t.element_size()
        mask_name, values_name, neg_name = name + MASK_SUFFIX, name + VALUES_SUFFIX, name + NEGZERO_SUFFIX
        enc = None if {mask_name, values_name, neg_name} & taken else _encode(t)
        if enc is None:
            if t.numel() and t.data_ptr() in seen_ptrs:  # safetensors refuses shared storage
                t = t.clone()
            if t.numel():
                seen_ptrs.add(t.data_ptr())
            tensors[name] = t
            stored_total += t.numel() * t.element_size()
            continue
        packed, values, negzero = enc
        tensors[mask_name] = packed
        tensors[values_name] = values
        stored_total += packed.numel() + values.numel() * values.element_size()
        index[name] = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                       "mask": mask_name, "values": values_name, "nnz": int(values.numel())}
        if negzero is not None:
            tensors[neg_name] = negzero
            stored_total += negzero.numel()
            index[name]["negzero"] = neg_name
    header = {INDEX_KEY: json.dumps({"order": names, "sparse": index}, separators=(",", ":")),
              FORMAT_KEY: FORMAT, **meta}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=header)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide shared artifacts from other users
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    nbytes = out.stat().st_size
    log.debug("save_sparse %s: %d of %d tensors encoded, %d -> %d data bytes, %d bytes on disk",
              out, len(index), len(names), dense_total, stored_total, nbytes)
    return nbytes


def read_declared(path: str | Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, str]]:
    """What a file promises, from its header alone: ``({name: (dtype, shape)}, header metadata)``.

    For a sparse file the index is checked against the header's tensors
    (:func:`accelvit.spec.check_sparse_index`) so that decoding it allocates no more than the
    file can describe; no tensor data is read.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p} does not exist; expected a safetensors file written by accelvit.")
    try:
        with safe_open(str(p), framework="pt") as f:
            header = dict(f.metadata() or {})
            tensors = {}
            for k in f.keys():
                sl = f.get_slice(k)
                tensors[k] = (str(sl.get_dtype()), tuple(int(x) for x in sl.get_shape()))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{p} is not a readable safetensors file ({exc}); it is truncated or damaged.") from exc
    if INDEX_KEY not in header:
        return {k: (SAFETENSORS_DTYPES.get(d, d), shape) for k, (d, shape) in tensors.items()}, header
    if header.get(FORMAT_KEY) != FORMAT:
        raise CheckpointError(f"{p} uses sparse format {header.get(FORMAT_KEY)!r}; this accelvit reads "
                              f"{FORMAT!r}. Upgrade accelvit.")
    return check_sparse_index(header[INDEX_KEY], tensors, str(p)), header


def load_sparse(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a file written by :func:`save_sparse` (or any safetensors file).

    Returns ``(state_dict, metadata)``: the tensors, bit-identical to those saved and in
    the original key order, and the user metadata (reserved keys removed). The sparse index
    is checked (:func:`read_declared`) before anything is read or decoded.
    """
    p = Path(path)
    _, header = read_declared(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{p} is not a readable safetensors file ({exc}); it is truncated or damaged.") from exc
    meta = {k: v for k, v in header.items() if not k.startswith(RESERVED_PREFIX)}
    if INDEX_KEY not in header:
        return raw, meta
    doc = json.loads(header[INDEX_KEY])  # checked by read_declared
    order: list[str] = doc["order"]
    index: dict[str, dict] = doc["sparse"]
    out: dict[str, torch.Tensor] = {}
    for name in order:
        entry = index.get(name)
        if entry is None:
            out[name] = raw[name]
            continue
        shape = tuple(entry["shape"])
        dtype = _dtype_from_name(entry["dtype"])
        packed, values = raw[entry["mask"]], raw[entry["values"]]
        negzero = raw[entry["negzero"]] if entry.get("negzero") else None
        out[name] = _decode(name, p, packed, values, negzero, shape, dtype)
    return out, meta


def _decode(name: str, path: Path, packed: torch.Tensor, values: torch.Tensor, negzero: torch.Tensor | None,
            shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    n = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.numel() != math.ceil(n / 8) or values.dtype != dtype:
        raise CheckpointError(f"The sparse entry of {name!r} in {path} is inconsistent (bitmask of "
                              f"{packed.numel()} bytes for {n} entries, values {values.dtype} vs {dtype}).")
    mask = torch.from_numpy(np.unpackbits(packed.numpy(), count=n, bitorder="big").astype(bool))
    if int(mask.sum()) != values.numel():
        raise CheckpointError(f"The sparse entry of {name!r} in {path} has {values.numel()} values for "
                              f"{int(mask.sum())} set bits; the file is damaged.")
    flat = torch.zeros(n, dtype=dtype)
    bits, vbits = _bits_view(flat), _bits_view(values)
    if bits is None or vbits is None:
        raise CheckpointError(f"{name!r} in {path} has dtype {dtype}, which the sparse form never encodes.")
    bits[mask] = vbits  # copy bit patterns through the integer view: exact for NaN payloads
    if negzero is not None:
        zeros = (~mask).nonzero().reshape(-1)
        if negzero.dtype != torch.uint8 or negzero.numel() != math.ceil(zeros.numel() / 8):
            raise CheckpointError(f"The negative-zero bits of {name!r} in {path} are inconsistent; "
                                  "the file is damaged.")
        neg = torch.from_numpy(np.unpackbits(negzero.numpy(), count=zeros.numel(), bitorder="big").astype(bool))
        flat[zeros[neg]] = -0.0
    return flat.reshape(shape)
