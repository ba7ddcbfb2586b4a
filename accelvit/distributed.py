"""Distributed data parallel through the standard launcher (``torchrun``).

``torchrun --nproc_per_node N -m accelvit train|prune|run ...`` starts N processes with the
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` environment; :func:`setup` reads it
and joins the process group (``nccl`` on CUDA, ``gloo`` on the CPU, picked from the device).
Without that environment everything here is a no-op and accelvit runs in one process as before.

What runs where:
- training and finetuning: every rank, the model wrapped in ``DistributedDataParallel``, each rank
  reading its shard of the training set (:func:`shard_train_loader`: a ``DistributedSampler``
  reseeded every epoch) with ``batch_size / world_size`` images, so the global batch is the one
  configured and the learning-rate schedule counts the same steps;
- evaluation: every rank its own disjoint slice of the evaluation set (no padding, no duplicates),
  the correct counts and losses summed across ranks (:func:`all_reduce_sum`);
- pruning (scoring, surgery, FLOP search): rank 0 only; the pruned structure and weights are then
  sent to every rank (:func:`accelvit.prune.structure.broadcast_pruned`), so all ranks hold the same shapes before the finetune;
- checkpoints, reports and the run store: rank 0 only (:func:`is_main`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .errors import ConfigError

log = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the group: ``rank`` of ``world_size``, the ``backend`` and its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) with a world larger than 1."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def active() -> bool:
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints, reports and the run store."""
    return rank() == 0


def setup(device: str = "auto") -> DistInfo | None:
    """Join the process group torchrun described in the environment; None when not launched by it.

    ``device``: ``auto`` picks ``cuda:LOCAL_RANK`` with the ``nccl`` backend when CUDA has a device
    for this local rank, else the CPU with ``gloo``; ``cpu`` forces gloo; ``cuda``/``cuda:N`` need
    CUDA (the local rank picks the device when no index is given).
    """
    if not launched():
        return None
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise ConfigError("distributed", f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} "
                                         "is not set; start accelvit with torchrun (torchrun --nproc_per_node N "
                                         "-m accelvit ...).")
    local = int(os.environ["LOCAL_RANK"])
    want = (device or "auto").lower()
    if want.startswith("cuda") or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device", f"{device!r} was asked for but CUDA is not available on this machine.")
        n = torch.cuda.device_count()
        index = int(want.split(":")[1]) if ":" in want else local
        if index >= n:
            raise ConfigError("device", f"local rank {local} needs cuda:{index}, but this machine has {n} CUDA "
                                        "device(s); start at most that many processes per node.")
        torch.cuda.set_device(index)
        dev, backend = f"cuda:{index}", "nccl"
    else:
        dev, backend = "cpu", "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    info = DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, backend=backend,
                    device=dev)
    log.info("distributed: rank %d of %d (%s on %s)", info.rank, info.world_size, backend, dev)
    return info


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks (in place, returned); the tensor itself when not distributed."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def check_world(processes: int) -> None:
    """ConfigError unless this process fits a run asking for ``processes`` (``ExperimentConfig.processes``):
    1 runs in whatever torchrun started (or alone); N > 1 needs a torchrun group of exactly N."""
    world = int(os.environ.get("WORLD_SIZE", "1")) if launched() else 1
    if processes == 1 or processes == world:
        return
    if world == 1:
        raise ConfigError("processes", f"{processes} processes were asked for, but this is one process; start it "
                                       f"with torchrun (torchrun --nproc_per_node {processes} -m accelvit run ...; "
                                       "the dashboard's job manager does that itself), or set processes to 1.")
    raise ConfigError("processes", f"{processes} processes were asked for, but torchrun started {world}; start it "
                                   f"with --nproc_per_node {processes}, or leave processes at 1 (as many as "
                                   "torchrun starts).")


def check_cancel_all(token: Any, where: str) -> None:
    """Raise Cancelled on every rank when any rank's cancel token is set (rank 0 holds the run's token).

    A collective: under torchrun every rank must call it at the same point (a cancel point of code that
    all ranks run alike: each training step, each stage boundary); in one process it is a plain check.
    """
    from .errors import Cancelled

    if not active():
        if token is not None:
            token.raise_if_cancelled(where)
        return
    flag = torch.tensor([1.0 if token is not None and token.cancelled else 0.0],
                        device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0:
        raise Cancelled(f"The job was cancelled during {where}.")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled by torch.distributed between our own processes)."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_tensors(model: torch.nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of ``model`` set to rank ``src``'s (the shapes must already agree; a pruned
    model's structure goes first: :func:`accelvit.prune.structure.broadcast_pruned`)."""
    if not active():
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=src)


def state_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every tensor of the state dict (names, shapes, bytes): equal digests, equal models."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes() if t.dtype != torch.bfloat16
                 else t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def log_digest(model: torch.nn.Module) -> None:
    """Log this rank's final-weights digest (every rank logs it, so a run's logs show that they agree)."""
    if active():
        log.info("rank %d of %d: final weights sha256 %s", rank(), world_size(), state_digest(model))


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``w`` reads indices ``r, r + w, r + 2w, ...``: disjoint slices covering every index
    exactly once (evaluation must not count a padded duplicate twice, as ``DistributedSampler`` would)."""

    def __init__(self, n: int, rank_: int, world: int):
        self.n, self.rank, self.world = n, rank_, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def _clone(loader: DataLoader, sampler: Sampler, batch_size: int, drop_last: bool) -> DataLoader:
    return DataLoader(loader.dataset, batch_size=batch_size, sampler=sampler, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory, drop_last=drop_last, collate_fn=loader.collate_fn,
                      persistent_workers=getattr(loader, "persistent_workers", False) and loader.num_workers > 0,
                      worker_init_fn=loader.worker_init_fn)


def shard_train_loader(loader: DataLoader, seed: int) -> DataLoader:
    """This rank's shard of a training loader: a ``DistributedSampler`` (shuffled with ``seed``; call
    :func:`set_epoch` every epoch) and ``batch_size / world_size`` images per step, so the global batch
    stays the configured one. The loader itself when not distributed."""
    if not active():
        return loader
    w = world_size()
    bs = loader.batch_size or 1
    if bs % w:
        raise ConfigError("batch_size", f"the global batch {bs} does not split evenly over {w} processes; use a "
                                        f"multiple of {w}.")
    sampler = DistributedSampler(loader.dataset, num_replicas=w, rank=rank(), shuffle=True, seed=seed,
                                 drop_last=loader.drop_last)
    return _clone(loader, sampler, bs // w, loader.drop_last)


def shard_eval_loader(loader: DataLoader) -> DataLoader:
    """This rank's disjoint slice of an evaluation loader (:class:`ShardSampler`); the loader when not distributed."""
    if not active():
        return loader
    return _clone(loader, ShardSampler(len(loader.dataset), rank(), world_size()), loader.batch_size or 1, False)


def set_epoch(loader: Any, epoch: int) -> None:
    """Reseed a sharded loader's sampler for ``epoch`` (every rank shuffles alike, each reads its shard)."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
