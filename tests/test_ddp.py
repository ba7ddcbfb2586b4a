"""Distributed data parallel through torchrun: 2 CPU processes (gloo) on the digits data.

One ``torchrun --nproc_per_node 2 -m accelvit run`` (baseline training, pruning on rank 0 broadcast to
rank 1, a distilled IHT finetune, the measured stages) against the same baseline recipe in one process
(``accelvit train``, same global batch): the weights agree on both ranks, the accuracy is within 2 points,
and rank 0 alone writes the store record, the artifacts and the baseline cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from accelvit.runs import RunStore

pytestmark = pytest.mark.slow

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
RECIPE = ["--dataset", "digits", "--model", "swin_micro", "--img-size", "16", "--epochs", "4", "--lr", "3e-3",
          "--batch-size", "64", "--seed", "0", "--device", "cpu"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                           "MASTER_PORT")}
    env.update(ACCELVIT_HOME=str(home), OMP_NUM_THREADS="1", ACCELVIT_PREWARM="0", HF_HUB_OFFLINE="1")
    return env


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    if TORCHRUN is None:
        pytest.skip("torchrun is not on PATH")
    home = tmp_path_factory.mktemp("ddp_home")
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "accelvit", "run", *RECIPE,
           "--head-ratio", "0.5", "--rank-ratio", "0.5", "--sparsity", "0.5", "--finetune-epochs", "1",
           "--no-latency", "--no-progress", "--json"]
    proc = subprocess.run(cmd, env=_env(home), capture_output=True, text=True, timeout=600, cwd=home)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return home, proc


@pytest.fixture(scope="module")
def single_train(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "m"
    cmd = [sys.executable, "-m", "accelvit", "train", *RECIPE, "--out", str(out)]
    proc = subprocess.run(cmd, env=_env(out.parent), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_two_ranks_end_with_identical_weights_and_one_record(ddp_run):
    home, proc = ddp_run
    digests = dict(re.findall(r"rank (\d) of 2: final weights sha256 ([0-9a-f]{64})", proc.stderr))
    assert set(digests) == {"0", "1"}, proc.stderr[-2000:]
    assert digests["0"] == digests["1"]  # pruned on rank 0, broadcast, finetuned in step, IHT masks alike
    assert "rank 0 of 2 (gloo on cpu)" in proc.stderr and "rank 1 of 2 (gloo on cpu)" in proc.stderr
    store = RunStore(home)
    runs = store.runs_df()
    assert len(runs) == 1 and runs.iloc[0]["status"] == "finished"  # one store record, from rank 0
    run_id = runs.iloc[0]["id"]
    assert sorted(p.name for p in (home / "artifacts").iterdir()) == [run_id]  # one artifact folder
    assert len([p for p in (home / "baselines").iterdir() if not p.name.startswith(".")]) == 1  # one cached baseline
    record = json.loads(proc.stdout[proc.stdout.index("{"):])
    after = record["stages"]["after"]
    # IHT's sparsity is exact after the last step (on the layers it sparsifies: the nonzeros fell by about half)
    assert after["nonzero_params"] < 0.75 * after["params"]


def test_ddp_accuracy_within_2_points_of_one_process(ddp_run, single_train):
    home, proc = ddp_run
    record = json.loads(proc.stdout[proc.stdout.index("{"):])
    ddp_top1 = record["stages"]["before"]["top1"]  # the baseline trained by DDP, measured on the test split
    assert abs(ddp_top1 - single_train["top1"]) <= 0.02, (ddp_top1, single_train["top1"])
    assert ddp_top1 > 0.8


def test_a_one_process_command_refuses_torchrun(monkeypatch, capsys):
    from accelvit.cli import main

    for k, v in dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29599").items():
        monkeypatch.setenv(k, v)
    assert main(["runs"]) == 2  # refused before any process group is joined
    assert "'runs' runs in one process; under torchrun only train, prune, run do" in capsys.readouterr().err
