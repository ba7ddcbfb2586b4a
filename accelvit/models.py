"""Model zoo: timm Swin names (pretrained or local weights) and small from-scratch configs.

Every model is a timm ``SwinTransformer``, so pruning code handles one family. Scratch
configurations are for small inputs (32 px by default) and train on a CPU in minutes.
"""

from __future__ import annotations

import ast
import functools
import inspect
import logging
import os
import socket
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from timm.models.swin_transformer import SwinTransformer

from .errors import CheckpointError, ModelError
from .fileio import to_jsonable
from .spec import check_kwargs

log = logging.getLogger(__name__)

#: Small Swin configurations trained from scratch. Keys are model names usable anywhere a
#: timm name is. ``img_size`` is the default input size; tokens per side must stay a
#: multiple of the window size at every stage (timm shrinks windows that exceed a stage).
SCRATCH_CONFIGS: dict[str, dict[str, Any]] = {
    # 1.27M params, 92.7 MFLOPs/image at 32 px (see ../shared/data/README.md).
    "swin_micro": dict(img_size=32, patch_size=2, window_size=4, embed_dim=48,
                       depths=(2, 2, 2), num_heads=(3, 6, 12), mlp_ratio=4.0),
    # A wider and deeper sibling for benchmarks (about 3x the FLOPs of swin_micro).
    "swin_small32": dict(img_size=32, patch_size=2, window_size=4, embed_dim=64,
                         depths=(2, 4, 2), num_heads=(4, 8, 16), mlp_ratio=4.0),
    # A very small model for tests and quick demos (16 px inputs).
    "swin_pico": dict(img_size=16, patch_size=2, window_size=4, embed_dim=32,
                      depths=(2, 2), num_heads=(2, 4), mlp_ratio=2.0),
}

#: Defaults used for scratch models (no pretrained normalisation exists for them).
SCRATCH_MEAN = (0.5, 0.5, 0.5)
SCRATCH_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a model's *unpruned* architecture."""

    name: str
    num_classes: int
    img_size: int
    kwargs: dict[str, Any]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes, "img_size": self.img_size,
                "kwargs": to_jsonable(self.kwargs), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        kwargs = dict(d.get("kwargs") or {})
        for key in ("depths", "num_heads", "window_size"):
            if key in kwargs and isinstance(kwargs[key], list):
                kwargs[key] = tuple(kwargs[key])
        return cls(name=str(d["name"]), num_classes=int(d["num_classes"]), img_size=int(d["img_size"]),
                   kwargs=kwargs, mean=tuple(d["mean"]), std=tuple(d["std"]))


def list_models() -> list[str]:
    """Scratch configs first, then timm's Swin names."""
    return list(SCRATCH_CONFIGS) + sorted(timm.list_models("swin*"))


def is_known_model(name: str) -> bool:
    return name in SCRATCH_CONFIGS or name in timm.list_models("swin*")


@functools.lru_cache(maxsize=None)
def _timm_model_args(name: str) -> dict[str, Any]:
    """The Swin arguments a timm entry point passes (its ``model_args = dict(...)``), read from its
    source with ``ast``: nothing is built or run."""
    try:
        fn = timm.models.model_entrypoint(name)
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "model_args" for t in node.targets)
                    and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "dict"):
                return {k.arg: ast.literal_eval(k.value) for k in node.value.keywords if k.arg}
    except Exception as exc:  # a timm whose entry points read differently: Swin defaults then
        log.warning("Could not read the architecture of %s from timm (%s); assuming Swin defaults.", name, exc)
    return {}


def architecture_args(name: str) -> dict[str, Any] | None:
    """A model name's own Swin constructor arguments (embed_dim, depths, ...), or None for an unknown name.

    What :mod:`accelvit.spec` estimates a saved model's cost from before anything is built.
    """
    if not isinstance(name, str):
        return None
    if name in SCRATCH_CONFIGS:
        return {k: v for k, v in SCRATCH_CONFIGS[name].items() if k != "img_size"}
    if name in timm.list_models("swin*"):
        return dict(_timm_model_args(name))
    return None


def is_swin_v1(name: str) -> bool:
    """Whether ``name`` builds timm's ``SwinTransformer`` (scratch configs, ``swin_*``; not the v2 families)."""
    if name in SCRATCH_CONFIGS:
        return True
    try:
        return timm.models.model_entrypoint(name).__module__ == "timm.models.swin_transformer"
    except Exception:
        return False


def _checked_kwargs(kwargs: dict[str, Any]) -> None:
    """Only allow-listed Swin arguments reach timm (``accelvit.spec.ALLOWED_KWARGS``)."""
    try:
        check_kwargs(to_jsonable(kwargs), "the model configuration")
    except CheckpointError as exc:
        raise ModelError(str(exc)) from None


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read weights without unpickling arbitrary objects."""
    if not path.is_file():
        raise ModelError(f"Weights file {path} does not exist. Give the path of a .safetensors or .pth file.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, pickled objects, ...
        raise ModelError(
            f"Could not read weights from {path}: {exc}. Expected a safetensors file or a torch "
            "state dict that loads with weights_only=True.") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors.")
    return sd


def _load_scratch_weights(model: SwinTransformer, path: Path) -> None:
    sd = _load_state_dict_file(path)
    own = model.state_dict()
    matched = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    head_skipped = [k for k in sd if k.startswith("head.") and k in own and own[k].shape != sd[k].shape]
    mismatched = [k for k in sd if k in own and own[k].shape != sd[k].shape and k not in head_skipped]
    if mismatched:
        raise ModelError(
            f"Weights in {path} do not fit this model: shape mismatch for {mismatched[:3]}"
            f"{'...' if len(mismatched) > 3 else ''}. Was it saved from a different configuration?")
    missing = [k for k in own if k not in matched and not k.startswith("head.")]
    if missing:
        raise ModelError(
            f"Weights in {path} are not for this model: {len(missing)} tensors missing "
            f"(e.g. {missing[:3]}).")
    model.load_state_dict(matched, strict=False)
    if head_skipped:
        log.info("Classifier reset: %s had a different number of classes.", path)


def build_model(name: str, num_classes: int, pretrained: bool = False,
                weights_path: str | Path | None = None, img_size: int | None = None,
                **overrides: Any) -> SwinTransformer:
    """Build a Swin model; it carries its :class:`ModelSpec` as ``model.accelvit_spec``.

    Args:
        name: a key of ``SCRATCH_CONFIGS`` or any timm Swin name (``timm.list_models('swin*')``).
        num_classes: size of the classifier; a pretrained classifier is reset to it.
        pretrained: download timm's pretrained weights (needs the Hugging Face hub).
        weights_path: local weights (safetensors, or a torch state dict loaded with
            ``weights_only=True``); used instead of a download.
        img_size: input size; defaults to the config's own.
        overrides: extra ``SwinTransformer`` keyword arguments (e.g. ``drop_path_rate``).
    """
    spec = model_spec(name, num_classes, img_size, pretrained=pretrained or weights_path is not None, **overrides)
    return build_from_spec(spec, pretrained=pretrained, weights_path=weights_path)


def model_spec(name: str, num_classes: int, img_size: int | None = None, pretrained: bool = False,
               **overrides: Any) -> ModelSpec:
    if num_classes < 1:
        raise ModelError(f"num_classes must be at least 1, got {num_classes}.")
    if name in SCRATCH_CONFIGS:
        kwargs = dict(SCRATCH_CONFIGS[name])
        kwargs.setdefault("drop_path_rate", 0.1)
        size = int(img_size or kwargs.pop("img_size"))
        kwargs.pop("img_size", None)
        kwargs.update(overrides)
        _checked_kwargs(kwargs)
        return ModelSpec(name, num_classes, size, kwargs, SCRATCH_MEAN, SCRATCH_STD)
    if name not in timm.list_models("swin*"):
        raise ModelError(
            f"Unknown model {name!r}. Use one of the scratch configs {sorted(SCRATCH_CONFIGS)} or a timm "
            "Swin name such as 'swin_tiny_patch4_window7_224' (see timm.list_models('swin*')).")
    cfg = timm.get_pretrained_cfg(name)
    default_size = int(cfg.input_size[-1]) if cfg is not None else 224
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)
    kwargs = dict(overrides)
    _checked_kwargs(kwargs)
    return ModelSpec(name, num_classes, int(img_size or default_size), kwargs, mean, std)


def build_from_spec(spec: ModelSpec, pretrained: bool = False,
                    weights_path: str | Path | None = None) -> SwinTransformer:
    """Build the unpruned architecture a spec describes, optionally with weights.

    Only allow-listed constructor arguments pass (``accelvit.spec.ALLOWED_KWARGS``): a spec read
    from disk never hands timm ``checkpoint_path`` or anything else it would act on.
    """
    _checked_kwargs(spec.kwargs)
    if spec.name in SCRATCH_CONFIGS:
        if pretrained:
            raise ModelError(f"{spec.name!r} is a from-scratch config: no pretrained weights exist. "
                             "Train it, or pass a local weights file.")
        try:
            model = SwinTransformer(img_size=spec.img_size, num_classes=spec.num_classes, **spec.kwargs)
        except Exception as exc:  # timm asserts, divides, allocates: any failure is this configuration's
            raise ModelError(f"Cannot build {spec.name!r} at img_size={spec.img_size}: {exc}") from exc
        if weights_path is not None:
            _load_scratch_weights(model, Path(weights_path))
        return attach_spec(model, spec)
    kwargs = dict(spec.kwargs)
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise ModelError(f"Weights file {path} does not exist. Give the path of a .safetensors or .pth file.")
        # timm's own loader: handles safetensors / weights_only torch files, remaps keys,
        # resizes relative-position tables and resets the classifier to num_classes.
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        pretrained = True
    elif pretrained:
        check_hub_reachable(spec.name)
    try:
        model = timm.create_model(spec.name, pretrained=pretrained, num_classes=spec.num_classes,
                                  img_size=spec.img_size, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        where = f"the local file {weights_path}" if weights_path else "the Hugging Face hub"
        if pretrained:
            raise ModelError(
                f"Could not load pretrained weights for {spec.name!r} from {where}: {exc}. Without network "
                "access, download the weights elsewhere and pass them as a local weights file.") from exc
        raise ModelError(f"Could not build {spec.name!r}: {exc}") from exc
    return attach_spec(model, spec)


def check_hub_reachable(name: str, timeout: float = 3.0) -> None:
    """Fail at once, not after a minute of retries, when the Hugging Face hub cannot be reached.

    Skipped with ``HF_HUB_OFFLINE=1`` (weights already in the local hub cache then load offline).
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ModelError(
            f"Pretrained weights for {name!r} come from the Hugging Face hub, but {host}:{port} cannot be reached "
            f"({exc}). Without network access, download the weights elsewhere and pass them as a local weights "
            "file (or set HF_HUB_OFFLINE=1 if they are already in the local hub cache).") from exc


def spec_of(model: torch.nn.Module) -> ModelSpec:
    """The spec every model built here carries (``model.accelvit_spec``)."""
    spec = getattr(model, "accelvit_spec", None)
    if spec is None:
        raise ModelError("This model was not built by accelvit (it has no accelvit_spec); "
                         "build it with accelvit.build_model or load it with accelvit.load.")
    return spec


def attach_spec(model: torch.nn.Module, spec: ModelSpec) -> torch.nn.Module:
    """Attach the spec as a plain attribute (not a parameter, not in the state dict)."""
    model.accelvit_spec = spec
    return model
