"""Small shared helpers: devices, seeding, cancel tokens."""

from __future__ import annotations

import os
import random
import threading

import numpy as np
import torch

from .errors import Cancelled, ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is checked and returned."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError("device", f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{device!r} was asked for but this machine has no CUDA GPU; use auto or cpu.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device", f"{device!r} was asked for but MPS is not available here; use auto or cpu.")
    return dev


def device_description(device: str | torch.device = "auto") -> str:
    """A human-readable name of the device: the GPU's name, or the CPU with its thread count."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    if dev.type == "mps":
        return "mps (Apple GPU)"
    n, cores = torch.get_num_threads(), os.cpu_count()
    return f"cpu ({n} thread{'s' if n != 1 else ''}, {cores} core{'s' if cores != 1 else ''})"


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


class CancelToken:
    """A thread-safe flag that long-running work checks between steps.

    ``reason`` says why it was set: ``"cancelled"`` (a user asked) or ``"interrupted"`` (the
    process hosting the work is stopping: server shutdown, SIGTERM); the first reason wins.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self, where: str = "") -> None:
        if self._event.is_set():
            raise Cancelled(f"The job was cancelled{(' during ' + where) if where else ''}.")


def check_cancel(token: CancelToken | None, where: str = "") -> None:
    if token is not None:
        token.raise_if_cancelled(where)
