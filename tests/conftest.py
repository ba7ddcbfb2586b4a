"""Shared test setup: no network, fast failure of hub look-ups, small thread counts."""

from __future__ import annotations

import os

# Must be set before huggingface_hub is imported (by timm): hub look-ups then fail at once
# instead of retrying for a minute. Tests never need the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("ACCELVIT_PREWARM", "0")  # tests start many managers; a warm job process each would burn CPU

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for every test.

    The suite is sized for 2 CPU cores; with 2 threads, any other process on the machine
    (a streamlit server under test, another job) makes OpenMP barriers spin and the tests
    run many times slower. One thread is slower only by a little on an idle machine.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def digits_baseline(tmp_path_factory):
    """A swin_micro trained on the embedded digits (16 px, 8 epochs, ~30 s on one thread), shared by
    every test that needs a trained model: ``(model, data, test top-1, checkpoint folder)``.

    Do not modify ``model``: reload a copy from the checkpoint (``accelvit.serialize.load``) or
    ``copy.deepcopy`` it. Runs at 16 px (digits are 8x8 images, so nothing is lost) without
    augmentation or drop-path so that it trains in 8 epochs.
    """
    from accelvit.data import DataConfig, load_data
    from accelvit.models import build_model
    from accelvit.serialize import save
    from accelvit.train import TrainConfig, evaluate, fit

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = DataConfig(dataset="digits", img_size=16, batch_size=64, seed=0, augment=False)
        data = load_data(cfg)
        torch.manual_seed(0)
        model = build_model("swin_micro", data.num_classes, img_size=16, drop_path_rate=0.0)
        fit(model, data.train, TrainConfig(epochs=8, lr=3e-3, device="cpu", seed=0))
        top1 = evaluate(model, data.test, device="cpu").top1
        ckpt = save(model, tmp_path_factory.mktemp("baseline"), class_names=data.class_names,
                    meta={"data": cfg.to_dict()})
    finally:
        torch.set_num_threads(n)
    return model, data, top1, ckpt


@pytest.fixture
def app_home(tmp_path, tmp_path_factory, monkeypatch):
    """A run store of its own for a dashboard AppTest (``$ACCELVIT_HOME``); every job manager made
    for it is shut down afterwards. Pytest's temporary folders are an allowed data root (the
    dashboard reads only folders under its roots: ``accelvit.paths.check_allowed``)."""
    from accelvit.runs import jobs

    h = tmp_path / "home"
    monkeypatch.setenv("ACCELVIT_HOME", str(h))
    monkeypatch.setenv("ACCELVIT_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))
    yield h
    jobs.shutdown_all()
