"""Distributed helpers (accelvit.distributed): two gloo processes on the CPU."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from accelvit import distributed as D


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _broadcast_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from accelvit.models import build_model
    from accelvit.prune import PruneConfig, prune
    from accelvit.prune.structure import broadcast_pruned, describe_structure

    info = D.setup("cpu")
    try:
        torch.manual_seed(rank)  # different weights on each rank before the broadcast
        model = build_model("swin_pico", 5, drop_path_rate=0.0)
        if D.is_main():  # only rank 0 prunes, as the runner does
            prune(model, PruneConfig(head_ratio=0.5, head_criterion="l1", mlp_ratio=0.25, mlp_criterion="l1",
                                     rank_ratio=0.5))
        broadcast_pruned(model)
        # the evaluation shards are disjoint and cover everything once
        shard = list(D.ShardSampler(11, D.rank(), D.world_size()))
        total = D.all_reduce_sum(torch.tensor([len(shard)]))
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump({"rank": info.rank, "backend": info.backend, "structure": describe_structure(model),
                       "digest": D.state_digest(model), "shard": shard, "total": int(total)}, f)
    finally:
        D.teardown()


def test_pruned_structure_broadcast_from_rank_0_matches_on_rank_1(tmp_path):
    mp.start_processes(_broadcast_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["backend"] == r1["backend"] == "gloo"
    assert r0["structure"]["heads"] and r0["structure"]["lowrank"] and r0["structure"]["mlp"]
    assert r1["structure"] == r0["structure"]
    assert r1["digest"] == r0["digest"]
    assert sorted(r0["shard"] + r1["shard"]) == list(range(11)) and r0["total"] == r1["total"] == 11


def test_without_a_launcher_everything_is_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert D.setup("cpu") is None and not D.active() and D.is_main() and D.world_size() == 1
    t = torch.tensor([3.0])
    assert D.all_reduce_sum(t) is t and D.broadcast_object({"a": 1}) == {"a": 1}


def test_a_half_set_environment_is_a_named_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(D.ConfigError, match="start accelvit with torchrun"):
        D.setup("cpu")
