"""`accelvit train` end to end: saves a model that reloads to the same test accuracy."""

from __future__ import annotations

import json
import subprocess
import sys

from accelvit import serialize
from accelvit.cli import main
from accelvit.data import DataConfig, load_data
from accelvit.train import evaluate


def test_train_command_writes_model_and_metrics(tmp_path, capsys):
    out = tmp_path / "base"
    rc = main(["train", "--dataset", "digits", "--model", "swin_micro", "--img-size", "16", "--epochs", "2",
               "--subset", "300", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("top1", "top5", "loss", "epochs", "train_seconds"):
        assert key in metrics
    assert metrics["epochs"] == 2 and 0 <= metrics["top1"] <= 1
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["top1"] == metrics["top1"]
    model, doc = serialize.load(out)
    assert doc["class_names"] == [str(i) for i in range(10)]
    data = load_data(DataConfig(dataset="digits", img_size=16, subset=300))
    assert evaluate(model, data.test, device="cpu").top1 == metrics["top1"]
    assert f"| top-1 accuracy (test) | {metrics['top1']:.2%} |" in (out / "README.md").read_text()


def test_cli_reports_user_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "accelvit", "train", "--dataset", "folder", "--data-dir",
                           str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_saved_normalisation_is_what_training_used(tmp_path):
    root = tmp_path / "imgs"
    import numpy as np
    from PIL import Image

    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.full((16, 16, 3), 30 * i, dtype=np.uint8)).save(root / c / f"{i}.png")
    out = tmp_path / "m"
    assert main(["train", "--dataset", "folder", "--data-dir", str(root), "--model", "swin_pico", "--epochs", "1",
                 "--out", str(out), "--device", "cpu"]) == 0
    doc = serialize.read_spec(out)
    assert doc["meta"]["data"]["mean"] == doc["model"]["mean"] and doc["meta"]["data"]["std"] == doc["model"]["std"]
